"""Index arithmetic shared by the operations (pooling, sampling): the scatter-add."""

from __future__ import annotations

import math
from typing import Any

from cnn_course.backend import array_module

Array = Any


def scatter_add(values: Array, index: Array, size: int, unique: bool = False) -> Array:
    """``out[..., j] = sum of values[..., o] where index[..., o] == j``: (..., O) -> (..., size).

    The adjoint of a gather ``x[..., index]``: repeated indices accumulate. ``index`` broadcasts
    against ``values``. One unbuffered ``add.at`` on the flattened planes (NumPy 2 and CuPy
    both run it vectorised), in the dtype of ``values``; or, when the caller knows that no
    index repeats within a plane (``unique``), a plain assignment, which is faster.
    """
    xp = array_module(values)
    lead = values.shape[:-1]
    planes = math.prod(lead)
    offsets = xp.arange(planes, dtype=xp.int64).reshape(*lead, 1) * size
    out = xp.zeros(planes * size, dtype=values.dtype)
    flat = (index + offsets).reshape(-1)
    if unique:
        out[flat] = values.reshape(-1)
    else:
        xp.add.at(out, flat, values.reshape(-1))
    return out.reshape(*lead, size)
