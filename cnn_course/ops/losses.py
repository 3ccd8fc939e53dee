"""Loss functions and weight penalties, with backward passes.

Every loss averages over the samples (PyTorch's ``reduction="mean"``) and returns a scalar
(a 0-d array on CuPy) of the input's dtype. Every backward takes the scalar upstream gradient
``grad_out`` first (1.0 when the loss is the final objective), then the forward's arguments,
and returns the gradient of the prediction (``logits``/``input``/``weight``) only: targets
are labels, not something to differentiate.

Classification losses take class indices: ``logits`` (N, C) or (N, C, *) and an integer
``target`` (N,) or (N, *) with values in [0, C).
"""

from __future__ import annotations

import numbers
from typing import Any

from cnn_course._checks import (
    require_array,
    require_float,
    require_number,
    require_same_backend,
    require_same_dtype,
)
from cnn_course.backend import array_module
from cnn_course.ops.activations import log_softmax, softmax

__all__ = [
    "cross_entropy",
    "cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "hinge_loss",
    "hinge_loss_backward",
    "focal_loss",
    "focal_loss_backward",
    "l1_penalty",
    "l1_penalty_backward",
    "l2_penalty",
    "l2_penalty_backward",
]


# ----------------------------------------------------------------------------- validation
def _scalar_grad(op: str, grad_out: Any, like: Any) -> Any:
    """``grad_out`` (a Python or NumPy real, or a 0-d array) as a 0-d array of ``like``'s
    dtype, so a float64 scalar cannot promote a float32 gradient."""
    xp = array_module(like)
    if isinstance(grad_out, numbers.Real) and not isinstance(grad_out, bool):
        return xp.asarray(float(grad_out), dtype=like.dtype)
    if not hasattr(grad_out, "shape") or getattr(grad_out, "dtype", None) is None:
        raise TypeError(f"{op}: grad_out must be a real number or a 0-d array, got {grad_out!r}")
    require_same_backend(op, grad_out=grad_out, input=like)
    if tuple(grad_out.shape) != ():
        raise ValueError(
            f"{op}: grad_out must be a scalar (the loss is one), got shape {tuple(grad_out.shape)}"
        )
    if grad_out.dtype.kind != "f":
        raise TypeError(f"{op}: grad_out must be a float, got dtype {grad_out.dtype}")
    return grad_out.astype(like.dtype)


def _check_classes(op: str, logits: Any, target: Any, **class_arrays: Any) -> None:
    """``logits`` (N, C, *), integer ``target`` (N, *) in [0, C), per-class arrays (C,)."""
    require_float(logits, "logits", op)
    if logits.ndim < 2:
        raise ValueError(f"{op}: logits must have shape (N, C, *), got {tuple(logits.shape)}")
    require_array(target, "target", op)
    require_same_backend(op, logits=logits, target=target, **class_arrays)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{op}: target must have shape {expected} for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    n_classes = logits.shape[1]
    xp = array_module(logits)
    # One device-to-host read of a single flag: a clear error beats an IndexError later.
    if target.size and bool(xp.any((target < 0) | (target >= n_classes))):
        raise ValueError(f"{op}: target values must be class indices in [0, {n_classes})")
    for name, a in class_arrays.items():
        if a is not None:
            require_float(a, name, op, ndim=1)
            if a.shape[0] != n_classes:
                raise ValueError(
                    f"{op}: {name} must have one entry per class, shape ({n_classes},), "
                    f"got {tuple(a.shape)}"
                )
    require_same_dtype(op, logits=logits, **class_arrays)


def _flatten(logits: Any, target: Any) -> tuple[Any, Any]:
    """(N, C, *) logits and (N, *) target as (M, C) rows and (M,) labels."""
    xp = array_module(logits)
    rows = xp.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1])
    return rows, target.reshape(-1)


def _unflatten(grad_rows: Any, logits: Any) -> Any:
    """Inverse of :func:`_flatten` for a gradient of the rows."""
    xp = array_module(logits)
    moved = grad_rows.reshape((logits.shape[0],) + tuple(logits.shape[2:]) + (logits.shape[1],))
    return xp.moveaxis(moved, -1, 1)


def _pick(rows: Any, labels: Any) -> Any:
    """``rows[i, labels[i]]`` for every row i: shape (M,)."""
    xp = array_module(rows)
    return xp.take_along_axis(rows, labels[:, None], axis=1)[:, 0]


def _one_hot(labels: Any, n_classes: int) -> Any:
    """Boolean (M, C) matrix, True at ``[i, labels[i]]``."""
    xp = array_module(labels)
    return xp.arange(n_classes) == labels[:, None]


# ----------------------------------------------------------------------------- cross-entropy
def _check_smoothing(op: str, label_smoothing: Any) -> float:
    label_smoothing = require_number(label_smoothing, "label_smoothing", op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return label_smoothing


def cross_entropy(
    logits: Any, target: Any, weight: Any = None, label_smoothing: float = 0.0
) -> Any:
    """Softmax cross-entropy with class indices, mean over the samples.

    ``loss_i = -log softmax(logits_i)[target_i]``, computed with ``log_softmax`` (the
    max-shift), so logits like 1e4 give a finite, exact loss instead of ``log(0)``. With
    per-class ``weight`` it is PyTorch's weighted mean ``sum_i w[t_i] loss_i / sum_i w[t_i]``.

    With ``label_smoothing = eps`` (Szegedy et al. 2016; Chapter 15, q002-41) the target is
    the mixture ``(1 - eps) * one_hot(t) + eps / C``, exactly as
    ``torch.nn.functional.cross_entropy(..., label_smoothing=eps)``:
    ``(1 - eps) * CE + (eps / C) * sum_i sum_c w[c] * (-log p_ic) / sum_i w[t_i]``, where
    the uniform term is weighted by the class weights too (all ones without ``weight``).

    Parameters
    ----------
    logits : array, shape (N, C) or (N, C, *)
    target : integer array, shape (N,) or (N, *), values in [0, C)
    weight : array, shape (C,), or None
    label_smoothing : float in [0, 1]

    Returns
    -------
    scalar of the logits' dtype.
    """
    op = "cross_entropy"
    eps = _check_smoothing(op, label_smoothing)
    _check_classes(op, logits, target, weight=weight)
    xp = array_module(logits)
    rows, labels = _flatten(logits, target)
    log_p = log_softmax(rows, dim=1)
    picked = _pick(log_p, labels)
    if weight is None:
        loss = -xp.mean(picked)
        if eps:
            loss = (1 - eps) * loss - eps / rows.shape[1] * xp.mean(xp.sum(log_p, axis=1))
        return loss
    w = weight[labels]
    total = xp.sum(w)
    loss = -xp.sum(w * picked) / total
    if eps:
        smooth = -xp.sum(log_p * weight) / total
        loss = (1 - eps) * loss + eps / rows.shape[1] * smooth
    return loss


def cross_entropy_backward(
    grad_out: Any, logits: Any, target: Any, weight: Any = None, label_smoothing: float = 0.0
) -> Any:
    """Gradient of ``cross_entropy`` w.r.t. ``logits``: ``softmax(z) - one_hot(t)`` per
    sample, times ``grad_out / N`` (or ``grad_out * w[t_i] / sum w[t]`` with weights).
    Shape of ``logits``.

    With ``label_smoothing = eps`` and no weights the row gradient is
    ``softmax(z) - ((1 - eps) * one_hot(t) + eps / C)``: the prediction minus the smoothed
    target (Chapter 15, q002-41). With weights it is ``((1 - eps) * w[t] * (p - one_hot(t))
    + (eps / C) * (sum(w) * p - w)) / sum_i w[t_i]``.
    """
    op = "cross_entropy_backward"
    eps = _check_smoothing(op, label_smoothing)
    _check_classes(op, logits, target, weight=weight)
    grad_out = _scalar_grad(op, grad_out, logits)
    xp = array_module(logits)
    rows, labels = _flatten(logits, target)
    n_classes = rows.shape[1]
    p = softmax(rows, dim=1)
    delta = p - _one_hot(labels, n_classes)
    if weight is None:
        if eps:
            delta = (1 - eps) * delta + eps / n_classes * (n_classes * p - 1)
        return _unflatten(delta * (grad_out / rows.shape[0]), logits)
    w = weight[labels]
    scale = grad_out / xp.sum(w)
    grad = delta * w[:, None]
    if eps:
        grad = (1 - eps) * grad + eps / n_classes * (xp.sum(weight) * p - weight)
    return _unflatten(grad * scale, logits)


# ----------------------------------------------------------------------------- focal loss
def _check_focal(op: str, logits: Any, target: Any, gamma: Any, alpha: Any) -> float:
    gamma = require_number(gamma, "gamma", op)
    if gamma < 0:
        raise ValueError(f"{op}: gamma must be non-negative, got {gamma}")
    _check_classes(op, logits, target, alpha=alpha)
    return gamma


def _focal_terms(rows: Any, labels: Any, alpha: Any) -> tuple[Any, Any, Any]:
    """``(log p_t, 1 - p_t, alpha_t)`` per row; ``1 - p_t = -expm1(log p_t)`` stays exact
    when ``p_t`` is close to 1."""
    log_pt = _pick(log_softmax(rows, dim=1), labels)
    alpha_t = 1 if alpha is None else alpha[labels]
    return log_pt, -array_module(rows).expm1(log_pt), alpha_t


def focal_loss(logits: Any, target: Any, gamma: float = 2.0, alpha: Any = None) -> Any:
    """Softmax focal loss (Lin et al. 2017), mean over the samples.

    ``loss_i = -alpha[t_i] * (1 - p_t)**gamma * log p_t`` with ``p_t = softmax(z_i)[t_i]``.
    The factor ``(1 - p_t)**gamma`` shrinks the loss of well-classified samples (p_t near 1),
    so the many easy examples stop drowning out the few hard ones. ``gamma=0`` and no alpha
    is exactly ``cross_entropy``. With ``alpha`` the mean is a plain mean over the samples
    (the paper's normalization), not the weighted mean of ``cross_entropy(weight=...)``.

    Parameters
    ----------
    logits : array, shape (N, C) or (N, C, *)
    target : integer array, shape (N,) or (N, *), values in [0, C)
    gamma : float >= 0, the focusing parameter
    alpha : array, shape (C,), per-class balance weights, or None

    Returns
    -------
    scalar of the logits' dtype.
    """
    gamma = _check_focal("focal_loss", logits, target, gamma, alpha)
    rows, labels = _flatten(logits, target)
    log_pt, q, alpha_t = _focal_terms(rows, labels, alpha)
    return -array_module(logits).mean(alpha_t * q**gamma * log_pt)


def focal_loss_backward(
    grad_out: Any, logits: Any, target: Any, gamma: float = 2.0, alpha: Any = None
) -> Any:
    """Gradient of ``focal_loss`` w.r.t. ``logits``, shape of ``logits``.

    With ``q = 1 - p_t``: ``dloss_i/dz = alpha_t * q**gamma * (1 - gamma * p_t * log(p_t) /
    q) * (softmax(z_i) - one_hot(t_i))``. ``log(p_t) / q`` tends to -1 as ``q -> 0`` and is
    taken as -1 there, so the gradient stays finite for any gamma >= 0.
    """
    op = "focal_loss_backward"
    gamma = _check_focal(op, logits, target, gamma, alpha)
    grad_out = _scalar_grad(op, grad_out, logits)
    xp = array_module(logits)
    rows, labels = _flatten(logits, target)
    log_pt, q, alpha_t = _focal_terms(rows, labels, alpha)
    positive = q > 0
    ratio = xp.where(positive, log_pt / xp.where(positive, q, 1), -1)
    coef = alpha_t * q**gamma * (1 - gamma * xp.exp(log_pt) * ratio)
    delta = softmax(rows, dim=1) - _one_hot(labels, rows.shape[1])
    return _unflatten(delta * (grad_out / rows.shape[0] * coef)[:, None], logits)


# ----------------------------------------------------------------------------- hinge
def _check_hinge(op: str, logits: Any, target: Any, margin: Any) -> float:
    margin = require_number(margin, "margin", op)
    require_float(logits, "logits", op, ndim=2)
    _check_classes(op, logits, target)
    return margin


def _hinge_active(logits: Any, target: Any, margin: float) -> tuple[Any, Any, Any]:
    """``(margins, active, one_hot)``: ``margin - z_t + z_j`` for every class j, where it
    counts (positive and j != t), and the one-hot of the target."""
    one_hot = _one_hot(target, logits.shape[1])
    margins = margin - _pick(logits, target)[:, None] + logits
    return margins, (margins > 0) & ~one_hot, one_hot


def hinge_loss(logits: Any, target: Any, margin: float = 1.0) -> Any:
    """Multi-class SVM (hinge) loss, as ``torch.nn.functional.multi_margin_loss`` (p=1).

    ``loss_i = sum_{j != t_i} max(0, margin - z_{t_i} + z_j) / C``, then the mean over the
    samples: zero once the correct class beats every other by at least ``margin``.

    Parameters
    ----------
    logits : array, shape (N, C)
    target : integer array, shape (N,), values in [0, C)
    margin : float

    Returns
    -------
    scalar of the logits' dtype.
    """
    margin = _check_hinge("hinge_loss", logits, target, margin)
    xp = array_module(logits)
    margins, active, _ = _hinge_active(logits, target, margin)
    return xp.sum(xp.where(active, margins, 0)) / logits.size


def hinge_loss_backward(grad_out: Any, logits: Any, target: Any, margin: float = 1.0) -> Any:
    """Gradient of ``hinge_loss`` w.r.t. ``logits``, shape (N, C): ``+1`` for each violating
    class, ``-(number of violations)`` for the target class, times ``grad_out / (N C)``.
    A margin of exactly 0 counts as not violated (PyTorch's choice at the kink)."""
    op = "hinge_loss_backward"
    margin = _check_hinge(op, logits, target, margin)
    grad_out = _scalar_grad(op, grad_out, logits)
    xp = array_module(logits)
    _, active, one_hot = _hinge_active(logits, target, margin)
    count = xp.sum(active, axis=1, keepdims=True)
    coef = xp.where(one_hot, -count, active).astype(logits.dtype)
    return coef * (grad_out / logits.size)


# ----------------------------------------------------------------------------- MSE
def _check_mse(op: str, input: Any, target: Any) -> None:
    require_float(input, "input", op)
    require_float(target, "target", op)
    require_same_backend(op, input=input, target=target)
    require_same_dtype(op, input=input, target=target)
    if input.shape != target.shape:
        raise ValueError(
            f"{op}: input and target must have the same shape, got {tuple(input.shape)} and "
            f"{tuple(target.shape)}"
        )


def mse_loss(input: Any, target: Any) -> Any:
    """Mean squared error ``mean((input - target)**2)`` over every element.

    Parameters
    ----------
    input, target : arrays of the same shape and dtype

    Returns
    -------
    scalar of the input's dtype.
    """
    _check_mse("mse_loss", input, target)
    diff = input - target
    return array_module(input).mean(diff * diff)


def mse_loss_backward(grad_out: Any, input: Any, target: Any) -> Any:
    """Gradient of ``mse_loss`` w.r.t. ``input``: ``2 (input - target) * grad_out / n`` with
    n the number of elements. Shape of ``input``."""
    op = "mse_loss_backward"
    _check_mse(op, input, target)
    grad_out = _scalar_grad(op, grad_out, input)
    return (input - target) * (2 * grad_out / input.size)


# ----------------------------------------------------------------------------- penalties
def l1_penalty(weight: Any) -> Any:
    """L1 penalty ``sum |w|`` (add ``lambda * l1_penalty(w)`` to the loss).

    Its gradient has the same size, ``lambda * sign(w)``, however small ``w`` is, so gradient
    descent pushes small weights all the way to zero: L1 makes weights sparse.
    """
    require_float(weight, "weight", "l1_penalty")
    xp = array_module(weight)
    return xp.sum(xp.abs(weight))


def l1_penalty_backward(grad_out: Any, weight: Any) -> Any:
    """Gradient of ``l1_penalty``: ``grad_out * sign(w)``; at ``w = 0`` the subgradient 0
    (PyTorch's choice for ``abs``). Shape of ``weight``."""
    op = "l1_penalty_backward"
    require_float(weight, "weight", op)
    grad_out = _scalar_grad(op, grad_out, weight)
    return array_module(weight).sign(weight) * grad_out


def l2_penalty(weight: Any) -> Any:
    """L2 penalty ``0.5 * sum w**2`` (add ``lambda * l2_penalty(w)`` to the loss).

    The factor 0.5 makes the gradient exactly ``w``, so the penalty adds ``lambda * w`` to
    the gradient: SGD's ``weight_decay=lambda``. The pull is proportional to ``w``: weights
    shrink towards zero but, unlike with L1, rarely reach it.
    """
    require_float(weight, "weight", "l2_penalty")
    return 0.5 * array_module(weight).sum(weight * weight)


def l2_penalty_backward(grad_out: Any, weight: Any) -> Any:
    """Gradient of ``l2_penalty``: ``grad_out * w``. Shape of ``weight``."""
    op = "l2_penalty_backward"
    require_float(weight, "weight", op)
    return weight * _scalar_grad(op, grad_out, weight)
