"""Convolution: im2col/col2im, conv2d and its backward, transposed convolution, conv as a matrix.

Every convolution here is the im2col design: copy each receptive field into a column
(``im2col``), then one matrix product with the flattened weights does the whole layer.
Backward is two more matrix products, plus ``col2im`` (the adjoint of ``im2col``, which sums
the contributions of overlapping windows) for the input gradient.

This module holds the contract (validation, shapes, PyTorch's semantics), the definition
(:func:`conv2d_naive`, loops) and a readable vectorized version (:func:`conv2d_vectorized`,
the ``as_strided`` im2col of CS231n's fast layers), which the book shows. :func:`conv2d`
runs the same design through the private engine (:mod:`cnn_course.ops._engine`): a
:func:`~cnn_course.ops._engine.plan.plan` decides the path of each call (per-sample GEMMs
on cache-sized tiles, one GEMM per batch chunk, a 1x1 layer as a pure GEMM, the direct path
of a depthwise layer, GPU kernels), bounds the column memory by batch chunks
(:data:`COLUMN_BUDGET_BYTES`; :func:`conv2d_workspace_bytes` reports it) and spreads NumPy's
copies over every core. :func:`conv2d_plan` shows the plan of a call.

Shapes: input ``(N, C, H, W)``; weight ``(C_out, C/groups, kh, kw)`` (PyTorch's layout);
output ``(N, C_out, H_out, W_out)`` with ``H_out = floor((H + 2p - d(kh-1) - 1) / s) + 1``.
``conv2d`` is cross-correlation, as in every framework; ``convolve2d`` flips the kernel.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from cnn_course._checks import (
    nonnegative_pair,
    positive_pair,
    require_flag,
    require_float,
    require_grad_out,
    require_same_backend,
)
from cnn_course._types import Array, IntPair
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops._engine import conv as engine
from cnn_course.ops._engine.plan import COLUMN_BUDGET_BYTES, Plan, plan
from cnn_course.ops._engine.windows import (
    Pads,
    Window,
    add_windows,
    copy_blocks,
    crop,
    out_hw,
    pad,
    windows,
)

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_naive",
    "conv2d_vectorized",
    "conv2d_backward",
    "conv2d_matrix",
    "convolve2d",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv2d_workspace_bytes",
    "COLUMN_BUDGET_BYTES",
]


# --------------------------------------------------------------------------- output sizes


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution (or pooling window) along one spatial dimension.

    Book: chapter 9 (Counting parameters and FLOPs): q003-conv-output-formula; chapter 2
    (The convolution layer).

    ``floor((size + 2 padding - dilation (kernel_size - 1) - 1) / stride) + 1``, the formula
    PyTorch documents for ``Conv2d``. Raises ``ValueError`` when it is below 1, i.e. when the
    dilated kernel does not fit in the padded input.
    """
    extent = dilation * (kernel_size - 1) + 1
    padded = size + 2 * padding
    if stride < 1 or dilation < 1 or kernel_size < 1 or padding < 0:
        raise ValueError(
            "conv_output_size: need kernel_size, stride, dilation >= 1 and padding >= 0, got "
            f"kernel_size={kernel_size}, stride={stride}, dilation={dilation}, padding={padding}"
        )
    if extent > padded:
        raise ValueError(
            f"conv_output_size: kernel extent {extent} (kernel_size={kernel_size}, "
            f"dilation={dilation}) is larger than the padded input {padded} "
            f"(size={size}, padding={padding})"
        )
    return (padded - extent) // stride + 1


def conv_transpose_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one spatial dimension.

    Book: chapter 8 (Up- and down-sampling): q000-6.1, q004-2.

    ``(size - 1) stride - 2 padding + dilation (kernel_size - 1) + output_padding + 1``
    (PyTorch's ``ConvTranspose2d``). ``output_padding`` picks one of the ``stride`` input
    sizes that a strided convolution maps to the same ``size``, so it must be smaller than
    ``stride`` or ``dilation``.
    """
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"conv_transpose_output_size: output_padding ({output_padding}) must be smaller "
            f"than either stride ({stride}) or dilation ({dilation})"
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(
            f"conv_transpose_output_size: output size {out} < 1 (size={size}, "
            f"kernel_size={kernel_size}, stride={stride}, padding={padding}, "
            f"output_padding={output_padding}, dilation={dilation})"
        )
    return out


# --------------------------------------------------------------------------- windows


def _check_window_args(kernel_size, stride, padding, dilation, op: str):
    """Validated (kernel, stride, per-side pads, dilation) of ``im2col``/``col2im``."""
    kernel = positive_pair(kernel_size, "kernel_size", op)
    stride = positive_pair(stride, "stride", op)
    ph, pw = nonnegative_pair(padding, "padding", op)
    dilation = positive_pair(dilation, "dilation", op)
    return kernel, stride, ((ph, ph), (pw, pw)), dilation


def im2col(
    x: Array,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Array:
    """Unfold every sliding window of ``x`` into a column (``torch.nn.functional.unfold``).

    Book: chapter 3 (im2col and fast convolution): q000-4.4, q001-im2col-matrix.

    Parameters
    ----------
    x : array (N, C, H, W)
    kernel_size, stride, padding, dilation : int or (int, int)
        Zero padding on both sides of each spatial axis.

    Returns
    -------
    cols : array (N, C*kh*kw, L), L = H_out*W_out
        Row ``c*kh*kw + i*kw + j`` holds input channel ``c`` at kernel offset ``(i, j)``;
        column ``oh*W_out + ow`` is the window of output position ``(oh, ow)``.
    """
    op = "im2col"
    require_float(x, "x", op, ndim=4)
    kernel, stride, pads, dilation = _check_window_args(kernel_size, stride, padding, dilation, op)
    n, c = x.shape[:2]
    win = Window(
        kernel, stride, pads, dilation, out_hw(x.shape[2:], kernel, stride, pads, dilation, op)
    )
    view = windows(pad(x, pads), win, "abijhw", two_step=not is_cupy_array(x))
    cols = array_module(x).empty(view.shape, dtype=x.dtype)
    copy_blocks(cols, view, 2)  # one gather; never a view of x, even for a 1x1 kernel
    return cols.reshape(n, c * kernel[0] * kernel[1], win.out[0] * win.out[1])


def col2im(
    cols: Array,
    output_size: IntPair,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Array:
    """Fold columns back into an image, summing overlaps (``torch.nn.functional.fold``).

    Book: chapter 3 (im2col and fast convolution): q000-4.4; chapter 4 (Backpropagation
    through convolution): q002-37.

    The adjoint of :func:`im2col`: ``sum(im2col(x) * cols) == sum(x * col2im(cols, ...))``.

    Parameters
    ----------
    cols : array (N, C*kh*kw, L), the layout :func:`im2col` produces
    output_size : int or (int, int)
        The spatial size (H, W) of the image to rebuild.

    Returns
    -------
    x : array (N, C, H, W)
    """
    op = "col2im"
    require_float(cols, "cols", op, ndim=3)
    hw = positive_pair(output_size, "output_size", op)
    kernel, stride, pads, dilation = _check_window_args(kernel_size, stride, padding, dilation, op)
    win = Window(kernel, stride, pads, dilation, out_hw(hw, kernel, stride, pads, dilation, op))
    n, rows, length = cols.shape
    kk = kernel[0] * kernel[1]
    oh, ow = win.out
    if rows % kk or length != oh * ow:
        raise ValueError(
            f"col2im: cols shape {tuple(cols.shape)} does not match kernel {kernel} and "
            f"{oh}x{ow} = {oh * ow} windows of output_size {hw}"
        )
    xp = array_module(cols)
    c = rows // kk
    target = xp.zeros((n, c, hw[0] + sum(pads[0]), hw[1] + sum(pads[1])), dtype=cols.dtype)
    cols6 = cols.reshape(n, c, kernel[0], kernel[1], oh, ow)
    return xp.ascontiguousarray(crop(add_windows(target, cols6, win), pads, hw))


def _add_bias(out: Array, bias: Array | None) -> Array:
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


# --------------------------------------------------------------------------- validation


def _conv_pads(padding: IntPair | str, kernel, stride, dilation, op: str) -> Pads:
    """Per-side padding from an int, a pair, ``"valid"`` or ``"same"``.

    ``"same"`` pads ``dilation*(k-1)`` in total per axis; when that is odd the extra row
    (column) goes at the bottom (right), exactly as PyTorch does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{op}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}"
                )
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(
            f"{op}: padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}"
        )
    ph, pw = nonnegative_pair(padding, "padding", op)
    return (ph, ph), (pw, pw)


def _check_arrays(op: str, x: Array, weight: Array, bias: Array | None, out_channels) -> None:
    """Rank, float dtype, one backend, one dtype, bias of shape (out_channels,)."""
    require_float(x, "x", op, ndim=4)
    require_float(weight, "weight", op, ndim=4)
    require_same_backend(op, x=x, weight=weight, bias=bias)
    if weight.dtype != x.dtype:
        raise TypeError(
            f"{op}: x is {x.dtype} but weight is {weight.dtype}; use one floating dtype for both"
        )
    if bias is None:
        return
    require_float(bias, "bias", op)
    if tuple(bias.shape) != (out_channels(),) or bias.dtype != x.dtype:
        raise ValueError(
            f"{op}: bias must have shape ({out_channels()},) and dtype {x.dtype} for weight "
            f"shape {tuple(weight.shape)}, got shape {tuple(bias.shape)} and dtype {bias.dtype}"
        )


def _check_groups(op: str, groups: Any, x: Array, weight: Array, transposed: bool) -> None:
    """``groups`` divides both channel counts, and x has the channels weight expects."""
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c, shape = x.shape[1], tuple(weight.shape)
    expected = shape[0] if transposed else shape[1] * groups
    if shape[0] % groups or c % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide the input channels ({c}) and weight's first "
            f"dimension ({shape[0]}) (x shape {tuple(x.shape)}, weight shape {shape})"
        )
    if c != expected:
        raise ValueError(
            f"{op}: input has {c} channels but weight expects {expected} (weight shape {shape}"
            + (f", groups={groups})" if groups > 1 else ")")
        )


def _geometry(op: str, hw, kernel, stride, padding, dilation, groups: int = 1) -> Window:
    """The validated window of a convolution of an (H, W) input (its ``out`` is H_out, W_out)."""
    kernel = positive_pair(tuple(kernel), "kernel_size", op)
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    pads = _conv_pads(padding, kernel, stride, dilation, op)
    out = out_hw(hw, kernel, stride, pads, dilation, op)
    return Window(kernel, stride, pads, dilation, out, int(groups))


def _conv_setup(op, x, weight, bias, stride, padding, dilation, groups):
    """Validate a conv2d call; return its window."""
    _check_arrays(op, x, weight, bias, lambda: weight.shape[0])
    _check_groups(op, groups, x, weight, transposed=False)
    return _geometry(op, x.shape[2:], weight.shape[2:], stride, padding, dilation, groups)


def _transpose_setup(op, x, weight, bias, stride, padding, output_padding, groups, dilation):
    """Validate a conv_transpose2d call; return the window of the convolution it transposes
    (whose output is ``x``) and the output shape."""
    _check_arrays(op, x, weight, bias, lambda: weight.shape[1] * groups)
    _check_groups(op, groups, x, weight, transposed=True)
    kernel = tuple(weight.shape[2:])
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    ph, pw = nonnegative_pair(padding, "padding", op)
    out_pad = nonnegative_pair(output_padding, "output_padding", op)
    for o, s, d in zip(out_pad, stride, dilation, strict=True):
        if o >= max(s, d):
            raise ValueError(
                f"{op}: output_padding {tuple(out_pad)} must be smaller than either stride "
                f"{stride} or dilation {dilation}"
            )
    try:
        hw = [
            conv_transpose_output_size(size, k, s, p, o, d)
            for size, k, s, p, o, d in zip(
                x.shape[2:], kernel, stride, (ph, pw), out_pad, dilation, strict=True
            )
        ]
    except ValueError as exc:
        raise ValueError(f"{op}: input shape {tuple(x.shape)} is too small: {exc}") from None
    win = Window(kernel, stride, ((ph, ph), (pw, pw)), dilation, tuple(x.shape[2:]), int(groups))
    return win, (x.shape[0], weight.shape[1] * win.groups, *hw)


# --------------------------------------------------------------------------- conv2d


def conv2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Array:
    """2-D convolution (cross-correlation, as in every framework) over an (N, C, H, W) input.

    Book: chapter 2 (The convolution layer): q000-2.1, q000-2.2, q001-conv-vs-xcorr,
    q001-conv-vs-fc, q002-26, q002-38, q003-what-is-conv; chapter 3 (im2col and fast
    convolution): q000-4.4; chapter 7 (Convolution variants): q002-17, q003-1x1-conv,
    q004-15.

    ``out[n, f, oh, ow] = bias[f] + sum_{c, i, j} weight[f, c, i, j] *
    x_pad[n, g*C/G + c, oh*s_h + i*d_h, ow*s_w + j*d_w]`` with ``g = f // (F/G)``.

    Parameters
    ----------
    x : array (N, C, H, W), float
    weight : array (F, C/groups, kh, kw), same dtype as ``x``
    bias : array (F,) or None
    stride, dilation : int or (int, int), positive
    padding : int, (int, int), ``"valid"`` (no padding) or ``"same"`` (output size = input
        size; stride 1 only; an odd total puts the extra row/column at the bottom/right)
    groups : int
        Splits the channels into ``groups`` independent convolutions (``groups == C``:
        depthwise).

    Returns
    -------
    out : array (N, F, H_out, W_out), ``H_out = floor((H + 2p - d(kh-1) - 1)/s) + 1``,
        computed as :func:`conv2d_vectorized` computes it (im2col + GEMM), by the engine:
        the call's plan (:func:`conv2d_plan`) picks per-sample GEMMs on cache-sized tiles or
        one GEMM per batch chunk, a 1x1 layer as a pure GEMM, or a depthwise layer's direct
        path; the batch is chunked so the columns stay within :data:`COLUMN_BUDGET_BYTES`.
    """
    win = _conv_setup("conv2d", x, weight, bias, stride, padding, dilation, groups)
    how = _plan("conv2d", x, win, weight.shape[0])
    return _add_bias(engine.forward(x, weight, win, how), bias)


def conv2d_naive(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Array:
    """The definition of :func:`conv2d`, written as loops: one dot product per output value.

    Book: chapter 2 (The convolution layer): q000-2.1; chapter 3 (im2col and fast
    convolution): q000-4.4.

    This is the readable definition the fast path is tested against, not the fast path (it
    runs a Python loop over every output element). Same arguments and result as
    :func:`conv2d`.
    """
    geo = _conv_setup("conv2d", x, weight, bias, stride, padding, dilation, groups)
    (oh_, ow_) = geo.out
    xp = array_module(x, weight)
    xpad = pad(x, geo.pads)
    n, f = x.shape[0], weight.shape[0]
    c_per_group, f_per_group = weight.shape[1], f // geo.groups
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    out = xp.zeros((n, f, oh_, ow_), dtype=x.dtype)
    for b in range(n):
        for k in range(f):
            c0 = k // f_per_group * c_per_group  # first input channel of k's group
            for i in range(oh_):
                for j in range(ow_):
                    window = xpad[
                        b,
                        c0 : c0 + c_per_group,
                        i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                        j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                    ]
                    out[b, k, i, j] = xp.sum(window * weight[k])
    return _add_bias(out, bias)


def conv2d_vectorized(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Array:
    """:func:`conv2d` as im2col + one matrix product, written to be read.

    Book: chapter 3 (im2col and fast convolution): q000-4.4, q001-im2col-matrix.

    The design of the fast path in four steps (after the ``as_strided`` fast layer of
    CS231n's assignments): a strided *view* of every window, one copy that turns the view
    into columns, one GEMM per group, and a transpose back to NCHW. :func:`conv2d` runs the
    same steps in cache-sized tiles, on every core, with the copies arranged into long runs;
    this version builds the whole column matrix at once (``C*kh*kw`` times the input).
    Same arguments and result as :func:`conv2d`.
    """
    win = _conv_setup("conv2d_vectorized", x, weight, bias, stride, padding, dilation, groups)
    xp = array_module(x, weight)
    n, c = x.shape[:2]
    f, g = weight.shape[0], win.groups
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out
    # 1. pad, then view every window without copying, axes (C, kh, kw, N, H_out, W_out):
    #    window (oh, ow) at kernel offset (i, j) reads xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]
    xpad = xp.pad(x, ((0, 0), (0, 0), win.pads[0], win.pads[1]))
    s_n, s_c, s_h, s_w = xpad.strides
    view = xp.lib.stride_tricks.as_strided(
        xpad,
        shape=(c, kh, kw, n, oh, ow),
        strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw),
    )
    # 2. im2col: copy the windows into one column matrix per group, (C/G*kh*kw, N*H_out*W_out)
    cols = xp.ascontiguousarray(view).reshape(g, c // g * kh * kw, n * oh * ow)
    # 3. one GEMM per group: (F/G, C/G*kh*kw) @ (C/G*kh*kw, N*H_out*W_out)
    out = xp.matmul(weight.reshape(g, f // g, -1), cols)
    # 4. rows are filters, columns are (sample, position): back to (N, F, H_out, W_out)
    out = xp.ascontiguousarray(out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3))
    return _add_bias(out, bias)


def conv2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    input_grad: bool = True,
) -> tuple[Array | None, Array, Array]:
    """Gradients of :func:`conv2d` with respect to ``x``, ``weight`` and the bias.

    Book: chapter 4 (Backpropagation through convolution): q002-37; chapter 8 (Up- and
    down-sampling): q000-6.1.

    Parameters
    ----------
    grad_out : array (N, F, H_out, W_out)
        Upstream gradient, the shape of ``conv2d``'s output.
    x, weight, stride, padding, dilation, groups
        The forward's arguments.
    input_grad : bool, keyword only
        ``False`` skips ``grad_x`` (returned as None): a network's first layer, whose input
        is the data, needs only its parameters' gradients, and PyTorch's autograd likewise
        computes none for an input that does not require one.

    Returns
    -------
    grad_x : array (N, C, H, W), or None with ``input_grad=False``
        ``col2im(W^T @ grad_out)``: a transposed convolution of ``grad_out``.
    grad_weight : array (F, C/groups, kh, kw)
        ``grad_out @ im2col(x)^T`` summed over the batch.
    grad_bias : array (F,)
        ``grad_out`` summed over N, H_out and W_out.
    """
    op = "conv2d_backward"
    win = _conv_setup(op, x, weight, None, stride, padding, dilation, groups)
    f = weight.shape[0]
    require_grad_out(op, grad_out, (x.shape[0], f, *win.out), like=x, same_dtype=True)
    require_flag(input_grad, "input_grad", op)
    return (
        engine.input_grad(grad_out, weight, win, x.shape, _plan("conv2d_input_grad", x, win, f))
        if input_grad
        else None,
        engine.weight_grad(grad_out, x, win, weight.shape, _plan("conv2d_weight_grad", x, win, f)),
        _bias_grad(grad_out),
    )


def _bias_grad(grad_out: Array) -> Array:
    """``grad_out`` (N, F, H, W) summed over N, H and W: first over the batch (whole planes
    added, vectorised), then over each plane (NumPy's pairwise sum). Measured on 2 cores
    against one sum over the axes (0, 2, 3): LeNet's C3 at batch 64, 10 against 41 us; C1,
    34 against 56 us."""
    n, f, h, w = grad_out.shape
    return grad_out.sum(axis=0).reshape(f, h * w).sum(axis=1)


def conv2d_workspace_bytes(
    x_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    itemsize: int = 4,
) -> dict[str, int]:
    """Extra memory of the im2col columns :func:`conv2d` builds for these shapes.

    Book: chapter 3 (im2col and fast convolution): q000-4.4.

    Returns ``{"columns": bytes of the whole batch's column matrix (C*kh*kw, N*H_out*W_out),
    "peak": bytes the forward pass holds at once}``. The forward pass works on batch chunks
    within :data:`COLUMN_BUDGET_BYTES` (one sample at least) and, for per-sample GEMMs, on
    cache-sized tiles of output rows; ``peak`` counts one tile's columns (one per thread
    where the plan runs whole tiles side by side, see :func:`conv2d_plan`) plus the
    column-shifted copy of the chunk they are gathered from (see
    :func:`cnn_course.ops._engine.windows.windows`). A 1x1
    kernel with stride 1 and no padding gathers nothing when GEMMs run per sample. The
    backward pass holds about two whole-chunk column matrices (columns and their gradient).
    These are the CPU's sizes; on a GPU every layer takes the whole-chunk path, whose peak
    is the ``peak`` reported here for layers with fewer output positions than filters.
    Where the plan takes the register-blocked forward (``"blocked-numba"``), no columns are
    built: ``peak`` is one padded input sample per thread and the regrouped weights.
    """
    op = "conv2d_workspace_bytes"
    win = _geometry(op, x_shape[2:], weight_shape[2:], stride, padding, dilation)
    return engine.workspace_bytes(tuple(x_shape), win, weight_shape[0], itemsize)


def conv2d_plan(
    x_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    itemsize: int = 4,
    backend: str = "numpy",
) -> dict[str, Plan]:
    """The plans of a conv2d call and of its backward, from the shapes alone.

    Returns ``{"forward": Plan, "input_grad": Plan, "weight_grad": Plan}``: the backend,
    algorithm (``"im2col"``, ``"gemm"`` for a pointwise layer, ``"direct"`` for a depthwise
    layer, ``"direct-numba"`` for the same compiled where numba is installed and
    ``CNN_COURSE_NUMBA`` is not ``0``, ``"kernel"`` for a GPU kernel), GEMM layout, batch
    chunk, cache tile and thread count each pass runs with (see
    :mod:`cnn_course.ops._engine.plan`). ``backend`` is ``"numpy"`` or ``"cupy"``. What
    ``cnn-course bench`` reports as each layer's path.
    """
    op = "conv2d_plan"
    win = _geometry(op, x_shape[2:], weight_shape[2:], stride, padding, dilation, groups)
    shape, f, cupy = tuple(x_shape), weight_shape[0], backend == "cupy"
    return {
        "forward": plan("conv2d", shape, win, f, itemsize, cupy),
        "input_grad": plan("conv2d_input_grad", shape, win, f, itemsize, cupy),
        "weight_grad": plan("conv2d_weight_grad", shape, win, f, itemsize, cupy),
    }


def _plan(op: str, x: Array, win: Window, out_channels: int) -> Plan:
    """The plan of ``op`` on ``x`` (:func:`cnn_course.ops._engine.plan.plan`)."""
    return plan(op, tuple(x.shape), win, out_channels, x.itemsize, is_cupy_array(x))


def convolve2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Array:
    """True convolution: :func:`conv2d` with the kernel flipped in both spatial axes.

    Book: chapter 2 (The convolution layer): q001-conv-vs-xcorr, q002-38.

    ``out[n, f, oh, ow] = sum weight[f, c, kh-1-i, kw-1-j] * x_pad[n, c, oh*s + i*d, ...]``.
    Deep-learning frameworks call cross-correlation "convolution"; since the kernel is
    learned, the flip only relabels it. Same arguments and shapes as :func:`conv2d`.
    """
    xp = array_module(weight)
    require_float(weight, "weight", "convolve2d", ndim=4)
    return conv2d(x, xp.flip(weight, axis=(2, 3)), bias, stride, padding, dilation, groups)


def conv2d_matrix(
    weight: Array,
    input_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
) -> Array:
    """The dense matrix ``A`` of a convolution: ``conv2d(x)[n].ravel() == A @ x[n].ravel()``.

    Book: chapter 2 (The convolution layer): q001-conv-vs-fc; chapter 3 (im2col and fast
    convolution): q001-im2col-matrix; chapter 8 (Up- and down-sampling): q000-6.1.

    Built directly from the definition (groups=1, no bias): row ``(f, oh, ow)`` holds
    ``weight[f, c, i, j]`` in column ``(c, oh*s - p + i*d, ow*s - p + j*d)`` when that
    position is inside the input, and zeros elsewhere. A convolution is thus a fully
    connected layer with sparse, tied weights, and the transposed convolution multiplies by
    ``A.T``.

    Parameters
    ----------
    weight : array (F, C, kh, kw)
    input_size : int or (H, W)

    Returns
    -------
    A : array (F*H_out*W_out, C*H*W), dtype of ``weight``
    """
    op = "conv2d_matrix"
    require_float(weight, "weight", op, ndim=4)
    xp = array_module(weight)
    h, w = positive_pair(input_size, "input_size", op)
    f, c, kh, kw = weight.shape
    geo = _geometry(op, (h, w), (kh, kw), stride, padding, dilation)
    oh_, ow_ = geo.out
    (sh, sw), (dh, dw), pads = geo.stride, geo.dilation, geo.pads
    # index grids over (F, H_out, W_out, C, kh, kw)
    fi, oi, wi, ci, ii, ji = (
        xp.arange(size).reshape(tuple(-1 if a == axis else 1 for a in range(6)))
        for axis, size in enumerate((f, oh_, ow_, c, kh, kw))
    )
    rows_in = oi * sh - pads[0][0] + ii * dh
    cols_in = wi * sw - pads[1][0] + ji * dw
    inside = (rows_in >= 0) & (rows_in < h) & (cols_in >= 0) & (cols_in < w)
    row = (fi * oh_ + oi) * ow_ + wi
    col = (ci * h + rows_in) * w + cols_in
    shape = (f, oh_, ow_, c, kh, kw)
    inside = xp.broadcast_to(inside, shape)
    values = xp.broadcast_to(weight[:, None, None], shape)
    a = xp.zeros((f * oh_ * ow_, c * h * w), dtype=weight.dtype)
    a[xp.broadcast_to(row, shape)[inside], xp.broadcast_to(col, shape)[inside]] = values[inside]
    return a


# --------------------------------------------------------------------------- transposed


def conv_transpose2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> Array:
    """Transposed convolution ("deconvolution"): the input-gradient of :func:`conv2d`.

    Book: chapter 8 (Up- and down-sampling): q000-6.1, q001-transposed-conv, q002-9, q004-2;
    chapter 7 (Convolution variants): q001-conv-variants, q002-13.

    Each input value scatters ``value * weight[c]`` into the output, summing overlaps;
    equivalently ``out[n].ravel() == conv2d_matrix(...).T @ x[n].ravel()``.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    weight : array (C_in, C_out/groups, kh, kw), PyTorch's layout
    bias : array (C_out,) or None
    stride, padding, dilation, groups
        Those of the convolution this one transposes.
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right; must be smaller than stride or dilation.

    Returns
    -------
    out : array (N, C_out, H_out, W_out),
        ``H_out = (H-1)s - 2p + d(kh-1) + output_padding + 1`` (:func:`conv_transpose_output_size`).
    """
    win, out_shape = _transpose_setup(
        "conv_transpose2d", x, weight, bias, stride, padding, output_padding, groups, dilation
    )
    how = plan("conv2d_input_grad", out_shape, win, weight.shape[0], x.itemsize, is_cupy_array(x))
    return _add_bias(engine.input_grad(x, weight, win, out_shape, how), bias)


def conv_transpose2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    *,
    input_grad: bool = True,
) -> tuple[Array | None, Array, Array]:
    """Gradients of :func:`conv_transpose2d` with respect to ``x``, ``weight`` and the bias.

    Book: chapter 8 (Up- and down-sampling): q000-6.1.

    Parameters
    ----------
    grad_out : array (N, C_out, H_out, W_out)
    x, weight, stride, padding, output_padding, groups, dilation
        The forward's arguments.
    input_grad : bool, keyword only
        ``False`` skips ``grad_x`` (returned as None), as in :func:`conv2d_backward`.

    Returns
    -------
    grad_x : array (N, C_in, H, W), or None with ``input_grad=False``
        A plain convolution of ``grad_out`` with ``weight``.
    grad_weight : array (C_in, C_out/groups, kh, kw)
    grad_bias : array (C_out,)
    """
    op = "conv_transpose2d_backward"
    win, out_shape = _transpose_setup(
        op, x, weight, None, stride, padding, output_padding, groups, dilation
    )
    require_grad_out(op, grad_out, out_shape, like=x, same_dtype=True)
    require_flag(input_grad, "input_grad", op)
    f = weight.shape[0]
    return (
        engine.forward(grad_out, weight, win, _plan("conv2d", grad_out, win, f))
        if input_grad
        else None,
        engine.weight_grad(
            x, grad_out, win, weight.shape, _plan("conv2d_weight_grad", grad_out, win, f)
        ),
        _bias_grad(grad_out),
    )
