"""Auto-grading of the course exercises: a trust boundary.

``cnn-course grade`` copies the allowlisted notebooks of a submission, extracts the code cells
tagged ``solution``, checks that code's syntax tree (:mod:`.policy`), and runs the pytest
grading suite in :mod:`.suite`, which calls each exercise function in a sandboxed child
process per case (:mod:`.sandbox`) and compares what comes back with the reference in
``cnn_course`` (:mod:`.compare`). nbval checks that each notebook runs top to bottom. The
score comes only from the grader's own records (:mod:`.report`).
"""
