"""Run exercise functions on grading cases, one forked process per case.

Started by :mod:`cnn_course.grading.sandbox` as ``python -I _child.py``, it is a fork server
(see :func:`serve`). It is executed as a script and never imports ``cnn_course``; the forked
processes are the only place where exercise code runs during grading, and nothing they write
is trusted: the grader reads ``result.json`` and ``outputs.npz`` back and checks every value.

A case: new session, resource limits, block the forbidden packages at import time, load
``inputs.npz`` (no pickle), drop to the unprivileged user when started as root, run the code,
call the function, save what it returned and the inputs as they are after the call.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import os
import resource
import sys
import traceback

# This script runs outside the package: cnn_course (and so cnn_course.backend) is blocked in
# it, and it needs host NumPy only, whatever backend the course uses.
import numpy as np

# The harness keeps its own references: exercise code may rebind numpy's attributes.
NDARRAY, SAVEZ, LOAD = np.ndarray, np.savez, np.load
BOOL, INTEGER, FLOATING = np.bool_, np.integer, np.floating

# Packages exercise code may not reach at run time, whatever route it takes (the AST check
# refuses the obvious routes before the child ever starts; this catches the rest).
BLOCKED = (
    "cnn_course",
    "torch",
    "scipy",
    "tensorflow",
    "jax",
    "keras",
    "cupy",
    "sklearn",
    "cv2",
    "skimage",
    "mlxtend",
)
# Standard modules exercise code may use, imported by the server before any case: once a case
# has dropped its privileges, the interpreter's own files may be unreadable to it.
PRELOAD = (
    "abc", "bisect", "collections", "contextlib", "copy", "dataclasses", "decimal", "enum",
    "fractions", "functools", "heapq", "itertools", "math", "numbers", "operator", "os",
    "random", "re", "signal", "statistics", "string", "time", "typing", "warnings",
    "numpy.fft", "numpy.linalg", "numpy.random", "numpy.lib.stride_tricks",
)  # fmt: skip
NOBODY = 65534
MAX_TEXT = 2000
MAX_FILE_BYTES = 64 * 2**20
MAX_PROCESSES = 64  # per user: bounds a fork bomb by the unprivileged user


class ImportGuard(importlib.abc.MetaPathFinder):
    """First finder on ``sys.meta_path``: refuses the blocked packages and records it in the
    current case's directory."""

    case_dir = "."

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        root = fullname.partition(".")[0]
        if root in BLOCKED:
            with open(os.path.join(self.case_dir, "banned.json"), "w") as fh:
                json.dump({"module": fullname}, fh)
            raise ImportError(f"{fullname} is not available to exercise code")
        return None


def drop_privileges() -> None:
    """As root, become ``nobody`` for good (real, effective and saved ids)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def decode(spec, arrays):
    """A call argument from ``call.json``: an array name, or a JSON value (lists -> tuples)."""
    if "array" in spec:
        return arrays[spec["array"]]
    value = spec["value"]
    return tuple(value) if isinstance(value, list) else value


def describe(value, arrays, prefix):
    """JSON description of a returned value; arrays go into ``arrays`` under ``prefix``.

    Only exact types count (``type(v) is ...``): subclasses and look-alike objects are
    reported by name so that the parent can refuse them.
    """
    kind = type(value)
    if kind is NDARRAY:
        if value.dtype.kind not in "biufc":
            return {"kind": "other", "type": f"ndarray of dtype {value.dtype}"}
        arrays[prefix] = value
        return {"kind": "ndarray", "key": prefix}
    if kind in (tuple, list):
        items = [describe(v, arrays, f"{prefix}_{i}") for i, v in enumerate(value)]
        return {"kind": kind.__name__, "items": items}
    if kind is bool or issubclass(kind, BOOL):
        return {"kind": "bool", "value": bool(value)}
    if kind is int or issubclass(kind, INTEGER):
        return {"kind": "int", "value": int(value)}
    if kind is float or issubclass(kind, FLOATING):
        return {"kind": "float", "value": float(value)}
    if value is None:
        return {"kind": "none"}
    return {"kind": "other", "type": f"{kind.__module__}.{kind.__qualname__}"}


def run(case_dir: str, module_file: str, function: str) -> dict:
    with LOAD(os.path.join(case_dir, "inputs.npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    with open(os.path.join(case_dir, "call.json")) as fh:
        call = json.load(fh)
    with open(module_file) as fh:
        source = fh.read()
    drop_privileges()
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    exec(compile(source, "submission.py", "exec"), namespace)
    func = namespace.get(function)
    if not callable(func):
        return {"status": "error", "type": "NameError", "message": f"{function} is not defined"}
    args = [decode(s, arrays) for s in call["args"]]
    kwargs = {k: decode(s, arrays) for k, s in call["kwargs"].items()}
    result = func(*args, **kwargs)
    returned: dict = {}
    meta = describe(result, returned, "out")
    SAVEZ(os.path.join(case_dir, "outputs.npz"), **returned)
    SAVEZ(os.path.join(case_dir, "inputs_after.npz"), **arrays)
    return {"status": "ok", "result": meta}


def run_case(request: dict) -> None:
    """In the forked process: limits, a new session, the case; never returns."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the exercise code must not reach the server's pipes
        os.dup2(devnull, fd)
    cpu, memory = request["cpu_seconds"], request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    case_dir = request["case_dir"]
    try:
        try:
            outcome = run(case_dir, request["module_file"], request["function"])
        except MemoryError:
            outcome = {"status": "memory", "message": "MemoryError"}
        except BaseException as exc:  # exercise code may raise anything, SystemExit included
            text = "".join(traceback.format_exception_only(type(exc), exc))[-MAX_TEXT:]
            outcome = {"status": "error", "type": type(exc).__name__, "message": text.strip()}
        with open(os.path.join(case_dir, "result.json"), "w") as fh:
            json.dump(outcome, fh)
    finally:
        os._exit(0)  # never back into the server's loop


def serve() -> None:
    """Fork server: one request (a JSON line) in, one forked case out.

    For each request it forks, answers ``{"pid": PID}`` and, when that process has ended,
    ``{"status": WAIT_STATUS}``. The server itself never runs exercise code, so each case
    starts from the same clean state without paying for a new interpreter and NumPy.
    """
    sys.meta_path.insert(0, ImportGuard())
    for name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
        del sys.modules[name]
    for name in PRELOAD:
        __import__(name)
    for line in sys.stdin:
        request = json.loads(line)
        ImportGuard.case_dir = request["case_dir"]
        pid = os.fork()
        if pid == 0:
            run_case(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)


if __name__ == "__main__":
    serve()
