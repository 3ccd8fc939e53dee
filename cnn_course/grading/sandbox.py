"""Run exercise code inside an operating-system sandbox (bubblewrap).

Every piece of student code (each graded case, each notebook's top-to-bottom run) runs in a
fresh ``bwrap`` sandbox, started with the harness ``_child.py``:

- namespaces: user, mount, PID, IPC, network, UTS and cgroup (``--unshare-all``), no nested
  user namespaces, every capability dropped, a new terminal session, killed with the grader
  (``--die-with-parent``);
- files: read-only binds of the interpreter, its standard library, the system's shared
  libraries (with every ``site-packages``/``dist-packages`` hidden) and the NumPy package
  (``/sandbox/site``); a private ``/tmp`` and work directory ``/work`` (small tmpfs), a
  minimal ``/dev`` and ``/proc``; the root is read-only. Nothing else: not the course
  checkout, ``.git``, the solutions, the library, the virtual environment or the host's
  ``/tmp``, ``/var/tmp`` and ``/dev/shm``;
- limits, set by the harness before the code runs: CPU time, address space, file size,
  processes; a seccomp filter refuses ``fork``/``clone`` (a process cannot start another,
  even where the process limit does not bind: the root user is exempt from it);
- the request goes in through standard input and the result comes back through a memory
  file (JSON and ``.npz``, never pickle); what the code prints is read as it comes, and
  only its head and tail are kept.

Each sandbox is gone (with every process in it: the PID namespace ends with its first
process) before its result is read; the grader is also a *child subreaper* and kills any
descendant left over. The grader is started as root or as an ordinary user alike: inside
the sandbox the leaf directories are bound, so private (0700) folders above the checkout do
not matter, and no privileges are dropped (the sandbox has none).

Where ``bwrap`` is missing or cannot start (no user namespaces), :func:`detect` says so and
the grader runs the same harness as a plain child process: feedback only, never a grade.
The ``bwrap`` used is the one on ``PATH`` or the path in ``CNN_COURSE_BWRAP``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import json
import os
import platform
import select
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cnn_course.backend import np

CHILD = Path(__file__).with_name("_child.py")
REPOSITORY = Path(__file__).resolve().parents[2]
BWRAP_VARIABLE = "CNN_COURSE_BWRAP"
BANNED_EXIT = 86  # _child.BANNED_EXIT: the case's audit hook refused something
PR_SET_CHILD_SUBREAPER = 36
MAX_FILE_BYTES = 64 * 2**20  # largest file the code may write, and result the grader reads
TMPFS_BYTES = 64 * 2**20  # size of each private tmpfs (/tmp, /work, /dev/shm)
MAX_PROCESSES = 16  # RLIMIT_NPROC in the sandbox (fork is refused anyway)
OUTPUT_HEAD = OUTPUT_TAIL = 8 * 1024  # bytes of printed output kept at each end
STARTUP_SECONDS = 2.0  # allowance for starting the sandbox, Python and NumPy
NUMPY_INSIDE = "/sandbox/site"
HARNESS_INSIDE = "/sandbox/harness.py"
THREAD_ENV = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}
NOT_ISOLATED = "not isolated: feedback only"


@dataclass
class Outcome:
    """What happened in one case. ``status``: ok, error, memory, timeout, crashed, banned
    import. ``result`` and ``arrays`` describe the returned value (status ok)."""

    status: str
    message: str = ""
    result: dict | None = None
    arrays: dict | None = None
    inputs_after: dict | None = None
    seconds: float = 0.0
    output: str = ""


@dataclass
class Run:
    """One sandboxed run: how it ended (``exit``: the exit status, or minus the signal that
    ended it; None when the grader killed it at its deadline), the result file, the head
    and tail of what it printed, and how much it printed."""

    exit: int | None
    result: bytes
    output: str
    output_bytes: int
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit is None


# ------------------------------------------------------------------ process bookkeeping


def become_subreaper() -> None:
    """Have orphaned descendants re-parented to this process (Linux), so they can be found."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(root_pid: int, skip: Collection[int] = ()) -> list[int]:
    """Every live process below ``root_pid`` in the process tree (read from /proc), leaving
    out the ``skip`` processes and everything below them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in skip:
                found.append(pid)
                todo.append(pid)
    return found


def _reap(pids: list[int], patience: float = 1.0) -> None:
    """Collect the exit status of those ``pids`` that are our children (re-parented to us),
    without blocking on one that will not die."""
    deadline = time.monotonic() + patience
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child: its own parent reaps it
                done = pid
            if done:
                waiting.discard(pid)
        if waiting:
            time.sleep(0.01)


def kill_descendants(spare: Collection[int] = ()) -> int:
    """Kill (SIGKILL) and reap every process below this one, except the ``spare`` ones and
    their subtrees; return how many were killed. Repeats until none is left."""
    killed = 0
    for _ in range(50):
        pids = descendants(os.getpid(), skip=spare)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap(pids)
        killed += len(pids)
    return killed


# ---------------------------------------------------------------------- seccomp filter

# struct seccomp_data: nr at offset 0, arch at 4. Classic BPF opcodes and return values.
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
# (audit architecture, {system call: errno}, first number outside the native ABI or None)
_ARCHES = {
    "x86_64": (0xC000003E, {56: _EPERM, 57: _EPERM, 58: _EPERM, 435: _ENOSYS}, 0x40000000),
    "aarch64": (0xC00000B7, {220: _EPERM, 435: _ENOSYS}, None),
}


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A seccomp program (``struct sock_filter[]``, as ``bwrap --seccomp`` reads it) that
    refuses starting processes and threads: ``clone``, ``fork``, ``vfork`` fail with EPERM,
    ``clone3`` with ENOSYS; any system call of another ABI (32-bit, x32) fails with EPERM.
    None on an architecture it does not know."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, refused, foreign = arch

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    # Layout: check the ABI, load the number, one test per refused call, allow; then the
    # returns: EPERM, ENOSYS.
    tests = list(refused.items())
    body = len(tests) + (1 if foreign is not None else 0)
    program = [op(_LD_ABS, 4)]
    program.append(op(_JEQ, audit_arch, 0, body + 2))  # other ABI: to EPERM
    program.append(op(_LD_ABS, 0))
    if foreign is not None:
        program.append(op(_JGE, foreign, body, 0))  # x32: to EPERM
    for i, (number, errno) in enumerate(tests):
        remaining = len(tests) - 1 - i
        to_eperm = remaining + 1
        program.append(op(_JEQ, number, to_eperm if errno == _EPERM else to_eperm + 1, 0))
    program.append(op(_RET, _ALLOW))
    program.append(op(_RET, _ERRNO | _EPERM))
    program.append(op(_RET, _ERRNO | _ENOSYS))
    return b"".join(program)


# ----------------------------------------------------------------------------- sandbox


@functools.cache
def _interpreter() -> dict:
    """What the interpreter needs, as real paths: its executable, its shared library, its
    standard library, and NumPy's directories."""
    executable = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    library = None
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        soname = sysconfig.get_config_var("INSTSONAME") or ""
        candidate = os.path.join(libdir, soname)
        library = os.path.realpath(candidate) if soname and os.path.exists(candidate) else None
    numpy_dir = os.path.dirname(os.path.realpath(np.__file__))
    return {"executable": executable, "stdlib": stdlib, "library": library, "numpy": numpy_dir}


def _system_library_dirs() -> list[tuple[str, str | None]]:
    """``(path, link target or None)`` of the system's library directories."""
    found = []
    for path in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/lib32", "/lib32"):
        if os.path.islink(path):
            found.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            found.append((path, None))
    return found


def _inside(path: str, trees: list[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in trees)


def harness_command() -> list[str]:
    """The program the sandbox runs (the harness's mode and result descriptor follow)."""
    return [_interpreter()["executable"], "-I", "-B", HARNESS_INSIDE]


def bwrap_arguments(bwrap: str) -> list[str]:
    """The ``bwrap`` command line up to the seccomp filter and the program it runs."""
    py = _interpreter()
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    trees = []
    for path, target in _system_library_dirs():
        if target is None:
            args += ["--ro-bind", path, path]
            trees.append(path)
        else:
            args += ["--symlink", target, path]
    for path in (py["stdlib"], py["executable"], py["library"]):
        if path and not _inside(path, trees):
            args += ["--ro-bind", path, path]
            trees.append(path)
    # Hidden under an empty tmpfs: every place another Python installation keeps packages,
    # and the course checkout itself, should any of them lie below a bound directory.
    hidden = {os.path.join(py["stdlib"], "site-packages"), str(REPOSITORY)}
    for tree in trees:
        for pattern in ("python3*/site-packages", "python3*/dist-packages", "python3/dist-*"):
            hidden.update(glob.glob(os.path.join(tree, pattern)))
        hidden.update(glob.glob(os.path.join(tree, "python3*", "*-packages")))
    for path in sorted(hidden):
        if os.path.isdir(path) and _inside(path, trees):
            args += ["--tmpfs", path, "--remount-ro", path]
    numpy_parent = os.path.dirname(py["numpy"])
    args += ["--ro-bind", py["numpy"], f"{NUMPY_INSIDE}/numpy"]
    libs = os.path.join(numpy_parent, "numpy.libs")
    if os.path.isdir(libs):
        args += ["--ro-bind", libs, f"{NUMPY_INSIDE}/numpy.libs"]
    args += ["--ro-bind", str(CHILD), HARNESS_INSIDE]
    # /proc read-only: run by root, the sandbox's user is root's, which the kernel lets
    # write /proc/sys by file mode alone.
    args += ["--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc", "--remount-ro", "/proc"]
    for path in ("/dev/shm", "/tmp", "/work"):
        args += ["--size", str(TMPFS_BYTES), "--tmpfs", path]
    args += ["--chdir", "/work", "--remount-ro", "/"]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    env.update(THREAD_ENV, MPLBACKEND="Agg")
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args


class _Capture:
    """The head and the tail of a stream, whatever its length, in bounded memory."""

    def __init__(self, head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_size, self.tail_size = head, tail
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_size - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - self.tail_size)]

    def text(self) -> str:
        left_out = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {left_out} bytes of output left out ...]\n" if left_out > 0 else ""
        head = self.head.decode("utf-8", "replace")
        return head + middle + self.tail.decode("utf-8", "replace")


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@dataclass
class Sandbox:
    """How student code is run: inside ``bwrap`` (``isolated``) or, where it cannot start,
    as a plain child process (feedback only). ``reason`` says why not isolated."""

    bwrap: str | None
    reason: str = ""
    _args: list[str] = field(default_factory=list, repr=False)

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def settings(self) -> dict:
        return {"bwrap": self.bwrap, "reason": self.reason}

    @classmethod
    def from_settings(cls, settings: dict) -> Sandbox:
        return cls(settings.get("bwrap"), settings.get("reason", ""))

    def run(
        self,
        mode: str,
        header: dict,
        payload: bytes,
        *,
        timeout: float,
        memory_bytes: int,
        cpu_seconds: int,
    ) -> Run:
        """Run the harness in ``mode`` on ``header`` and ``payload``; wait at most
        ``timeout`` seconds (the sandbox's start-up included), then kill it."""
        fds: list[int] = []
        scratch = None
        try:
            if self.isolated:
                numpy_path = NUMPY_INSIDE
                if not self._args:
                    self._args = bwrap_arguments(self.bwrap)
                fds.append(_memfd("seccomp", seccomp_filter()))
                args = [*self._args, "--seccomp", str(fds[-1]), *harness_command()]
                cwd = "/"
            else:
                numpy_path = os.path.dirname(os.path.dirname(np.__file__))
                scratch = tempfile.mkdtemp(prefix="cnn-course-feedback-")
                args = [os.path.realpath(sys.executable), "-I", "-B", str(CHILD)]
                cwd = scratch
            header = dict(
                header,
                cpu_seconds=cpu_seconds,
                memory_bytes=memory_bytes,
                file_bytes=MAX_FILE_BYTES,
                processes=MAX_PROCESSES,
                numpy_path=numpy_path,
            )
            request = _memfd("request", json.dumps(header).encode() + b"\n" + payload)
            fds.append(request)
            result = _memfd("result")
            fds.append(result)
            passed = [fd for fd in fds if fd != request]
            return self._spawn([*args, mode, str(result)], request, result, passed, cwd,
                               timeout, scratch)  # fmt: skip
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def _spawn(
        self,
        args: list[str],
        request: int,
        result_fd: int,
        passed: list[int],
        cwd: str,
        timeout: float,
        scratch: str | None,
    ) -> Run:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **THREAD_ENV}
        if scratch is not None:
            env.update(HOME=scratch, TMPDIR=scratch)
        start = time.monotonic()
        capture = _Capture()
        proc = subprocess.Popen(
            args,
            stdin=request,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=passed,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        deadline = start + timeout
        out = proc.stdout.fileno()
        timed_out = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ready = select.select([out], [], [], min(remaining, 1.0))[0]
                if not ready:
                    continue
                chunk = os.read(out, 1 << 16)
                if not chunk:
                    break
                capture.feed(chunk)
        finally:
            if timed_out:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            try:  # after its output closed, it has until the deadline to end
                status = proc.wait(
                    timeout=None if timed_out else max(deadline - time.monotonic(), 0.1)
                )
            except subprocess.TimeoutExpired:  # closed its output but kept running
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                status, timed_out = proc.wait(), True
            proc.stdout.close()
        seconds = time.monotonic() - start
        kill_descendants(spare=_spared())
        result = _read_result(result_fd)
        if self.isolated and status > 128:  # bwrap reports a signal as 128 + its number
            status = -(status - 128)
        return Run(None if timed_out else status, result, capture.text(), capture.total, seconds)


_SPARED: set[int] = set()


def _spared() -> set[int]:
    """Processes below this one that are not ours to kill (set by :func:`spare`)."""
    return _SPARED


def spare(pids: Collection[int]) -> None:
    """Never kill ``pids`` (processes that existed before grading) when sweeping."""
    _SPARED.update(pids)


def _read_result(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_FILE_BYTES:
        return b""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def detect(bwrap: str | None = None) -> Sandbox:
    """The sandbox to grade with: ``bwrap`` (default: ``$CNN_COURSE_BWRAP``, else the one on
    ``PATH``) if it starts, runs the harness and loads NumPy; otherwise a :class:`Sandbox`
    that is not isolated, with the reason."""
    name = bwrap or os.environ.get(BWRAP_VARIABLE) or "bwrap"
    path = shutil.which(name)
    if path is None:
        return Sandbox(None, f"bubblewrap ({name}) was not found")
    if seccomp_filter() is None:
        return Sandbox(None, f"no process filter for the {platform.machine()} architecture")
    box = Sandbox(path)
    try:
        run = box.run("probe", {}, b"", timeout=30, memory_bytes=2**30, cpu_seconds=10)
    except OSError as exc:
        return Sandbox(None, f"bubblewrap ({path}) could not start: {exc}")
    if run.exit != 0 or not run.result.startswith(b'{"status": "ok"'):
        why = run.output.strip().splitlines()[-1:] or ["no output"]
        return Sandbox(None, f"bubblewrap ({path}) could not start the sandbox: {why[0][:200]}")
    return box


# ------------------------------------------------------------------------------- cases


def encode_case(args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """The call as JSON (arrays by name) and the input arrays."""
    arrays: dict = {}

    def encode(value, key):
        if isinstance(value, np.ndarray):
            arrays[key] = value
            return {"array": key}
        return {"value": list(value) if isinstance(value, tuple) else value}

    call = {
        "args": [encode(v, f"arg{i}") for i, v in enumerate(args)],
        "kwargs": {k: encode(v, k) for k, v in kwargs.items()},
    }
    return call, arrays


def run_case(
    box: Sandbox,
    source: str,
    function: str,
    call: dict,
    arrays: dict,
    timeout: float,
    memory_mb: int,
) -> Outcome:
    """Run ``function`` of ``source`` on the call, in a fresh sandbox, and read the result."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    code, call_json = source.encode("utf-8"), json.dumps(call).encode()
    header = {"function": function, "lengths": [len(code), len(call_json)]}
    run = box.run(
        "case",
        header,
        code + call_json + buffer.getvalue(),
        timeout=timeout + STARTUP_SECONDS,
        memory_bytes=memory_mb * 2**20,
        cpu_seconds=int(timeout) + 1,
    )
    return _collect(run, timeout)


def _collect(run: Run, timeout: float) -> Outcome:
    """Turn what the sandbox left behind into an :class:`Outcome`."""
    seconds, output = run.seconds, run.output
    meta_line, _, arrays_bytes = run.result.partition(b"\n")
    try:
        meta = json.loads(meta_line) if meta_line else None
    except ValueError:
        meta = None
    status = meta.get("status") if isinstance(meta, dict) else None
    if run.exit == BANNED_EXIT or status == "banned":
        what = str(meta.get("message", ""))[:200] if status == "banned" else ""
        message = "imported a module or did something exercise code may not do"
        return Outcome("banned import", f"{message} ({what})" if what else message)
    if run.timed_out or (run.exit == -signal.SIGXCPU and status is None):
        return Outcome("timeout", f"no result within {timeout:g} s", seconds=seconds)
    if status is None:
        tail = output.strip().splitlines()[-1:] or [""]
        how = _how(run.exit)
        message = f"the process ended without a result ({how})"
        return Outcome("crashed", f"{message}: {tail[0][:200]}" if tail[0] else message)
    if status == "memory":
        return Outcome("memory", "ran out of the memory allowed (MemoryError)", seconds=seconds)
    if status != "ok":
        message = str(meta.get("message", ""))[:500]
        return Outcome("error", message, seconds=seconds, output=output)
    try:
        arrays = _read_npz(arrays_bytes)
    except (OSError, ValueError, KeyError) as exc:
        return Outcome("crashed", f"unreadable result ({type(exc).__name__})")
    outputs = {k: v for k, v in arrays.items() if not k.startswith("input.")}
    inputs = {k[len("input.") :]: v for k, v in arrays.items() if k.startswith("input.")}
    return Outcome("ok", "", meta.get("result"), outputs, inputs, seconds, output)


def _read_npz(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        # A compressed member can unpack to far more than the file holds: bound what it
        # unpacks to (the sizes the archive declares, which reading it never exceeds).
        if sum(info.file_size for info in archive.zip.infolist()) > MAX_FILE_BYTES:
            raise ValueError(f"the result unpacks to more than {MAX_FILE_BYTES} bytes")
        return {k: archive[k] for k in archive.files}


def _how(status: int | None) -> str:
    if status is None:
        return "no status"
    if status < 0:
        return f"signal {-status}"
    return f"exit status {status}"
