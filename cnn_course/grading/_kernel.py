"""The Jupyter kernel nbval uses to run submitted notebooks while grading.

Started by the grader's kernelspec as ``python -I _kernel.py -f CONNECTION_FILE``. It sets
resource limits, loads ipykernel and the modules notebooks use, binds its sockets, and only
then (started as root) becomes ``nobody``: the notebook's code runs unprivileged, like the
grading cases. Never imports ``cnn_course``.
"""

from __future__ import annotations

import os
import resource
import sys

NOBODY = 65534
MEMORY_BYTES = 2 * 2**30
# Modules notebooks (and IPython's traceback display) use, loaded while the interpreter's own
# files are still readable: after the switch to ``nobody`` they may not be.
PRELOAD = (
    "numpy", "numpy.random", "numpy.fft", "math", "itertools", "functools", "collections",
    "json", "time", "typing", "fractions", "decimal", "statistics", "random", "copy",
    "stack_data", "pure_eval", "executing", "pygments", "IPython.core.ultratb",
)  # fmt: skip


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from ipykernel.kernelapp import IPKernelApp

    for name in PRELOAD:
        __import__(name)
    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    try:  # format one traceback now, so that every module it needs is loaded
        raise ValueError("warm-up")
    except ValueError:
        app.shell.InteractiveTB.structured_traceback(*sys.exc_info())
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    app.start()


if __name__ == "__main__":
    main()
