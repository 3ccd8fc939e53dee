"""The fully connected (linear) layer."""

from __future__ import annotations

from typing import Any

from cnn_course._checks import (
    require_float,
    require_grad_out,
    require_same_backend,
    require_same_dtype,
)
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops._engine import threads

__all__ = ["linear", "linear_backward"]


def _check_linear(op: str, x: Any, weight: Any, bias: Any) -> None:
    require_float(x, "x", op)
    require_float(weight, "weight", op, ndim=2)
    if bias is not None:
        require_float(bias, "bias", op, ndim=1)
    require_same_backend(op, x=x, weight=weight, bias=bias)
    require_same_dtype(op, x=x, weight=weight, bias=bias)
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[-1] if x.ndim else 'no'} input features (shape "
            f"{tuple(x.shape)}) but weight expects {weight.shape[1]} (weight shape "
            f"{tuple(weight.shape)})"
        )
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(
            f"{op}: bias has {bias.shape[0]} entries but weight has {weight.shape[0]} output "
            f"features (weight shape {tuple(weight.shape)})"
        )


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    """Fully connected layer ``y = x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Every output is connected to every input: ``in_features * out_features`` weights plus
    ``out_features`` biases, whatever the batch size.

    Parameters
    ----------
    x : array, shape (*, in_features), e.g. (N, in_features)
    weight : array, shape (out_features, in_features)
    bias : array, shape (out_features,), or None

    Returns
    -------
    array, shape (*, out_features).
    """
    _check_linear("linear", x, weight, bias)
    with threads.blas_for(x.size * weight.shape[0], is_cupy_array(x)):  # small: one thread
        y = x @ weight.T
    return y if bias is None else y + bias


def linear_backward(grad_out: Any, x: Any, weight: Any, bias: Any = None) -> tuple[Any, Any, Any]:
    """Gradients of ``linear``: ``(grad_x, grad_weight, grad_bias)``.

    ``grad_x = grad_out @ weight`` (shape of ``x``); ``grad_weight = grad_out^T @ x`` summed
    over every leading axis (out_features, in_features); ``grad_bias`` = ``grad_out`` summed
    over the leading axes (out_features,), or None without a bias.
    """
    op = "linear_backward"
    _check_linear(op, x, weight, bias)
    require_grad_out(op, grad_out, tuple(x.shape[:-1]) + (weight.shape[0],))
    require_same_backend(op, grad_out=grad_out, x=x)
    xp = array_module(x)
    grad_rows = grad_out.reshape(-1, weight.shape[0])
    with threads.blas_for(2 * x.size * weight.shape[0], is_cupy_array(x)):  # two GEMMs
        grad_weight = grad_rows.T @ x.reshape(-1, weight.shape[1])
        grad_x = grad_out @ weight
    grad_bias = None if bias is None else xp.sum(grad_rows, axis=0)
    return grad_x, grad_weight, grad_bias
