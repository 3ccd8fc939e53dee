"""One window geometry for convolution and pooling, and the copies that gather windows.

:class:`Window` describes a sliding window over an (H, W) plane: kernel, stride, per-side
padding (``"same"`` padding and a ceil-mode last pooling window are asymmetric), dilation,
the output size and, for a convolution, the groups. :func:`windows` makes every window a
strided view, :func:`add_windows` is its adjoint, and :func:`copy` moves a view into a
contiguous array on every core (:mod:`.threads`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnn_course._types import Array
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops._engine import threads

Pair = tuple[int, int]
# (top, bottom), (left, right)
Pads = tuple[Pair, Pair]


@dataclass(frozen=True)
class Window:
    """Validated geometry of a sliding-window operation; every field an (h, w) pair."""

    kernel: Pair
    stride: Pair
    pads: Pads
    dilation: Pair
    out: Pair
    groups: int = 1

    @property
    def padding(self) -> Pair:
        """The leading (top, left) padding: the ``padding`` argument of the operation."""
        return self.pads[0][0], self.pads[1][0]

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel with stride 1 and no padding: the input *is* its columns."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and not any(sum(self.pads, ()))

    @property
    def apart(self) -> bool:
        """No two windows overlap (stride at least the dilated kernel extent)."""
        return all(
            s >= d * (k - 1) + 1
            for k, s, d in zip(self.kernel, self.stride, self.dilation, strict=True)
        )

    def padded_hw(self, hw: Sequence[int]) -> Pair:
        return hw[0] + sum(self.pads[0]), hw[1] + sum(self.pads[1])


def out_hw(hw: Sequence[int], kernel, stride, pads: Pads, dilation, op: str) -> Pair:
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
    return out[0], out[1]


def pad(x: Array, pads: Pads, fill: float = 0.0) -> Array:
    """``x`` padded with ``fill`` on its last two axes (no copy when there is no padding).

    One allocation and one slice assignment (split over the threads): ``xp.pad`` costs ten
    times more per call on a CPU and twice as much on a GPU, which matters for small layers.
    """
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    xp = array_module(x)
    h, w = x.shape[-2:]
    shape = (*x.shape[:-2], h + top + bottom, w + left + right)
    out = xp.full(shape, fill, dtype=x.dtype) if fill else xp.zeros(shape, dtype=x.dtype)
    copy(out[..., top : top + h, left : left + w], x)
    return out


def crop(xpad: Array, pads: Pads, hw: Sequence[int]) -> Array:
    """Remove the padding added by :func:`pad` (a view)."""
    (top, _), (left, _) = pads
    return xpad[..., top : top + hw[0], left : left + hw[1]]


def copy(dst: Array, src: Array) -> None:
    """``dst[...] = src``, cut along a leading axis over the engine's threads (NumPy
    releases the GIL in a copy)."""
    if is_cupy_array(dst) or dst.ndim == 0 or dst.nbytes < threads.MIN_PARALLEL_BYTES:
        dst[...] = src  # one thread: no split to plan
        return
    axis = threads.leading_axis(dst.shape)
    index = (slice(None),) * axis

    def part(s: slice) -> None:
        dst[(*index, s)] = src[(*index, s)]

    threads.parallel(part, dst.shape[axis], dst.nbytes)


def copy_blocks(dst: Array, src: Array, block_ndim: int) -> None:
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
    if not size or is_cupy_array(src) or not lead:
        copy(dst, src)
        return
    item = _void(array_module(src), size)
    # reshape merges only the block axes, which are contiguous: a view, never a copy
    copy(dst.reshape(*lead, -1).view(item), src.reshape(*lead, -1).view(item))


@functools.cache
def _void(xp: Any, size: int) -> Any:
    """The opaque dtype of ``size`` bytes (made once: a dtype costs a microsecond)."""
    return xp.dtype((xp.void, size))


def strided(a: Array, shape, strides) -> Array:
    """A view of ``a``'s memory with these shape and strides (bytes). Over a contiguous
    NumPy array it is made directly, at a quarter of ``as_strided``'s cost per call (which
    small layers notice); otherwise by ``as_strided``."""
    xp = array_module(a)
    if not is_cupy_array(a) and a.flags.c_contiguous:
        return xp.ndarray(shape, a.dtype, buffer=a, strides=strides)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def windows(xpad: Array, win: Window, order: str, two_step: bool = True) -> Array:
    """Every window of the padded ``xpad`` (A, B, Hp, Wp), as a strided view.

    The view has axes (A, B, kh, kw, H_out, W_out) permuted by ``order``, a string over
    ``"abijhw"`` (``"abijhw"`` is unfold's layout; ``"bijahw"`` puts the batch axis after
    the kernel axes). With ``two_step`` (the CPU) it is built so that copying it moves long
    contiguous runs: first the ``kw`` column shifts are copied into a (A, B, kw, Hp, W_out)
    array (``kw`` times the input: cheap), and the windows are a view of that array in
    which, for a row stride of 1, each (H_out, W_out) block is one contiguous run. A one-step
    view of ``xpad`` has runs of only W_out values, which copy several times slower when
    W_out is small. On a GPU, where one kernel copies any strides at about the same speed,
    the view is one-step: the first copy would only add a kernel and its memory traffic.
    """
    xp = array_module(xpad)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out
    a, b, hp, _ = xpad.shape
    s_a, s_b, s_h, s_w = xpad.strides
    if not two_step:
        source, (t_a, t_b, t_j, t_h, t_w) = xpad, (s_a, s_b, s_w * dw, s_h, s_w * sw)
    else:
        source = xp.empty((a, b, kw, hp, ow), dtype=xpad.dtype)
        shifts = strided(xpad, source.shape, (s_a, s_b, s_w * dw, s_h, s_w * sw))
        copy_blocks(source, shifts, 1)
        t_a, t_b, t_j, t_h, t_w = source.strides
    axes = {
        "a": (a, t_a),
        "b": (b, t_b),
        "i": (kh, t_h * dh),
        "j": (kw, t_j),
        "h": (oh, t_h * sh),
        "w": (ow, t_w),
    }
    shape, steps = zip(*(axes[k] for k in order), strict=True)
    return strided(source, shape, steps)


def add_windows(target: Array, cols: Array, win: Window) -> Array:
    """Adjoint of :func:`windows` in ``"abijhw"`` order: add each window back in place.

    ``target`` is the zero-initialised padded (A, B, Hp, Wp) array, ``cols`` is (A, B, kh,
    kw, H_out, W_out). The two steps of :func:`windows` in reverse: ``kh`` vectorised adds
    of row-shifted blocks into a (A, B, kw, Hp, W_out) array, then ``kw`` adds of
    column-shifted blocks into ``target``, so overlapping windows accumulate without a
    scatter-add. The A axis is split over the threads.
    """
    xp = array_module(target, cols)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out
    a, b, hp, _ = target.shape

    def part(s: slice) -> None:
        shifted = xp.zeros((s.stop - s.start, b, kw, hp, ow), dtype=target.dtype)
        for i in range(kh):
            shifted[:, :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh] += cols[s, :, i]
        for j in range(kw):
            target[s, :, :, j * dw : j * dw + sw * (ow - 1) + 1 : sw] += shifted[:, :, j]

    if is_cupy_array(target):
        part(slice(0, a))
    else:
        threads.parallel(part, a, cols.size * cols.itemsize)
    return target
