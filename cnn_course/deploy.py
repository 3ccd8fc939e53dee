"""Deployment: batch-norm folding, INT8 quantization, reduced-precision floats and knowledge
distillation (chapter 23).

- :func:`fold_batch_norm` merges an inference-mode batch norm into the convolution (or
  linear layer) before it.
- :func:`calibrate`, :func:`quantize` and :func:`dequantize` implement uniform INT8
  quantization, symmetric or asymmetric (affine), per tensor or per channel, with min-max
  calibration. The rules are PyTorch's (``MinMaxObserver``/``PerChannelMinMaxObserver``,
  ``torch.quantize_per_tensor``/``torch.quantize_per_channel``): the same scales, zero points
  and integers, which the tests check.
- :func:`round_to_bfloat16` emulates bfloat16 on float32 bit patterns (NumPy has no
  bfloat16 type).
- :func:`distillation_loss` is Hinton et al.'s soft-target loss with temperature.
"""

from __future__ import annotations

from typing import Any

from cnn_course._checks import (
    require_array,
    require_float,
    require_number,
    require_same_backend,
)
from cnn_course.backend import array_module
from cnn_course.ops.activations import log_softmax, softmax

__all__ = [
    "fold_batch_norm",
    "QUANT_RANGES",
    "calibrate",
    "quantize",
    "dequantize",
    "round_to_bfloat16",
    "distillation_loss",
    "distillation_loss_backward",
]


# ----------------------------------------------------------------------- batch-norm folding
def fold_batch_norm(
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    bn_weight: Any = None,
    bn_bias: Any = None,
    eps: float = 1e-5,
) -> tuple[Any, Any]:
    """Fold an inference-mode batch norm into the layer before it.

    ``BN(conv(x))`` with fixed statistics is ``gamma * (W x + b - mu) / sqrt(var + eps) + beta``,
    an affine map of the convolution's output per channel, hence a convolution with
    ``W' = W * s`` (each output channel scaled by ``s = gamma / sqrt(var + eps)``) and
    ``b' = (b - mu) * s + beta``. Exact in eval mode only: in training mode batch norm uses
    the batch's own statistics, which change with every batch. Chapter 23 (q900-23-1).

    Parameters
    ----------
    weight : (C_out, ...) float array
        The convolution's (C_out, C_in / groups, kh, kw) or a linear layer's (C_out, C_in)
        weight.
    bias : (C_out,) float array or None
        The layer's bias (``None``: no bias, i.e. 0).
    running_mean, running_var : (C_out,) float arrays
        The batch norm's running statistics.
    bn_weight, bn_bias : (C_out,) float arrays or None
        ``gamma`` and ``beta`` (``None``: a batch norm without affine parameters, 1 and 0).
    eps : float

    Returns
    -------
    (folded_weight, folded_bias) : arrays of the shapes of ``weight`` and ``(C_out,)``.
    The inputs are not modified.
    """
    op = "fold_batch_norm"
    require_float(weight, "weight", op)
    if weight.ndim < 2:
        raise ValueError(f"{op}: weight must have shape (C_out, ...), got {tuple(weight.shape)}")
    channels = weight.shape[0]
    named = {
        "bias": bias,
        "running_mean": running_mean,
        "running_var": running_var,
        "bn_weight": bn_weight,
        "bn_bias": bn_bias,
    }
    for name, a in named.items():
        if a is None and name in ("running_mean", "running_var"):
            raise TypeError(f"{op}: {name} is required (an eval-mode batch norm uses it)")
        if a is not None:
            require_float(a, name, op, ndim=1)
            if a.shape[0] != channels:
                raise ValueError(
                    f"{op}: {name} has shape {tuple(a.shape)} but weight has {channels} "
                    f"output channels (weight shape {tuple(weight.shape)})"
                )
    require_same_backend(op, weight=weight, **named)
    if require_number(eps, "eps", op) < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")
    xp = array_module(weight)
    gamma = xp.ones(channels, dtype=weight.dtype) if bn_weight is None else bn_weight
    beta = xp.zeros(channels, dtype=weight.dtype) if bn_bias is None else bn_bias
    b = xp.zeros(channels, dtype=weight.dtype) if bias is None else bias
    s = gamma / xp.sqrt(running_var + eps)
    folded_weight = weight * s.reshape((channels,) + (1,) * (weight.ndim - 1))
    folded_bias = (b - running_mean) * s + beta
    return folded_weight.astype(weight.dtype), folded_bias.astype(weight.dtype)


# ----------------------------------------------------------------------- INT8 quantization
#: (quant_min, quant_max) of each integer type: PyTorch's qint8 and quint8.
QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
_FLOAT32_EPS = 2.0**-23  # torch.finfo(torch.float32).eps: the smallest scale an observer gives


def _check_dtype(dtype: str, op: str) -> tuple[int, int]:
    if dtype not in QUANT_RANGES:
        raise ValueError(f"{op}: dtype must be one of {sorted(QUANT_RANGES)}, got {dtype!r}")
    return QUANT_RANGES[dtype]


def _check_axis(x: Any, axis: Any, op: str) -> None:
    if axis is None:
        return
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"{op}: axis must be None or an axis of x (shape {tuple(x.shape)}), got {axis!r}"
        )


def _per_channel(values: Any, x: Any, axis: int | None) -> Any:
    """``values`` (a scalar, or one per channel along ``axis``) shaped to broadcast on ``x``."""
    xp = array_module(x)
    values = xp.asarray(values)
    if axis is None:
        return values
    shape = [1] * x.ndim
    shape[axis] = -1
    return values.reshape(shape)


def calibrate(
    x: Any, dtype: str = "int8", symmetric: bool = True, axis: int | None = None
) -> tuple[Any, Any]:
    """Min-max calibration: the scale and zero point that map the observed range of ``x``
    onto the integers of ``dtype``, as PyTorch's ``MinMaxObserver`` (``axis=None``) and
    ``PerChannelMinMaxObserver`` (``ch_axis=axis``) compute them.

    The range is widened to include 0, so that 0 is represented exactly (zero padding, ReLU
    outputs). Symmetric: ``scale = max(|min|, |max|) / ((q_max - q_min) / 2)``, zero point 0
    (128 for uint8). Asymmetric (affine): ``scale = (max - min) / (q_max - q_min)``,
    ``zero_point = q_min - round(min / scale)``. Computed in float32; the scale is at least
    float32's machine epsilon. Chapter 23 (q900-23-2).

    Parameters
    ----------
    x : float array
        Calibration data (weights, or activations collected on a few batches).
    dtype : {"int8", "uint8"}
    symmetric : bool
    axis : int or None
        ``None``: one scale for the tensor; else one scale per index along ``axis`` (per
        output channel for a convolution's weight, ``axis=0``).

    Returns
    -------
    scale : float32 array, shape () or (x.shape[axis],)
    zero_point : int64 array of the same shape
    """
    op = "calibrate"
    require_float(x, "x", op)
    q_min, q_max = _check_dtype(dtype, op)
    _check_axis(x, axis, op)
    xp = array_module(x)
    x32 = x.astype(xp.float32)
    if axis is None:
        lo, hi = x32.min(), x32.max()
    else:
        other = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        lo, hi = x32.min(axis=other), x32.max(axis=other)
    lo = xp.minimum(lo, xp.float32(0))
    hi = xp.maximum(hi, xp.float32(0))
    eps = xp.float32(_FLOAT32_EPS)
    if symmetric:
        scale = xp.maximum(xp.maximum(-lo, hi) / xp.float32((q_max - q_min) / 2), eps)
        zero_point = xp.full(scale.shape, 128 if dtype == "uint8" else 0, dtype=xp.int64)
    else:
        scale = xp.maximum((hi - lo) / xp.float32(q_max - q_min), eps)
        zero_point = q_min - xp.rint(lo / scale).astype(xp.int64)
        zero_point = xp.clip(zero_point, q_min, q_max)
    return xp.asarray(scale, dtype=xp.float32), xp.asarray(zero_point, dtype=xp.int64)


def quantize(
    x: Any, scale: Any, zero_point: Any, dtype: str = "int8", axis: int | None = None
) -> Any:
    """Uniform quantization ``q = clamp(round(x / scale) + zero_point, q_min, q_max)``.

    As PyTorch (``torch.quantize_per_tensor``, and ``torch.quantize_per_channel`` with
    ``axis``): ``x`` (float32) times the float32 reciprocal of the scale, plus the zero point,
    rounded half to even, clamped. The two PyTorch kernels differ in one detail this function
    copies: per tensor, the product and the sum are one fused multiply-add (rounded once to
    float32); per channel, the product is rounded to float32 before the zero point is added.
    They can therefore disagree by 1 on a value that lands within a rounding error of a
    half-integer. Chapter 23 (q900-23-2).

    Parameters
    ----------
    x : float array
    scale : float or float array of shape () or (x.shape[axis],)
    zero_point : int or int array of the same shape
    dtype : {"int8", "uint8"}
    axis : int or None
        The channel axis of per-channel scales.

    Returns
    -------
    int8 or uint8 array of ``x``'s shape.
    """
    op = "quantize"
    require_float(x, "x", op)
    q_min, q_max = _check_dtype(dtype, op)
    _check_axis(x, axis, op)
    xp = array_module(x)
    scale32 = _per_channel(xp.asarray(scale, dtype=xp.float32), x, axis)
    if axis is None and scale32.ndim:
        raise ValueError(f"{op}: a per-channel scale (shape {tuple(scale32.shape)}) needs axis")
    if axis is not None and scale32.size != x.shape[axis]:
        raise ValueError(
            f"{op}: {scale32.size} scales for {x.shape[axis]} channels along axis {axis} "
            f"(x shape {tuple(x.shape)})"
        )
    if bool((scale32 <= 0).any()):
        raise ValueError(f"{op}: scale must be positive")
    zp = _per_channel(xp.asarray(zero_point, dtype=xp.int64), x, axis)
    inverse = xp.float32(1) / scale32
    x32 = x.astype(xp.float32)
    if axis is None:
        # one fused multiply-add, x * inverse + zero_point rounded once to float32: exact in
        # float64 (a 24-bit by 24-bit product plus a small integer), then rounded
        shifted = (x32.astype(xp.float64) * inverse.astype(xp.float64) + zp).astype(xp.float32)
    else:
        shifted = x32 * inverse + zp.astype(xp.float32)  # two float32 roundings
    return xp.clip(xp.rint(shifted), q_min, q_max).astype(dtype)


def dequantize(q: Any, scale: Any, zero_point: Any, axis: int | None = None) -> Any:
    """Back to float32: ``(q - zero_point) * scale`` (PyTorch's ``Tensor.dequantize``).

    ``q`` is an integer array from :func:`quantize`; ``scale``, ``zero_point`` and ``axis``
    as given to it. Returns a float32 array of ``q``'s shape. The round trip
    ``dequantize(quantize(x))`` differs from ``x`` by at most ``scale / 2`` inside the
    calibrated range (rounding) and by the clipped amount outside it. Chapter 23 (q900-23-2).
    """
    op = "dequantize"
    require_array(q, "q", op)
    if q.dtype.kind not in "iu":
        raise TypeError(f"{op}: q must be an integer array, got dtype {q.dtype}")
    _check_axis(q, axis, op)
    xp = array_module(q)
    scale32 = _per_channel(xp.asarray(scale, dtype=xp.float32), q, axis)
    zp = _per_channel(xp.asarray(zero_point, dtype=xp.int64), q, axis)
    return ((q.astype(xp.int64) - zp).astype(xp.float32) * scale32).astype(xp.float32)


# ---------------------------------------------------------------- reduced-precision floats
def round_to_bfloat16(x: Any) -> Any:
    """The bfloat16 value nearest to each float32 value, returned as float32.

    bfloat16 is the upper half of a float32: the same sign and 8-bit exponent (so the same
    range, about 3.4e38), 7 bits of mantissa instead of 23. Rounding to nearest, ties to even,
    on the bit pattern: add ``0x7FFF`` plus the lowest kept bit, then clear the low 16 bits
    (what PyTorch's ``round_to_nearest_even`` does); NaN stays NaN. Values above the largest
    bfloat16 round to infinity. Chapter 23 (q900-23-3).
    """
    require_float(x, "x", "round_to_bfloat16")
    xp = array_module(x)
    bits = xp.ascontiguousarray(x.astype(xp.float32)).view(xp.uint32).astype(xp.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(xp.uint32).view(xp.float32)
    return xp.where(xp.isnan(x), xp.float32("nan"), out).astype(xp.float32)


# ---------------------------------------------------------------- knowledge distillation
def _check_distillation(op: str, student_logits: Any, teacher_logits: Any, temperature: Any):
    require_float(student_logits, "student_logits", op, ndim=2)
    require_float(teacher_logits, "teacher_logits", op, ndim=2)
    require_same_backend(op, student_logits=student_logits, teacher_logits=teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{op}: student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have one shape (N, classes)"
        )
    if require_number(temperature, "temperature", op) <= 0:
        raise ValueError(f"{op}: temperature must be positive, got {temperature!r}")


def distillation_loss(student_logits: Any, teacher_logits: Any, temperature: float = 4.0) -> Any:
    """Hinton et al.'s (2015) soft-target loss:
    ``T^2 * mean_n KL(softmax(teacher / T) || softmax(student / T))``.

    Equal to ``T**2 * F.kl_div(F.log_softmax(student / T, 1), F.softmax(teacher / T, 1),
    reduction="batchmean")`` in PyTorch. The gradient of the KL term with respect to the
    logits is ``(p_student - p_teacher) / T``, and for large ``T`` the difference of the
    softened probabilities itself shrinks as ``1/T``: the factor ``T^2`` undoes that ``1/T^2``,
    so the soft and hard losses can be mixed with a weight that does not depend on ``T``.
    Chapter 23 (q900-23-4).

    Parameters
    ----------
    student_logits, teacher_logits : (N, classes) float arrays
    temperature : float, > 0

    Returns
    -------
    0-d array.
    """
    _check_distillation("distillation_loss", student_logits, teacher_logits, temperature)
    t = float(temperature)
    log_p_teacher = log_softmax(teacher_logits / t, dim=1)
    log_p_student = log_softmax(student_logits / t, dim=1)
    kl = (softmax(teacher_logits / t, dim=1) * (log_p_teacher - log_p_student)).sum()
    return (kl * (t * t / student_logits.shape[0])).astype(student_logits.dtype)


def distillation_loss_backward(
    grad_out: Any, student_logits: Any, teacher_logits: Any, temperature: float = 4.0
) -> Any:
    """Gradient of :func:`distillation_loss` with respect to ``student_logits``:
    ``grad_out * T * (softmax(student / T) - softmax(teacher / T)) / N``, shape (N, classes).

    The teacher is fixed (its logits are data, as with ``teacher(x).detach()``), so no
    gradient is returned for them. Chapter 23 (q900-23-4).
    """
    op = "distillation_loss_backward"
    _check_distillation(op, student_logits, teacher_logits, temperature)
    xp = array_module(student_logits)
    require_array(grad_out, "grad_out", op)
    if tuple(grad_out.shape) != ():
        raise ValueError(f"{op}: grad_out must be a scalar, got shape {tuple(grad_out.shape)}")
    t = float(temperature)
    diff = softmax(student_logits / t, dim=1) - softmax(teacher_logits / t, dim=1)
    g = xp.asarray(grad_out, dtype=student_logits.dtype)
    return (g * (t / student_logits.shape[0]) * diff).astype(student_logits.dtype)
