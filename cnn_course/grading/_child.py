"""The harness that runs exercise code, inside the sandbox.

Started by :mod:`cnn_course.grading.sandbox` as ``python -I -B _child.py MODE RESULT_FD``
(inside bubblewrap, where it is ``/sandbox/harness.py``). It is executed as a script and
never imports ``cnn_course``: inside the sandbox the library does not exist. Nothing it
writes is trusted: the grader reads the result back and checks every value.

Protocol (no pickle anywhere):

- standard input: one JSON line (the header: limits, lengths, where NumPy is), then the
  payload. For a case: the exercise source, the call (JSON) and the input arrays (``.npz``
  bytes, ``allow_pickle=False``); for a notebook: its code cells (a JSON list of strings).
- ``RESULT_FD`` (a memory file the grader reads once the sandbox is gone): for a case, one
  JSON line (the outcome) followed by the returned arrays and the inputs as they are after the
  call (``.npz``); for a notebook, one JSON line per code cell run.
- standard output and error: whatever the code prints; the grader keeps the head and the
  tail of it.

The limits (CPU time, address space, file size, processes) are set here, before any
exercise code runs, soft and hard alike. The audit hook of :func:`make_guard` is no
boundary (code in the same process can undo it): it only turns the obvious attempts
(importing a blocked package, starting a program, ``ctypes``) into a clear verdict.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import traceback

MODE, RESULT_FD = sys.argv[1], int(sys.argv[2])
# Packages exercise code may not use (also refused by the syntax check, cnn_course.grading
# .policy.BANNED_LIBRARIES): inside the sandbox none of them is installed, so importing one
# fails anyway; the verdict then says why.
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
BANNED_EXIT = 86  # exit status of a case that tried something exercise code may not do
# Audit events that start another program or search the interpreter's objects.
REFUSED_EVENTS = frozenset(
    {"os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn"}
    | {"gc.get_objects", "gc.get_referrers", "gc.get_referents"}
)
# Modules that start programs without raising an audit event of their own.
REFUSED_MODULES = frozenset({"_posixsubprocess"})
MAX_TEXT = 2000

# Bound before any exercise code runs: it may rebind module attributes.
os_write, os_exit, os_ftruncate, os_lseek = os.write, os._exit, os.ftruncate, os.lseek
dumps = json.dumps


def read_request() -> tuple[dict, bytes]:
    """The header and the payload from standard input, which is then closed."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    line, _, payload = data.partition(b"\n")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return json.loads(line), payload


def set_limits(header: dict) -> None:
    """CPU seconds, address space, largest file, processes; no core files."""
    cpu = int(header["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(header["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = int(header["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    processes = int(header["processes"])
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file too large is an error, not a kill


def flush() -> None:
    """Flush what the code printed (it may have replaced or closed the streams)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110  (its streams, its loss)
            pass


def write_result(data: bytes, append: bool = False) -> None:
    """Write to the result file; unless ``append``, replace whatever is there (exercise
    code may have written to it first)."""
    if not append:
        os_ftruncate(RESULT_FD, 0)
        os_lseek(RESULT_FD, 0, 0)
    while data:
        data = data[os_write(RESULT_FD, data) :]


def make_guard():
    """An audit hook (:func:`sys.addaudithook`) that ends the process with
    :data:`BANNED_EXIT`, after writing the verdict, on importing a blocked package by name,
    starting another program, ``ctypes``, or searching the garbage collector's objects. It
    uses only what it bound when it was made. It is a source of clear messages, not a
    boundary: the sandbox is."""
    blocked = frozenset(BLOCKED) | REFUSED_MODULES
    refused_events = REFUSED_EVENTS
    write, exit_, status, encode = write_result, os_exit, BANNED_EXIT, dumps

    def refuse(what: str) -> None:
        try:
            write(encode({"status": "banned", "message": what}).encode() + b"\n")
        finally:
            exit_(status)

    def guard(event: str, args: tuple) -> None:
        if event == "import":  # (module, file of an extension module or None, ...)
            if str(args[0]).partition(".")[0] in blocked:
                refuse(f"imported {str(args[0])[:80]}")
        elif event in refused_events:
            refuse(f"{event} (starting a program or searching the interpreter's objects)")
        elif event.startswith("ctypes."):
            refuse("used ctypes")

    return guard, refuse


def decode(spec, arrays):
    """A call argument: an array name, or a JSON value (lists -> tuples)."""
    if "array" in spec:
        return arrays[spec["array"]]
    value = spec["value"]
    return tuple(value) if isinstance(value, list) else value


def describe(value, arrays, prefix, types):
    """JSON description of a returned value; arrays go into ``arrays`` under ``prefix``.

    Only exact types count (``type(v) is ...``): subclasses and look-alike objects are
    reported by name so that the grader can refuse them."""
    ndarray, bool_, integer, floating = types
    kind = type(value)
    if kind is ndarray:
        if value.dtype.kind not in "biufc":
            return {"kind": "other", "type": f"ndarray of dtype {value.dtype}"}
        arrays[prefix] = value
        return {"kind": "ndarray", "key": prefix}
    if kind in (tuple, list):
        items = [describe(v, arrays, f"{prefix}_{i}", types) for i, v in enumerate(value)]
        return {"kind": kind.__name__, "items": items}
    if kind is bool or issubclass(kind, bool_):
        return {"kind": "bool", "value": bool(value)}
    if kind is int or issubclass(kind, integer):
        return {"kind": "int", "value": int(value)}
    if kind is float or issubclass(kind, floating):
        return {"kind": "float", "value": float(value)}
    if value is None:
        return {"kind": "none"}
    return {"kind": "other", "type": f"{kind.__module__}.{kind.__qualname__}"[:200]}


def error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc))
    return text.strip()[-MAX_TEXT:]


def run_case(header: dict, payload: bytes) -> None:
    """Run the exercise function on the case; write the outcome; never returns."""
    import numpy as np

    lengths = header["lengths"]
    source = payload[: lengths[0]].decode("utf-8")
    call = json.loads(payload[lengths[0] : lengths[0] + lengths[1]])
    with np.load(io.BytesIO(payload[lengths[0] + lengths[1] :]), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    types = (np.ndarray, np.bool_, np.integer, np.floating)
    savez, bytes_io, blocked = np.savez, io.BytesIO, frozenset(BLOCKED)
    guard, refuse = make_guard()
    sys.addaudithook(guard)
    try:
        namespace = {"__name__": "submission", "__builtins__": __builtins__}
        exec(compile(source, "submission.py", "exec"), namespace)
        func = namespace.get(header["function"])
        if not callable(func):
            message = f"{header['function']} is not defined"
            outcome = {"status": "error", "type": "NameError", "message": message}
        else:
            args = [decode(s, arrays) for s in call["args"]]
            kwargs = {k: decode(s, arrays) for k, s in call["kwargs"].items()}
            result = func(*args, **kwargs)
            returned: dict = {}
            outcome = {"status": "ok", "result": describe(result, returned, "out", types)}
            buffer = bytes_io()
            savez(buffer, **returned, **{f"input.{k}": v for k, v in arrays.items()})
            write_result(dumps(outcome).encode() + b"\n" + buffer.getvalue())
            flush()
            os_exit(0)
    except MemoryError:
        outcome = {"status": "memory", "message": "MemoryError"}
    except BaseException as exc:  # exercise code may raise anything, SystemExit included
        name = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        if isinstance(name, str) and name.partition(".")[0] in blocked:
            refuse(f"imported {name[:80]}")  # not installed in the sandbox: refused all the same
        outcome = {"status": "error", "type": type(exc).__name__, "message": error_text(exc)}
    write_result(dumps(outcome).encode() + b"\n")
    flush()
    os_exit(0)


class CellTimeout(Exception):
    """A notebook cell ran longer than the time allowed to one cell."""


def run_notebook(header: dict, payload: bytes) -> None:
    """Run the code cells in order, in one namespace; one result line per cell."""
    cells = json.loads(payload)
    seconds = float(header["cell_seconds"])

    def alarm(signum, frame):
        raise CellTimeout(f"the cell ran longer than {seconds:g} s")

    signal.signal(signal.SIGALRM, alarm)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "display": print}
    for index, source in enumerate(cells):
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)
            line = {"cell": index, "status": "ok"}
        except BaseException as exc:  # the notebook's code may raise anything
            line = {"cell": index, "status": "error", "message": error_text(exc)}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        write_result(dumps(line).encode() + b"\n", append=True)
        if line["status"] != "ok":
            break
    write_result(dumps({"done": True}).encode() + b"\n", append=True)
    flush()
    os_exit(0)


def main() -> None:
    header, payload = read_request()
    set_limits(header)
    sys.path.append(header["numpy_path"])
    import numpy  # noqa: F401  (before any exercise code: it is part of the harness)

    if MODE == "case":
        run_case(header, payload)
    elif MODE == "notebook":
        run_notebook(header, payload)
    else:  # "probe": the sandbox starts and NumPy loads
        write_result(dumps({"status": "ok", "numpy": numpy.__version__}).encode() + b"\n")


if __name__ == "__main__":
    main()
