"""Argument validation shared by every operation.

Each helper raises a ``ValueError`` or ``TypeError`` whose message starts with the operation
name and names the argument and the shapes, so a student can act on it, e.g.
``conv2d: input has 3 channels but weight expects 4 (weight shape (2, 4, 3, 3))``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from cnn_course.backend import is_cupy_array, np

__all__ = [
    "pair",
    "positive_pair",
    "nonnegative_pair",
    "require_array",
    "require_float",
    "require_same_backend",
    "require_same_dtype",
    "require_number",
    "require_flag",
    "require_grad_out",
]


def _is_int(v: Any) -> bool:
    # a plain int first: the abstract-class check costs a microsecond, on every argument
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def pair(value: int | Sequence[int], name: str, op: str) -> tuple[int, int]:
    """``value`` as an ``(h, w)`` pair of ints; an int means the same for both."""
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def positive_pair(value: int | Sequence[int], name: str, op: str) -> tuple[int, int]:
    """Like :func:`pair`, and every entry must be >= 1 (stride, dilation, kernel_size)."""
    result = pair(value, name, op)
    if min(result) < 1:
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")
    return result


def nonnegative_pair(value: int | Sequence[int], name: str, op: str) -> tuple[int, int]:
    """Like :func:`pair`, and every entry must be >= 0 (padding, output_padding)."""
    result = pair(value, name, op)
    if min(result) < 0:
        raise ValueError(f"{op}: {name} must be non-negative, got {value!r}")
    return result


def require_array(x: Any, name: str, op: str, ndim: int | None = None) -> None:
    """``x`` must be a NumPy or CuPy ndarray, of rank ``ndim`` when given."""
    if not (isinstance(x, np.ndarray) or is_cupy_array(x)):
        raise TypeError(f"{op}: {name} must be a numpy or cupy ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        layout = {4: " (N, C, H, W)", 2: " (N, features)"}.get(ndim, "")
        raise ValueError(
            f"{op}: {name} must have {ndim} dimensions{layout}, got shape {tuple(x.shape)}"
        )


def require_float(x: Any, name: str, op: str, ndim: int | None = None) -> None:
    """``x`` must be a floating-point ndarray (float16/32/64), of rank ``ndim`` when given."""
    require_array(x, name, op, ndim)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{op}: {name} must have a floating-point dtype, got {x.dtype} "
            f"(convert with {name}.astype(np.float32))"
        )


def require_flag(value: Any, name: str, op: str) -> None:
    """``value`` is True or False (a bool, not a truthy object)."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def require_same_backend(op: str, **arrays: Any) -> None:
    """All given arrays (``None`` skipped) live on the same backend."""
    kinds = {name: is_cupy_array(a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        where = ", ".join(f"{n}={'cupy' if c else 'numpy'}" for n, c in kinds.items())
        raise TypeError(f"{op}: arrays must all be numpy or all be cupy, got {where}")


def require_same_dtype(op: str, **arrays: Any) -> None:
    """All given arrays (``None`` skipped) share one dtype, so float32 stays float32."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        where = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{op}: arrays must share one dtype, got {where}")


def require_number(value: Any, name: str, op: str) -> float:
    """A real scalar (Python or NumPy, not bool) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def require_grad_out(
    op: str,
    grad_out: Any,
    shape: Sequence[int],
    like: Any = None,
    same_dtype: bool = False,
) -> None:
    """``grad_out`` is an ndarray with the forward output's ``shape``.

    With ``like`` (the forward's input ``x``), it must also be a floating-point array of rank
    ``len(shape)`` on ``like``'s backend, and the message names ``like``'s shape; with
    ``same_dtype`` also of ``like``'s dtype (the convolutions, whose GEMMs write into arrays
    of that dtype).
    """
    if like is None:
        require_array(grad_out, "grad_out", op)
    else:
        require_float(grad_out, "grad_out", op, ndim=len(shape))
        require_same_backend(op, grad_out=grad_out, x=like)
    got, shape = tuple(grad_out.shape), tuple(shape)
    if same_dtype and (got != shape or grad_out.dtype != like.dtype):
        raise ValueError(
            f"{op}: grad_out must have the forward output's shape {shape} and dtype "
            f"{like.dtype}, got shape {got} and dtype {grad_out.dtype}"
        )
    if got != shape:
        context = "" if like is None else f" (x shape {tuple(like.shape)})"
        raise ValueError(
            f"{op}: grad_out has shape {got} but the forward output has shape {shape}{context}"
        )
