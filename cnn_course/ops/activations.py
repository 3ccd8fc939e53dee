"""Activation functions and their backward passes.

Every function here is elementwise except ``softmax``/``log_softmax`` (along ``dim``) and
``maxout`` (across groups of channels). Each ``*_backward(grad_out, <forward arguments>)``
returns the gradient of the array inputs: ``grad_x``, or ``(grad_x, grad_weight)`` for
``prelu``.

Where a function has a kink (ReLU, Leaky ReLU, PReLU, ELU at 0, maxout ties) the backward
uses the one-sided derivative PyTorch uses; the docstring says which.
"""

from __future__ import annotations

from typing import Any

from cnn_course._checks import (
    require_float,
    require_grad_out,
    require_number,
    require_same_backend,
    require_same_dtype,
)
from cnn_course.backend import array_module

__all__ = [
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "prelu",
    "prelu_backward",
    "elu",
    "elu_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "maxout",
    "maxout_backward",
    "maxout_naive",
]


# ----------------------------------------------------------------------------- validation
def _axis(dim: Any, ndim: int, op: str) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-dimensional array."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for an input with {ndim} dimensions")
    return dim % ndim


def _check_elementwise(op: str, grad_out: Any, x: Any) -> None:
    require_float(x, "x", op)
    if grad_out is not None:
        require_grad_out(op, grad_out, x.shape)
        require_same_backend(op, grad_out=grad_out, x=x)


# ----------------------------------------------------------------------------- sigmoid, tanh
def sigmoid(x: Any) -> Any:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise, any shape.

    Computed from ``exp(-|x|)``, which never overflows, so ``sigmoid(-1e4)`` is 0 without a
    warning and ``sigmoid(1e4)`` is 1.
    """
    _check_elementwise("sigmoid", None, x)
    xp = array_module(x)
    z = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z))


def sigmoid_backward(grad_out: Any, x: Any) -> Any:
    """Gradient of ``sigmoid``: ``grad_out * s * (1 - s)``; at most ``grad_out / 4`` (x = 0),
    the factor behind vanishing gradients in deep sigmoid networks."""
    _check_elementwise("sigmoid_backward", grad_out, x)
    s = sigmoid(x)
    return grad_out * s * (1 - s)


def tanh(x: Any) -> Any:
    """Hyperbolic tangent, elementwise, any shape; ``tanh(x) = 2 * sigmoid(2x) - 1``."""
    _check_elementwise("tanh", None, x)
    return array_module(x).tanh(x)


def tanh_backward(grad_out: Any, x: Any) -> Any:
    """Gradient of ``tanh``: ``grad_out * (1 - tanh(x)**2)`` (at most ``grad_out``, at 0)."""
    _check_elementwise("tanh_backward", grad_out, x)
    t = array_module(x).tanh(x)
    return grad_out * (1 - t * t)


# ----------------------------------------------------------------------------- ReLU family
def relu(x: Any) -> Any:
    """Rectified linear unit ``max(x, 0)``, elementwise, any shape (NaN stays NaN)."""
    _check_elementwise("relu", None, x)
    return array_module(x).maximum(x, 0)


def relu_backward(grad_out: Any, x: Any) -> Any:
    """Gradient of ``relu``: ``grad_out`` where ``x > 0``, else 0.

    ReLU has no derivative at 0; any value in [0, 1] is a valid subgradient there. PyTorch
    uses 0, and so does this function. Hitting exactly 0 is rare in floating point, so the
    choice hardly ever matters in training.
    """
    _check_elementwise("relu_backward", grad_out, x)
    return grad_out * (x > 0)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """Leaky ReLU: ``x`` for ``x > 0``, ``negative_slope * x`` otherwise; any shape.

    The slope is a fixed hyper-parameter (PReLU, :func:`prelu`, learns it instead).
    """
    negative_slope = require_number(negative_slope, "negative_slope", "leaky_relu")
    _check_elementwise("leaky_relu", None, x)
    return array_module(x).where(x > 0, x, x * negative_slope)


def leaky_relu_backward(grad_out: Any, x: Any, negative_slope: float = 0.01) -> Any:
    """Gradient of ``leaky_relu``: ``grad_out`` for ``x > 0``, ``negative_slope * grad_out``
    otherwise (at exactly 0 the slope side, as PyTorch)."""
    negative_slope = require_number(negative_slope, "negative_slope", "leaky_relu_backward")
    _check_elementwise("leaky_relu_backward", grad_out, x)
    return array_module(x).where(x > 0, grad_out, grad_out * negative_slope)


def _prelu_weight_shape(op: str, x: Any, weight: Any) -> tuple[int, ...]:
    """Validate PReLU's arguments; return the shape ``weight`` broadcasts to against ``x``."""
    require_float(x, "x", op)
    require_float(weight, "weight", op, ndim=1)
    require_same_backend(op, x=x, weight=weight)
    require_same_dtype(op, x=x, weight=weight)
    if weight.shape[0] == 1:
        return (1,)
    if x.ndim < 2 or x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"{op}: weight has {weight.shape[0]} slopes but x (shape {tuple(x.shape)}) has "
            f"{x.shape[1] if x.ndim >= 2 else 'no'} channels in dim 1; use one slope per "
            "channel or a single slope"
        )
    return (1, weight.shape[0]) + (1,) * (x.ndim - 2)


def prelu(x: Any, weight: Any) -> Any:
    """Parametric ReLU (He et al. 2015): ``x`` for ``x > 0``, ``weight * x`` otherwise.

    Parameters
    ----------
    x : array, shape (N, C, *) (any shape with a single slope)
    weight : array, shape (C,) (one learned slope per channel, dim 1) or (1,) (shared)

    Returns
    -------
    array, shape of ``x``.
    """
    shape = _prelu_weight_shape("prelu", x, weight)
    w = weight.reshape(shape)
    return array_module(x).where(x > 0, x, w * x)


def prelu_backward(grad_out: Any, x: Any, weight: Any) -> tuple[Any, Any]:
    """Gradients of ``prelu``: ``(grad_x, grad_weight)``.

    ``grad_x`` is ``grad_out`` for ``x > 0`` and ``weight * grad_out`` otherwise;
    ``grad_weight`` (shape of ``weight``) sums ``grad_out * x`` over the negative inputs of
    each channel (all of them for a single slope).
    """
    shape = _prelu_weight_shape("prelu_backward", x, weight)
    require_grad_out("prelu_backward", grad_out, x.shape)
    xp = array_module(x)
    negative = x <= 0
    grad_x = xp.where(negative, grad_out * weight.reshape(shape), grad_out)
    contribution = grad_out * x * negative
    if weight.shape[0] == 1:
        grad_weight = xp.sum(contribution).reshape(1)
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        grad_weight = xp.sum(contribution, axis=axes)
    return grad_x, grad_weight


def elu(x: Any, alpha: float = 1.0) -> Any:
    """Exponential linear unit: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    ``expm1`` keeps precision near 0; the exponential only sees ``min(x, 0)``, so large
    positive inputs cannot overflow.
    """
    alpha = require_number(alpha, "alpha", "elu")
    _check_elementwise("elu", None, x)
    xp = array_module(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def elu_backward(grad_out: Any, x: Any, alpha: float = 1.0) -> Any:
    """Gradient of ``elu``: ``grad_out`` for ``x > 0``, ``grad_out * alpha * exp(x)``
    otherwise (at exactly 0 that is ``alpha * grad_out``, as PyTorch)."""
    alpha = require_number(alpha, "alpha", "elu_backward")
    _check_elementwise("elu_backward", grad_out, x)
    xp = array_module(x)
    return xp.where(x > 0, grad_out, grad_out * (alpha * xp.exp(xp.minimum(x, 0))))


# ----------------------------------------------------------------------------- softmax
def _shifted(x: Any, dim: int) -> Any:
    """``x - max(x, dim)``: every entry <= 0, so ``exp`` cannot overflow (softmax is
    unchanged by a shift)."""
    xp = array_module(x)
    return x - xp.max(x, axis=dim, keepdims=True)


def softmax(x: Any, dim: int = -1) -> Any:
    """Softmax along ``dim``: ``exp(x_i) / sum_j exp(x_j)``; output shape of ``x``.

    Stable for huge inputs (``softmax([1e4, 0])`` is ``[1, 0]``): the maximum is
    subtracted first.
    """
    _check_elementwise("softmax", None, x)
    axis = _axis(dim, x.ndim, "softmax")
    xp = array_module(x)
    e = xp.exp(_shifted(x, axis))
    return e / xp.sum(e, axis=axis, keepdims=True)


def softmax_backward(grad_out: Any, x: Any, dim: int = -1) -> Any:
    """Gradient of ``softmax``: ``s * (grad_out - sum(grad_out * s, dim))`` with
    ``s = softmax(x)`` (the Jacobian ``diag(s) - s s^T`` applied without forming it)."""
    _check_elementwise("softmax_backward", grad_out, x)
    axis = _axis(dim, x.ndim, "softmax_backward")
    s = softmax(x, dim)
    xp = array_module(x)
    return s * (grad_out - xp.sum(grad_out * s, axis=axis, keepdims=True))


def log_softmax(x: Any, dim: int = -1) -> Any:
    """``log(softmax(x))`` along ``dim``, computed as ``z - log(sum(exp(z)))`` with
    ``z = x - max(x)``: finite for huge inputs, where ``log(softmax)`` would give -inf."""
    _check_elementwise("log_softmax", None, x)
    axis = _axis(dim, x.ndim, "log_softmax")
    xp = array_module(x)
    z = _shifted(x, axis)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def log_softmax_backward(grad_out: Any, x: Any, dim: int = -1) -> Any:
    """Gradient of ``log_softmax``: ``grad_out - softmax(x) * sum(grad_out, dim)``."""
    _check_elementwise("log_softmax_backward", grad_out, x)
    axis = _axis(dim, x.ndim, "log_softmax_backward")
    xp = array_module(x)
    return grad_out - softmax(x, dim) * xp.sum(grad_out, axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- maxout
def _maxout_groups(op: str, x: Any, pool_size: Any) -> Any:
    """Validate; return ``x`` viewed as (N, C // pool_size, pool_size, *)."""
    require_float(x, "x", op)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int):
        raise TypeError(f"{op}: pool_size must be an int, got {pool_size!r}")
    if pool_size < 1:
        raise ValueError(f"{op}: pool_size must be positive, got {pool_size}")
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have shape (N, C, *), got shape {tuple(x.shape)}")
    if x.shape[1] % pool_size:
        raise ValueError(
            f"{op}: pool_size {pool_size} does not divide the {x.shape[1]} channels of x "
            f"(shape {tuple(x.shape)})"
        )
    n, c = x.shape[:2]
    return x.reshape((n, c // pool_size, pool_size) + tuple(x.shape[2:]))


def maxout(x: Any, pool_size: int) -> Any:
    """Maxout (Goodfellow et al. 2013) over groups of ``pool_size`` consecutive channels.

    Layout: output channel ``j`` is the maximum of input channels ``j * pool_size`` to
    ``(j + 1) * pool_size - 1`` (the ``x.reshape(N, C // k, k, ...).max(2)`` convention).
    A layer computes ``C`` linear pieces (a linear or 1x1 conv layer) and maxout keeps the
    largest of each group: a learned convex piecewise-linear activation.

    Parameters
    ----------
    x : array, shape (N, C, *) with C divisible by ``pool_size``
    pool_size : int, pieces per output unit

    Returns
    -------
    array, shape (N, C // pool_size, *).
    """
    groups = _maxout_groups("maxout", x, pool_size)
    return array_module(x).max(groups, axis=2)


def maxout_backward(grad_out: Any, x: Any, pool_size: int) -> Any:
    """Gradient of ``maxout``: each output's gradient goes to the channel that held the
    maximum of its group (the first one on a tie), zero elsewhere. Shape of ``x``."""
    groups = _maxout_groups("maxout_backward", x, pool_size)
    require_grad_out("maxout_backward", grad_out, groups.shape[:2] + groups.shape[3:])
    xp = array_module(x)
    winner = xp.expand_dims(xp.argmax(groups, axis=2), 2)
    piece = xp.arange(pool_size).reshape((1, 1, pool_size) + (1,) * (x.ndim - 2))
    grad = (piece == winner) * xp.expand_dims(grad_out, 2)
    return grad.reshape(x.shape)


def maxout_naive(x: Any, pool_size: int) -> Any:
    """Maxout by explicit loops over samples, output channels and pieces: the definition,
    not the fast path (tests check :func:`maxout` against it)."""
    _maxout_groups("maxout_naive", x, pool_size)
    xp = array_module(x)
    n, c = x.shape[:2]
    out = xp.empty((n, c // pool_size) + tuple(x.shape[2:]), dtype=x.dtype)
    for i in range(n):
        for j in range(c // pool_size):
            best = x[i, j * pool_size]
            for k in range(1, pool_size):
                best = xp.maximum(best, x[i, j * pool_size + k])
            out[i, j] = best
    return out
