"""The GPU kernels of convolution and pooling: what runs instead of NumPy's loops on CuPy.

On a GPU each pass below is one elementwise kernel, one thread per value it writes, where
the CPU code's loops over window positions or batch tiles would each be a kernel launch:

- ``im2col`` writes the batch-last columns (C, kh, kw, nb, H_out, W_out) of ``conv2d``;
- ``depthwise_forward`` sums over the kh*kw window of an output value (average pooling is the
  same with a constant weight);
- ``max_pool`` finds the maximum of a window and its position, by PyTorch's rule (the first
  maximum in row-major window order, or the last NaN: every NaN replaces the running
  maximum), padding counting as ``lowest`` (-inf);
- the gathers (``col2im``, ``depthwise_input_grad``, ``max_pool_backward``) sum, for an input
  value, over the windows that hold it, so overlapping windows need no atomic adds.

Padding is an index test instead of a padded copy. Integer division bounds these kernels, so
each thread unravels its index with one division per axis, in 32 bits (64-bit division costs
several times more): a batch chunk's columns stay far below 2**31 entries
(:data:`.plan.COLUMN_BUDGET_BYTES`), and so does its input.

Every kernel takes its arrays, then the geometry (:data:`GEOMETRY`, made by :func:`geometry`),
then its outputs. This module never imports CuPy: the kernels are made from the array module
of their inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from cnn_course._types import Array
from cnn_course.backend import array_module

GEOMETRY = (
    "int32 C, int32 H, int32 W, int32 NB, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PT, int32 PL, int32 DH, int32 DW"
)

_IM2COL = """
const int k = (int)i, t1 = k / OW, t2 = t1 / OH, t3 = t2 / NB, t4 = t3 / KW, c = t4 / KH;
const int ow = k - t1 * OW, oh = t1 - t2 * OH, n = t2 - t3 * NB;
const int kj = t3 - t4 * KW, ki = t4 - c * KH;
const int y = oh * SH - PT + ki * DH, v = ow * SW - PL + kj * DW;
out = (y >= 0 && y < H && v >= 0 && v < W) ? a[((n * C + c) * H + y) * W + v] : (T)0;
"""


def _window_source(body: str) -> str:
    """CUDA source of a loop over the window of output value (plane, oh, ow), ``plane`` being
    n * C + c: ``body`` runs for each kernel offset (ki, kj), with ``y``, ``v`` the input row
    and column and ``inside`` whether they lie in the (unpadded) input."""
    return f"""
const int k = (int)i, t1 = k / OW, plane = t1 / OH, ow = k - t1 * OW, oh = t1 - plane * OH;
const int c = plane % C;
for (int ki = 0; ki < KH; ++ki) {{
    const int y = oh * SH - PT + ki * DH;
    for (int kj = 0; kj < KW; ++kj) {{
        const int v = ow * SW - PL + kj * DW;
        const bool inside = y >= 0 && y < H && v >= 0 && v < W;
        {body}
    }}
}}
"""


def _gather_source(term: str) -> str:
    """CUDA source of a gather: the value written for input position (n, c, y, v) is the sum,
    over the kernel offsets (ki, kj) whose window (oy, ox) holds it, of ``term`` (which may
    use those names and ``o``, the flat index of (n, c, oy, ox) in an (NB, C, OH, OW) array)."""
    return f"""
const int k = (int)i, t1 = k / W, t2 = t1 / H, n = t2 / C;
const int v = k - t1 * W, y = t1 - t2 * H, c = t2 - n * C;
T sum = 0;
for (int ki = 0; ki < KH; ++ki) {{
    const int ty = y + PT - ki * DH;
    if (ty < 0 || ty % SH != 0 || ty / SH >= OH) continue;
    for (int kj = 0; kj < KW; ++kj) {{
        const int tv = v + PL - kj * DW;
        if (tv < 0 || tv % SW != 0 || tv / SW >= OW) continue;
        const int oy = ty / SH, ox = tv / SW, o = ((n * C + c) * OH + oy) * OW + ox;
        sum += {term};
    }}
}}
out = sum;
"""


_TAP = "(c * KH + ki) * KW + kj"  # the weight of channel c at kernel offset (ki, kj)
_PIXEL = "(plane * H + y) * W + v"

# name: (inputs before the geometry, outputs, source)
KERNELS = {
    "im2col": ("raw T a", "T out", _IM2COL),
    "col2im": (
        "raw T a",
        "T out",
        _gather_source("a[((((c * KH + ki) * KW + kj) * NB + n) * OH + oy) * OW + ox]"),
    ),
    "depthwise_forward": (
        "raw T a, raw T b",
        "T out",
        "T sum = 0;"
        + _window_source(f"if (inside) sum += a[{_PIXEL}] * b[{_TAP}];")
        + "out = sum;",
    ),
    "depthwise_input_grad": ("raw T a, raw T b", "T out", _gather_source(f"a[o] * b[{_TAP}]")),
    "max_pool": (
        "raw T a, T lowest",
        "T out, int32 arg",
        "T best = lowest; int position = 0;"
        + _window_source(
            f"const T value = inside ? a[{_PIXEL}] : lowest;"
            " if (value > best || value != value) { best = value; position = ki * KW + kj; }"
        )
        + "out = best; arg = position;",
    ),
    "max_pool_backward": (
        "raw T a, raw int32 b",
        "T out",
        _gather_source("(b[o] == ki * KW + kj ? a[o] : (T)0)"),
    ),
}


@functools.cache
def _kernel(xp: Any, name: str) -> Any:
    """The elementwise kernel ``name`` (a key of :data:`KERNELS`) of CuPy module ``xp``,
    compiled once."""
    inputs, outputs, source = KERNELS[name]
    return xp.ElementwiseKernel(f"{inputs}, {GEOMETRY}", outputs, source, name)


def geometry(
    x_shape: Sequence[int], kernel, stride, pads, dilation, out_hw: Sequence[int]
) -> tuple[int, ...]:
    """The geometry arguments (:data:`GEOMETRY` order) of a window operation on an input of
    ``x_shape`` (NB, C, H, W); ``pads`` per side, ((top, bottom), (left, right))."""
    nb, c, h, w = x_shape
    (top, _), (left, _) = pads
    return (c, h, w, nb, *out_hw, *kernel, *stride, top, left, *dilation)


def run(name: str, inputs: Sequence[Any], geometry_args: tuple, *outputs: Array) -> None:
    """Run kernel ``name`` on ``inputs`` (arrays, made contiguous and flat: the kernels index
    them with one offset, where an n-d raw array would have it unravelled over its axes in
    every thread; and scalars), writing ``outputs`` (contiguous arrays, in C order)."""
    xp = array_module(*outputs)
    flat = [xp.ascontiguousarray(a).reshape(-1) if getattr(a, "ndim", 0) else a for a in inputs]
    _kernel(xp, name)(*flat, *geometry_args, *outputs)
