"""Normalization layers (batch, layer, group, instance) and feature scaling.

The four layers compute the same thing over different axes: ``x_hat = (x - mean) /
sqrt(var + eps)`` with the biased variance, then ``y = weight * x_hat + bias``. They differ in
which entries share one mean and variance, for an (N, C, H, W) input:

- batch norm: each channel, over the batch and the positions (N, H, W);
- layer norm: each sample, over the trailing ``normalized_shape`` axes (C, H, W);
- instance norm: each sample and channel, over the positions (H, W);
- group norm: each sample and group of ``C // num_groups`` channels, over (C // G, H, W).

Every backward returns ``(grad_x, grad_weight, grad_bias)``, ``None`` for an absent affine
parameter. ``batch_norm`` (in training) and ``instance_norm`` (with running statistics)
update ``running_mean`` and ``running_var`` in place, as PyTorch does; their backward passes
never do.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from cnn_course._checks import (
    require_flag,
    require_float,
    require_grad_out,
    require_number,
    require_same_backend,
    require_same_dtype,
)
from cnn_course.backend import array_module

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "layer_norm",
    "layer_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
    "min_max_scale",
    "standardize",
]

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------- validation
def _check_arrays(op: str, x: Any, shape: Shape, **arrays: Any) -> None:
    """Each given array (``None`` skipped) is a float array of ``shape``, like ``x``."""
    for name, a in arrays.items():
        if a is None:
            continue
        require_float(a, name, op)
        require_same_backend(op, x=x, **{name: a})
        if tuple(a.shape) != tuple(shape):
            raise ValueError(
                f"{op}: {name} must have shape {tuple(shape)} for x of shape "
                f"{tuple(x.shape)}, got shape {tuple(a.shape)}"
            )
    require_same_dtype(op, x=x, **arrays)


def _check_x(op: str, x: Any, min_ndim: int) -> None:
    require_float(x, "x", op)
    if x.ndim < min_ndim:
        dims = "(N, C)" if min_ndim == 2 else "(N, C, *) with at least one spatial axis"
        raise ValueError(f"{op}: x must have shape {dims}, got shape {tuple(x.shape)}")


def _check_eps(op: str, eps: Any) -> float:
    eps = require_number(eps, "eps", op)
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps}")
    return eps


def _check_running(op: str, x: Any, running_mean: Any, running_var: Any, momentum: Any) -> None:
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    _check_arrays(op, x, (x.shape[1],), running_mean=running_mean, running_var=running_var)
    momentum = require_number(momentum, "momentum", op)
    if not 0 <= momentum <= 1:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")


def _check_count(op: str, count: int, what: str, x: Any) -> None:
    """Batch statistics need two values, or the unbiased variance divides by zero."""
    if count < 2:
        raise ValueError(
            f"{op}: expected more than 1 {what} when using batch statistics, got input of "
            f"shape {tuple(x.shape)}"
        )


def _channel_shape(x: Any) -> Shape:
    """Shape a per-channel vector broadcasts to against (N, C, *): (1, C, 1, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


# ----------------------------------------------------------------------------- shared core
def _moments(x: Any, axes: Shape) -> tuple[Any, Any]:
    """Mean and biased variance over ``axes`` (kept as size-1 axes)."""
    xp = array_module(x)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    return mean, xp.mean(centred * centred, axis=axes, keepdims=True)


def _standardize(x: Any, mean: Any, var: Any, eps: float) -> tuple[Any, Any]:
    """``(x_hat, inv_std)`` with ``x_hat = (x - mean) * inv_std``, ``inv_std = 1 /
    sqrt(var + eps)``: the standard deviation, not the variance, divides."""
    inv_std = 1 / array_module(x).sqrt(var + eps)
    return (x - mean) * inv_std, inv_std


def _standardize_backward(grad_xhat: Any, xhat: Any, inv_std: Any, axes: Shape) -> Any:
    """Gradient through ``x_hat`` when the mean and variance come from ``x`` itself.

    ``grad_x = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))`` over ``axes``, with
    ``g = grad_x_hat``: the two mean terms are the paths through the mean and the variance.
    """
    xp = array_module(xhat)
    mean_g = xp.mean(grad_xhat, axis=axes, keepdims=True)
    mean_gx = xp.mean(grad_xhat * xhat, axis=axes, keepdims=True)
    return inv_std * (grad_xhat - mean_g - xhat * mean_gx)


def _affine(xhat: Any, weight: Any, bias: Any, shape: Shape) -> Any:
    """``weight * x_hat + bias``, the parameters reshaped to ``shape`` to broadcast."""
    y = xhat if weight is None else xhat * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def _affine_backward(
    grad_out: Any, xhat: Any, weight: Any, bias: Any, shape: Shape
) -> tuple[Any, Any, Any]:
    """``(grad_x_hat, grad_weight, grad_bias)`` of :func:`_affine`; the parameter gradients
    sum over the axes the parameters are broadcast along."""
    xp = array_module(xhat)
    lead = xhat.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    grad_weight = grad_bias = None
    if weight is not None:
        grad_weight = xp.sum(grad_out * xhat, axis=axes).reshape(weight.shape)
    if bias is not None:
        grad_bias = xp.sum(grad_out, axis=axes).reshape(bias.shape)
    grad_xhat = grad_out if weight is None else grad_out * weight.reshape(shape)
    return grad_xhat, grad_weight, grad_bias


def _normalize(
    x: Any, view: Shape, axes: Shape, weight: Any, bias: Any, shape: Shape, eps: float
) -> Any:
    """Normalize ``x.reshape(view)`` over ``axes`` with its own statistics, then the affine
    map with parameters broadcast as ``shape``: the forward of layer, group and instance
    norm (batch norm in training also needs the statistics, for the running estimates)."""
    xv = x.reshape(view)
    xhat, _ = _standardize(xv, *_moments(xv, axes), eps)
    return _affine(xhat.reshape(x.shape), weight, bias, shape)


def _normalize_backward(
    grad_out: Any,
    x: Any,
    view: Shape,
    axes: Shape,
    weight: Any,
    bias: Any,
    shape: Shape,
    eps: float,
) -> tuple[Any, Any, Any]:
    """Backward of :func:`_normalize`: ``(grad_x, grad_weight, grad_bias)``."""
    xv = x.reshape(view)
    xhat, inv_std = _standardize(xv, *_moments(xv, axes), eps)
    grad_xhat, grad_weight, grad_bias = _affine_backward(
        grad_out, xhat.reshape(x.shape), weight, bias, shape
    )
    grad_x = _standardize_backward(grad_xhat.reshape(view), xhat, inv_std, axes)
    return grad_x.reshape(x.shape), grad_weight, grad_bias


def _fixed_stats(
    x: Any, running_mean: Any, running_var: Any, weight: Any, bias: Any, eps: float
) -> tuple[Any, Any]:
    """``(y, inv_std)`` normalizing with the running statistics (evaluation mode)."""
    shape = _channel_shape(x)
    mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    xhat, inv_std = _standardize(x, mean, var, eps)
    return _affine(xhat, weight, bias, shape), inv_std


def _fixed_stats_backward(
    grad_out: Any,
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    eps: float,
) -> tuple[Any, Any, Any]:
    """Backward with fixed statistics: the mean and variance are constants, so
    ``grad_x = grad_x_hat * inv_std``."""
    shape = _channel_shape(x)
    xhat, inv_std = _standardize(x, running_mean.reshape(shape), running_var.reshape(shape), eps)
    grad_xhat, grad_weight, grad_bias = _affine_backward(grad_out, xhat, weight, bias, shape)
    return grad_xhat * inv_std, grad_weight, grad_bias


def _update_running(
    running_mean: Any, running_var: Any, mean: Any, var: Any, count: int, momentum: float
) -> None:
    """PyTorch's in-place update ``r = momentum * batch + (1 - momentum) * r``, with the
    unbiased variance ``var * count / (count - 1)`` in the running estimate."""
    running_mean[...] = momentum * mean + (1 - momentum) * running_mean
    running_var[...] = momentum * (var * (count / (count - 1))) + (1 - momentum) * running_var


# ----------------------------------------------------------------------------- batch norm
def _check_running_norm(
    op: str,
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    flag: tuple[str, Any],
    momentum: Any,
    eps: Any,
) -> float:
    """The checks of batch norm (``flag`` is ``("training", training)``: statistics per
    channel over N and the positions) and of instance norm (``("use_input_stats", ...)``:
    per sample and channel over the positions). Returns ``eps``."""
    name, use_batch_stats = flag
    per_instance = name == "use_input_stats"
    _check_x(op, x, 3 if per_instance else 2)
    require_flag(use_batch_stats, name, op)
    _check_running(op, x, running_mean, running_var, momentum)
    _check_arrays(op, x, (x.shape[1],), weight=weight, bias=bias)
    if use_batch_stats and per_instance:
        _check_count(op, x.size // (x.shape[0] * x.shape[1]), "spatial element", x)
    elif use_batch_stats:
        _check_count(op, x.size // x.shape[1], "value per channel", x)
    elif running_mean is None:
        when = "use_input_stats=False" if per_instance else "not training"
        raise ValueError(f"{op}: running_mean and running_var are required when {when}")
    return _check_eps(op, eps)


def _batch_axes(x: Any) -> Shape:
    return (0,) + tuple(range(2, x.ndim))


def batch_norm(
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    """Batch normalization (Ioffe & Szegedy 2015) of an (N, C) or (N, C, *) input.

    In training, each channel is normalized with the mean and biased variance of the batch
    (over N and every spatial position), and the running statistics are updated **in
    place** (the one documented exception to "inputs are never modified"), exactly as
    PyTorch does::

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)

    with ``n = x.size // C`` values per channel: the running estimate uses the unbiased
    variance, the normalization the biased one. In evaluation (``training=False``) the
    running statistics normalize and nothing changes.

    Parameters
    ----------
    x : array, shape (N, C) or (N, C, *)
    running_mean, running_var : arrays, shape (C,), or both None (training only: no update)
    weight, bias : arrays, shape (C,), or None (gamma = 1, beta = 0)
    training : bool
    momentum : float in [0, 1]
    eps : float > 0, added to the variance under the square root

    Returns
    -------
    array, shape of ``x``.
    """
    eps = _check_running_norm(
        "batch_norm",
        x,
        running_mean,
        running_var,
        weight,
        bias,
        ("training", training),
        momentum,
        eps,
    )
    if not training:
        return _fixed_stats(x, running_mean, running_var, weight, bias, eps)[0]
    mean, var = _moments(x, _batch_axes(x))
    xhat, _ = _standardize(x, mean, var, eps)
    if running_mean is not None:
        count = x.size // x.shape[1]
        _update_running(
            running_mean, running_var, mean.reshape(-1), var.reshape(-1), count, momentum
        )
    return _affine(xhat, weight, bias, _channel_shape(x))


def batch_norm_backward(
    grad_out: Any,
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
    """Gradients of ``batch_norm``: ``(grad_x, grad_weight, grad_bias)``.

    In training the batch mean and variance depend on ``x`` and carry gradient (see
    ``_standardize_backward``); in evaluation they are constants. The running statistics are
    read (evaluation) but never updated here.
    """
    op = "batch_norm_backward"
    flag = ("training", training)
    eps = _check_running_norm(op, x, running_mean, running_var, weight, bias, flag, momentum, eps)
    require_grad_out(op, grad_out, x.shape)
    if not training:
        return _fixed_stats_backward(grad_out, x, running_mean, running_var, weight, bias, eps)
    return _normalize_backward(
        grad_out, x, x.shape, _batch_axes(x), weight, bias, _channel_shape(x), eps
    )


# ----------------------------------------------------------------------------- layer norm
def _check_layer_norm(
    op: str, x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: Any
) -> tuple[Shape, float]:
    require_float(x, "x", op)
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (int(normalized_shape),)
    if not (
        isinstance(normalized_shape, Sequence)
        and len(normalized_shape) >= 1
        and all(isinstance(s, numbers.Integral) for s in normalized_shape)
    ):
        raise TypeError(
            f"{op}: normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}"
        )
    shape = tuple(int(s) for s in normalized_shape)
    if tuple(x.shape[x.ndim - len(shape) :]) != shape or len(shape) > x.ndim:
        raise ValueError(
            f"{op}: normalized_shape {shape} must match the trailing dimensions of x "
            f"(shape {tuple(x.shape)})"
        )
    _check_arrays(op, x, shape, weight=weight, bias=bias)
    return shape, _check_eps(op, eps)


def layer_norm(
    x: Any,
    normalized_shape: int | Sequence[int],
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> Any:
    """Layer normalization (Ba et al. 2016): each sample normalized over its trailing
    ``normalized_shape`` axes, independently of the batch (same in training and evaluation).

    Parameters
    ----------
    x : array, shape (*, *normalized_shape)
    normalized_shape : int or tuple of ints, the trailing shape of ``x`` to normalize over
    weight, bias : arrays of shape ``normalized_shape`` (elementwise affine), or None
    eps : float > 0

    Returns
    -------
    array, shape of ``x``.
    """
    shape, eps = _check_layer_norm("layer_norm", x, normalized_shape, weight, bias, eps)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    return _normalize(x, x.shape, axes, weight, bias, shape, eps)


def layer_norm_backward(
    grad_out: Any,
    x: Any,
    normalized_shape: int | Sequence[int],
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
    """Gradients of ``layer_norm``: ``(grad_x, grad_weight, grad_bias)``."""
    op = "layer_norm_backward"
    shape, eps = _check_layer_norm(op, x, normalized_shape, weight, bias, eps)
    require_grad_out(op, grad_out, x.shape)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    return _normalize_backward(grad_out, x, x.shape, axes, weight, bias, shape, eps)


# ----------------------------------------------------------------------------- group norm
def _check_group_norm(
    op: str, x: Any, num_groups: Any, weight: Any, bias: Any, eps: Any
) -> tuple[Shape, float]:
    """Validate; return the (N, G, C // G * spatial) view shape and eps."""
    _check_x(op, x, 2)
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"{op}: num_groups must be an int, got {num_groups!r}")
    if num_groups < 1 or x.shape[1] % num_groups:
        raise ValueError(
            f"{op}: num_groups {num_groups} must be positive and divide the {x.shape[1]} "
            f"channels of x (shape {tuple(x.shape)})"
        )
    _check_arrays(op, x, (x.shape[1],), weight=weight, bias=bias)
    return (x.shape[0], int(num_groups), -1), _check_eps(op, eps)


def group_norm(
    x: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Any:
    """Group normalization (Wu & He 2018): each sample's channels split into ``num_groups``
    groups of consecutive channels, each group normalized over its channels and positions.
    ``num_groups=1`` is layer norm over (C, *); ``num_groups=C`` is instance norm.

    Parameters
    ----------
    x : array, shape (N, C, *)
    num_groups : int dividing C
    weight, bias : arrays, shape (C,) (per channel), or None
    eps : float > 0

    Returns
    -------
    array, shape of ``x``.
    """
    view, eps = _check_group_norm("group_norm", x, num_groups, weight, bias, eps)
    return _normalize(x, view, (2,), weight, bias, _channel_shape(x), eps)


def group_norm_backward(
    grad_out: Any,
    x: Any,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
    """Gradients of ``group_norm``: ``(grad_x, grad_weight, grad_bias)``."""
    op = "group_norm_backward"
    view, eps = _check_group_norm(op, x, num_groups, weight, bias, eps)
    require_grad_out(op, grad_out, x.shape)
    return _normalize_backward(grad_out, x, view, (2,), weight, bias, _channel_shape(x), eps)


# ----------------------------------------------------------------------------- instance norm
def instance_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    """Instance normalization (Ulyanov et al. 2016): each (sample, channel) plane
    normalized over its own spatial positions, as in style transfer.

    With ``use_input_stats`` (the default) the instance statistics normalize; given running
    statistics are then updated in place as PyTorch does: with the batch average of the
    per-instance means and unbiased variances (``count`` = the number of positions).
    With ``use_input_stats=False`` the running statistics normalize every instance.

    Parameters
    ----------
    x : array, shape (N, C, *) with at least one spatial axis
    running_mean, running_var : arrays, shape (C,), or both None
    weight, bias : arrays, shape (C,), or None
    use_input_stats : bool
    momentum : float in [0, 1]
    eps : float > 0

    Returns
    -------
    array, shape of ``x``.
    """
    flag = ("use_input_stats", use_input_stats)
    eps = _check_running_norm(
        "instance_norm", x, running_mean, running_var, weight, bias, flag, momentum, eps
    )
    if not use_input_stats:
        return _fixed_stats(x, running_mean, running_var, weight, bias, eps)[0]
    axes = tuple(range(2, x.ndim))
    if running_mean is not None:
        xp = array_module(x)
        mean, var = _moments(x, axes)
        count = x.size // (x.shape[0] * x.shape[1])
        batch_mean = xp.mean(mean.reshape(x.shape[:2]), axis=0)
        batch_var = xp.mean(var.reshape(x.shape[:2]), axis=0)
        _update_running(running_mean, running_var, batch_mean, batch_var, count, momentum)
    return _normalize(x, x.shape, axes, weight, bias, _channel_shape(x), eps)


def instance_norm_backward(
    grad_out: Any,
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
    """Gradients of ``instance_norm``: ``(grad_x, grad_weight, grad_bias)``; the running
    statistics are never updated here."""
    op = "instance_norm_backward"
    flag = ("use_input_stats", use_input_stats)
    eps = _check_running_norm(op, x, running_mean, running_var, weight, bias, flag, momentum, eps)
    require_grad_out(op, grad_out, x.shape)
    if not use_input_stats:
        return _fixed_stats_backward(grad_out, x, running_mean, running_var, weight, bias, eps)
    axes = tuple(range(2, x.ndim))
    return _normalize_backward(grad_out, x, x.shape, axes, weight, bias, _channel_shape(x), eps)


# ----------------------------------------------------------------------------- feature scaling
def _check_axis(op: str, x: Any, axis: Any) -> None:
    require_float(x, "x", op)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for x of shape {tuple(x.shape)}")


def min_max_scale(x: Any, axis: int = 0, feature_range: tuple[float, float] = (0, 1)) -> Any:
    """Min-max normalization: map each feature linearly onto ``feature_range``.

    ``(x - min) / (max - min) * (b - a) + a`` with min and max taken along ``axis`` (the
    samples; features lie along the other axes), as scikit-learn's ``MinMaxScaler``. A
    constant feature (max == min) maps to ``a``. Sensitive to outliers: one extreme value
    squeezes every other sample into a small interval.

    Parameters
    ----------
    x : array, shape (N, F) (or any shape, samples along ``axis``)
    axis : int, the sample axis
    feature_range : (a, b) with a < b

    Returns
    -------
    array, shape of ``x``.
    """
    _check_axis("min_max_scale", x, axis)
    if not (isinstance(feature_range, (tuple, list)) and len(feature_range) == 2):
        raise TypeError(
            f"min_max_scale: feature_range must be a pair (a, b), got {feature_range!r}"
        )
    low, high = (require_number(v, "feature_range", "min_max_scale") for v in feature_range)
    if not low < high:
        raise ValueError(f"min_max_scale: feature_range must have a < b, got {feature_range!r}")
    xp = array_module(x)
    lo = xp.min(x, axis=axis, keepdims=True)
    span = xp.max(x, axis=axis, keepdims=True) - lo
    span = xp.where(span > 0, span, 1)
    return (x - lo) / span * (high - low) + low


def standardize(x: Any, axis: int = 0, eps: float = 1e-12) -> Any:
    """Z-score standardization: ``(x - mean) / std`` per feature, along ``axis``.

    The population standard deviation (``ddof=0``), as scikit-learn's ``StandardScaler``. A
    feature whose standard deviation is at most ``eps`` is only centred. The result has mean
    0 and standard deviation 1 per feature, but the *shape* of the distribution is
    unchanged: skewed data stays skewed, it does not become normal.

    Parameters
    ----------
    x : array, shape (N, F) (or any shape, samples along ``axis``)
    axis : int, the sample axis
    eps : float >= 0, the threshold below which a feature counts as constant

    Returns
    -------
    array, shape of ``x``.
    """
    _check_axis("standardize", x, axis)
    eps = require_number(eps, "eps", "standardize")
    if eps < 0:
        raise ValueError(f"standardize: eps must be non-negative, got {eps}")
    xp = array_module(x)
    mean, var = _moments(x, (axis % x.ndim,))
    std = xp.sqrt(var)
    return (x - mean) / xp.where(std > eps, std, 1)
