"""Activation functions and their backward passes.

Every function here is elementwise except ``softmax``/``log_softmax`` (along ``dim``) and
``maxout`` (across groups of channels). Each ``*_backward(grad_out, <forward arguments>)``
returns the gradient of the array inputs: ``grad_x``, or ``(grad_x, grad_weight)`` for
``prelu``.

Where a function has a kink (ReLU, Leaky ReLU, PReLU, ELU at 0, maxout ties) the backward
uses the one-sided derivative PyTorch uses; the docstring says which.

NumPy has no error function, so GELU's exact form uses :func:`erf`, W. J. Cody's rational
approximations (Cody 1969) evaluated through the backend; it is a helper, not an exported op.
"""

from __future__ import annotations

import math
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
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
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


# ----------------------------------------------------------------------------- GELU, SiLU
# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
# (1969) 631-637; the coefficients of his CALERF routine (netlib specfun).
_ERF_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_ERF_B = (
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
)
_ERF_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_ERF_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
_ERF_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_ERF_Q = (
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_RSQRT_PI = 0.5641895835477562869480794515607725858440


def _ratio(z: Any, num: tuple[float, ...], den: tuple[float, ...]) -> Any:
    """Cody's ``(num[-1] z^k + num[0] z^(k-1) + ... + num[k-1]) / (z^k + den[0] z^(k-1) + ...
    + den[k-1])`` by Horner's rule, k = len(den)."""
    k = len(den)
    top, bottom = num[k] * z, z
    for i in range(k - 1):
        top = (top + num[i]) * z
        bottom = (bottom + den[i]) * z
    return (top + num[k - 1]) / (bottom + den[k - 1])


def erf(x: Any) -> Any:
    """Error function ``erf(x) = 2 / sqrt(pi) * integral_0^x exp(-t^2) dt``, elementwise.

    W. J. Cody's rational Chebyshev approximations (his CALERF routine), evaluated on the
    backend in the dtype of ``x``: ``x * R1(x^2)`` for ``|x| <= 0.46875``, and
    ``1 - exp(-x^2) * R(|x|)`` with odd symmetry beyond (``R2`` up to 4, ``R3(1/x^2) / |x|``
    above), where ``exp(-x^2)`` is split as ``exp(-u^2) exp(-(|x| - u)(|x| + u))`` with
    ``u = trunc(16 |x|) / 16`` to keep its relative accuracy. In float64 it agrees with
    ``math.erf`` to a few ulp (tests/ops/test_activations.py). Used by :func:`gelu`
    (Chapter 13, q002-16); not an exported op.
    """
    require_float(x, "x", "erf")
    xp = array_module(x)
    y = xp.abs(x)
    near = xp.minimum(y, 0.5)  # clipped so that inf never reaches the ratio
    small = x * _ratio(near * near, _ERF_A, _ERF_B)
    mid = _ratio(xp.minimum(y, 4.0), _ERF_C, _ERF_D)
    far = xp.maximum(y, 4.0)
    inv2 = 1 / (far * far)
    tail = (_RSQRT_PI - inv2 * _ratio(inv2, _ERF_P, _ERF_Q)) / far
    clipped = xp.minimum(y, 27.0)  # erfc(27) underflows to 0 in float64 anyway
    u = xp.trunc(clipped * 16) / 16
    erfc = xp.exp(-u * u) * xp.exp(-(clipped - u) * (clipped + u)) * xp.where(y <= 4, mid, tail)
    return xp.where(y <= 0.46875, small, xp.sign(x) * (1 - erfc))


_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715


def _check_approximate(op: str, approximate: Any) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def gelu(x: Any, approximate: str = "none") -> Any:
    """Gaussian error linear unit (Hendrycks and Gimpel 2016), elementwise, any shape.

    ``approximate="none"``: ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, with ``Phi`` the
    standard normal CDF (PyTorch's default). ``approximate="tanh"``:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, the approximation of the paper
    (used by BERT and GPT-2). Both as ``torch.nn.functional.gelu``. Smooth, non-monotonic
    (minimum about -0.17 near x = -0.75). Chapter 13 (q002-16, q003-activations).
    """
    approximate = _check_approximate("gelu", approximate)
    _check_elementwise("gelu", None, x)
    xp = array_module(x)
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
        return 0.5 * x * (1 + xp.tanh(inner))
    return 0.5 * x * (1 + erf(x * _SQRT1_2))


def gelu_backward(grad_out: Any, x: Any, approximate: str = "none") -> Any:
    """Gradient of ``gelu``, shape of ``x``.

    Exact: ``grad_out * (Phi(x) + x phi(x))`` with ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``.
    Tanh form, with ``t = tanh(u)``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``:
    ``grad_out * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))``.
    Chapter 13 (q002-16, q003-activations).
    """
    approximate = _check_approximate("gelu_backward", approximate)
    _check_elementwise("gelu_backward", grad_out, x)
    xp = array_module(x)
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
        return grad_out * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    cdf = 0.5 * (1 + erf(x * _SQRT1_2))
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return grad_out * (cdf + x * pdf)


def silu(x: Any) -> Any:
    """Sigmoid linear unit ``x * sigmoid(x)``, elementwise, any shape, as
    ``torch.nn.functional.silu``: Swish with beta = 1 (Elfwing et al. 2018; Ramachandran et
    al. 2017). Smooth, non-monotonic (minimum about -0.28 near x = -1.28).
    Chapter 13 (q002-16, q003-activations)."""
    _check_elementwise("silu", None, x)
    return x * sigmoid(x)


def silu_backward(grad_out: Any, x: Any) -> Any:
    """Gradient of ``silu``: ``grad_out * s * (1 + x (1 - s))`` with ``s = sigmoid(x)``.
    Chapter 13 (q002-16, q003-activations)."""
    _check_elementwise("silu_backward", grad_out, x)
    s = sigmoid(x)
    return grad_out * (s * (1 + x * (1 - s)))


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
