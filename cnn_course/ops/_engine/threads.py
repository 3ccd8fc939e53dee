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
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["num_threads", "limit", "parallel", "split", "MIN_PARALLEL_BYTES", "MIN_PARALLEL_MACS"]

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

_ENV = ("CNN_COURSE_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_local = threading.local()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


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


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


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


def leading_axis(shape: Sequence[int]) -> int:
    """The first axis long enough to give every thread a part (else the longest)."""
    threads = num_threads()
    for axis, size in enumerate(shape):
        if size >= threads:
            return axis
    return max(range(len(shape)), key=lambda a: shape[a]) if shape else 0
