"""Inverted dropout, with an explicit keep mask.

Training with dropout draws a random keep mask, and the backward pass must use the *same*
mask. The mask is therefore an argument: a layer draws it once per step with
:func:`dropout_mask` (from a seeded generator of the array's backend, so tests are
deterministic) and passes it to both :func:`dropout` and :func:`dropout_backward`::

    mask = dropout_mask(x.shape, p, seed=step, xp=array_module(x))
    y = dropout(x, p, training=True, mask=mask)
    grad_x = dropout_backward(grad_y, x, p, training=True, mask=mask)

Inverted dropout scales the kept units by ``1 / (1 - p)`` during training, so the expected
activation is unchanged and evaluation is the identity (no rescaling at test time).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from cnn_course._checks import (
    require_array,
    require_flag,
    require_float,
    require_grad_out,
    require_number,
    require_same_backend,
)
from cnn_course.backend import array_module, backend_module

__all__ = ["dropout", "dropout_backward", "dropout_mask"]


def _check_p(op: str, p: Any) -> float:
    p = require_number(p, "p", op)
    if not 0 <= p < 1:
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1), got {p}")
    return p


def dropout_mask(
    shape: Sequence[int], p: float, seed: int | None = None, xp: ModuleType | None = None
) -> Any:
    """A boolean keep mask: each entry True (kept) with probability ``1 - p``, independently.

    Parameters
    ----------
    shape : tuple of ints, the shape of the activations
    p : float in [0, 1), the drop probability
    seed : int or None, seed of ``xp.random.default_rng`` (None: fresh entropy)
    xp : numpy or cupy module, where the mask is made (default: the current backend)

    Returns
    -------
    bool array of ``shape``.
    """
    p = _check_p("dropout_mask", p)
    xp = backend_module() if xp is None else xp
    return xp.random.default_rng(seed).random(tuple(shape)) >= p


def _check_dropout(op: str, x: Any, p: Any, training: Any, mask: Any) -> float:
    require_float(x, "x", op)
    p = _check_p(op, p)
    require_flag(training, "training", op)
    if mask is not None:
        require_array(mask, "mask", op)
        require_same_backend(op, x=x, mask=mask)
        if mask.dtype.kind != "b" or tuple(mask.shape) != tuple(x.shape):
            raise ValueError(
                f"{op}: mask must be a bool array of x's shape {tuple(x.shape)}, got "
                f"{mask.dtype} of shape {tuple(mask.shape)}"
            )
    return p


def dropout(x: Any, p: float = 0.5, training: bool = True, mask: Any = None) -> Any:
    """Inverted dropout: ``x * mask / (1 - p)`` in training, ``x`` itself in evaluation.

    Parameters
    ----------
    x : array, any shape
    p : float in [0, 1), the probability of dropping a unit
    training : bool; False returns ``x`` unchanged (the mask is ignored)
    mask : bool array of ``x``'s shape from :func:`dropout_mask` (True = keep), or None to
        draw a fresh one (then the backward pass cannot reproduce it: pass the mask to both
        passes when training)

    Returns
    -------
    array, shape of ``x``.
    """
    p = _check_dropout("dropout", x, p, training, mask)
    if not training:
        return x
    if mask is None:
        mask = dropout_mask(x.shape, p, xp=array_module(x))
    # Left to right: the bool mask and the Python scale keep x's dtype.
    return x * mask * (1 / (1 - p))


def dropout_backward(
    grad_out: Any, x: Any, p: float = 0.5, training: bool = True, mask: Any = None
) -> Any:
    """Gradient of ``dropout``: ``grad_out * mask / (1 - p)`` in training (the mask of the
    forward pass is required), ``grad_out`` in evaluation. Shape of ``x``."""
    op = "dropout_backward"
    p = _check_dropout(op, x, p, training, mask)
    require_grad_out(op, grad_out, x.shape)
    if not training:
        return grad_out
    if mask is None:
        raise ValueError(f"{op}: in training, pass the mask the forward pass used")
    return grad_out * mask * (1 / (1 - p))
