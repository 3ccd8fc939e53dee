"""Run exercise functions on grading cases, one forked process per case.

Started by :mod:`cnn_course.grading.sandbox` as ``python -I _child.py``, it is a fork server
(see :func:`serve`). It is executed as a script and never imports ``cnn_course``; the forked
processes are the only place where exercise code runs during grading, and nothing they write
is trusted: the grader reads ``result.json`` and ``outputs.npz`` back and checks every value.

A case: new session, resource limits, an audit hook that refuses the blocked packages (by
name and by their files), the library's files and other programs (see :func:`make_guard`),
load ``inputs.npz`` (no pickle), drop to the unprivileged user when started as root, run
the code, call the function, save what it returned and the inputs as they are after the
call.
"""

from __future__ import annotations

import importlib.util
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
# refuses the obvious routes before the child ever starts; the guard catches the rest).
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
# has dropped its privileges, the interpreter's own files may be unreadable to it. importlib
# is banned, but exercise code can find it in sys.modules wherever something else loaded it
# (NumPy or a .pth file, depending on versions and on how things were installed): loaded
# always, every interpreter offers the guard the same routes.
PRELOAD = (
    "abc", "bisect", "collections", "contextlib", "copy", "dataclasses", "decimal", "enum",
    "fractions", "functools", "heapq", "itertools", "math", "numbers", "operator", "os",
    "random", "re", "signal", "statistics", "string", "time", "typing", "warnings",
    "numpy.fft", "numpy.linalg", "numpy.random", "numpy.lib.stride_tricks", "importlib",
)  # fmt: skip
NOBODY = 65534
MAX_TEXT = 2000
MAX_FILE_BYTES = 64 * 2**20
MAX_PROCESSES = 64  # per user: bounds a fork bomb by the unprivileged user


BANNED_EXIT = 86  # exit status of a case that tried something exercise code may not do
# Audit events that start another program (which would run without the guard below) or
# that search the interpreter's objects (the way to the guard itself, to undo it with ctypes).
REFUSED_EVENTS = frozenset(
    {"os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn"}
    | {"gc.get_objects", "gc.get_referrers", "gc.get_referents"}
)
# Modules that start programs without raising an audit event of their own.
REFUSED_MODULES = frozenset({"_posixsubprocess"})


def file_ids(protected: list[str]) -> frozenset[tuple[int, int]]:
    """``(device, inode)`` of every file in the ``protected`` directories (or files) that
    exist. Identities, not paths: a link, ``/proc/self/root`` or a relative path lead to the
    same inode."""
    ids = set()
    for top in protected:
        if os.path.isfile(top):
            info = os.stat(top)
            ids.add((info.st_dev, info.st_ino))
        for root, _, files in os.walk(top):
            for name in files:
                info = os.stat(os.path.join(root, name))
                ids.add((info.st_dev, info.st_ino))
    return frozenset(ids)


def installed(packages: tuple[str, ...]) -> list[str]:
    """Where those of ``packages`` that are installed lie (their directories, or a plain
    module's file), found without importing them."""
    places = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            places += list(spec.submodule_search_locations)
        elif spec is not None and spec.origin:
            places.append(spec.origin)
    return places


def make_guard(case_dir: str, protected: list[str], blocked_files: frozenset):
    """An audit hook (:func:`sys.addaudithook`), installed in each case before the exercise
    code runs. Unlike a finder on ``sys.meta_path`` or a patched builtin, exercise code cannot
    remove it, and it uses only what it bound when it was made (no module attribute or
    builtin that the exercise code could rebind). It refuses, by ending the process with
    :data:`BANNED_EXIT` (after recording it in ``banned.json``):

    - importing a blocked package by name (the ``import`` event of the import statement and
      ``__import__``, whatever ``sys.meta_path`` holds);
    - opening, or loading as an extension module, a file of the ``protected`` directories
      (the library, the instructor solutions) or of the blocked packages (``blocked_files``,
      their identities): that stops ``importlib``, which raises no ``import`` event for a
      Python module, and a module of theirs loaded under another name (a blocked package
      that ``importlib`` cannot find at all is refused by :func:`run_case`);
    - opening any directory (a descriptor for ``dir_fd``, relative to which a path means
      another file than the one this hook sees);
    - starting another program, searching the garbage collector's objects, ``ctypes``.

    Should the hook itself fail, the audited operation fails with it."""
    protected_ids = file_ids(protected) | blocked_files
    blocked, refused_events = frozenset(BLOCKED) | REFUSED_MODULES, REFUSED_EVENTS
    path_types = (str, bytes)
    is_instance, stat, exit_, status, failed = isinstance, os.stat, os._exit, BANNED_EXIT, OSError
    os_open, os_write = os.open, os.write
    record = os.path.join(case_dir, "banned.json")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC

    def refuse() -> None:
        try:
            os_write(os_open(record, flags, 0o644), b'{"refused": true}')
        finally:
            exit_(status)

    def is_refused(path: object, directories: bool) -> bool:
        """Whether ``path`` leads to a protected file (or, with ``directories``, to any
        directory)."""
        if not is_instance(path, path_types):
            return False
        try:
            info = stat(path)
        except failed:  # a file that does not exist yet is no secret
            return False
        is_directory = info.st_mode & 0o170000 == 0o040000  # S_IFDIR
        return (directories and is_directory) or (info.st_dev, info.st_ino) in protected_ids

    def guard(event: str, args: tuple) -> None:
        if event == "import":  # (module, file of an extension module or None, ...)
            if args[0].partition(".")[0] in blocked or is_refused(args[1], False):
                refuse()
        elif event == "open":
            if is_refused(args[0], True):
                refuse()
        elif event in refused_events or event.startswith("ctypes."):
            refuse()

    return guard


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


def run_case(request: dict, blocked_files: frozenset) -> None:
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
    guard = make_guard(case_dir, request["protected"], blocked_files)
    sys.addaudithook(guard)
    try:
        try:
            outcome = run(case_dir, request["module_file"], request["function"])
        except MemoryError:
            outcome = {"status": "memory", "message": "MemoryError"}
        except BaseException as exc:  # exercise code may raise anything, SystemExit included
            if isinstance(exc, ImportError) and isinstance(exc.name, str):
                # importlib looks for a package without an ``import`` event: one that is not
                # installed, or not reachable from this interpreter, ends here instead of
                # in a protected file; refused all the same, wherever the grader runs.
                guard("import", (exc.name, None))
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
    for name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
        del sys.modules[name]
    for name in PRELOAD:
        __import__(name)
    blocked_files = file_ids(installed(BLOCKED))  # once: torch alone has thousands
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_case(request, blocked_files)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)


if __name__ == "__main__":
    serve()
