"""The optional compiled path: depthwise convolutions and max pooling's scatter as numba
kernels (imported lazily).

The NumPy direct path (:class:`.conv.Taps`) makes about two passes over memory per kernel
tap (a multiply into a scratch array, then an add). A compiled loop reads each plane from
memory once: at stride 1 the plane is padded into a small scratch array that stays in cache
and the kh*kw taps run over it there as long contiguous runs; at other strides the taps run
row by row, the padding skipped by bounds. MiniTorch compiles its tensor loops with numba
the same way. numba is optional (``pip install 'cnn-course[fast]'``):
where it does not import, or ``CNN_COURSE_NUMBA=0``, :func:`enabled` is false and the plan
keeps the NumPy path (``"direct"``); otherwise it chooses ``"direct-numba"`` for depthwise
layers on a CPU in float32 or float64, and ``"scatter-numba"`` for max pooling's backward
(each window's gradient added onto its arg-max, plane by plane, instead of NumPy's
scatter-add over index arrays). CuPy arrays never come here.

Threads: the planes (N*C of them) are split over numba's threads with ``prange``, as many as
the plan's thread count (the engine's: ``threadpoolctl`` limits and ``OMP_NUM_THREADS``
included). With one thread, with little work, in a forked child (numba's OpenMP layer is not
fork-safe) or while another thread is inside a parallel kernel (numba's fallback
``workqueue`` layer is not thread-safe), the serial twin of each kernel runs instead; it
never starts numba's thread pool. The results do not depend on the thread count: each plane
is computed by one thread, in one order.

Compilation: each kernel compiles on its first call for each dtype (seconds, once), and is
cached on disk (loaded in a fraction of a second) where numba finds a writable directory
(``__pycache__`` next to the source, else the user's cache directory); where none is
writable, numba would raise at decoration, so the kernels are compiled without a cache.
"""

from __future__ import annotations

import functools
import os
import threading
from types import ModuleType

from cnn_course._types import Array
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops._engine import threads
from cnn_course.ops._engine.windows import Window

__all__ = [
    "ENV",
    "enabled",
    "unavailable",
    "numba_version",
    "supports",
    "forward",
    "input_grad",
    "weight_grad",
]

#: ``CNN_COURSE_NUMBA=0`` (or ``false``/``no``/``off``) keeps the NumPy path.
ENV = "CNN_COURSE_NUMBA"

_launch = threading.Lock()  # one parallel kernel at a time (others run their serial twin)
_forked = False


def _after_fork() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@functools.cache
def _kernels() -> ModuleType | str:
    """The compiled kernels' module, or why it does not import."""
    try:
        from cnn_course.ops._engine import _numba_kernels
    except ImportError as exc:  # not installed, or a numba that does not support this NumPy
        return f"numba does not import ({exc})"
    return _numba_kernels


def unavailable() -> str | None:
    """Why the compiled path is off (the environment, or numba's import), else None."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}={os.environ[ENV]}"
    kernels = _kernels()
    return kernels if isinstance(kernels, str) else None


def enabled() -> bool:
    """Whether the plan may choose the compiled path (numba imports and is not switched off).
    The first call imports numba (about half a second)."""
    return unavailable() is None


def numba_version() -> str | None:
    """numba's version where it imports (whether or not ``CNN_COURSE_NUMBA`` is 0)."""
    kernels = _kernels()
    return None if isinstance(kernels, str) else kernels.numba.__version__


def supports(itemsize: int, cupy: bool) -> bool:
    """The compiled kernels take NumPy float32 and float64 arrays (a float of 4 or 8 bytes)."""
    return not cupy and itemsize in (4, 8) and enabled()


def _geom(win: Window) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = win.stride, win.dilation
    return int(sh), int(sw), int(win.pads[0][0]), int(win.pads[1][0]), int(dh), int(dw)


def _c(a: Array) -> Array:
    """``a`` as a C-contiguous array in native byte order (a copy only where needed)."""
    if is_cupy_array(a):
        raise TypeError("the compiled depthwise kernels take NumPy arrays, got a CuPy array")
    xp = array_module(a)
    return xp.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))


def _run(name: str, args: tuple, thread_count: int, nbytes: int) -> None:
    """Run kernel ``name`` on ``args``: its parallel version on ``thread_count`` threads, or
    its serial twin (one thread, little work, a forked child, another parallel call)."""
    kernels = _kernels()
    assert not isinstance(kernels, str), kernels  # the plan chose this path: numba imported
    parallel = (
        thread_count > 1
        and nbytes >= threads.MIN_PARALLEL_BYTES
        and not _forked
        and _launch.acquire(blocking=False)
    )
    if not parallel:
        getattr(kernels, f"{name}_serial")(*args)
        return
    try:
        numba = kernels.numba
        numba.set_num_threads(min(thread_count, numba.config.NUMBA_NUM_THREADS))
        getattr(kernels, name)(*args)
    finally:
        _launch.release()


def forward(x: Array, weight: Array, win: Window, thread_count: int) -> Array:
    """Depthwise cross-correlation without bias: x (N, C, H, W), weight (C, 1, kh, kw) ->
    (N, C, *win.out)."""
    x = _c(x)
    out = array_module(x).empty((*x.shape[:2], *win.out), dtype=x.dtype)
    _run("forward", (x, _c(weight[:, 0]), out, _geom(win)), thread_count, out.nbytes)
    return out


def input_grad(grad_out: Array, weight: Array, win: Window, x_shape, thread_count: int):
    """The input gradient (N, C, H, W) of :func:`forward` for ``grad_out`` (N, C, *win.out)."""
    grad_out = _c(grad_out)
    grad_x = array_module(grad_out).empty(tuple(x_shape), dtype=grad_out.dtype)
    args = (grad_out, _c(weight[:, 0]), grad_x, _geom(win))
    _run("input_grad", args, thread_count, grad_x.nbytes)
    return grad_x


def weight_grad(grad_out: Array, x: Array, win: Window, weight_shape, thread_count: int):
    """The weight gradient (C, 1, kh, kw): per plane, then summed over the batch."""
    grad_out, x = _c(grad_out), _c(x)
    n, c = x.shape[:2]
    per_plane = array_module(x).empty((n * c, *weight_shape[2:]), dtype=x.dtype)
    _run("weight_grad", (grad_out, x, per_plane, _geom(win)), thread_count, x.nbytes)
    return per_plane.reshape(n, *weight_shape).sum(axis=0)


def scatter_add(values: Array, index: Array, size: int, thread_count: int) -> Array:
    """``out[p, j] = sum of values[p, o] where index[p, o] == j``: (P, O) -> (P, size), each
    plane zeroed and scattered into by one thread (max pooling's backward). Every index
    must lie in ``[0, size)``: the caller has checked (the kernel does not)."""
    values = _c(values)
    index = array_module(index).ascontiguousarray(index, dtype="int64")
    out = array_module(values).empty((len(values), size), dtype=values.dtype)
    _run("scatter", (values, index, out), thread_count, out.nbytes)
    return out
