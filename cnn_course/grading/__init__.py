"""Auto-grading of the course exercises: a trust boundary.

``cnn-course grade`` copies the allowlisted notebooks of a submission, extracts the code cells
tagged ``solution``, checks that code's syntax tree (:mod:`.policy`), and runs the pytest
grading suite in :mod:`.suite`, which calls each exercise function in a fresh bubblewrap
sandbox per case (:mod:`.sandbox`, :mod:`._child`) and compares what comes back with the
reference in ``cnn_course`` (:mod:`.compare`). Each notebook also runs top to bottom in a
sandbox of its own. The score comes only from the grader's own records (:mod:`.report`).
"""
