"""The grading suite: one pytest item per case, its points as a ``points`` marker.

``cnn-course grade`` runs it in a trusted process (``python -m pytest`` on this directory
with ``--grading-config CONFIG``); the conftest writes each case's result to the results file
named in the config. Exercise code never runs in this process.
"""
