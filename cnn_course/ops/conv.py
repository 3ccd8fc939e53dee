"""Convolution: im2col/col2im, conv2d and its backward, transposed convolution, conv as a matrix.

Every convolution here is the im2col design: copy each receptive field into a column
(``im2col``), then one matrix product with the flattened weights does the whole layer.
Backward is two more matrix products, plus ``col2im`` (the adjoint of ``im2col``, which sums
the contributions of overlapping windows) for the input gradient.

The public ``im2col`` has PyTorch's ``unfold`` layout. Inside ``conv2d`` the same columns are
gathered in two copies with long contiguous runs (``_windows``), multiplied per sample or
for the whole batch, whichever GEMM shape BLAS runs faster (``_per_sample``), and built in
chunks: batch chunks bound the extra memory (``COLUMN_BUDGET_BYTES``), and cache-sized
tiles let each GEMM read columns that were just written (``conv2d_workspace_bytes``
reports the sizes).

A depthwise layer (``groups == C_in == C_out``, one filter per channel, as in MobileNet)
would run C one-row GEMMs over columns kh*kw times the size of its input. On a CPU its
backward, and its forward with stride 1, instead take the direct path (``_Taps``): a sum over
the kh*kw kernel offsets of shifted input planes times per-channel weights, vectorised over
N, C and the positions.

On a GPU (CuPy arrays) the same design runs with other sizes: one GEMM per batch chunk (a GPU
wants few, wide GEMMs; it has no cache for tiles to stay in), and im2col and col2im each one
elementwise kernel (:mod:`cnn_course.ops._gpu`) instead of a chain of copies and shifted adds; a
depthwise layer's forward pass and input gradient are one kernel each (``_gpu_depthwise``).

Shapes: input ``(N, C, H, W)``; weight ``(C_out, C/groups, kh, kw)`` (PyTorch's layout);
output ``(N, C_out, H_out, W_out)`` with ``H_out = floor((H + 2p - d(kh-1) - 1) / s) + 1``.
``conv2d`` is cross-correlation, as in every framework; ``convolve2d`` flips the kernel.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from cnn_course._checks import (
    nonnegative_pair,
    positive_pair,
    require_float,
    require_grad_out,
    require_same_backend,
)
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops import _gpu as gpu

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_naive",
    "conv2d_backward",
    "conv2d_matrix",
    "convolve2d",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv2d_workspace_bytes",
    "COLUMN_BUDGET_BYTES",
]

IntPair = int | Sequence[int]
Array = Any
# (top, bottom), (left, right): "same" padding can be asymmetric, so padding is kept per side.
Pads = tuple[tuple[int, int], tuple[int, int]]

#: Largest column matrix (bytes) a convolution builds at once; bigger batches are chunked.
COLUMN_BUDGET_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- output sizes


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution (or pooling window) along one spatial dimension.

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


def _out_hw(hw: Sequence[int], kernel: tuple[int, int], stride, pads: Pads, dilation, op: str):
    """(H_out, W_out) for per-side pads; the error names ``op`` and the sizes."""
    out = []
    for size, k, s, (lo, hi), d in zip(hw, kernel, stride, pads, dilation, strict=True):
        extent = d * (k - 1) + 1
        if extent > size + lo + hi:
            raise ValueError(
                f"{op}: kernel {tuple(kernel)} with dilation {tuple(dilation)} (extent {extent})"
                f" is larger than the padded input {tuple(hw)} + padding {pads}"
            )
        out.append((size + lo + hi - extent) // s + 1)
    return tuple(out)


# --------------------------------------------------------------------------- windows


def _pad(x: Array, pads: Pads, fill: float = 0.0) -> Array:
    """``x`` padded with ``fill`` on its last two axes (no copy when there is no padding).

    Written as one allocation + one slice assignment: ``xp.pad`` costs ten times more per
    call on a CPU and twice as much on a GPU, which matters for small layers.
    """
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    xp = array_module(x)
    h, w = x.shape[-2:]
    shape = (*x.shape[:-2], h + top + bottom, w + left + right)
    out = xp.full(shape, fill, dtype=x.dtype) if fill else xp.zeros(shape, dtype=x.dtype)
    out[..., top : top + h, left : left + w] = x
    return out


def _copy_blocks(dst: Array, src: Array, block_ndim: int) -> None:
    """``dst[...] = src`` for a contiguous ``dst``, moving each block of ``src``'s last
    ``block_ndim`` axes as one opaque item when those blocks are contiguous (on a CPU).

    NumPy's copy pays a fixed cost per innermost loop, and with float items its innermost
    loop is one short run (a row of W_out values in a window gather): about 5 ns per run,
    the larger part of gathering a small layer's columns. With each run one ``void`` item,
    the innermost loop runs over the runs, which halves the gather of LeNet's layers.
    """
    lead = src.shape[: src.ndim - block_ndim]
    size = src.itemsize  # bytes of a block, if it is contiguous
    for axis in range(src.ndim - 1, src.ndim - block_ndim - 1, -1):
        if src.strides[axis] != size:
            size = 0
            break
        size *= src.shape[axis]
    if not size or is_cupy_array(src):
        dst[...] = src
        return
    item = _void(array_module(src), size)
    # reshape merges only the block axes, which are contiguous: a view, never a copy
    dst.reshape(*lead, -1).view(item)[...] = src.reshape(*lead, -1).view(item)


@functools.cache
def _void(xp: Any, size: int) -> Any:
    """The opaque dtype of ``size`` bytes (made once: a dtype costs a microsecond)."""
    return xp.dtype((xp.void, size))


def _windows(xpad: Array, kernel, stride, dilation, out_hw, order: str) -> Array:
    """Every window of the padded ``xpad`` (A, B, Hp, Wp), as a strided view.

    The view has axes (A, B, kh, kw, H_out, W_out) permuted by ``order``, a string over
    ``"abijhw"`` (``"abijhw"`` is unfold's layout; ``"bijahw"`` puts the batch axis after
    the kernel axes). It is built in two steps so that copying it moves long contiguous
    runs: first the ``kw`` column shifts are copied into a (A, B, kw, Hp, W_out) array
    (``kw`` times the input: cheap), and the windows are a view of that array in which, for
    a row stride of 1, each (H_out, W_out) block is one contiguous run. A one-step view of
    ``xpad`` has runs of only W_out values, which copy several times slower when W_out is
    small. On a GPU, where one kernel copies any strides at about the same speed, the view
    is one-step: the first copy would only add a kernel and its memory traffic.
    """
    xp = array_module(xpad)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    a, b, hp, _ = xpad.shape
    s_a, s_b, s_h, s_w = xpad.strides
    if is_cupy_array(xpad):
        source, (t_a, t_b, t_j, t_h, t_w) = xpad, (s_a, s_b, s_w * dw, s_h, s_w * sw)
    else:
        source = xp.empty((a, b, kw, hp, ow), dtype=xpad.dtype)
        shifts = _strided(xpad, source.shape, (s_a, s_b, s_w * dw, s_h, s_w * sw))
        _copy_blocks(source, shifts, 1)
        t_a, t_b, t_j, t_h, t_w = source.strides
    axes = {
        "a": (a, t_a),
        "b": (b, t_b),
        "i": (kh, t_h * dh),
        "j": (kw, t_j),
        "h": (oh, t_h * sh),
        "w": (ow, t_w),
    }
    shape, strides = zip(*(axes[k] for k in order), strict=True)
    return _strided(source, shape, strides)


def _strided(a: Array, shape, strides) -> Array:
    """A view of ``a``'s memory with these shape and strides (bytes). Over a contiguous
    NumPy array it is made directly, at a quarter of ``as_strided``'s cost per call (which
    small layers notice); otherwise by ``as_strided``."""
    xp = array_module(a)
    if not is_cupy_array(a) and a.flags.c_contiguous:
        return xp.ndarray(shape, a.dtype, buffer=a, strides=strides)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def _add_windows(target: Array, cols: Array, kernel, stride, dilation, out_hw) -> Array:
    """Adjoint of :func:`_windows` in ``"abijhw"`` order: add each window back in place.

    ``target`` is the zero-initialised padded (A, B, Hp, Wp) array, ``cols`` is (A, B, kh,
    kw, H_out, W_out). The two steps of :func:`_windows` in reverse: ``kh`` vectorised adds
    of row-shifted blocks into a (A, B, kw, Hp, W_out) array, then ``kw`` adds of
    column-shifted blocks into ``target``, so overlapping windows accumulate without a
    scatter-add.
    """
    xp = array_module(target, cols)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    a, b, hp, _ = target.shape
    shifted = xp.zeros((a, b, kw, hp, ow), dtype=target.dtype)
    for i in range(kh):
        shifted[:, :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh] += cols[:, :, i]
    for j in range(kw):
        target[:, :, :, j * dw : j * dw + sw * (ow - 1) + 1 : sw] += shifted[:, :, j]
    return target


def _crop(xpad: Array, pads: Pads, hw: Sequence[int]) -> Array:
    """Remove the padding added by :func:`_pad` (a view)."""
    (top, _), (left, _) = pads
    return xpad[..., top : top + hw[0], left : left + hw[1]]


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
    out_hw = _out_hw(x.shape[2:], kernel, stride, pads, dilation, op)
    view = _windows(_pad(x, pads), kernel, stride, dilation, out_hw, "abijhw")
    cols = array_module(x).empty(view.shape, dtype=x.dtype)
    _copy_blocks(cols, view, 2)  # one gather; never a view of x, even for a 1x1 kernel
    return cols.reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def col2im(
    cols: Array,
    output_size: IntPair,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Array:
    """Fold columns back into an image, summing overlaps (``torch.nn.functional.fold``).

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
    out_hw = _out_hw(hw, kernel, stride, pads, dilation, op)
    n, rows, length = cols.shape
    kk = kernel[0] * kernel[1]
    if rows % kk or length != out_hw[0] * out_hw[1]:
        raise ValueError(
            f"col2im: cols shape {tuple(cols.shape)} does not match kernel {kernel} and "
            f"{out_hw[0]}x{out_hw[1]} = {out_hw[0] * out_hw[1]} windows of output_size {hw}"
        )
    xp = array_module(cols)
    c = rows // kk
    target = xp.zeros((n, c, hw[0] + sum(pads[0]), hw[1] + sum(pads[1])), dtype=cols.dtype)
    cols6 = cols.reshape(n, c, kernel[0], kernel[1], *out_hw)
    return xp.ascontiguousarray(
        _crop(_add_windows(target, cols6, kernel, stride, dilation, out_hw), pads, hw)
    )


# --------------------------------------------------------------------------- the GEMM core


class _Geometry(NamedTuple):
    """Everything about a convolution but its arrays; padding is per side."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    groups: int


# Per-sample GEMMs take their columns in tiles (whole samples, or a few output rows of one
# sample) of at most this size, so each tile is multiplied while it is still in cache.
_CACHE_CHUNK_BYTES = 2 * 2**20


def _per_sample(positions: int, out_channels: int, x: Array) -> bool:
    """Whether to run one GEMM per sample, (F, C*kh*kw) @ (C*kh*kw, L), rather than one per
    chunk, (F, C*kh*kw) @ (C*kh*kw, nb*L).

    On a CPU, BLAS is slow when a matrix side is narrow. Per sample, the narrow side is
    min(F, L); so when L >= F batching would not widen it, and per-sample GEMMs write NCHW
    directly (no output transpose) from cache-sized tiles. When L < F (late, small feature
    maps), one GEMM over the batch widens the narrow side N-fold.

    On a GPU (``x`` a CuPy array) always one GEMM per chunk: every tile would cost kernel
    launches, and a GPU has no cache of the tiles' size to keep them in.
    """
    return positions >= out_channels and not is_cupy_array(x)


def _batch_chunks(n: int, bytes_per_sample: int, cache_sized: bool = False) -> list[slice]:
    """Batch slices whose column matrices stay within :data:`COLUMN_BUDGET_BYTES` (and
    within :data:`_CACHE_CHUNK_BYTES` if ``cache_sized``), one sample at least."""
    budget = min(COLUMN_BUDGET_BYTES, _CACHE_CHUNK_BYTES) if cache_sized else COLUMN_BUDGET_BYTES
    step = max(1, budget // max(bytes_per_sample, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _column_bytes(x_shape: Sequence[int], geo: _Geometry, out_hw, itemsize: int) -> int:
    """Bytes of the column matrix of one sample."""
    return x_shape[1] * geo.kernel[0] * geo.kernel[1] * out_hw[0] * out_hw[1] * itemsize


def _batch_columns(x: Array, geo: _Geometry, out_hw) -> Array:
    """The windows of ``x`` (nb, C, H, W) as one matrix per group, (G, C/G*kh*kw, nb*L),
    gathered with one contiguous copy (batch after the kernel axes)."""
    xp = array_module(x)
    rows = x.shape[1] // geo.groups * geo.kernel[0] * geo.kernel[1]
    if is_cupy_array(x):
        cols = xp.empty((geo.groups, rows, x.shape[0] * out_hw[0] * out_hw[1]), dtype=x.dtype)
        gpu.run("im2col", (x,), _gpu_geometry(x.shape, geo, out_hw), cols)
        return cols
    view = _windows(_pad(x, geo.pads), geo.kernel, geo.stride, geo.dilation, out_hw, "bijahw")
    cols = xp.empty(view.shape, dtype=x.dtype)
    _copy_blocks(cols, view, 2)
    return cols.reshape(geo.groups, rows, -1)


def _gpu_depthwise(a: Array, weight: Array, geo: _Geometry, hw, direction: str) -> Array:
    """A depthwise layer's forward pass (``a`` = x (N, C, H, W), ``hw`` the output size) or
    input gradient (``a`` = grad_out (N, C, H_out, W_out), ``hw`` the input size) on a GPU,
    with ``weight`` (C, 1, kh, kw). Average pooling is the same with a constant weight."""
    xp = array_module(a, weight)
    n, c = a.shape[:2]
    x_hw, out_hw = (a.shape[2:], hw) if direction == "forward" else (hw, a.shape[2:])
    out = xp.empty((n, c, *hw), dtype=a.dtype)
    gpu.run(f"depthwise_{direction}", (a, weight), _gpu_geometry((n, c, *x_hw), geo, out_hw), out)
    return out


def _gpu_geometry(x_shape: Sequence[int], geo: _Geometry, out_hw) -> tuple[int, ...]:
    """The geometry arguments of the GPU kernels (:data:`cnn_course.ops._gpu.GEOMETRY`)."""
    return gpu.geometry(x_shape, geo.kernel, geo.stride, geo.pads, geo.dilation, out_hw)


def _grad_matrix(grad_out: Array, groups: int) -> Array:
    """(nb, F, OH, OW) -> (G, F/G, nb*OH*OW), the batch-last layout of the columns."""
    xp = array_module(grad_out)
    f = grad_out.shape[1]
    return xp.ascontiguousarray(grad_out.transpose(1, 0, 2, 3)).reshape(groups, f // groups, -1)


def _pointwise(geo: _Geometry) -> bool:
    """A 1x1 kernel with stride 1 and no padding: each sample's input *is* its columns."""
    return geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(sum(geo.pads, ()))


def _tiles(nb: int, oh: int, bytes_per_sample: int) -> list[tuple[slice, slice]]:
    """(samples, output rows) tiles whose columns take at most :data:`_CACHE_CHUNK_BYTES`.

    A large layer's per-sample column matrix (7 MB for 64 channels at 56x56) does not stay in
    cache between the gather and the GEMM; tiles of a few output rows do. Small layers
    group whole samples instead.
    """
    if bytes_per_sample > _CACHE_CHUNK_BYTES:
        rows = max(1, _CACHE_CHUNK_BYTES * oh // bytes_per_sample)
        return [
            (slice(b, b + 1), slice(r, min(r + rows, oh)))
            for b in range(nb)
            for r in range(0, oh, rows)
        ]
    step = _CACHE_CHUNK_BYTES // max(bytes_per_sample, 1)
    return [(slice(b, min(b + step, nb)), slice(0, oh)) for b in range(0, nb, step)]


def _column_tiles(x: Array, geo: _Geometry, out_hw) -> Iterator[tuple[slice, slice, Array]]:
    """The columns of ``x`` for per-sample GEMMs, one cache-sized tile at a time.

    Yields ``(samples, rows, cols)``: a slice of the batch, a slice of the output rows, and
    their columns (nb, G, C/G*kh*kw, rows*W_out). Every tile is gathered into the same
    buffer (the first tile is the largest), so a tile is valid until the next one is yielded:
    fresh memory for each tile would cost page faults, a third of the GEMM's time on large
    layers. A pointwise kernel yields views of ``x`` itself, with no copy.
    """
    xp = array_module(x)
    rows_per_group = x.shape[1] // geo.groups * geo.kernel[0] * geo.kernel[1]
    bytes_per_sample = _column_bytes(x.shape, geo, out_hw, x.itemsize)
    for chunk in _batch_chunks(x.shape[0], bytes_per_sample):
        xpad = _pad(x[chunk], geo.pads)
        view = _windows(xpad, geo.kernel, geo.stride, geo.dilation, out_hw, "abijhw")
        if _pointwise(geo):
            yield (
                chunk,
                slice(0, out_hw[0]),
                view.reshape(len(xpad), geo.groups, rows_per_group, -1),
            )
            continue
        tiles = _tiles(len(xpad), out_hw[0], bytes_per_sample)
        buffer = xp.empty(view[tiles[0][0], :, :, :, tiles[0][1]].size, dtype=x.dtype)
        for samples, rows in tiles:  # (nb, C, kh, kw, rows, OW) -> (nb, G, C/G*kh*kw, rows*OW)
            part = view[samples, :, :, :, rows]
            cols = buffer[: part.size].reshape(part.shape)
            _copy_blocks(cols, part, 2)
            batch = slice(chunk.start + samples.start, chunk.start + samples.stop)
            yield batch, rows, cols.reshape(len(part), geo.groups, rows_per_group, -1)


def _forward(x: Array, weight: Array, geo: _Geometry, out_hw) -> Array:
    """Cross-correlation without bias: (N, C, H, W) -> (N, F, *out_hw), by im2col + GEMM
    (depthwise layers on a CPU with stride 1: directly; with a larger stride, splitting the
    stride phases costs as much as the im2col gather saves; on a GPU: one kernel)."""
    if _depthwise(geo, x.shape[1], weight.shape[0]):
        if is_cupy_array(x):
            return _gpu_depthwise(x, weight, geo, out_hw, "forward")
        if geo.stride == (1, 1):
            return _depthwise_forward(x, weight, geo, out_hw)
    xp = array_module(x, weight)
    n, f, g = x.shape[0], weight.shape[0], geo.groups
    w3 = weight.reshape(g, f // g, -1)
    out = xp.empty((n, f, *out_hw), dtype=x.dtype)
    if _per_sample(out_hw[0] * out_hw[1], f, x):
        for samples, rows, cols in _column_tiles(x, geo, out_hw):
            target = out[samples, :, rows].reshape(len(cols), g, f // g, -1)
            xp.matmul(w3, cols, out=target)  # writes NCHW in place
        return out
    for chunk in _batch_chunks(n, _column_bytes(x.shape, geo, out_hw, x.itemsize)):
        res = xp.matmul(w3, _batch_columns(x[chunk], geo, out_hw))
        out[chunk] = res.reshape(f, -1, *out_hw).transpose(1, 0, 2, 3)
    return out


def _weight_grad(grad_out: Array, x: Array, geo: _Geometry, weight_shape) -> Array:
    """d(sum(grad_out * conv(x, w)))/dw: grad_out (N, F, OH, OW), x (N, C, H, W)."""
    if _depthwise(geo, x.shape[1], weight_shape[0]) and not is_cupy_array(x):
        return _depthwise_weight_grad(grad_out, x, geo, weight_shape)
    xp = array_module(grad_out, x)
    f, g, out_hw = weight_shape[0], geo.groups, grad_out.shape[2:]
    grad_w = xp.zeros((g, f // g, math.prod(weight_shape[1:])), dtype=x.dtype)
    if _per_sample(out_hw[0] * out_hw[1], f, x):  # sum over samples of grad_out[n] @ cols[n]^T
        for samples, rows, cols in _column_tiles(x, geo, out_hw):
            part = grad_out[samples, :, rows].reshape(len(cols), g, f // g, -1)
            grad_w += xp.matmul(part, cols.transpose(0, 1, 3, 2)).sum(axis=0)
        return grad_w.reshape(weight_shape)
    for chunk in _batch_chunks(x.shape[0], _column_bytes(x.shape, geo, out_hw, x.itemsize)):
        cols = _batch_columns(x[chunk], geo, out_hw)
        grad_w += xp.matmul(_grad_matrix(grad_out[chunk], g), cols.transpose(0, 2, 1))
    return grad_w.reshape(weight_shape)


def _input_grad(grad_out: Array, weight: Array, geo: _Geometry, x_shape) -> Array:
    """d(sum(grad_out * conv(x, w)))/dx: GEMM with the transposed weights, then col2im."""
    if _depthwise(geo, x_shape[1], weight.shape[0]):
        if is_cupy_array(grad_out):
            return _gpu_depthwise(grad_out, weight, geo, x_shape[2:], "input_grad")
        return _depthwise_input_grad(grad_out, weight, geo, x_shape)
    xp = array_module(grad_out, weight)
    n, c, h, w = x_shape
    (kh, kw), g, f = geo.kernel, geo.groups, weight.shape[0]
    out_hw = tuple(grad_out.shape[2:])
    positions = out_hw[0] * out_hw[1]
    w_t = weight.reshape(g, f // g, -1).transpose(0, 2, 1)
    grad_x = xp.empty(x_shape, dtype=grad_out.dtype)
    padded_hw = _padded_hw((h, w), geo)
    batch_last = not _per_sample(positions, f, grad_out)
    per_sample_bytes = _column_bytes(x_shape, geo, out_hw, grad_out.itemsize)
    for chunk in _batch_chunks(n, per_sample_bytes, not batch_last):
        part = grad_out[chunk]
        nb = part.shape[0]
        if not batch_last and _pointwise(geo):  # the column gradient is the input gradient
            out = grad_x[chunk].reshape(nb, g, c // g, positions)
            xp.matmul(w_t, part.reshape(nb, g, f // g, positions), out=out)
            continue
        if batch_last and is_cupy_array(part):
            dcols = xp.matmul(w_t, _grad_matrix(part, g))
            gpu.run("col2im", (dcols,), _gpu_geometry((nb, c, h, w), geo, out_hw), grad_x[chunk])
            continue
        if batch_last:  # columns (C, kh, kw, nb, OH, OW) fold into (C, nb, Hp, Wp)
            dcols = xp.matmul(w_t, _grad_matrix(part, g))
            dcols = dcols.reshape(c, kh, kw, nb, *out_hw).transpose(0, 3, 1, 2, 4, 5)
            target = xp.zeros((c, nb, *padded_hw), dtype=grad_out.dtype)
        else:  # columns (nb, C, kh, kw, OH, OW) fold into (nb, C, Hp, Wp)
            dcols = xp.matmul(w_t, part.reshape(nb, g, f // g, positions))
            dcols = dcols.reshape(nb, c, kh, kw, *out_hw)
            target = xp.zeros((nb, c, *padded_hw), dtype=grad_out.dtype)
        _add_windows(target, dcols, geo.kernel, geo.stride, geo.dilation, out_hw)
        folded = _crop(target, geo.pads, (h, w))
        grad_x[chunk] = folded.transpose(1, 0, 2, 3) if batch_last else folded
    return grad_x


# --------------------------------------------------------------------------- depthwise

# Planes per step of the depthwise loops: the accumulator of this many output bytes stays in
# cache across the kh*kw taps (measured fastest near 256 KiB on a 2 MiB L2).
_DEPTHWISE_CHUNK_BYTES = 256 * 2**10


def _depthwise(geo: _Geometry, in_channels: int, out_channels: int) -> bool:
    """One filter per input channel (``groups == C_in == C_out``): the direct path applies."""
    return geo.groups > 1 and geo.groups == in_channels == out_channels


class _Taps:
    """Where each kernel offset (i, j) of a depthwise convolution reads its padded planes
    (N*C, Hp, Wp), as one contiguous run per plane.

    The planes are split into their ``sh*sw`` stride phases (rows ``r % sh``, columns
    ``c % sw``; no copy for stride 1), each (Hq, Wq), and flattened. Offset (i, j) then reads
    phase ``(i*dh % sh, j*dw % sw)`` from row ``i*dh // sh``, column ``j*dw // sw`` on, with
    stride 1: one run of ``L = (H_out - 1) * Wq + W_out`` values. Output position
    ``(oh, ow)`` is grid position ``oh * Wq + ow``; the ``Wq - W_out`` others of each row are
    discarded. Long contiguous runs vectorise well even on 7x7 maps, where 2-D strided slices
    would run 7 values at a time.
    """

    def __init__(self, geo: _Geometry, padded_hw, out_hw) -> None:
        self.geo, self.out_hw = geo, tuple(out_hw)
        (sh, sw), (hp, wp) = geo.stride, padded_hw
        self.phase_hw = (-(-hp // sh), -(-wp // sw))
        self.length = (out_hw[0] - 1) * self.phase_hw[1] + out_hw[1]

    def planes(self, a: Array) -> Array:
        """Padded (N, C, Hp, Wp) -> (N*C, sh*sw*Hq*Wq), stride phases one after another."""
        xp = array_module(a)
        (sh, sw), (hq, wq) = self.geo.stride, self.phase_hw
        n, c, hp, wp = a.shape
        if (sh, sw) == (1, 1):
            return a.reshape(n * c, hp * wp)
        full = xp.zeros((n * c, hq * sh, wq * sw), dtype=a.dtype)
        full[:, :hp, :wp] = a.reshape(n * c, hp, wp)
        phases = full.reshape(n * c, hq, sh, wq, sw).transpose(0, 2, 4, 1, 3)
        return xp.ascontiguousarray(phases).reshape(n * c, -1)

    def unplanes(self, planes: Array, n: int) -> Array:
        """Inverse of :meth:`planes`: (N, C, Hq*sh, Wq*sw), the padded planes and beyond."""
        (sh, sw), (hq, wq) = self.geo.stride, self.phase_hw
        phases = planes.reshape(len(planes), sh, sw, hq, wq).transpose(0, 3, 1, 4, 2)
        return phases.reshape(n, -1, hq * sh, wq * sw)

    def at(self, planes: Array, i: int, j: int) -> Array:
        """(N*C, L): the values offset (i, j) meets at every grid position."""
        (sh, sw), (dh, dw), (hq, wq) = self.geo.stride, self.geo.dilation, self.phase_hw
        phase = (i * dh % sh) * sw + j * dw % sw
        start = phase * hq * wq + (i * dh // sh) * wq + j * dw // sw
        return planes[:, start : start + self.length]

    def offsets(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.geo.kernel[0]) for j in range(self.geo.kernel[1])]

    def to_grid(self, a: Array) -> Array:
        """(N, C, H_out, W_out) -> (N*C, L), discarded grid positions zero."""
        xp = array_module(a)
        (oh, ow), wq = self.out_hw, self.phase_hw[1]
        wide = xp.zeros((a.shape[0] * a.shape[1], oh, wq), dtype=a.dtype)
        wide[:, :, :ow] = a.reshape(-1, oh, ow)
        return wide.reshape(len(wide), -1)[:, : self.length]

    def from_grid(self, g: Array, n: int) -> Array:
        """(N*C, L) -> (N, C, H_out, W_out)."""
        xp = array_module(g)
        (oh, ow), wq = self.out_hw, self.phase_hw[1]
        wide = xp.empty((len(g), oh * wq), dtype=g.dtype)
        wide[:, : self.length] = g
        return xp.ascontiguousarray(wide.reshape(n, -1, oh, wq)[..., :ow])

    def parts(self, planes: int, itemsize: int) -> list[slice]:
        """Plane slices whose grid takes about :data:`_DEPTHWISE_CHUNK_BYTES`."""
        step = max(1, _DEPTHWISE_CHUNK_BYTES // (self.length * itemsize))
        return [slice(a, min(a + step, planes)) for a in range(0, planes, step)]


def _padded_hw(hw: Sequence[int], geo: _Geometry) -> tuple[int, int]:
    return hw[0] + sum(geo.pads[0]), hw[1] + sum(geo.pads[1])


def _plane_kernels(weight: Array, n: int) -> Array:
    """(C, 1, kh, kw) -> (N*C, kh, kw): plane ``b*C + c`` uses channel c's kernel."""
    xp = array_module(weight)
    c, _, kh, kw = weight.shape
    return xp.broadcast_to(weight[:, 0], (n, c, kh, kw)).reshape(n * c, kh, kw)


def _depthwise_forward(x: Array, weight: Array, geo: _Geometry, out_hw) -> Array:
    """Depthwise cross-correlation without im2col: the sum over the kh*kw kernel offsets of
    the values each offset meets times that plane's weight at the offset, a cache-sized group
    of planes at a time. No columns: kh*kw times less memory traffic than per-channel GEMMs
    of one row each."""
    xp = array_module(x, weight)
    taps = _Taps(geo, _padded_hw(x.shape[2:], geo), out_hw)
    planes = taps.planes(_pad(x, geo.pads))
    kernels = _plane_kernels(weight, x.shape[0])
    parts = taps.parts(len(planes), x.itemsize)
    out = xp.empty((len(planes), taps.length), dtype=x.dtype)
    term = xp.empty((parts[0].stop, taps.length), dtype=x.dtype)
    for part in parts:
        acc, tmp = out[part], term[: part.stop - part.start]
        for k, (i, j) in enumerate(taps.offsets()):
            w = kernels[part, i, j, None]
            xp.multiply(taps.at(planes, i, j)[part], w, out=tmp if k else acc)
            if k:
                acc += tmp
    return taps.from_grid(out, x.shape[0])


def _depthwise_weight_grad(grad_out: Array, x: Array, geo: _Geometry, weight_shape) -> Array:
    """Depthwise weight gradient: per plane and kernel offset, the dot product of ``grad_out``
    with the values that offset met (``einsum`` fuses the multiply and the sum); then summed
    over the batch."""
    xp = array_module(grad_out, x)
    taps = _Taps(geo, _padded_hw(x.shape[2:], geo), grad_out.shape[2:])
    planes = taps.planes(_pad(x, geo.pads))
    grads = taps.to_grid(grad_out)
    per_plane = xp.empty((len(planes), *geo.kernel), dtype=x.dtype)
    for i, j in taps.offsets():
        per_plane[:, i, j] = xp.einsum("pl,pl->p", grads, taps.at(planes, i, j))
    return per_plane.reshape(x.shape[0], *weight_shape).sum(axis=0)


def _depthwise_input_grad(grad_out: Array, weight: Array, geo: _Geometry, x_shape) -> Array:
    """Depthwise input gradient: each offset's weighted ``grad_out`` added back onto the
    values it came from (overlapping windows accumulate), then the padding cropped."""
    xp = array_module(grad_out, weight)
    n, c, *hw = x_shape
    taps = _Taps(geo, _padded_hw(hw, geo), grad_out.shape[2:])
    planes = xp.zeros(
        (n * c, geo.stride[0] * geo.stride[1] * math.prod(taps.phase_hw)), dtype=grad_out.dtype
    )
    grads = taps.to_grid(grad_out)
    kernels = _plane_kernels(weight, n)
    parts = taps.parts(len(planes), grad_out.itemsize)
    term = xp.empty((parts[0].stop, taps.length), dtype=grad_out.dtype)
    for part in parts:
        tmp = term[: part.stop - part.start]
        for i, j in taps.offsets():
            xp.multiply(grads[part], kernels[part, i, j, None], out=tmp)
            taps.at(planes, i, j)[part] += tmp
    return xp.ascontiguousarray(_crop(taps.unplanes(planes, n), geo.pads, hw))


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


def _geometry(op: str, hw, kernel, stride, padding, dilation, groups: int = 1):
    """The validated geometry of a convolution of an (H, W) input and its (H_out, W_out)."""
    kernel = positive_pair(tuple(kernel), "kernel_size", op)
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    pads = _conv_pads(padding, kernel, stride, dilation, op)
    geo = _Geometry(kernel, stride, pads, dilation, int(groups))
    return geo, _out_hw(hw, kernel, stride, pads, dilation, op)


def _conv_setup(op, x, weight, bias, stride, padding, dilation, groups):
    """Validate a conv2d call; return its geometry and output (H_out, W_out)."""
    _check_arrays(op, x, weight, bias, lambda: weight.shape[0])
    _check_groups(op, groups, x, weight, transposed=False)
    return _geometry(op, x.shape[2:], weight.shape[2:], stride, padding, dilation, groups)


def _transpose_setup(op, x, weight, bias, stride, padding, output_padding, groups, dilation):
    """Validate a conv_transpose2d call; return its geometry and output shape."""
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
    geo = _Geometry(kernel, stride, ((ph, ph), (pw, pw)), dilation, int(groups))
    try:
        hw = [
            conv_transpose_output_size(size, k, s, p, o, d)
            for size, k, s, p, o, d in zip(
                x.shape[2:], kernel, stride, (ph, pw), out_pad, dilation, strict=True
            )
        ]
    except ValueError as exc:
        raise ValueError(f"{op}: input shape {tuple(x.shape)} is too small: {exc}") from None
    return geo, (x.shape[0], weight.shape[1] * geo.groups, *hw)


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
        computed as im2col + one GEMM (per sample, or per batch for small outputs), with the
        batch chunked so the column matrix stays within :data:`COLUMN_BUDGET_BYTES`.
    """
    geo, out_hw = _conv_setup("conv2d", x, weight, bias, stride, padding, dilation, groups)
    return _add_bias(_forward(x, weight, geo, out_hw), bias)


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

    This is the readable definition the fast path is tested against, not the fast path (it
    runs a Python loop over every output element). Same arguments and result as
    :func:`conv2d`.
    """
    geo, (oh_, ow_) = _conv_setup("conv2d", x, weight, bias, stride, padding, dilation, groups)
    xp = array_module(x, weight)
    xpad = _pad(x, geo.pads)
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


def conv2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`conv2d` with respect to ``x``, ``weight`` and the bias.

    Parameters
    ----------
    grad_out : array (N, F, H_out, W_out)
        Upstream gradient, the shape of ``conv2d``'s output.
    x, weight, stride, padding, dilation, groups
        The forward's arguments.

    Returns
    -------
    grad_x : array (N, C, H, W)
        ``col2im(W^T @ grad_out)``: a transposed convolution of ``grad_out``.
    grad_weight : array (F, C/groups, kh, kw)
        ``grad_out @ im2col(x)^T`` summed over the batch.
    grad_bias : array (F,)
        ``grad_out`` summed over N, H_out and W_out.
    """
    op = "conv2d_backward"
    geo, out_hw = _conv_setup(op, x, weight, None, stride, padding, dilation, groups)
    require_grad_out(op, grad_out, (x.shape[0], weight.shape[0], *out_hw), like=x, same_dtype=True)
    return (
        _input_grad(grad_out, weight, geo, x.shape),
        _weight_grad(grad_out, x, geo, weight.shape),
        grad_out.sum(axis=(0, 2, 3)),
    )


def conv2d_workspace_bytes(
    x_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    itemsize: int = 4,
) -> dict[str, int]:
    """Extra memory of the im2col columns :func:`conv2d` builds for these shapes.

    Returns ``{"columns": bytes of the whole batch's column matrix (C*kh*kw, N*H_out*W_out),
    "peak": bytes the forward pass holds at once}``. The forward pass works on batch chunks
    within :data:`COLUMN_BUDGET_BYTES` (one sample at least) and, for per-sample GEMMs, on
    cache-sized tiles of output rows; ``peak`` counts one tile's columns plus the
    column-shifted copy of the chunk they are gathered from (see ``_windows``). A 1x1
    kernel with stride 1 and no padding gathers nothing when GEMMs run per sample. The
    backward pass holds about two whole-chunk column matrices (columns and their gradient).
    These are the CPU's sizes; on a GPU every layer takes the whole-chunk path, whose peak
    is the ``peak`` reported here for layers with fewer output positions than filters.
    """
    op = "conv2d_workspace_bytes"
    geo, out_hw = _geometry(op, x_shape[2:], weight_shape[2:], stride, padding, dilation)
    (kernel, pads), (n, c, h, _) = (geo.kernel, geo.pads), x_shape
    per_sample = _column_bytes(x_shape, geo, out_hw, itemsize)
    by_sample = out_hw[0] * out_hw[1] >= weight_shape[0]  # as _per_sample on the CPU
    chunk = _batch_chunks(n, per_sample)[0]
    samples = chunk.stop - chunk.start
    shifted = c * kernel[1] * (h + sum(pads[0])) * out_hw[1] * itemsize
    if not by_sample:
        return {"columns": per_sample * n, "peak": (per_sample + shifted) * samples}
    if _pointwise(geo):
        return {"columns": per_sample * n, "peak": 0}
    tile_samples, tile_rows = _tiles(samples, out_hw[0], per_sample)[0]
    tile = per_sample * (tile_samples.stop - tile_samples.start)
    tile = tile * (tile_rows.stop - tile_rows.start) // out_hw[0]
    return {"columns": per_sample * n, "peak": tile + shifted * samples}


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
    geo, (oh_, ow_) = _geometry(op, (h, w), (kh, kw), stride, padding, dilation)
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
    geo, out_shape = _transpose_setup(
        "conv_transpose2d", x, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return _add_bias(_input_grad(x, weight, geo, out_shape), bias)


def conv_transpose2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`conv_transpose2d` with respect to ``x``, ``weight`` and the bias.

    Parameters
    ----------
    grad_out : array (N, C_out, H_out, W_out)
    x, weight, stride, padding, output_padding, groups, dilation
        The forward's arguments.

    Returns
    -------
    grad_x : array (N, C_in, H, W)
        A plain convolution of ``grad_out`` with ``weight``.
    grad_weight : array (C_in, C_out/groups, kh, kw)
    grad_bias : array (C_out,)
    """
    op = "conv_transpose2d_backward"
    geo, out_shape = _transpose_setup(
        op, x, weight, None, stride, padding, output_padding, groups, dilation
    )
    require_grad_out(op, grad_out, out_shape, like=x, same_dtype=True)
    return (
        _forward(grad_out, weight, geo, x.shape[2:]),
        _weight_grad(x, grad_out, geo, weight.shape),
        grad_out.sum(axis=(0, 2, 3)),
    )
