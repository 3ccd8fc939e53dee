"""Grading cases, drawn from the seed chosen when grading starts.

A generator ``gen(rng, index) -> Case`` makes case ``index`` of an exercise. The *shape* of
each case (stride, padding, bias or not, dtype) comes from a fixed template chosen by
``index``, so that every grading run covers the same situations (a stride bug always loses
the same cases); the sizes and the values come from ``rng``, so answers cannot be
hard-coded. :func:`make_case` seeds ``rng`` from the grading seed, the exercise id and the
case index, so restricting grading to some exercises does not change the others' cases.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnn_course.backend import np
from cnn_course.ops.conv import conv_output_size


@dataclass
class Case:
    """Positional and keyword arguments of one call, and a description without values."""

    args: tuple
    kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = [_short(v) for v in self.args]
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


def _short(value: Any) -> str:
    """An argument as a report shows it: arrays by shape and dtype, never by value."""
    if isinstance(value, np.ndarray):
        return f"array{tuple(value.shape)} {value.dtype}"
    return repr(value)


def _normal(rng: np.random.Generator, shape: tuple, dtype: str = "float64") -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _distinct(rng: np.random.Generator, shape: tuple, dtype: str = "float64") -> np.ndarray:
    """Values without ties (so that a maximum is unique), in random order."""
    size = int(np.prod(shape))
    return (rng.permutation(size) / size + rng.uniform(0, 1e-3, size)).reshape(shape).astype(dtype)


def _pick(templates: list[dict], index: int) -> dict:
    return templates[index % len(templates)]


# ------------------------------------------------------------------------- convolution

# (stride, padding, kernel, bias, dtype, batch): the situations every grading covers.
CONV_TEMPLATES = [
    {"stride": 1, "padding": 0, "kernel": (3, 3), "bias": True, "dtype": "float32", "n": 2},
    {"stride": 2, "padding": 1, "kernel": (3, 3), "bias": True, "dtype": "float64", "n": 1},
    {"stride": (1, 2), "padding": (0, 1), "kernel": (2, 3), "bias": False, "dtype": "float32",
     "n": 2},
    {"stride": 1, "padding": 2, "kernel": (3, 2), "bias": True, "dtype": "float64", "n": 3},
    {"stride": 3, "padding": 0, "kernel": (1, 1), "bias": True, "dtype": "float64", "n": 2},
]  # fmt: skip


def _conv_setup(rng: np.random.Generator, t: dict) -> tuple[np.ndarray, np.ndarray, Any]:
    c_in, c_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    h, w = int(rng.integers(5, 9)), int(rng.integers(5, 9))
    x = _normal(rng, (t["n"], c_in, h, w), t["dtype"])
    weight = _normal(rng, (c_out, c_in, *t["kernel"]), t["dtype"])
    bias = _normal(rng, (c_out,), t["dtype"]) if t["bias"] else None
    return x, weight, bias


def conv2d(rng: np.random.Generator, index: int) -> Case:
    t = _pick(CONV_TEMPLATES, index)
    x, weight, bias = _conv_setup(rng, t)
    return Case((x, weight, bias), {"stride": t["stride"], "padding": t["padding"]})


def _out_hw(x: np.ndarray, kernel: tuple, stride: Any, padding: Any) -> tuple[int, int]:
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    return tuple(conv_output_size(x.shape[2 + i], kernel[i], s[i], p[i]) for i in range(2))


def conv2d_backward(rng: np.random.Generator, index: int) -> Case:
    t = _pick(CONV_TEMPLATES, index)
    x, weight, _ = _conv_setup(rng, t)
    oh, ow = _out_hw(x, t["kernel"], t["stride"], t["padding"])
    grad_out = _normal(rng, (x.shape[0], weight.shape[0], oh, ow), t["dtype"])
    return Case((grad_out, x, weight), {"stride": t["stride"], "padding": t["padding"]})


def conv_transpose2d(rng: np.random.Generator, index: int) -> Case:
    t = _pick(CONV_TEMPLATES, index)
    x, weight, bias = _conv_setup(rng, t)
    weight = weight.transpose(1, 0, 2, 3).copy()  # a transposed conv's (C_in, C_out, kh, kw)
    return Case((x, weight, bias), {"stride": t["stride"], "padding": t["padding"]})


def im2col(rng: np.random.Generator, index: int) -> Case:
    t = _pick(CONV_TEMPLATES, index)
    x, _, _ = _conv_setup(rng, t)
    return Case((x, t["kernel"]), {"stride": t["stride"], "padding": t["padding"]})


OUTPUT_SIZE_TEMPLATES = [
    {"stride": 1, "padding": 0, "dilation": 1},
    {"stride": 2, "padding": 1, "dilation": 1},
    {"stride": 1, "padding": 2, "dilation": 2},
    {"stride": 3, "padding": 0, "dilation": 3},
]


def conv_output_size_case(rng: np.random.Generator, index: int) -> Case:
    t = _pick(OUTPUT_SIZE_TEMPLATES, index)
    kernel = int(rng.integers(1, 6))
    size = int(rng.integers(t["dilation"] * (kernel - 1) + 1, 64))
    return Case((size, kernel), dict(t))


# ----------------------------------------------------------------------------- pooling

POOL_TEMPLATES = [
    {"kernel_size": 2, "stride": None, "padding": 0, "dtype": "float64"},
    {"kernel_size": 3, "stride": 2, "padding": 1, "dtype": "float32"},
    {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0), "dtype": "float64"},
]


def _pool_x(rng: np.random.Generator, t: dict) -> np.ndarray:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *rng.integers(5, 9, size=2))
    return _distinct(rng, tuple(int(s) for s in shape), t["dtype"])


def _pool_kwargs(t: dict) -> dict:
    return {"stride": t["stride"], "padding": t["padding"]}


def pool(rng: np.random.Generator, index: int) -> Case:
    t = _pick(POOL_TEMPLATES, index)
    return Case((_pool_x(rng, t), t["kernel_size"]), _pool_kwargs(t))


def pool_backward(rng: np.random.Generator, index: int) -> Case:
    t = _pick(POOL_TEMPLATES, index)
    x = _pool_x(rng, t)
    k, s, p = (t[n] for n in ("kernel_size", "stride", "padding"))
    k2 = k if isinstance(k, tuple) else (k, k)
    oh, ow = _out_hw(x, k2, k if s is None else s, p)
    grad_out = _normal(rng, (*x.shape[:2], oh, ow), t["dtype"])
    return Case((grad_out, x, k), _pool_kwargs(t))


# ---------------------------------------------------------------- elementwise and losses


def elementwise_backward(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), 3, int(rng.integers(2, 5)))
    x = _normal(rng, shape, dtype)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink
    return Case((_normal(rng, shape, dtype), x))


def cross_entropy(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    n, c = int(rng.integers(1, 6)), int(rng.integers(2, 7))
    scale = (1.0, 30.0)[index % 2]  # large logits: the stable formulation is needed
    logits = _normal(rng, (n, c), dtype) * np.asarray(scale, dtype)
    return Case((logits, rng.integers(0, c, size=n).astype("int64")))


def linear_backward(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    n, d_in, d_out = (int(v) for v in rng.integers(1, 6, size=3))
    x, weight = _normal(rng, (n, d_in), dtype), _normal(rng, (d_out, d_in), dtype)
    bias = _normal(rng, (d_out,), dtype) if index % 2 == 0 else None  # None: no grad_bias
    return Case((_normal(rng, (n, d_out), dtype), x, weight, bias))


def dropout(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    p = (0.5, 0.2, 0.8)[index % 3]
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), 3, 3)
    mask = rng.uniform(size=shape) >= p
    return Case((_normal(rng, shape, dtype),), {"p": p, "mask": mask})


def batch_norm(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    n, c = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    x = _normal(rng, (n, c, 3, int(rng.integers(2, 5))), dtype) * 3 + 1
    weight, bias = _normal(rng, (c,), dtype), _normal(rng, (c,), dtype)
    return Case((x, weight, bias), {"eps": 1e-5})


def batch_norm_backward(rng: np.random.Generator, index: int) -> Case:
    base = batch_norm(rng, index)
    x, weight, _ = base.args
    return Case((_normal(rng, x.shape, str(x.dtype)), x, weight), {"eps": 1e-5})


# -------------------------------------------------------------------- networks, optim

RF_TEMPLATES = [{"dilated": False}, {"dilated": True}, {"dilated": False}]


def receptive_field(rng: np.random.Generator, index: int) -> Case:
    t = _pick(RF_TEMPLATES, index)
    depth = int(rng.integers(2, 7))
    kernel_size = tuple(int(k) for k in rng.choice([1, 3, 5, 7], size=depth))
    stride = tuple(int(s) for s in rng.choice([1, 2], size=depth))
    dilation = tuple(int(2**i) if t["dilated"] else 1 for i in range(depth))
    return Case((kernel_size, stride, dilation))


COUNT_TEMPLATES = [
    {"groups": 1, "bias": True, "stride": 1, "padding": 1},
    {"groups": 2, "bias": False, "stride": 2, "padding": 0},
    {"groups": "depthwise", "bias": True, "stride": 1, "padding": 1},
]


def conv_cost(rng: np.random.Generator, index: int) -> Case:
    t = _pick(COUNT_TEMPLATES, index)
    c_in = int(rng.integers(1, 9)) * 4
    groups = c_in if t["groups"] == "depthwise" else t["groups"]
    c_out = c_in if t["groups"] == "depthwise" else int(rng.integers(1, 9)) * 2
    kernel = int(rng.choice([1, 3, 5]))
    size = (int(rng.integers(kernel + 1, 65)), int(rng.integers(kernel + 1, 65)))
    kwargs = {"stride": t["stride"], "padding": t["padding"], "groups": groups, "bias": t["bias"]}
    return Case((c_in, c_out, kernel, size), kwargs)


OPTIM_TEMPLATES = [{"steps": 1}, {"steps": 3}, {"steps": 6}]


def optimizer(rng: np.random.Generator, index: int) -> Case:
    steps = _pick(OPTIM_TEMPLATES, index)["steps"]
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)))
    param = _normal(rng, shape)
    grads = _normal(rng, (steps, *shape))
    return Case((param, grads), {"lr": float(rng.choice([0.1, 0.01]))})


def sgd(rng: np.random.Generator, index: int) -> Case:
    case = optimizer(rng, index)
    case.kwargs["momentum"] = float(rng.choice([0.5, 0.9]))
    return case


def adam(rng: np.random.Generator, index: int) -> Case:
    case = optimizer(rng, index)
    case.kwargs["betas"] = (0.9, 0.999)
    case.kwargs["eps"] = 1e-8
    return case


LAYER_PARAMS_KERNELS = [3, 1, 5]


def layer_params(rng: np.random.Generator, index: int) -> Case:
    kernel = _pick(LAYER_PARAMS_KERNELS, index)
    height, width = (int(v) for v in rng.integers(4, 65, size=2))  # not square
    c_in, c_out = int(rng.integers(1, 5)), int(rng.integers(1, 65))
    return Case((height, width, c_in, c_out, kernel))


# in_channels as a multiple of width: 4 (identity shortcut unless strided) or not.
BOTTLENECK_TEMPLATES = [
    {"stride": 1, "in_per_width": 4},
    {"stride": 1, "in_per_width": 1},
    {"stride": 2, "in_per_width": 2},
    {"stride": 2, "in_per_width": 4},
]


def bottleneck_params(rng: np.random.Generator, index: int) -> Case:
    t = _pick(BOTTLENECK_TEMPLATES, index)
    width = int(rng.integers(1, 17)) * 8
    return Case((t["in_per_width"] * width, width, t["stride"]))


# A linear layer (kernel 1: fans are feature counts) or a k x k convolution.
INIT_TEMPLATES = [
    {"scheme": "xavier_uniform", "kernel": 1},
    {"scheme": "kaiming_uniform", "kernel": 1},
    {"scheme": "xavier_uniform", "kernel": 3},
    {"scheme": "kaiming_uniform", "kernel": 5},
]


def init_bound(rng: np.random.Generator, index: int) -> Case:
    t = _pick(INIT_TEMPLATES, index)
    area = t["kernel"] ** 2
    fan_in, fan_out = (int(v) * area for v in rng.integers(1, 513, size=2))
    return Case((fan_in, fan_out, t["scheme"]))


# ``shift`` is added to every bias: from 1000 on, exp(logit) overflows without the max-shift.
SOFTMAX_STEP_TEMPLATES = [
    {"shift": 0.0, "lr": 0.1},
    {"shift": 1000.0, "lr": 0.01},
    {"shift": 0.0, "lr": 1.0},
]


def softmax_regression_step(rng: np.random.Generator, index: int) -> Case:
    t = _pick(SOFTMAX_STEP_TEMPLATES, index)
    # N >= 2, so that a gradient summed instead of averaged over the batch is wrong.
    n, d, c = int(rng.integers(2, 9)), int(rng.integers(1, 7)), int(rng.integers(2, 7))
    x, weight = _normal(rng, (n, d)), _normal(rng, (c, d))
    bias = _normal(rng, (c,)) + t["shift"] * rng.uniform(1, 1.2)
    y = rng.integers(0, c, size=n).astype("int64")
    return Case((x, y, weight, bias, t["lr"]))


# --------------------------------------------------------------------------- detection


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 20, size=(n, 2))
    wh = rng.uniform(1, 10, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def box_iou(rng: np.random.Generator, index: int) -> Case:
    a = _boxes(rng, int(rng.integers(1, 6)))
    b = _boxes(rng, int(rng.integers(1, 6)))
    if index % 2:  # shared and touching edges: intersections of zero area
        b[0] = a[0]
        b[-1] = [a[0, 2], a[0, 1], a[0, 2] + 3, a[0, 3]]
    return Case((a, b))


def nms(rng: np.random.Generator, index: int) -> Case:
    n = int(rng.integers(3, 12))
    centres = rng.uniform(0, 10, size=(3, 2))  # few clusters: many overlaps
    xy = centres[rng.integers(0, 3, size=n)] + rng.normal(0, 1, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 6, size=(n, 2))], axis=1)
    scores = rng.permutation(n) / n + rng.uniform(0, 1e-3, n)
    return Case((boxes, scores, (0.5, 0.3, 0.7)[index % 3]))


def average_precision(rng: np.random.Generator, index: int) -> Case:
    n = int(rng.integers(5, 30))
    labels = rng.integers(0, 2, size=n).astype(bool)
    labels[int(rng.integers(0, n))] = True
    scores = rng.permutation(n) / n + rng.uniform(0, 1e-3, n)
    return Case((scores, labels))


def knn(rng: np.random.Generator, index: int) -> Case:
    n, d, classes = int(rng.integers(6, 30)), int(rng.integers(1, 4)), int(rng.integers(2, 5))
    train_x = _normal(rng, (n, d))
    train_y = rng.integers(0, classes, size=n).astype("int64")
    k = (1, 3, 4)[index % 3]  # an even k makes ties: the smallest label wins
    return Case((train_x, train_y, _normal(rng, (int(rng.integers(1, 8)), d)), k))


def bilinear(rng: np.random.Generator, index: int) -> Case:
    dtype = ("float64", "float32")[index % 2]
    x = _normal(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 3)), 3, 4), dtype)
    size = (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
    return Case((x, size), {"align_corners": bool(index % 3 == 1)})


# Chapter 11: a lone pixel whose footprint stays inside the frame before and after the shift
# (gap exactly 0), random images (a nonzero gap at the borders), a 1 x 1 kernel (no window
# reaches past the border: gap 0 up to rounding on a random image too). ``signs``: of (dy, dx).
EQUIVARIANCE_TEMPLATES = [
    {"image": "pixel", "kernel": (3, 3), "signs": (1, -1)},
    {"image": "random", "kernel": (3, 3), "signs": (1, 1)},
    {"image": "random", "kernel": (3, 5), "signs": (-1, 1)},
    {"image": "random", "kernel": (1, 1), "signs": (0, -1)},
]


def shift_equivariance(rng: np.random.Generator, index: int) -> Case:
    t = _pick(EQUIVARIANCE_TEMPLATES, index)
    shift = [sign * int(rng.integers(1, 4)) for sign in t["signs"]]
    radius = [k // 2 for k in t["kernel"]]
    # Room for the footprint (radius) around the pixel both before and after the shift.
    size = [
        2 * r + abs(d) + 1 + int(rng.integers(0, 5)) for r, d in zip(radius, shift, strict=True)
    ]
    n, c, f = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    weight = _normal(rng, (f, c, *t["kernel"]))
    if t["image"] == "random":
        return Case((_normal(rng, (n, c, *size)), weight, *shift))
    x = np.zeros((n, c, *size))
    low = [r + max(-d, 0) for r, d in zip(radius, shift, strict=True)]
    high = [s - r - max(d, 0) for s, r, d in zip(size, radius, shift, strict=True)]
    row, col = (int(rng.integers(lo, hi)) for lo, hi in zip(low, high, strict=True))
    x[int(rng.integers(0, n)), int(rng.integers(0, c)), row, col] = rng.uniform(1, 2)
    return Case((x, weight, *shift))


GENERATORS: dict[str, Callable[[np.random.Generator, int], Case]] = {
    "conv2d": conv2d,
    "conv2d_backward": conv2d_backward,
    "conv_transpose2d": conv_transpose2d,
    "im2col": im2col,
    "conv_output_size": conv_output_size_case,
    "pool": pool,
    "pool_backward": pool_backward,
    "elementwise_backward": elementwise_backward,
    "cross_entropy": cross_entropy,
    "linear_backward": linear_backward,
    "dropout": dropout,
    "batch_norm": batch_norm,
    "batch_norm_backward": batch_norm_backward,
    "receptive_field": receptive_field,
    "conv_cost": conv_cost,
    "sgd": sgd,
    "adam": adam,
    "box_iou": box_iou,
    "nms": nms,
    "average_precision": average_precision,
    "knn": knn,
    "bilinear": bilinear,
    "layer_params": layer_params,
    "bottleneck_params": bottleneck_params,
    "init_bound": init_bound,
    "softmax_regression_step": softmax_regression_step,
    "shift_equivariance": shift_equivariance,
}


def make_case(generator: str, seed: int, exercise_id: str, index: int) -> Case:
    """Case ``index`` of an exercise, for the grading ``seed``."""
    rng = np.random.default_rng([seed, zlib.crc32(exercise_id.encode()), index])
    return GENERATORS[generator](rng, index)


# ------------------------------------------------------- Part III (chapters 21 to 23)

# Every case holds a pair disjoint along both axes (where an unmasked intersection would be
# positive), an identical pair and a contained pair; eps = 0.5 makes a dropped eps visible.
GIOU_TEMPLATES = [
    {"reduction": "none", "eps": 1e-7, "dtype": "float64"},
    {"reduction": "mean", "eps": 1e-7, "dtype": "float64"},
    {"reduction": "sum", "eps": 0.5, "dtype": "float64"},
    {"reduction": "none", "eps": 1e-7, "dtype": "float32"},
]


def giou_loss(rng: np.random.Generator, index: int) -> Case:
    t = _pick(GIOU_TEMPLATES, index)
    n = int(rng.integers(4, 9))
    boxes1, boxes2 = _boxes(rng, n), _boxes(rng, n)
    boxes2[0] = boxes1[0] + [40, 40, 40, 40]  # disjoint in x and in y
    boxes2[1] = boxes1[1]  # identical
    boxes2[2] = boxes1[2] + [0.5, 0.5, -0.5, -0.5]  # inside (the _boxes are at least 1 wide)
    kwargs = {"reduction": t["reduction"], "eps": t["eps"]}
    return Case((boxes1.astype(t["dtype"]), boxes2.astype(t["dtype"])), kwargs)


# ``mask``: a boolean mask in which every query keeps at least one key.
ATTENTION_TEMPLATES = [
    {"mask": None, "is_causal": False, "scale": None, "dtype": "float64"},
    {"mask": None, "is_causal": True, "scale": None, "dtype": "float64"},
    {"mask": "bool", "is_causal": False, "scale": None, "dtype": "float32"},
    {"mask": None, "is_causal": False, "scale": 0.5, "dtype": "float64"},
]


def attention_backward(rng: np.random.Generator, index: int) -> Case:
    t = _pick(ATTENTION_TEMPLATES, index)
    batch, heads = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    length = int(rng.integers(2, 6))
    source = length if t["is_causal"] else int(rng.integers(2, 7))
    e, ev = int(rng.integers(2, 6)), int(rng.integers(1, 5))
    q = _normal(rng, (batch, heads, length, e), t["dtype"])
    k = _normal(rng, (batch, heads, source, e), t["dtype"])
    v = _normal(rng, (batch, heads, source, ev), t["dtype"])
    grad_out = _normal(rng, (batch, heads, length, ev), t["dtype"])
    kwargs: dict = {"is_causal": t["is_causal"], "scale": t["scale"]}
    if t["mask"] == "bool":
        mask = rng.uniform(size=(length, source)) < 0.6
        mask[np.arange(length), rng.integers(0, source, size=length)] = True
        kwargs["attn_mask"] = mask
    return Case((grad_out, q, k, v), kwargs)


FOLD_BN_TEMPLATES = [
    {"weight": "conv", "bias": True, "eps": 1e-5, "dtype": "float64"},
    {"weight": "linear", "bias": False, "eps": 1e-5, "dtype": "float64"},
    {"weight": "conv", "bias": True, "eps": 1e-3, "dtype": "float32"},
]


def fold_batch_norm(rng: np.random.Generator, index: int) -> Case:
    t = _pick(FOLD_BN_TEMPLATES, index)
    c_out, c_in = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    shape = (c_out, c_in, *rng.integers(1, 4, size=2)) if t["weight"] == "conv" else (c_out, c_in)
    weight = _normal(rng, tuple(int(s) for s in shape), t["dtype"])
    bias = _normal(rng, (c_out,), t["dtype"]) if t["bias"] else None
    mean = _normal(rng, (c_out,), t["dtype"]) + np.asarray(1.0, t["dtype"])
    var = rng.uniform(0.1, 2.0, c_out).astype(t["dtype"])
    gamma, beta = _normal(rng, (c_out,), t["dtype"]), _normal(rng, (c_out,), t["dtype"])
    return Case((weight, bias, mean, var, gamma, beta), {"eps": t["eps"]})


CALIBRATE_TEMPLATES = [
    {"dtype": "int8", "symmetric": True, "axis": 0},
    {"dtype": "uint8", "symmetric": False, "axis": 0},
    {"dtype": "uint8", "symmetric": False, "axis": None},
]


def calibrate(rng: np.random.Generator, index: int) -> Case:
    t = _pick(CALIBRATE_TEMPLATES, index)
    channels = int(rng.integers(2, 6))
    x = rng.standard_normal((channels, int(rng.integers(2, 5)), 3)) * rng.uniform(
        0.1, 3, (channels, 1, 1)
    )
    x[0] = np.abs(x[0]) + 0.1  # a channel without negative values (after a ReLU)
    return Case((x.astype("float32"),), dict(t))


QUANTIZE_TEMPLATES = [
    {"dtype": "int8", "zero_point": "zero", "axis": 0},
    {"dtype": "uint8", "zero_point": "affine", "axis": 1},
    {"dtype": "int8", "zero_point": "affine", "axis": 0},
]


def quantize(rng: np.random.Generator, index: int) -> Case:
    t = _pick(QUANTIZE_TEMPLATES, index)
    shape = [int(rng.integers(2, 5)), int(rng.integers(2, 5)), int(rng.integers(3, 7))]
    channels = shape[t["axis"]]
    scale = rng.uniform(0.01, 0.1, channels).astype("float32")
    low, high = (-128, 127) if t["dtype"] == "int8" else (0, 255)
    if t["zero_point"] == "zero":
        zero_point = np.zeros(channels, dtype="int64")
    else:
        zero_point = rng.integers(low + 20, high - 20, channels).astype("int64")
    view = [1, 1, 1]
    view[t["axis"]] = -1
    steps = rng.integers(-200, 200, shape) + rng.choice([0.0, 0.5, 0.3], shape)  # ties, clamping
    x = (steps * scale.reshape(view)).astype("float32")
    return Case((x, scale, zero_point), {"dtype": t["dtype"], "axis": t["axis"]})


GENERATORS.update(
    {
        "giou_loss": giou_loss,
        "attention_backward": attention_backward,
        "fold_batch_norm": fold_batch_norm,
        "calibrate": calibrate,
        "quantize": quantize,
    }
)


# ---------------------------------------------- variants: the same cases in another layout
# A variant's cases are the default's, drawn from the same seed, with the arrays moved to the
# variant's layout or convention: a bug loses the same cases in every variant.


def _to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def conv2d_nhwc(rng: np.random.Generator, index: int) -> Case:
    case = conv2d(rng, index)
    x, weight, bias = case.args
    hwio = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # (kh, kw, C_in, C_out)
    return Case((_to_nhwc(x), hwio, bias), case.kwargs)


def pool_nhwc(rng: np.random.Generator, index: int) -> Case:
    case = pool(rng, index)
    return Case((_to_nhwc(case.args[0]), *case.args[1:]), case.kwargs)


def batch_norm_nhwc(rng: np.random.Generator, index: int) -> Case:
    case = batch_norm(rng, index)
    return Case((_to_nhwc(case.args[0]), *case.args[1:]), case.kwargs)


def batch_norm_backward_nhwc(rng: np.random.Generator, index: int) -> Case:
    case = batch_norm_backward(rng, index)
    grad_out, x, weight = case.args
    return Case((_to_nhwc(grad_out), _to_nhwc(x), weight), case.kwargs)


def _to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def box_iou_cxcywh(rng: np.random.Generator, index: int) -> Case:
    a, b = box_iou(rng, index).args
    return Case((_to_cxcywh(a), _to_cxcywh(b)))


def nms_cxcywh(rng: np.random.Generator, index: int) -> Case:
    boxes, scores, threshold = nms(rng, index).args
    return Case((_to_cxcywh(boxes), scores, threshold))


GENERATORS.update(
    {
        "conv2d_nhwc": conv2d_nhwc,
        "pool_nhwc": pool_nhwc,
        "batch_norm_nhwc": batch_norm_nhwc,
        "batch_norm_backward_nhwc": batch_norm_backward_nhwc,
        "box_iou_cxcywh": box_iou_cxcywh,
        "nms_cxcywh": nms_cxcywh,
    }
)
