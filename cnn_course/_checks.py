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
]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


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


def require_same_backend(op: str, **arrays: Any) -> None:
    """All given arrays (``None`` skipped) live on the same backend."""
    kinds = {name: is_cupy_array(a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        where = ", ".join(f"{n}={'cupy' if c else 'numpy'}" for n, c in kinds.items())
        raise TypeError(f"{op}: arrays must all be numpy or all be cupy, got {where}")
