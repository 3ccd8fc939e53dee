"""Pooling: max, average, Lp, adaptive and global pooling, max unpooling, output sizes.

Every fixed-window pooling here works on the windows of
:func:`~cnn_course.ops.conv.im2col` (one window geometry serves convolution and pooling):
pad the input (with ``-inf`` for max pooling, so padding never wins; with zeros for average
pooling), unfold every window, reduce each one (on a GPU, one kernel reads the windows in
place instead). Average pooling's backward pass folds each window's share back, the adjoint
of the unfold (:func:`~cnn_course.ops.conv.col2im`); max pooling's scatter-adds each
window's gradient onto its arg-max. Both sum where windows overlap, so overlapping pooling
(``kernel_size > stride``, AlexNet's 3x3 stride 2) needs nothing special.

This module holds the contract, the definitions (``*_naive``) and a readable vectorized
version of max pooling (:func:`max_pool2d_vectorized`); :func:`max_pool2d` and
:func:`avg_pool2d` run through the private engine (:mod:`cnn_course.ops._engine`), whose
plan splits the work over every core.

Shapes: input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` with ``H_out`` given by
:func:`pool_output_size` (PyTorch's rule). Semantics follow ``torch.nn.functional``: argument
names and defaults, ``stride=None`` meaning ``stride=kernel_size``, ``ceil_mode``,
``count_include_pad``, the flat ``H*W`` index layout of ``return_indices``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

from cnn_course._checks import (
    nonnegative_pair,
    positive_pair,
    require_array,
    require_float,
    require_grad_out,
    require_same_backend,
)
from cnn_course._types import Array, IntPair
from cnn_course.backend import array_module, is_cupy_array, np
from cnn_course.ops._engine import pool as engine
from cnn_course.ops._engine.plan import Plan, plan
from cnn_course.ops._engine.windows import Window
from cnn_course.ops._indexing import scatter_add

__all__ = [
    "pool_output_size",
    "caffe_pool_output_size",
    "max_pool2d",
    "max_pool2d_naive",
    "max_pool2d_vectorized",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_naive",
    "avg_pool2d_backward",
    "lp_pool2d",
    "lp_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "global_max_pool2d",
    "global_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
]


# --------------------------------------------------------------------------- output sizes


def _int_arg(value: Any, name: str, op: str, low: int) -> int:
    """``value`` as an int that is at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{op}: {name} must be at least {low}, got {value}")
    return int(value)


def _pool_length(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """PyTorch's pooled length along one axis (may be < 1; the callers reject that)."""
    span = size + 2 * padding - (dilation * (kernel - 1) + 1)
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # In ceil mode the last window must start inside the input or the left padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_output_size(
    size: int,
    kernel_size: int,
    stride: int | None = None,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a pooling layer along one spatial axis, as PyTorch computes it.

    Book: chapter 5 (Pooling): q000-3.1; chapter 9 (Counting parameters and FLOPs):
    q003-conv-output-formula.

    With the extent ``e = dilation * (kernel_size - 1) + 1`` of the (dilated) window::

        floor mode (default):  out = floor((size + 2 * padding - e) / stride) + 1
        ceil mode:             out = ceil((size + 2 * padding - e) / stride) + 1,
                               minus 1 if that last window would start in the right padding

    Floor mode drops a last, incomplete window; ceil mode keeps it, so the last window may run
    past the padded input (positions past it are simply not pooled). The correction keeps
    every window starting inside the input or the left padding. Caffe always ceils (see
    :func:`caffe_pool_output_size`), which is why one network definition can give different
    feature-map sizes in Caffe and PyTorch: for ``size=6, kernel_size=3, stride=2`` PyTorch's
    default gives 2, Caffe gives 3.

    Parameters
    ----------
    size, kernel_size, dilation : int, at least 1
    stride : int or None
        ``None`` means ``kernel_size`` (non-overlapping windows), as in PyTorch.
    padding : int
        Implicit padding on both sides; at most ``kernel_size // 2`` (PyTorch's limit).
    ceil_mode : bool

    Returns
    -------
    int, at least 1 (a ``ValueError`` says why otherwise).
    """
    op = "pool_output_size"
    size = _int_arg(size, "size", op, 1)
    kernel = _int_arg(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else _int_arg(stride, "stride", op, 1)
    padding = _int_arg(padding, "padding", op, 0)
    dilation = _int_arg(dilation, "dilation", op, 1)
    if 2 * padding > kernel:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    out = _pool_length(size, kernel, stride, padding, dilation, bool(ceil_mode))
    if out < 1:
        raise ValueError(
            f"{op}: the output would be empty: kernel_size {kernel} with dilation {dilation} "
            f"does not fit the padded input {size} + 2 * {padding}"
        )
    return out


def caffe_pool_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of Caffe's ``PoolingLayer`` along one axis (no dilation in Caffe).

    Book: chapter 9 (Counting parameters and FLOPs): q003-conv-output-formula.

    Caffe always rounds up::

        out = ceil((size + 2 * padding - kernel_size) / stride) + 1

    and, only when the layer has padding (on either axis in Caffe; here, on this one), removes
    a last window that would start in the right padding
    (``(out - 1) * stride >= size + padding``), the same clip PyTorch applies in
    ceil mode. So Caffe's result is PyTorch's ``ceil_mode=True`` result whenever there is
    padding; without padding Caffe can keep a window that starts past the input (for
    ``size=5, kernel_size=1, stride=3`` Caffe gives 3, PyTorch in ceil mode 2). Models ported
    from Caffe (GoogLeNet, SqueezeNet) therefore set ``ceil_mode=True`` in PyTorch.

    Parameters
    ----------
    size, kernel_size, stride : int, at least 1 (Caffe's default stride is 1)
    padding : int, smaller than ``kernel_size`` (Caffe's check)

    Returns
    -------
    int
    """
    op = "caffe_pool_output_size"
    size = _int_arg(size, "size", op, 1)
    kernel = _int_arg(kernel_size, "kernel_size", op, 1)
    stride = _int_arg(stride, "stride", op, 1)
    padding = _int_arg(padding, "padding", op, 0)
    if padding >= kernel:
        raise ValueError(f"{op}: padding {padding} must be smaller than kernel_size {kernel}")
    if kernel > size + 2 * padding:
        raise ValueError(
            f"{op}: kernel_size {kernel} is larger than the padded input {size} + 2 * {padding}"
        )
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if padding > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    return out


# --------------------------------------------------------------------------- window geometry


def _window(
    op: str,
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
) -> Window:
    """Check ``x`` (float, rank 4) and the window arguments; compute the output size.

    The window's ``pads`` are the padding, plus on the bottom/right whatever a ceil-mode
    last window reaches past the padded input; its ``padding`` is the argument."""
    require_float(x, "x", op, ndim=4)
    kernel = positive_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else positive_pair(stride, "stride", op)
    padding = nonnegative_pair(padding, "padding", op)
    dilation = positive_pair(dilation, "dilation", op)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    hw = tuple(x.shape[2:])
    out = tuple(
        _pool_length(*args, bool(ceil_mode))
        for args in zip(hw, kernel, stride, padding, dilation, strict=True)
    )
    if min(out) < 1:
        raise ValueError(
            f"{op}: kernel_size {kernel} with dilation {dilation} is larger than the padded "
            f"input: x shape {tuple(x.shape)}, padding {padding} (output would be {out})"
        )
    pads = []
    for size, k, s, p, d, o in zip(hw, kernel, stride, padding, dilation, out, strict=True):
        reach = (o - 1) * s + d * (k - 1) + 1
        pads.append((p, max(p, reach - size - p)))
    return Window(kernel, stride, (pads[0], pads[1]), dilation, (out[0], out[1]))


def _plan(op: str, x: Array, win: Window) -> Plan:
    """The plan of pooling ``x`` (:func:`cnn_course.ops._engine.plan.plan`)."""
    return plan(op, tuple(x.shape), win, x.shape[1], x.itemsize, is_cupy_array(x))


def _out_of_range(indices: Array, plane: int) -> bool:
    """Whether any of the (non-empty, integer) ``indices`` lies outside ``[0, plane)``.

    Read as unsigned integers of the same width, negative indices are at least
    ``2**(bits - 1)``; when ``plane`` is no larger, the largest of them alone answers: one
    reduction and no temporary, several times cheaper than a mask of the bad entries (on a
    large pooling layer the mask costs nearly as much as the backward's scatter itself).
    """
    bits = 8 * indices.dtype.itemsize
    if plane <= 2 ** (bits - 1):
        return int(indices.view(f"u{indices.dtype.itemsize}").max()) >= plane
    return int(indices.min()) < 0 or int(indices.max()) >= plane


def _require_indices(
    op: str, indices: Array, shape: Sequence[int], of: str, x: Array, plane: int
) -> None:
    """``indices`` are integers on ``x``'s backend, each in ``[0, plane)``, of ``shape``: the
    shape of ``of`` (named in the message)."""
    require_array(indices, "indices", op, ndim=len(shape))
    require_same_backend(op, x=x, indices=indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
    if tuple(indices.shape) != tuple(shape):
        raise ValueError(
            f"{op}: indices shape {tuple(indices.shape)} must equal {of} shape {tuple(shape)}"
        )
    if indices.size and _out_of_range(indices, plane):
        raise ValueError(
            f"{op}: indices must lie in [0, {plane}) for a plane of {plane} positions, got "
            f"values from {int(indices.min())} to {int(indices.max())}"
        )


def max_pool2d(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Array | tuple[Array, Array]:
    """Max pooling over an (N, C, H, W) input.

    Book: chapter 5 (Pooling): q000-3.1, q000-3.2, q000-3.4, q000-3.6, q001-pooling-role,
    q002-10, q002-36; chapter 11 (What CNNs are and are not): q000-4.3.

    Parameters
    ----------
    x : float array (N, C, H, W)
    kernel_size, stride, dilation : int or (int, int); ``stride=None`` means ``kernel_size``
    padding : int or (int, int)
        Implicit ``-inf`` padding on both sides, at most half of ``kernel_size``.
    ceil_mode : bool
        Round the output size up (see :func:`pool_output_size`).
    return_indices : bool
        Also return where each maximum came from.

    Returns
    -------
    out : array (N, C, H_out, W_out), ``H_out = pool_output_size(H, kh, sh, ph, dh, ceil_mode)``
    indices : int64 array (N, C, H_out, W_out), only with ``return_indices``
        Flat index ``row * W + col`` of each maximum in its (unpadded) H x W plane, PyTorch's
        layout (what :func:`max_unpool2d` takes). Ties go to the first maximum in row-major
        window order, as in PyTorch; a window holding NaN gives NaN, at its last NaN (PyTorch
        too: every NaN replaces its running maximum). A window that covers only padding
        (possible only with a large dilation) gives ``-inf`` and a meaningless index, in
        PyTorch as well.
    """
    win = _window("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    how = _plan("max_pool2d", x, win)
    if not return_indices:
        return engine.window_max(x, win, how)
    out, arg = engine.max_and_arg(x, win, how)
    return out, engine.window_index(arg, win, x.shape[3], win.padding)


def max_pool2d_naive(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Array | tuple[Array, Array]:
    """The definition of :func:`max_pool2d`, by loops: not the fast path.

    Book: chapter 5 (Pooling): q000-3.1, q000-3.2.

    For every output position ``(i, j)`` scan the window positions
    ``(i*sh - ph + a*dh, j*sw - pw + b*dw)`` in row-major order ``(a, b)``, skip those outside
    the input (the padding), and keep the first largest value and its flat index ``row*W +
    col``. Same arguments, shapes and results as :func:`max_pool2d`; a window with no input
    position gives ``-inf`` and index ``-1``.
    """
    win = _window("max_pool2d_naive", x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = (
        win.kernel,
        win.stride,
        win.padding,
        win.dilation,
        win.out,
    )
    out = xp.full((n, c, oh, ow), -math.inf, dtype=x.dtype)
    indices = xp.full((n, c, oh, ow), -1, dtype=xp.int64)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    row, col = i * sh - ph + a * dh, j * sw - pw + b * dw
                    if 0 <= row < h and 0 <= col < w:
                        value = x[:, :, row, col]
                        better = (value > out[:, :, i, j]) | (value != value)
                        out[:, :, i, j] = xp.where(better, value, out[:, :, i, j])
                        indices[:, :, i, j] = xp.where(better, row * w + col, indices[:, :, i, j])
    return (out, indices) if return_indices else out


def max_pool2d_vectorized(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> Array:
    """:func:`max_pool2d`'s values, written to be read: one strided view of every window and
    one reduction.

    Book: chapter 5 (Pooling): q000-3.2.

    Pad with ``-inf`` (padding never wins), view the windows without copying (as
    :func:`~cnn_course.ops.conv.conv2d_vectorized` does), and take each window's maximum.
    :func:`max_pool2d` does the same with the windows copied into contiguous planes first
    (NumPy reduces those several times faster), the samples split over every core, and
    returns the arg-max too. Same arguments and values as :func:`max_pool2d`.
    """
    win = _window("max_pool2d_vectorized", x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = array_module(x)
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out
    # 1. pad with -inf on every side (and past the end for a ceil-mode last window)
    xpad = xp.pad(x, ((0, 0), (0, 0), win.pads[0], win.pads[1]), constant_values=-math.inf)
    # 2. view every window, axes (N, C, H_out, W_out, kh, kw): window (oh, ow) at offset
    #    (i, j) reads xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]
    s_n, s_c, s_h, s_w = xpad.strides
    view = xp.lib.stride_tricks.as_strided(
        xpad,
        shape=(n, c, oh, ow, kh, kw),
        strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw),
    )
    # 3. the maximum of each window
    return view.max(axis=(4, 5))


def max_pool2d_backward(
    grad_out: Array,
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    *,
    indices: Array | None = None,
) -> Array:
    """Gradient of :func:`max_pool2d` with respect to ``x``.

    Book: chapter 5 (Pooling): q000-3.4, q000-3.6, q002-35.

    Each window's upstream gradient goes to its arg-max (the first maximum, as in the forward
    pass) and nowhere else; where overlapping windows share an arg-max, their gradients add.

    Parameters
    ----------
    grad_out : float array (N, C, H_out, W_out)
    x, kernel_size, stride, padding, dilation, ceil_mode : as in :func:`max_pool2d`
    indices : integer array (N, C, H_out, W_out), optional, keyword only
        The arg-maxes from ``max_pool2d(..., return_indices=True)`` on the same ``x``. By
        default they are recomputed from ``x`` (the course's convention: a backward takes
        the forward's arguments). A layer that kept them passes them and skips that pass,
        which costs several times more than the scatter itself; PyTorch's backward always
        works from the saved indices.

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "max_pool2d_backward"
    win = _window(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    out_shape = (*x.shape[:2], *win.out)
    require_grad_out(op, grad_out, out_shape, like=x)
    if indices is not None:
        _require_indices(op, indices, out_shape, "the output", x, x.shape[2] * x.shape[3])
    how = _plan("max_pool2d_backward", x, win)
    return engine.max_pool_backward(grad_out, x, win, how, indices)


# --------------------------------------------------------------------------- average pooling


def _avg_divisor(x: Array, win: Window, count_include_pad: bool) -> Array:
    """PyTorch's divisor of each average-pooling window: (H_out, W_out), dtype of ``x``.

    Per axis, a window starting at ``start = o*s - p`` ends at ``min(start + k, size + p)``:
    a ceil-mode window running past the padded input counts only up to its end. With
    ``count_include_pad`` the padding inside that range counts; without, only input positions.
    The divisor is the product of the two axes' counts. It is computed on the host, where
    these small arrays cost nothing (on a GPU each step would be a kernel launch), and moved
    to ``x``'s device once.
    """
    counts = []
    axes = zip(x.shape[2:], win.kernel, win.stride, win.padding, win.out, strict=True)
    for size, k, s, p, o in axes:
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        counts.append(end - start)
    return array_module(x).asarray(np.outer(counts[0], counts[1]), dtype=x.dtype)


def _avg_pool(x: Array, win: Window, count_include_pad: bool) -> Array:
    sums = engine.window_sums(x, win, _plan("avg_pool2d", x, win))
    return sums / _avg_divisor(x, win, count_include_pad)


def _avg_pool_backward(grad_out: Array, x: Array, win: Window, count_include_pad: bool) -> Array:
    share = (grad_out / _avg_divisor(x, win, count_include_pad)).astype(x.dtype, copy=False)
    return engine.fold_windows(share, x.shape, win, _plan("avg_pool2d", x, win))


def avg_pool2d(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Array:
    """Average pooling over an (N, C, H, W) input.

    Book: chapter 5 (Pooling): q000-3.1, q000-3.2, q000-3.4, q000-3.5, q001-pooling-role,
    q002-10.

    Parameters
    ----------
    x : float array (N, C, H, W)
    kernel_size, stride : int or (int, int); ``stride=None`` means ``kernel_size``
    padding : int or (int, int)
        Implicit zero padding on both sides, at most half of ``kernel_size``.
    ceil_mode : bool
        Round the output size up (see :func:`pool_output_size`).
    count_include_pad : bool
        Whether the zero padding counts in the divisor. A ceil-mode window that runs past the
        padded input divides only by the part inside it, in either case (PyTorch's rule).

    Returns
    -------
    out : array (N, C, H_out, W_out)
    """
    win = _window("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    return _avg_pool(x, win, count_include_pad)


def avg_pool2d_naive(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Array:
    """The definition of :func:`avg_pool2d`, by loops: not the fast path.

    Book: chapter 5 (Pooling): q000-3.2.

    Output ``(i, j)`` averages the window rows ``[i*sh - ph, i*sh - ph + kh)`` and columns
    ``[j*sw - pw, j*sw - pw + kw)``: the sum over the positions inside the input, divided by
    the window's size cut at the padded input's end (``count_include_pad``) or by the number
    of input positions it holds.
    """
    win = _window("avg_pool2d_naive", x, kernel_size, stride, padding, 1, ceil_mode)
    xp = array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = win.kernel, win.stride, win.padding, win.out
    out = xp.empty((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            top, left = i * sh - ph, j * sw - pw
            bottom, right = min(top + kh, h + ph), min(left + kw, w + pw)
            r0, r1, c0, c1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
            if count_include_pad:
                divisor = (bottom - top) * (right - left)
            else:
                divisor = (r1 - r0) * (c1 - c0)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / divisor
    return out


def avg_pool2d_backward(
    grad_out: Array,
    x: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Array:
    """Gradient of :func:`avg_pool2d` with respect to ``x``.

    Book: chapter 5 (Pooling): q000-3.4, q000-3.5, q002-35.

    Each window spreads ``grad_out / divisor`` evenly over its positions (``grad / (kh*kw)``
    for a window inside the input); where windows overlap the shares add.

    Parameters
    ----------
    grad_out : float array (N, C, H_out, W_out)
    x, kernel_size, stride, padding, ceil_mode, count_include_pad : as in :func:`avg_pool2d`

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "avg_pool2d_backward"
    win = _window(op, x, kernel_size, stride, padding, 1, ceil_mode)
    require_grad_out(op, grad_out, (*x.shape[:2], *win.out), like=x)
    return _avg_pool_backward(grad_out, x, win, count_include_pad)


# --------------------------------------------------------------------------- Lp pooling


def _norm_type(norm_type: Any, op: str) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{op}: norm_type must be a positive number, got {norm_type!r}")
    if not norm_type > 0:
        raise ValueError(f"{op}: norm_type must be positive (or math.inf), got {norm_type!r}")
    return float(norm_type)


def lp_pool2d(
    x: Array,
    norm_type: float,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    ceil_mode: bool = False,
) -> Array:
    """Power-average (Lp) pooling: ``(sum over the window of x**p) ** (1/p)``.

    Book: chapter 5 (Pooling): q000-3.2.

    ``p = 1`` is sum pooling (of signed values, as in PyTorch), ``p = 2`` the window's
    Euclidean norm, and ``p -> inf`` approaches max pooling of ``|x|`` (``norm_type=math.inf``
    is exactly that). Computed as PyTorch does, from average pooling without padding:
    ``(kh * kw * avg_pool2d(x**p)) ** (1/p)``, so a ceil-mode window that runs past the input
    is scaled up to a full window's size. A negative ``x`` with a non-integer ``p`` gives NaN.

    Parameters
    ----------
    x : float array (N, C, H, W)
    norm_type : float, positive, or ``math.inf``
    kernel_size, stride : int or (int, int); ``stride=None`` means ``kernel_size``
    ceil_mode : bool

    Returns
    -------
    out : array (N, C, H_out, W_out)
    """
    op = "lp_pool2d"
    p = _norm_type(norm_type, op)
    win = _window(op, x, kernel_size, stride, 0, 1, ceil_mode)
    if math.isinf(p):
        ax = array_module(x).abs(x)
        return engine.window_max(ax, win, _plan("max_pool2d", ax, win))
    mean = _avg_pool(x**p, win, True)
    return (mean * (win.kernel[0] * win.kernel[1])) ** (1 / p)


def lp_pool2d_backward(
    grad_out: Array,
    x: Array,
    norm_type: float,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    ceil_mode: bool = False,
) -> Array:
    """Gradient of :func:`lp_pool2d` with respect to ``x``.

    Book: chapter 5 (Pooling): q000-3.2.

    With ``m = avg_pool2d(x**p)`` and ``out = (kh*kw*m) ** (1/p)``, the chain rule gives
    ``grad_x = x**(p-1) * avg_pool2d_backward(grad_out * out / m)``. It is infinite or NaN
    where a window is all zeros (the p-norm is not differentiable at 0). For ``norm_type=inf``
    it is max pooling's gradient of ``|x|`` times ``sign(x)``.

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "lp_pool2d_backward"
    p = _norm_type(norm_type, op)
    win = _window(op, x, kernel_size, stride, 0, 1, ceil_mode)
    require_grad_out(op, grad_out, (*x.shape[:2], *win.out), like=x)
    xp = array_module(x)
    if math.isinf(p):
        ax = xp.abs(x)
        grad = engine.max_pool_backward(grad_out, ax, win, _plan("max_pool2d_backward", ax, win))
        return grad * xp.sign(x)
    mean = _avg_pool(x**p, win, True)
    out = (mean * (win.kernel[0] * win.kernel[1])) ** (1 / p)
    return _avg_pool_backward(grad_out * out / mean, x, win, True) * x ** (p - 1)


# --------------------------------------------------------------------------- adaptive pooling


def _adaptive_size(op: str, x: Array, output_size: Any) -> tuple[int, int]:
    """Check ``x`` and ``output_size`` (int or pair; ``None`` keeps that input size)."""
    require_float(x, "x", op, ndim=4)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{op}: x must have a non-empty H x W plane, got shape {x.shape}")
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise TypeError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    out = tuple(
        size if o is None else _int_arg(o, "output_size", op, 1)
        for o, size in zip(sizes, x.shape[2:], strict=True)
    )
    return out[0], out[1]


def _bin_members(xp: Any, size: int, out: int) -> tuple[Array, Array]:
    """PyTorch's adaptive bins along one axis, as (out, longest bin) positions and a mask.

    Bin ``i`` covers ``[floor(i*size/out), ceil((i+1)*size/out))``: the bins cover the axis,
    and overlap where ``out`` does not divide ``size``. A shorter bin repeats its last
    position (masked out), which changes neither its maximum nor the first position holding it.
    """
    i = xp.arange(out)
    start, end = i * size // out, -(-(i + 1) * size // out)
    longest = max(-(-(j + 1) * size // out) - j * size // out for j in range(out))
    members = start[:, None] + xp.arange(longest)
    return xp.minimum(members, end[:, None] - 1), members < end[:, None]


class _Bins(NamedTuple):
    """Where the adaptive bins of an (H, W) plane lie; K is the longest bin's area."""

    rows: Array  # (oh, 1, kh, 1) row of each member, for gathering
    cols: Array  # (1, ow, 1, kw) column of each member
    index: Array  # (oh, ow, K) flat row * W + col of each member, bins in row-major order
    valid: Array  # (oh, ow, K) which members are real (not repeats)


def _bins(xp: Any, hw: Sequence[int], oh: int, ow: int) -> _Bins:
    h, w = hw
    (rows, row_ok), (cols, col_ok) = _bin_members(xp, h, oh), _bin_members(xp, w, ow)
    area = rows.shape[1] * cols.shape[1]
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
    return _Bins(rows, cols, (rows * w + cols).reshape(oh, ow, area), valid.reshape(oh, ow, area))


def _gather_bins(x: Array, bins: _Bins) -> Array:
    """The members of every bin of ``x``: (N, C, oh, ow, K)."""
    return x[:, :, bins.rows, bins.cols].reshape(*x.shape[:2], *bins.index.shape)


def _adaptive_avg(x: Array, oh: int, ow: int) -> Array:
    xp = array_module(x)
    bins = _bins(xp, x.shape[2:], oh, ow)
    # where, not a multiply by the mask: a masked repeat of an inf or NaN must not leak in.
    total = xp.where(bins.valid, _gather_bins(x, bins), x.dtype.type(0)).sum(axis=-1)
    return total / bins.valid.sum(axis=-1).astype(x.dtype)


def _adaptive_avg_backward(grad_out: Array, x: Array) -> Array:
    xp = array_module(x)
    n, c, h, w = x.shape
    bins = _bins(xp, (h, w), *grad_out.shape[2:])
    share = (grad_out / bins.valid.sum(axis=-1).astype(x.dtype))[..., None]
    values = xp.where(bins.valid, share, x.dtype.type(0)).astype(x.dtype, copy=False)
    return scatter_add(values.reshape(n, c, -1), bins.index.reshape(-1), h * w).reshape(x.shape)


def _adaptive_argmax(x: Array, oh: int, ow: int) -> tuple[Array, Array]:
    """Maximum of every adaptive bin and its flat ``row * W + col`` index: (N, C, oh, ow) each.

    The first maximum, or, in a bin holding NaN, the last NaN (PyTorch's rule, as in
    :func:`max_pool2d`; ``argmax`` alone would find the first)."""
    xp = array_module(x)
    bins = _bins(xp, x.shape[2:], oh, ow)
    members = _gather_bins(x, bins)
    arg = members.argmax(axis=-1)
    nan = members != members
    if bool(nan.any()):
        last_nan = members.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1)
        arg = xp.where(nan.any(axis=-1), last_nan, arg)
    arg = arg[..., None]
    out = xp.take_along_axis(members, arg, axis=-1)[..., 0]
    index = xp.take_along_axis(xp.broadcast_to(bins.index, members.shape), arg, axis=-1)
    return out, index[..., 0]


def _adaptive_max_backward(grad_out: Array, x: Array) -> Array:
    n, c, h, w = x.shape
    _, index = _adaptive_argmax(x, *grad_out.shape[2:])
    values = grad_out.astype(x.dtype, copy=False).reshape(n, c, -1)
    return scatter_add(values, index.reshape(n, c, -1), h * w).reshape(x.shape)


def adaptive_avg_pool2d(x: Array, output_size: IntPair) -> Array:
    """Adaptive average pooling: the mean of each of ``output_size`` bins, whatever (H, W) is.

    Book: chapter 5 (Pooling): q000-3.2, q001-gap; chapter 10 (Architectures):
    q001-arch-inception-v1.

    Output row ``i`` averages input rows ``[floor(i*H/H_out), ceil((i+1)*H/H_out))``, likewise
    for columns (PyTorch's bins; neighbouring bins overlap where ``H_out`` does not divide
    ``H``). ``output_size=1`` is global average pooling.

    Parameters
    ----------
    x : float array (N, C, H, W)
    output_size : int or (int, int); ``None`` in the pair keeps that input size

    Returns
    -------
    out : array (N, C, H_out, W_out)
    """
    return _adaptive_avg(x, *_adaptive_size("adaptive_avg_pool2d", x, output_size))


def adaptive_avg_pool2d_backward(grad_out: Array, x: Array, output_size: IntPair) -> Array:
    """Gradient of :func:`adaptive_avg_pool2d`: each bin spreads ``grad / bin area`` over its
    positions; overlapping bins add.

    Book: chapter 5 (Pooling): q001-gap.

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "adaptive_avg_pool2d_backward"
    oh, ow = _adaptive_size(op, x, output_size)
    require_grad_out(op, grad_out, (*x.shape[:2], oh, ow), like=x)
    return _adaptive_avg_backward(grad_out, x)


def adaptive_max_pool2d(
    x: Array, output_size: IntPair, return_indices: bool = False
) -> Array | tuple[Array, Array]:
    """Adaptive max pooling: the maximum of each of ``output_size`` bins (PyTorch's bins, as
    in :func:`adaptive_avg_pool2d`).

    Book: chapter 5 (Pooling): q000-3.2.

    Parameters
    ----------
    x : float array (N, C, H, W)
    output_size : int or (int, int); ``None`` in the pair keeps that input size
    return_indices : bool
        Also return the flat ``row * W + col`` index of each maximum (the first one on ties).

    Returns
    -------
    out : array (N, C, H_out, W_out)
    indices : int64 array (N, C, H_out, W_out), only with ``return_indices``
    """
    out, index = _adaptive_argmax(x, *_adaptive_size("adaptive_max_pool2d", x, output_size))
    return (out, index) if return_indices else out


def adaptive_max_pool2d_backward(grad_out: Array, x: Array, output_size: IntPair) -> Array:
    """Gradient of :func:`adaptive_max_pool2d`: each bin's gradient goes to its arg-max;
    overlapping bins that share one add.

    Book: chapter 5 (Pooling): q000-3.2.

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "adaptive_max_pool2d_backward"
    oh, ow = _adaptive_size(op, x, output_size)
    require_grad_out(op, grad_out, (*x.shape[:2], oh, ow), like=x)
    return _adaptive_max_backward(grad_out, x)


def global_avg_pool2d(x: Array) -> Array:
    """Global average pooling (GAP): the mean of each channel's H x W plane, (N, C, 1, 1).

    Book: chapter 5 (Pooling): q001-gap.

    Adaptive average pooling with ``output_size=1``. It replaces the flatten + fully connected
    head of older networks: no parameters, and any input size works.
    """
    _adaptive_size("global_avg_pool2d", x, 1)
    return _adaptive_avg(x, 1, 1)


def global_avg_pool2d_backward(grad_out: Array, x: Array) -> Array:
    """Gradient of :func:`global_avg_pool2d`: ``grad_out / (H*W)`` at every position.

    Book: chapter 5 (Pooling): q001-gap.
    """
    op = "global_avg_pool2d_backward"
    _adaptive_size(op, x, 1)
    require_grad_out(op, grad_out, (*x.shape[:2], 1, 1), like=x)
    return _adaptive_avg_backward(grad_out, x)


def global_max_pool2d(x: Array) -> Array:
    """Global max pooling: the maximum of each channel's H x W plane, (N, C, 1, 1).

    Book: chapter 5 (Pooling): q000-3.2.

    Adaptive max pooling with ``output_size=1``.
    """
    _adaptive_size("global_max_pool2d", x, 1)
    return _adaptive_argmax(x, 1, 1)[0]


def global_max_pool2d_backward(grad_out: Array, x: Array) -> Array:
    """Gradient of :func:`global_max_pool2d`: all of it to each plane's (first) maximum.

    Book: chapter 5 (Pooling): q000-3.2.
    """
    op = "global_max_pool2d_backward"
    _adaptive_size(op, x, 1)
    require_grad_out(op, grad_out, (*x.shape[:2], 1, 1), like=x)
    return _adaptive_max_backward(grad_out, x)


# --------------------------------------------------------------------------- max unpooling


def _unpool_size(
    op: str,
    x: Array,
    indices: Array,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    output_size: Sequence[int] | None,
) -> tuple[int, int]:
    """Check the unpooling arguments; the (H_out, W_out) to unpool into."""
    require_float(x, "x", op, ndim=4)
    kernel = positive_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else positive_pair(stride, "stride", op)
    padding = nonnegative_pair(padding, "padding", op)
    default = tuple(
        (size - 1) * s + k - 2 * p
        for size, k, s, p in zip(x.shape[2:], kernel, stride, padding, strict=True)
    )
    if output_size is None:
        out = default
    else:
        sizes = tuple(output_size)[-2:] if len(output_size) == 4 else tuple(output_size)
        if len(sizes) != 2:
            raise ValueError(
                f"{op}: output_size must have 2 (H, W) or 4 (N, C, H, W) entries, "
                f"got {output_size!r}"
            )
        out = tuple(_int_arg(o, "output_size", op, 1) for o in sizes)
        # Pooling maps any of `stride` sizes around the default to the same size: allow those.
        for o, d, s in zip(out, default, stride, strict=True):
            if not d - s < o < d + s:
                raise ValueError(
                    f"{op}: output_size {out} is not one max_pool2d could have pooled to "
                    f"x shape {tuple(x.shape)}: each entry must lie strictly between "
                    f"default - stride and default + stride (default {default}, stride {stride})"
                )
    if min(out) < 1:
        raise ValueError(
            f"{op}: the output would be empty ({out}) for x shape {tuple(x.shape)}, kernel_size "
            f"{kernel}, stride {stride}, padding {padding}"
        )
    _require_indices(op, indices, x.shape, "x", x, out[0] * out[1])
    return out[0], out[1]


def max_unpool2d(
    x: Array,
    indices: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    output_size: Sequence[int] | None = None,
) -> Array:
    """Partial inverse of :func:`max_pool2d`: put each value back where its maximum came from.

    Book: chapter 8 (Up- and down-sampling): q002-9.

    Every other position is zero. The arguments are those of the pooling, whose output size
    rule is inverted: ``H_out = (H - 1) * stride - 2 * padding + kernel_size`` by default, or
    ``output_size`` to pick one of the sizes that pooled to ``H``. SegNet's decoder
    upsamples this way.

    Parameters
    ----------
    x : float array (N, C, H, W), pooled values
    indices : integer array (N, C, H, W), from ``max_pool2d(..., return_indices=True)``
        Flat ``row * W_out + col`` positions in the output plane.
    kernel_size, stride, padding : int or (int, int); ``stride=None`` means ``kernel_size``
    output_size : (H_out, W_out) or (N, C, H_out, W_out), optional

    Returns
    -------
    out : array (N, C, H_out, W_out). Where indices repeat (overlapping windows sharing a
    maximum, with equal values) one of the values is kept.
    """
    op = "max_unpool2d"
    oh, ow = _unpool_size(op, x, indices, kernel_size, stride, padding, output_size)
    xp = array_module(x)
    n, c = x.shape[:2]
    out = xp.zeros((n * c, oh * ow), dtype=x.dtype)
    out[xp.arange(n * c)[:, None], indices.reshape(n * c, -1)] = x.reshape(n * c, -1)
    return out.reshape(n, c, oh, ow)


def max_unpool2d_backward(
    grad_out: Array,
    x: Array,
    indices: Array,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    output_size: Sequence[int] | None = None,
) -> Array:
    """Gradient of :func:`max_unpool2d` with respect to ``x`` (``indices`` are not
    differentiable): each value receives the upstream gradient at the position it was put,
    ``grad_x = grad_out.flat[indices]`` per plane, as PyTorch computes it.

    Book: chapter 8 (Up- and down-sampling): q002-9.

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "max_unpool2d_backward"
    oh, ow = _unpool_size(op, x, indices, kernel_size, stride, padding, output_size)
    require_grad_out(op, grad_out, (*x.shape[:2], oh, ow), like=x)
    xp = array_module(x)
    n, c = x.shape[:2]
    grad = xp.take_along_axis(grad_out.reshape(n, c, oh * ow), indices.reshape(n, c, -1), axis=2)
    return grad.reshape(x.shape).astype(x.dtype, copy=False)
