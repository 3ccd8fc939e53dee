"""The pooling engine: window reductions, arg-max positions and their scatter, on every core.

On a CPU (``plan.algorithm == "windows"``) a pooling layer pads its input (``-inf`` for max
pooling, zeros for average pooling), copies every window into a contiguous
(N, C, kh, kw, H_out, W_out) array and reduces it; the samples are split over the threads.
Max pooling's forward with ``"direct-numba"`` reads the windows in place instead, compiled
(:func:`.compiled.max_pool`).
On a GPU (``"kernel"``) one elementwise kernel reads the windows in place (:mod:`.gpu`).
Max pooling's backward scatters each window's gradient onto its arg-max (compiled, where the
plan of ``"max_pool2d_backward"`` says ``"scatter-numba"``); average pooling's folds the
windows back (:func:`.windows.add_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cnn_course._types import Array
from cnn_course.backend import array_module
from cnn_course.ops._engine import compiled, gpu, threads
from cnn_course.ops._engine import plan as plans
from cnn_course.ops._engine.plan import Plan
from cnn_course.ops._engine.windows import Window, add_windows, copy, copy_blocks, crop, pad
from cnn_course.ops._engine.windows import windows as window_view
from cnn_course.ops._indexing import scatter_add

__all__ = [
    "window_max",
    "max_and_arg",
    "window_index",
    "max_pool_backward",
    "window_sums",
    "fold_windows",
]


def gpu_geometry(x_shape: Sequence[int], win: Window) -> tuple[int, ...]:
    """The geometry arguments of the GPU kernels (:mod:`.gpu`) for ``win``."""
    return gpu.geometry(x_shape, win.kernel, win.stride, win.pads, win.dilation, win.out)


def pool_windows(x: Array, win: Window, fill: float) -> Array:
    """Every pooling window of ``x``: array (N, C, kh, kw, H_out, W_out), padded with ``fill``.

    Axes 2 and 3 are the window's rows and columns (unfold's layout), so the first maximum
    in row-major order over them is the one PyTorch picks. The windows are copied into a
    contiguous array: NumPy reduces contiguous planes several times faster than a strided
    view.
    """
    view = window_view(pad(x, win.pads, fill), win, "abijhw")
    copied = array_module(x).empty(view.shape, dtype=view.dtype)
    copy_blocks(copied, view, 2)
    return copied


def _over_samples(fn, n: int, nbytes: int) -> None:
    threads.parallel(fn, n, nbytes)


def _first_max(windows: Array, out: Array, arg: Array) -> None:
    """The maximum of every window into ``out`` and the position of its first maximum
    (row-major window order, PyTorch's tie rule) into ``arg``: windows (n, C, kh, kw, H_out,
    W_out) -> (n, C, H_out, W_out), the position as ``i * kw + j``.

    ``argmax`` along middle axes is several times slower than this loop over the kh*kw
    window positions, in which each step compares whole planes: ``arg`` counts the leading
    positions that are still below the maximum. A window holding NaN has a NaN maximum,
    found at its last NaN: PyTorch keeps a running maximum that every NaN replaces. That
    takes a second pass, run only when the input holds a NaN.
    """
    xp = array_module(windows)
    windows.max(axis=(2, 3), out=out)
    kh, kw = windows.shape[2:4]
    positions = [(i, j) for i in range(kh) for j in range(kw)]
    arg[...] = 0
    still = xp.ones(out.shape, dtype=bool)
    below = xp.empty(out.shape, dtype=bool)
    for i, j in positions[:-1]:
        xp.less(windows[:, :, i, j], out, out=below)
        still &= below
        arg += still
    if bool((out != out).any()):
        for position, (i, j) in enumerate(positions):
            plane = windows[:, :, i, j]
            arg[...] = xp.where(plane != plane, arg.dtype.type(position), arg)


def max_and_arg(x: Array, win: Window, how: Plan) -> tuple[Array, Array]:
    """Every window's maximum and the position ``i * kw + j`` of its first maximum:
    (N, C, H_out, W_out) each."""
    xp = array_module(x)
    out = xp.empty((*x.shape[:2], *win.out), dtype=x.dtype)
    if how.algorithm == "kernel":
        arg = xp.empty(out.shape, dtype=xp.int32)
        lowest = x.dtype.type(-math.inf)
        gpu.run("max_pool", (x, lowest), gpu_geometry(x.shape, win), out, arg)
        return out, arg
    kk = win.kernel[0] * win.kernel[1]
    arg_dtype = xp.uint8 if kk <= 256 else xp.int64
    if how.algorithm == "direct-numba":
        return compiled.max_pool(x, win, arg_dtype, how.threads)
    arg = xp.empty(out.shape, dtype=arg_dtype)

    def part(s: slice) -> None:
        _first_max(pool_windows(x[s], win, -math.inf), out[s], arg[s])

    _over_samples(part, x.shape[0], x.nbytes)
    return out, arg


def window_max(x: Array, win: Window, how: Plan) -> Array:
    """Every window's maximum (N, C, H_out, W_out); on a CPU one reduction of the windows."""
    if how.algorithm in ("kernel", "direct-numba"):
        return max_and_arg(x, win, how)[0]
    out = array_module(x).empty((*x.shape[:2], *win.out), dtype=x.dtype)

    def part(s: slice) -> None:
        pool_windows(x[s], win, -math.inf).max(axis=(2, 3), out=out[s])

    _over_samples(part, x.shape[0], x.nbytes)
    return out


def window_index(arg: Array, win: Window, width: int, origin: tuple[int, int]) -> Array:
    """Flat ``row * width + col`` index (int64) of window position ``arg`` (from
    :func:`max_and_arg`) in a plane whose (0, 0) is at ``origin`` in the padded input: the
    window's corner plus the position's offset, looked up in a table of kh*kw offsets."""
    xp = array_module(arg)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out
    rows = xp.arange(oh, dtype=xp.int64) * sh - origin[0]
    corner = rows[:, None] * width + (xp.arange(ow, dtype=xp.int64) * sw - origin[1])
    offset = (xp.arange(kh, dtype=xp.int64)[:, None] * dh * width + xp.arange(kw) * dw).ravel()
    return corner + offset.take(arg)


def _gpu_backward(grad_out: Array, arg: Array | None, x_shape, win: Window) -> Array:
    """On a GPU, each window's gradient added onto the input values of the window (``arg``
    None: average pooling, a depthwise input gradient with a kernel of ones) or only onto the
    one at its arg-max position ``arg``: (N, C, H, W)."""
    xp = array_module(grad_out)
    grad_x = xp.empty(x_shape, dtype=grad_out.dtype)
    geometry = gpu_geometry(x_shape, win)
    if arg is None:
        ones = xp.ones((x_shape[1], 1, *win.kernel), dtype=grad_out.dtype)
        gpu.run("depthwise_input_grad", (grad_out, ones), geometry, grad_x)
    else:
        gpu.run("max_pool_backward", (grad_out, arg), geometry, grad_x)
    return grad_x


def max_pool_backward(
    grad_out: Array, x: Array, win: Window, how: Plan, indices: Array | None = None
) -> Array:
    """Route each window's gradient to its arg-max by a scatter-add, so windows sharing an
    arg-max add up. Without ``indices`` the arg-max is recomputed from ``x`` in the padded
    plane, and gradients landing on padding are cropped away. Windows that do not overlap
    never share an arg-max, so their gradients are simply assigned. On a GPU the arg-max
    recomputed from ``x`` is routed by one gather kernel instead."""
    n, c, h, w = x.shape
    values = grad_out.astype(x.dtype, copy=False).reshape(n, c, -1)

    def scatter(index: Array, size: int) -> Array:
        if how.algorithm == "scatter-numba":  # (N*C, O) planes, one thread each
            flat = compiled.scatter_add(
                values.reshape(n * c, -1), index.reshape(n * c, -1), size, how.threads
            )
            return flat.reshape(n, c, size)
        return scatter_add(values, index, size, unique=win.apart)

    if indices is not None:
        return scatter(indices.reshape(n, c, -1), h * w).reshape(x.shape)
    # the arg-max searched as the forward searches it: the forward's plan says how
    forward = plans.plan("max_pool2d", x.shape, win, c, x.itemsize, how.backend == "cupy")
    _, arg = max_and_arg(x, win, forward)
    if how.algorithm == "kernel":
        return _gpu_backward(grad_out.astype(x.dtype, copy=False), arg, x.shape, win)
    hp, wp = win.padded_hw((h, w))
    index = window_index(arg, win, wp, (0, 0)).reshape(n, c, -1)
    grad = scatter(index, hp * wp).reshape(n, c, hp, wp)
    out = array_module(x).empty(x.shape, dtype=x.dtype)
    copy(out, crop(grad, win.pads, (h, w)))
    return out


def window_sums(x: Array, win: Window, how: Plan) -> Array:
    """The sum of every window (zero padding): (N, C, H_out, W_out)."""
    xp = array_module(x)
    sums = xp.empty((*x.shape[:2], *win.out), dtype=x.dtype)
    if how.algorithm == "kernel":  # a depthwise convolution with a kernel of ones
        ones = xp.ones((x.shape[1], 1, *win.kernel), dtype=x.dtype)
        gpu.run("depthwise_forward", (x, ones), gpu_geometry(x.shape, win), sums)
        return sums

    def part(s: slice) -> None:
        pool_windows(x[s], win, 0.0).sum(axis=(2, 3), out=sums[s])

    _over_samples(part, x.shape[0], x.nbytes)
    return sums


def fold_windows(share: Array, x_shape: Sequence[int], win: Window, how: Plan) -> Array:
    """Adjoint of :func:`window_sums`: each window's ``share`` (N, C, H_out, W_out) added
    onto every position of the window (overlaps add; padding positions are dropped)."""
    if how.algorithm == "kernel":
        return _gpu_backward(share, None, x_shape, win)
    xp = array_module(share)
    n, c, h, w = x_shape
    cols = xp.broadcast_to(share[:, :, None, None], (n, c, *win.kernel, *win.out))
    target = xp.zeros((n, c, *win.padded_hw((h, w))), dtype=share.dtype)
    add_windows(target, cols, win)
    out = xp.empty(tuple(x_shape), dtype=share.dtype)
    copy(out, crop(target, win.pads, (h, w)))
    return out
