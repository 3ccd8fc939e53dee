"""Index arithmetic shared by the operations (pooling, sampling): the scatter-add."""

from __future__ import annotations

import math

from cnn_course._types import Array
from cnn_course.backend import array_module, is_cupy_array
from cnn_course.ops._engine import threads

#: Planes are zeroed and scattered into in blocks of about this many bytes (the L2 cache).
BLOCK_BYTES = 2**20


def scatter_add(values: Array, index: Array, size: int, unique: bool = False) -> Array:
    """``out[..., j] = sum of values[..., o] where index[..., o] == j``: (..., O) -> (..., size).

    The adjoint of a gather ``x[..., index]``: repeated indices accumulate. ``index`` broadcasts
    against ``values``. One unbuffered ``add.at`` on the flattened planes (NumPy 2 and CuPy
    both run it vectorised), in the dtype of ``values``; or, when the caller knows that no
    index repeats within a plane (``unique``), a plain assignment, which is faster. On a CPU
    the planes are split over the engine's threads (each writes its own planes), in blocks
    of :data:`BLOCK_BYTES` zeroed just before the scatter, while they are in cache.
    """
    xp = array_module(values)
    lead = values.shape[:-1]
    planes = math.prod(lead)
    cupy = is_cupy_array(values)
    out = xp.empty((planes, size), dtype=values.dtype)
    flat_values = values.reshape(planes, -1)
    flat_index = xp.broadcast_to(index, values.shape).reshape(planes, -1)
    # a block of planes is zeroed and scattered into while it is in cache (a GPU takes all)
    step = planes if cupy else max(1, BLOCK_BYTES // max(1, size * values.itemsize))

    def part(s: slice) -> None:
        offsets = xp.arange(min(step, s.stop - s.start), dtype=xp.int64)[:, None] * size
        for a in range(s.start, s.stop, step):
            b = min(a + step, s.stop)
            target = out[a:b]
            target.fill(0)
            flat = (flat_index[a:b] + offsets[: b - a]).reshape(-1)
            if unique:
                target.reshape(-1)[flat] = flat_values[a:b].reshape(-1)
            else:
                xp.add.at(target.reshape(-1), flat, flat_values[a:b].reshape(-1))

    if cupy:
        part(slice(0, planes))
    else:
        threads.parallel(part, planes, out.nbytes)
    return out.reshape(*lead, size)
