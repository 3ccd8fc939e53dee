"""Run exercise code in processes that cannot outlive their case or touch the report.

Each case is a process forked by the ``_child.py`` server, in a new session (its own
process group) with limits on CPU time, address space, file size and process count, and one
BLAS thread, and an audit hook that refuses the library, the blocked packages, other
programs and ``ctypes`` (``_child.make_guard``). Started as root, it drops to the
unprivileged user ``nobody`` before the exercise code runs, in a private directory that
belongs to it. Afterwards its process group is killed, and so is every other process
descended from the grader: the grader is a *child subreaper*, so a process that detaches
itself (double fork, ``setsid``) is re-parented to the grader and found.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_course.backend import np

CHILD = Path(__file__).with_name("_child.py")
# What exercise code may not read while it runs: the library (the reference answers) and the
# instructor solutions. Any other file the unprivileged user can read is no secret.
PROTECTED = (
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[2] / "exercises" / "solutions"),
)
BANNED_EXIT = 86  # _child.BANNED_EXIT: the case's audit hook refused something
NOBODY = 65534
PR_SET_CHILD_SUBREAPER = 36
MAX_FILE_BYTES = 64 * 2**20  # largest file the child may write, and the parent will read
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


@dataclass
class Outcome:
    """What happened in one child run. ``status``: ok, error, memory, timeout, crashed,
    banned import. ``result`` and ``arrays`` describe the returned value (status ok)."""

    status: str
    message: str = ""
    result: dict | None = None
    arrays: dict | None = None
    inputs_after: dict | None = None
    seconds: float = 0.0


def is_root() -> bool:
    return os.geteuid() == 0


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
    their subtrees (the fork server, processes that existed before grading); return how many
    were killed. A process that detaches is re-parented to this subreaper, so it is found.

    Repeats until none is left, since a process may fork while the sweep runs."""
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


def child_env(home: Path) -> dict[str, str]:
    """A minimal environment: no PYTHON* variables, one BLAS thread, a private HOME."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8"}
    env.update(THREAD_ENV)
    return env


def private_dir(path: Path) -> Path:
    """Create ``path`` (it must not exist yet), mode 0700."""
    path.mkdir(mode=0o700)
    return path


def hand_over(path: Path) -> None:
    """Give a private directory to the unprivileged user, when we are root. Done only once
    the grader has written into it: it never writes where exercise code can plant links."""
    if is_root():
        os.chown(path, NOBODY, NOBODY)


def _read_json(path: Path) -> Any:
    """Read a small regular file the child wrote (refusing links, fifos, huge files)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is not a regular file of a sane size")
    return json.loads(path.read_text())


def _read_npz(path: Path) -> dict:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is not a regular file of a sane size")
    with np.load(path, allow_pickle=False) as data:
        # A compressed member can unpack to far more than the file holds: bound what it
        # unpacks to (the sizes the archive declares, which reading it never exceeds).
        if sum(info.file_size for info in data.zip.infolist()) > MAX_FILE_BYTES:
            raise ValueError(f"{path.name} unpacks to more than {MAX_FILE_BYTES} bytes")
        return {k: data[k] for k in data.files}


class ForkServer:
    """The ``_child.py`` fork server: one clean process per case, without the start-up cost
    of a new interpreter and NumPy each time. Started on first use, restarted if it dies."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen | None = None
        self.buffer = b""

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.buffer = b""
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD)],
                cwd=self.home,
                env=child_env(self.home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        return self.proc

    def _answer(self, timeout: float) -> dict | None:
        """The server's next JSON line, or None if none came within ``timeout`` seconds;
        ``EOFError`` if the server is gone.

        Reads the pipe unbuffered: a buffered reader could hold the next line already while
        ``select`` waits for more."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError("the fork server ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def run(self, request: dict, timeout: float) -> tuple[int | None, bool]:
        """Run one case; return (wait status or None, whether it timed out)."""
        proc = self._start()
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            started = self._answer(30)
            finished = None if started is None else self._answer(timeout)
            timed_out = started is not None and finished is None
            if started is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(started["pid"], signal.SIGKILL)
            if timed_out:
                finished = self._answer(10)
        except (EOFError, BrokenPipeError):
            finished, timed_out = None, False
        if finished is None:
            self.close()  # stuck or gone: the next case starts a fresh server
        kill_descendants(spare={self.pid()})
        return (None if finished is None else finished["status"]), timed_out

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def run_case(
    server: ForkServer,
    case_dir: Path,
    module_file: Path,
    function: str,
    timeout: float,
    memory_mb: int,
) -> Outcome:
    """Run ``function`` from ``module_file`` on the case in ``case_dir`` and collect the result.

    ``case_dir`` must hold ``inputs.npz`` and ``call.json`` (see ``_child.py``)."""
    request = {
        "case_dir": str(case_dir),
        "module_file": str(module_file),
        "function": function,
        "cpu_seconds": int(timeout) + 1,
        "memory_bytes": memory_mb * 2**20,
        "protected": list(PROTECTED),
    }
    start = time.monotonic()
    status, timed_out = server.run(request, timeout)
    seconds = time.monotonic() - start
    return _collect(case_dir, status, timed_out, timeout, seconds)


def _collect(
    case_dir: Path, status: int | None, timed_out: bool, timeout: float, seconds: float
) -> Outcome:
    """Turn what the case left behind into an :class:`Outcome` (once every process is dead)."""
    refused = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == BANNED_EXIT
    if refused or (case_dir / "banned.json").exists():
        return Outcome(
            "banned import", "imported a module, read a file or started a program it may not"
        )
    cpu_limit = status is not None and os.WIFSIGNALED(status)
    if timed_out or (cpu_limit and os.WTERMSIG(status) == signal.SIGXCPU):
        return Outcome("timeout", f"no result within {timeout:g} s", seconds=seconds)
    try:
        meta = _read_json(case_dir / "result.json")
    except (OSError, ValueError):
        return Outcome("crashed", f"the process ended without a result ({_how(status)})")
    status = meta.get("status") if isinstance(meta, dict) else None
    if status == "memory":
        return Outcome("memory", "ran out of the memory allowed (MemoryError)", seconds=seconds)
    if status != "ok":
        message = str(meta.get("message", ""))[:500]
        return Outcome("error", message, seconds=seconds)
    try:
        arrays = _read_npz(case_dir / "outputs.npz")
        inputs_after = _read_npz(case_dir / "inputs_after.npz")
    except (OSError, ValueError) as exc:
        return Outcome("crashed", f"unreadable result ({type(exc).__name__})")
    return Outcome("ok", "", meta.get("result"), arrays, inputs_after, seconds)


def _how(status: int | None) -> str:
    if status is None:
        return "no status"
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
