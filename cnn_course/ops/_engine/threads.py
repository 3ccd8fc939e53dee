"""A small private thread pool: NumPy's copies and elementwise passes on every core.

BLAS runs a GEMM on all cores, but NumPy runs a copy, a ``multiply`` or a fancy-index
assignment on one. NumPy releases the GIL inside those loops, so Python threads that each
take a slice of the work run them in parallel. The engine splits the leading axis of the
work (samples, planes, channels) into as many parts as there are threads; work below
:data:`MIN_PARALLEL_BYTES` runs in the calling thread, where a hand-off would cost more than
it saves.

The thread count is the one NumPy's BLAS uses now, read through ``threadpoolctl`` when it
is installed (one ctypes call), so ``threadpool_limits(1)`` limits the engine as well; it is
at most the environment's: ``CNN_COURSE_NUM_THREADS``, else ``OMP_NUM_THREADS`` or
``OPENBLAS_NUM_THREADS`` (so ``OMP_NUM_THREADS=1`` keeps test workers single-threaded), else
``os.cpu_count()``. :func:`limit` sets it for a block in the calling thread.

GEMMs side by side: work made of many small GEMMs (a convolution's tiles) runs faster as
whole tiles on the engine's threads, each GEMM on one BLAS thread, than as one tile after
another on BLAS's threads with the copies between them cut over the engine's. ``parallel(...,
gemms=True)`` does that: for the duration it sets BLAS to one thread (process-wide; the last
such region to end restores the count), so that BLAS's own threads stay asleep instead of
spinning beside the engine's on the same cores. Whether GEMM work is large enough to split
(:data:`MIN_PARALLEL_MACS`) is the plan's decision (:mod:`.plan`).

Small GEMMs on one BLAS thread (:func:`blas_for`): after a GEMM on several threads,
OpenBLAS's threads spin for about 0.1 s waiting for the next one (one 64 x 400 x 120 GEMM,
a LeNet's first fully connected layer, and then a second of sleep: 0.1 s of a core's time,
measured through ``/proc``). A training step calls such a GEMM every few milliseconds, so
one core stays busy with that spinning all epoch, and the engine's own workers, whose share
lands on that core, never start: in a LeNet epoch on 2 cores, the blocked forward's caller
ran 170 of 188 shares itself, and the epoch took as long as on one thread. Work below
:data:`MIN_PARALLEL_MACS` therefore runs its GEMMs on one BLAS thread (the linear layers,
a convolution's GEMMs one after another); with that, the workers took all 191 shares.

Short compiled work (:func:`parallel_signalled`): a share of a fraction of a millisecond
is lost to a hand-off through the pool above. Measured on 2 cores with LeNet's C3 (0.36 ms
on one thread), split in halves:

- a worker woken from sleep started its share a median 45 microseconds after the hand-off
  (an idle core is halted, and waking it takes that long under a hypervisor);
- left free, the scheduler often woke the worker on the caller's own core, behind the
  caller, while the other core ran a BLAS thread spinning after its last GEMM: the split
  took 0.42 to 0.44 ms, against 0.23 to 0.27 ms with the worker kept off the caller's core;
- a worker that spun instead still slept on the GIL, which the caller held until its own
  share entered compiled code.

So for work whose every share is one compiled call, the workers wait spinning, in compiled
code and without the GIL (:func:`._numba_kernels.spin_wait`, yielding the core between
reads, as BLAS's threads do), until the caller's compiled call signals, from inside, that
it has released the GIL; they take it then uncontended. After a share they spin for
:data:`SPIN_S`, then sleep. Where the system lets a process place its threads (Linux),
before a hand-off they are allowed every core but the caller's. The pool above is not
placed: its work is longer, and held to one core a worker could not escape a busy one.
Shares made of several NumPy calls gain nothing from the spinning workers: the two threads
pass the GIL back and forth between the calls, and each pass can wake a halted core. Tried
on LeNet's C1 (tiles of im2col and GEMM side by side), the forward took 0.45 ms against 0.37
on one thread, its weight gradient 0.61 against 0.46.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cnn_course.backend import np

__all__ = [
    "num_threads",
    "limit",
    "parallel",
    "parallel_signalled",
    "blas_for",
    "split",
    "MIN_PARALLEL_BYTES",
    "MIN_PARALLEL_MACS",
    "SPIN_S",
]

#: Work smaller than this (bytes written) runs in the calling thread. Measured on 2 cores: a
#: hand-off to the pool costs 30 to 50 microseconds, and a memory-bound pass over 4 MiB ran
#: no faster on two threads than on one (16 MiB: 1.6 times faster); LeNet's layers (3.8 and
#: 5 MiB of columns) ran slower split over the threads, with BLAS's threads beside them.
MIN_PARALLEL_BYTES = 8 * 2**20
#: GEMM work (multiply-accumulates) below this runs in the calling thread, on BLAS's threads
#: (the plan's ``split``).
#: Measured on 2 cores, forward passes with whole tiles side by side against one after
#: another: from 15 to 50 million, three of four layers ran slower split (LeNet's C3 at
#: batch 64: 0.55 against 0.51 ms; timed as the benchmark times, 0.62 to 0.78 against 0.51
#: to 0.54 ms), one faster (1.30 against 1.40 ms); at 61 and 100 million, split was faster
#: (1.7 against 2.0 ms, 1.7 against 2.3 ms).
MIN_PARALLEL_MACS = 64 * 2**20
#: How long a worker of :func:`parallel_signalled` keeps spinning for its next share after
#: one ends, before it sleeps (a loop's next call finds it awake).
SPIN_S = 0.002

_ENV = ("CNN_COURSE_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_local = threading.local()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_workers: dict[int, object] = {}  # the pools' threads' native ids: their pool
_placed = -1  # the core the workers were last kept off; -1 once they have changed


def _cpu_reader() -> Callable[[], int] | None:
    """``sched_getcpu`` (the core the calling thread runs on), where the system has it and
    lets a process place its threads; else None (no placement)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        getcpu = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.restype, getcpu.argtypes = ctypes.c_int, []
    return getcpu


_getcpu = _cpu_reader()


def _from_environment() -> int:
    for name in _ENV:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


_default = _from_environment()
_blas_library: Any = None  # threadpoolctl's controller of NumPy's BLAS, False where unknown
_blas_lock = threading.Lock()
_blas_regions = 0  # regions running their GEMMs on one BLAS thread now
_blas_restore = 0  # BLAS's thread count before the first of them


def _blas_controller() -> Any:
    global _blas_library
    if _blas_library is None:
        _blas_library = False
        try:
            from threadpoolctl import ThreadpoolController

            for lib in ThreadpoolController().lib_controllers:
                if lib.user_api == "blas":
                    _blas_library = lib
                    break
        except Exception:  # not installed, or a BLAS it does not know: the environment rules
            pass
    return _blas_library


def _blas() -> int | None:
    """Threads NumPy's BLAS uses now (None where ``threadpoolctl`` cannot tell); inside a
    :func:`parallel` region with ``gemms``, the count it will get back."""
    lib = _blas_controller()
    if not lib:
        return None
    return _blas_restore if _blas_regions else lib.get_num_threads()


@contextlib.contextmanager
def _blas_single_threaded() -> Iterator[None]:
    """BLAS on one thread inside the block; the last block to end restores its count."""
    global _blas_regions, _blas_restore
    lib = _blas_controller()
    if not lib:
        yield
        return
    with _blas_lock:
        if _blas_regions == 0:
            _blas_restore = lib.get_num_threads()
            if _blas_restore != 1:
                lib.set_num_threads(1)
        _blas_regions += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_regions -= 1
            if _blas_regions == 0 and _blas_restore != 1:
                lib.set_num_threads(_blas_restore)


def blas_for(macs: int, gpu: bool = False) -> contextlib.AbstractContextManager[None]:
    """A block whose GEMMs add up to ``macs`` multiply-accumulates: below
    :data:`MIN_PARALLEL_MACS`, BLAS runs on one thread inside it (see the module docstring);
    the engine's thread count stays what it was. Arrays on a GPU (``gpu``) change nothing."""
    if gpu or macs >= MIN_PARALLEL_MACS:
        return contextlib.nullcontext()
    return _blas_single_threaded()


def num_threads() -> int:
    """Threads the engine uses now: :func:`limit`'s inside one (1 inside a worker: no
    nested parallelism), else BLAS's current count, at most the environment's."""
    local = getattr(_local, "limit", None)
    if local:
        return local
    blas = _blas()
    return max(1, min(_default, blas)) if blas else _default


@contextlib.contextmanager
def limit(threads: int) -> Iterator[None]:
    """Use at most ``threads`` threads inside the block (in this thread)."""
    if threads < 1:
        raise ValueError(f"limit: threads must be at least 1, got {threads}")
    previous = getattr(_local, "limit", None)
    _local.limit = threads
    try:
        yield
    finally:
        _local.limit = previous


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, "cnn_course", initializer=_single_threaded)
            _pool_size = workers
        return _pool


def _single_threaded() -> None:
    _local.limit = 1


def _worker_start(owner: object) -> None:
    global _placed
    _single_threaded()
    with _lock:
        _workers[threading.get_native_id()] = owner
        _placed = -1


def _forget_thread(worker: int) -> None:
    """A worker that ends stops being placed (before it ends: its id may then be reused)."""
    global _placed
    with _lock:
        if _workers.pop(worker, None) is not None:
            _placed = -1


def _place_workers() -> None:
    """Allow the spinning workers every core of this process but the caller's (see the
    module docstring). A system call per worker, only when the caller's core has changed."""
    global _placed
    if _getcpu is None:
        return
    cpu = _getcpu()
    with _lock:
        if cpu == _placed or cpu < 0:
            return
        others = os.sched_getaffinity(0) - {cpu}
        for worker in list(_workers) if others else ():
            try:
                os.sched_setaffinity(worker, others)
            except OSError:  # a system that refuses: leave it free
                pass
        _placed = cpu


def _forget_pool() -> None:
    """In a forked child the pools' threads do not exist: start new pools when needed (with
    new locks, in case another thread held one at the fork)."""
    global _pool, _pool_size, _placed, _spinners, _lock, _spin_lock
    _pool, _pool_size, _placed, _spinners = None, 0, -1, None
    _lock, _spin_lock = threading.Lock(), threading.Lock()
    _workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def split(length: int, parts: int) -> list[slice]:
    """``range(length)`` cut into at most ``parts`` contiguous slices of near-equal size."""
    parts = max(1, min(parts, length))
    bounds = [length * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def parallel(
    fn: Callable[[slice], Any],
    length: int,
    nbytes: int = MIN_PARALLEL_BYTES,
    *,
    gemms: bool = False,
) -> list[Any]:
    """``[fn(s) for s in split(length, threads)]``, the slices run on the pool's threads.

    ``fn`` must write disjoint outputs for disjoint slices; inside it the engine runs on one
    thread (no nested parallelism). Runs in the calling thread alone when there is one
    thread, one item, or ``nbytes`` (the work's size) is small. With ``gemms``, work whose
    cost is GEMMs and which a plan has found large enough (``nbytes`` is not read): each
    GEMM then runs on one BLAS thread (see the module docstring).
    """
    # the size first: reading the thread count costs a call into BLAS, on every small op
    small = not gemms and nbytes < MIN_PARALLEL_BYTES
    if length < 2 or small or (threads := num_threads()) == 1:
        return [fn(slice(0, length))]
    slices = split(length, threads)
    pool = _executor(threads - 1)
    blas = _blas_single_threaded() if gemms else contextlib.nullcontext()
    with blas:
        return _share(fn, slices, pool)


def _share(fn: Callable[[slice], Any], slices: list[slice], pool: ThreadPoolExecutor):
    futures = [(s, pool.submit(fn, s)) for s in slices[1:]]
    with limit(1):  # the caller's share, like the workers', runs on one thread
        results = [fn(slices[0])]
        for s, future in futures:
            # a share no worker has started yet (its core is busy elsewhere, on a shared
            # machine) is run here rather than waited for: never much slower than one thread
            results.append(fn(s) if future.cancel() else future.result())
    return results


class _Share:
    """One share of a :func:`parallel_signalled` call: run by a worker, or by the caller
    where no worker has claimed it when the caller's own share is done."""

    __slots__ = ("fn", "part", "seq", "claim", "finished", "result", "error")

    def __init__(self, fn: Callable[..., Any], part: slice, seq: int) -> None:
        self.fn, self.part, self.seq = fn, part, seq
        self.claim = threading.Lock()
        self.finished = threading.Lock()  # held until the share has run
        self.finished.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self, go: Any) -> None:
        try:
            self.result = self.fn(self.part, go, 0)
        except BaseException as exc:  # re-raised in the caller
            self.error = exc


def _clock() -> Any:
    """A thread's scratch for :func:`._numba_kernels.spin_wait`: the monotonic clock's id,
    then room for a timespec."""
    return np.array([time.CLOCK_MONOTONIC, 0, 0], dtype=np.int64)


def _spin_ns() -> int:
    return int(SPIN_S * 1e9)


def _own_line(length: int) -> Any:
    """``length`` int64 flags, each in a 64-byte cache line of its own: a thread that spins
    reading a flag would otherwise slow every write to whatever shares its line (measured:
    the caller's Python ran 1.5 to 2 times slower beside a spinning worker)."""
    return np.zeros(8 * (length + 2), dtype=np.int64)[8 : 8 * (length + 1) : 8]


class _Spinners:
    """Workers that wait for shares by spinning without the GIL (see the module docstring).

    ``go[0]`` is the signal: the caller's compiled share writes the round's number into it.
    ``posted`` is the last round handed out; a worker that has gone to sleep is woken for it
    through ``cond``. ``done[i]`` is the last round worker ``i`` finished.
    """

    def __init__(self, workers: int, wait: Callable[..., int]) -> None:
        self.wait = wait
        self.go = _own_line(1)
        self.done = _own_line(workers)
        self.shares: list[_Share | None] = [None] * workers
        self.cond = threading.Condition()
        self.busy = threading.Lock()  # one call at a time; another thread's runs serially
        self.posted = 0
        self.sleeping = 0
        self.closed = False
        self.nothing = np.zeros(1, dtype=np.int64)  # a signal nobody reads
        wait(self.go, 0, 1, 0, _clock(), self.nothing, 0, 0)  # compiled (or loaded) now
        started = threading.Semaphore(0)
        for i in range(workers):
            threading.Thread(
                target=self._serve, args=(i, started), name=f"cnn_course-spin-{i}", daemon=True
            ).start()
        for _ in range(workers):  # every worker known before the first placement
            started.acquire()

    def _serve(self, i: int, started: threading.Semaphore) -> None:
        _worker_start(self)
        started.release()
        try:
            self._rounds(i)
        finally:
            _forget_thread(threading.get_native_id())

    def _rounds(self, i: int) -> None:
        own_go = np.zeros(1, dtype=np.int64)  # a worker's share signals nobody
        clock = _clock()
        seen = 0
        finished = (self.nothing, 0, 0)
        while not self.closed:
            # the last share's end is signalled by the wait itself, once the GIL is released:
            # the caller, spinning for it, then takes the GIL without waiting
            now = int(self.wait(self.go, 0, seen, _spin_ns(), clock, *finished))
            finished = (self.nothing, 0, 0)
            if now == seen:  # nothing within SPIN_S: sleep until the next round is posted
                with self.cond:
                    self.sleeping += 1
                    while self.posted == seen and not self.closed:
                        self.cond.wait()
                    self.sleeping -= 1
                    now = self.posted
            seen = now
            share = self.shares[i]
            if share is not None and share.seq == now and share.claim.acquire(blocking=False):
                share.run(own_go)
                share.finished.release()
                finished = (self.done, i, now)

    def share(self, fn: Callable[..., Any], slices: list[slice]) -> list[Any]:
        if not self.busy.acquire(blocking=False):
            return [fn(s, np.zeros(1, dtype=np.int64), 0) for s in slices]
        try:
            return self._share(fn, slices)
        finally:
            self.busy.release()

    def _share(self, fn: Callable[..., Any], slices: list[slice]) -> list[Any]:
        _place_workers()
        with self.cond:
            self.posted += 1
            seq = self.posted
            shares = [_Share(fn, s, seq) for s in slices[1:]]
            self.shares[: len(shares)] = shares
            if self.sleeping:
                self.cond.notify_all()
        own_go, clock = np.zeros(1, dtype=np.int64), _clock()
        with limit(1):
            try:
                results = [fn(slices[0], self.go, seq)]
            finally:  # even when the caller's share failed, no share outlives the call
                for i, share in enumerate(shares):
                    if share.claim.acquire(blocking=False):  # not started: run it here
                        share.run(own_go)
                    elif not self._ended(i, seq, clock):
                        share.finished.acquire()  # not done within SPIN_S: sleep on it
        for share in shares:
            if share.error is not None:
                raise share.error
            results.append(share.result)
        return results

    def _ended(self, i: int, seq: int, clock: Any) -> bool:
        """Whether worker ``i`` signals the end of round ``seq`` within :data:`SPIN_S`
        (spinning). Only that round's number counts: the end of an earlier round can be
        signalled late, after the caller, woken by ``finished``, has gone on."""
        seen = int(self.done[i])
        while seen != seq:
            now = int(self.wait(self.done, i, seen, _spin_ns(), clock, self.nothing, 0, 0))
            if now == seen:
                return False
            seen = now
        return True

    def close(self) -> None:
        """Let the workers end (they are not waited for; each stops being placed as it
        ends)."""
        with self.cond:
            self.closed = True
            self.posted += 1
            self.go[0] = -1
            self.cond.notify_all()


_spinners: _Spinners | None = None
_spin_lock = threading.Lock()


def parallel_signalled(
    fn: Callable[[slice, Any, int], Any], length: int, wait: Callable[..., int] | None
) -> list[Any]:
    """``[fn(s, go, seq) for s in split(length, threads)]``, for work whose every share is
    one compiled call that starts with ``go[0] = seq`` (with the GIL released).

    The caller's share gets the workers' signal array and the round's number, the others a
    scratch array of their own; ``wait`` is :func:`._numba_kernels.spin_wait`. The workers
    start on the signal, without waiting for the GIL (see the module docstring). As with
    :func:`parallel`, ``fn`` must write disjoint outputs for disjoint slices, runs on one
    thread inside, and a share no worker has started when the caller's is done runs in the
    caller. With one thread or one item, the calling thread runs ``fn`` alone. Where ``wait``
    is None (numba off, or a system without ``sched_yield`` and ``clock_gettime``), the
    shares go to the pool of :func:`parallel`.
    """
    global _spinners
    if length < 2 or (threads := num_threads()) == 1:
        return [fn(slice(0, length), np.zeros(1, dtype=np.int64), 0)]
    if wait is None:
        return _share(
            lambda s: fn(s, np.zeros(1, dtype=np.int64), 0),
            split(length, threads),
            _executor(threads - 1),
        )
    old = None
    with _spin_lock:  # not _lock: the new workers take that one as they start
        pool = _spinners
        if pool is None or len(pool.shares) < threads - 1:
            old, pool = pool, _Spinners(threads - 1, wait)
            _spinners = pool
    if old is not None:
        old.close()
    return pool.share(fn, split(length, threads))


@atexit.register
def _stop_spinners() -> None:
    if _spinners is not None:
        _spinners.close()


def leading_axis(shape: Sequence[int]) -> int:
    """The first axis long enough to give every thread a part (else the longest)."""
    threads = num_threads()
    for axis, size in enumerate(shape):
        if size >= threads:
            return axis
    return max(range(len(shape)), key=lambda a: shape[a]) if shape else 0
