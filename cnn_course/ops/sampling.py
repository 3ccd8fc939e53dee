"""Up- and down-sampling: ``interpolate`` (nearest, bilinear) and its backward.

Both modes work on one spatial axis at a time: output position ``i`` along an axis reads one
input position (nearest) or blends two neighbours (bilinear) with fixed weights. So
``interpolate`` is a gather along W then along H, and its backward is the adjoint, a
scatter-add along H then along W: every input position collects the upstream gradient of
each output that read it, times the weight it was read with. Being a fixed linear map,
bilinear upsampling by an integer factor is, away from the border, a transposed convolution
with a fixed kernel (how FCN initialises its learnable upsampling layers).

The coordinate mapping is PyTorch's (``torch.nn.functional.interpolate``), including the
precision it computes source coordinates in, so results agree index for index.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from cnn_course._checks import require_float, require_grad_out
from cnn_course.backend import array_module
from cnn_course.ops._indexing import scatter_add

__all__ = ["interpolate", "interpolate_backward"]

Array = Any
MODES = ("nearest", "bilinear")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_positive_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def _as_pair(value: Any) -> tuple:
    """A tuple or list as a tuple; anything else repeated for both axes."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _plan(
    op: str,
    x: Array,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    mode: str,
    align_corners: bool | None,
) -> tuple[tuple[int, int], tuple[float | None, float | None], bool]:
    """Check the arguments; return the output size, the scale factors (``None`` when the
    size was given) and the effective ``align_corners``."""
    require_float(x, "x", op, ndim=4)
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {MODES}, got {mode!r}")
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"{op}: align_corners must be None, True or False, got {align_corners!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(
            f"{op}: align_corners can only be set with mode='bilinear' (nearest has no corners "
            f"to align), got align_corners={align_corners}"
        )
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"{op}: give exactly one of size and scale_factor, got size={size!r}, "
            f"scale_factor={scale_factor!r}"
        )
    hw = tuple(x.shape[2:])
    if size is not None:
        sizes = _as_pair(size)
        if len(sizes) != 2 or not all(_is_int(s) and s >= 1 for s in sizes):
            raise ValueError(f"{op}: size must be a positive int or a pair of them, got {size!r}")
        out, scales = (int(sizes[0]), int(sizes[1])), (None, None)
    else:
        scales = _as_pair(scale_factor)
        if len(scales) != 2 or not all(_is_positive_real(s) for s in scales):
            raise ValueError(
                f"{op}: scale_factor must be a positive number or a pair of them, "
                f"got {scale_factor!r}"
            )
        scales = (float(scales[0]), float(scales[1]))
        # PyTorch truncates size * scale_factor (computed in double precision).
        out = (int(hw[0] * scales[0]), int(hw[1] * scales[1]))
        if min(out) < 1:
            raise ValueError(
                f"{op}: scale_factor {scale_factor!r} makes the output of x shape {x.shape} "
                f"empty: {out}"
            )
    return out, scales, bool(align_corners)


def _nearest_taps(xp: Any, size: int, out: int, scale: float | None) -> Array:
    """(out, 1) source of each output: ``min(floor(i * r), size - 1)``.

    ``r = 1 / scale_factor`` when a scale factor was given, else ``size / out``. PyTorch
    evaluates ``r`` and the product in float32 (which decides the floor for some sizes) and
    special-cases ``out == size`` (identity) and ``out == 2 * size`` (``i // 2``); so do we.
    """
    i = xp.arange(out)
    if out == size:
        src = i
    elif out == 2 * size:
        src = i // 2
    else:
        f32 = xp.float32
        ratio = f32(1.0 / scale) if scale is not None else f32(size) / f32(out)
        src = xp.minimum(xp.floor(i.astype(f32) * ratio).astype(i.dtype), size - 1)
    return src[:, None]


def _bilinear_taps(
    xp: Any, size: int, out: int, scale: float | None, align_corners: bool, dtype: Any
) -> tuple[Array, Array]:
    """(out, 2) sources and weights of each output: the two neighbours of its coordinate.

    ``align_corners=True``: output ``i`` sits at input coordinate ``i * (size-1)/(out-1)``,
    so the centres of the corner pixels line up. ``False``: pixels are unit squares and the
    centre of output ``i`` maps to ``(i + 0.5) * r - 0.5`` (clamped at 0), with
    ``r = 1/scale_factor`` or ``size/out``. As in PyTorch, coordinates are computed in the
    input's precision (float32 at least), and ``out == size`` is the identity.
    """
    i = xp.arange(out)
    ct = xp.result_type(dtype, xp.float32)
    if out == size:
        return xp.stack([i, i], axis=1), xp.stack([xp.ones(out, ct), xp.zeros(out, ct)], axis=1)
    if align_corners:
        ratio = xp.asarray((size - 1) / (out - 1) if out > 1 else 0.0, dtype=ct)
        src = i.astype(ct) * ratio
    else:
        ratio = xp.asarray(1.0 / scale if scale is not None else size / out, dtype=ct)
        half = xp.asarray(0.5, dtype=ct)
        src = xp.maximum((i.astype(ct) + half) * ratio - half, 0)
    lo = xp.minimum(xp.floor(src).astype(i.dtype), size - 1)
    frac = xp.clip(src - lo, 0, 1)
    hi = lo + (lo < size - 1)
    return xp.stack([lo, hi], axis=1), xp.stack([1 - frac, frac], axis=1)


def _taps(x: Array, out: tuple[int, int], scales: tuple, mode: str, align: bool) -> list:
    """Per axis (H, then W): the (out, T) source positions and their weights (dtype of x)."""
    xp = array_module(x)
    taps = []
    for size, o, s in zip(x.shape[2:], out, scales, strict=True):
        if mode == "nearest":
            src, weight = _nearest_taps(xp, size, o, s), xp.ones((o, 1), dtype=x.dtype)
        else:
            src, weight = _bilinear_taps(xp, size, o, s, align, x.dtype)
        taps.append((src, weight.astype(x.dtype)))
    return taps


def _resample_last(x: Array, src: Array, weight: Array) -> Array:
    """Along the last axis: ``out[..., i] = sum_t weight[i, t] * x[..., src[i, t]]``."""
    return (x[..., src] * weight).sum(axis=-1)


def _resample_last_backward(grad: Array, src: Array, weight: Array, size: int) -> Array:
    """Adjoint of :func:`_resample_last`: (..., out) -> (..., size), repeats accumulate."""
    values = (grad[..., None] * weight).reshape(*grad.shape[:-1], -1)
    return scatter_add(values, src.reshape(-1), size)


def interpolate(
    x: Array,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> Array:
    """Resize the H x W planes of ``x`` (PyTorch's ``interpolate``, 2-D, two modes).

    Parameters
    ----------
    x : float array (N, C, H, W)
    size : int or (int, int), optional
        The output size (H_out, W_out).
    scale_factor : float or (float, float), optional
        Exactly one of ``size`` and ``scale_factor``. ``H_out = floor(H * scale_factor)``,
        and the coordinate mapping uses ``1 / scale_factor`` itself (PyTorch's default,
        ``recompute_scale_factor=None``), which can differ from ``H / H_out``.
    mode : ``"nearest"`` or ``"bilinear"``
        ``"nearest"`` copies input ``floor(i * H / H_out)`` (PyTorch's legacy nearest, which
        is not centre-aligned); ``"bilinear"`` blends the two nearest rows, then columns.
    align_corners : bool or None
        Bilinear only (``None`` means False). ``True`` maps the centres of the corner
        pixels onto each other (output ``i`` reads input coordinate ``i * (H-1)/(H_out-1)``);
        ``False`` treats pixels as unit squares (``(i + 0.5) * H/H_out - 0.5``).

    Returns
    -------
    out : array (N, C, H_out, W_out), dtype of ``x``
    """
    out, scales, align = _plan("interpolate", x, size, scale_factor, mode, align_corners)
    (src_h, weight_h), (src_w, weight_w) = _taps(x, out, scales, mode, align)
    along_w = _resample_last(x, src_w, weight_w)  # (N, C, H, W_out)
    out = _resample_last(along_w.swapaxes(2, 3), src_h, weight_h).swapaxes(2, 3)
    return array_module(x).ascontiguousarray(out)


def interpolate_backward(
    grad_out: Array,
    x: Array,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> Array:
    """Gradient of :func:`interpolate` with respect to ``x``: every input position collects
    the upstream gradient of each output that read it, times the weight it was read with.

    Parameters
    ----------
    grad_out : float array (N, C, H_out, W_out)
    x, size, scale_factor, mode, align_corners : as in :func:`interpolate`

    Returns
    -------
    grad_x : array (N, C, H, W), dtype of ``x``
    """
    op = "interpolate_backward"
    out, scales, align = _plan(op, x, size, scale_factor, mode, align_corners)
    require_grad_out(op, grad_out, (*x.shape[:2], *out), like=x)
    (src_h, weight_h), (src_w, weight_w) = _taps(x, out, scales, mode, align)
    grad_out = grad_out.astype(x.dtype, copy=False)
    h, w = x.shape[2:]
    along_w = _resample_last_backward(grad_out.swapaxes(2, 3), src_h, weight_h, h)
    return _resample_last_backward(along_w.swapaxes(2, 3), src_w, weight_w, w)
