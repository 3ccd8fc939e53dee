"""Reference adapters: the exercise's signature on top of the library's own API.

Where an exercise asks for a smaller piece than the library offers (one optimizer run, batch
norm in training mode only, one k-means step), the adapter calls the library and does no
arithmetic of its own beyond choosing arguments (``init_bound`` applies the ``sqrt(3)``
that :mod:`cnn_course.init` documents between a std and a uniform bound), so the reference
stays the library.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from cnn_course import analysis, detection, init, nn, optim
from cnn_course import functional as F
from cnn_course.backend import np


def cross_entropy_grad(logits: Any, target: Any) -> Any:
    """Gradient of the mean cross-entropy with respect to the logits."""
    return F.cross_entropy_backward(np.asarray(1.0, dtype=logits.dtype), logits, target)


def resize_bilinear(x: Any, size: tuple, align_corners: bool = False) -> Any:
    """Bilinear resizing to ``size`` (H_out, W_out)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def conv_cost(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    input_size: tuple,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    bias: bool = True,
) -> tuple[int, int]:
    """``(parameters, multiply-accumulates per sample)`` of one convolution layer."""
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, 1, groups, bias)
    table = analysis.summary(nn.Sequential(layer), (in_channels, *input_size))
    return int(table.total_params), int(table.total_macs)


def batch_norm_train(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> Any:
    """Batch norm in training mode, without running statistics."""
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


def batch_norm_train_backward(grad_out: Any, x: Any, weight: Any, eps: float = 1e-5) -> Any:
    """``(grad_x, grad_weight, grad_bias)`` of :func:`batch_norm_train`."""
    bias = np.zeros_like(weight)
    return F.batch_norm_backward(grad_out, x, None, None, weight, bias, training=True, eps=eps)


def receptive_field_size(kernel_size: Any, stride: Any, dilation: Any) -> int:
    """Receptive field (one axis) of a stack of window layers."""
    layers = [(k, s, 0, d) for k, s, d in zip(kernel_size, stride, dilation, strict=True)]
    return int(analysis.receptive_field(layers).size[0])


def _optimize(opt_class: type, params: list, steps: Any, **hyper: Any) -> list:
    """Copies of ``params`` after one optimizer step per entry of ``steps`` (one gradient
    per parameter each)."""
    slots = [SimpleNamespace(data=p.copy(), grad=None) for p in params]
    opt = opt_class(slots, **hyper)
    for grads in steps:
        for slot, g in zip(slots, grads, strict=True):
            slot.grad = g.copy()
        opt.step()
    return [slot.data for slot in slots]


def sgd_momentum(param: Any, grads: Any, lr: float, momentum: float) -> Any:
    """The parameter after one SGD-with-momentum step per gradient in ``grads``."""
    return _optimize(optim.SGD, [param], [(g,) for g in grads], lr=lr, momentum=momentum)[0]


def adam(param: Any, grads: Any, lr: float, betas: tuple, eps: float) -> Any:
    """The parameter after one Adam step per gradient in ``grads``."""
    return _optimize(optim.Adam, [param], [(g,) for g in grads], lr=lr, betas=betas, eps=eps)[0]


def layer_params(
    height: int, width: int, in_channels: int, out_channels: int, kernel_size: int
) -> tuple[int, int]:
    """``(fully connected, convolution)`` parameter counts, biases included, of a layer
    mapping a (C_in, H, W) input to a (C_out, H, W) output: ``nn.Linear`` over the flattened
    maps versus a same-padded ``kernel_size`` convolution (odd ``kernel_size``)."""
    fc = nn.Linear(in_channels * height * width, out_channels * height * width)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return analysis.count_parameters(fc), analysis.count_parameters(conv)


def bottleneck_params(in_channels: int, width: int, stride: int) -> int:
    """Parameters of a ResNet-50 bottleneck block (output ``4 * width`` channels)."""
    return analysis.count_parameters(nn.Bottleneck(in_channels, width, stride))


def init_bound(fan_in: int, fan_out: int, scheme: str) -> float:
    """The bound ``b`` of the ``U(-b, b)`` that ``init.xavier_uniform_`` (gain 1) or
    ``init.kaiming_uniform_`` (ReLU, fan_in mode) draws from for a (fan_out, fan_in) weight.

    ``b = sqrt(3) * std`` with the std of :mod:`cnn_course.init` (as its uniform fillers)."""
    shape = (fan_out, fan_in)
    if scheme == "xavier_uniform":
        std = init.xavier_std(shape)
    elif scheme == "kaiming_uniform":
        std = init.kaiming_std(shape, nonlinearity="relu")
    else:
        raise ValueError(f"init_bound: unknown scheme {scheme!r}")
    return math.sqrt(3.0) * std


def softmax_regression_step(
    x: Any, y: Any, weight: Any, bias: Any, lr: float
) -> tuple[Any, Any, float]:
    """``(new_weight, new_bias, loss)``: one SGD step of ``cross_entropy(linear(x, weight,
    bias), y)`` (the loss before the step)."""
    logits = F.linear(x, weight, bias)
    loss = F.cross_entropy(logits, y)
    grad_logits = F.cross_entropy_backward(np.asarray(1.0, dtype=logits.dtype), logits, y)
    _, grad_weight, grad_bias = F.linear_backward(grad_logits, x, weight, bias)
    new_weight, new_bias = _optimize(optim.SGD, [weight, bias], [(grad_weight, grad_bias)], lr=lr)
    return new_weight, new_bias, float(loss)


def _shifted_span(size: int, shift: int) -> tuple[slice, slice]:
    """``(destination, source)`` slices of one axis moved by ``shift`` pixels with zero fill;
    both are empty when ``|shift| >= size`` (clipped, so that no slice bound wraps around)."""
    destination = slice(min(max(shift, 0), size), max(min(size + shift, size), 0))
    source = slice(min(max(-shift, 0), size), max(min(size - shift, size), 0))
    return destination, source


def _shift(x: Any, dy: int, dx: int) -> Any:
    """``x`` (..., H, W) with its content moved down ``dy`` and right ``dx`` pixels; the
    vacated pixels are 0 and the content that leaves the frame is lost."""
    rows, cols = _shifted_span(x.shape[-2], dy), _shifted_span(x.shape[-1], dx)
    out = np.zeros_like(x)
    out[..., rows[0], cols[0]] = x[..., rows[1], cols[1]]
    return out


def shift_equivariance_gap(x: Any, weight: Any, dy: int, dx: int) -> float:
    """``max |conv2d(shift(x)) - shift(conv2d(x))|`` over the whole output, for a stride-1,
    same-padded convolution (x (N, C, H, W), weight (F, C, kh, kw), odd kh and kw)."""
    after = F.conv2d(_shift(x, dy, dx), weight, padding="same")
    before = _shift(F.conv2d(x, weight, padding="same"), dy, dx)
    return float(np.max(np.abs(after - before)))


# ---- variants (exercises/manifest.toml ``[[exercise.variant]]``): the library, adapted ------
# Each adapter changes only the layout or the convention of the arguments and the result
# (a transpose, a box conversion, a padding done before the call) and calls the library for
# the computation itself.


def _nchw(x: Any) -> Any:
    """(N, H, W, C) -> (N, C, H, W)."""
    return x.transpose(0, 3, 1, 2)


def _nhwc(x: Any) -> Any:
    """(N, C, H, W) -> (N, H, W, C), contiguous."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def conv2d_nhwc(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0) -> Any:
    """``conv2d`` on x (N, H, W, C_in) with weight (kh, kw, C_in, C_out) (TensorFlow's HWIO),
    returning (N, H_out, W_out, C_out)."""
    out = F.conv2d(_nchw(x), weight.transpose(3, 2, 0, 1), bias, stride=stride, padding=padding)
    return _nhwc(out)


def conv2d_reflect(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0) -> Any:
    """``conv2d`` with the input padded by reflection (PyTorch's ``padding_mode="reflect"``)
    instead of zeros: the padding is done first, then the library convolves with padding 0."""
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="reflect")
    return F.conv2d(padded, weight, bias, stride=stride, padding=0)


def max_pool2d_nhwc(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Any:
    """``max_pool2d`` on x (N, H, W, C), returning (N, H_out, W_out, C)."""
    return _nhwc(F.max_pool2d(_nchw(x), kernel_size, stride, padding))


def max_pool2d_backward_argmax(
    grad_out: Any, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0
) -> tuple[Any, Any]:
    """``(grad_x, indices)``: the gradient, and the int64 map (N, C, H_out, W_out) of the
    flat index ``row * W + col`` in x's plane of each window's maximum (PyTorch's
    ``return_indices=True``)."""
    _, indices = F.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
    return F.max_pool2d_backward(grad_out, x, kernel_size, stride, padding), indices


def avg_pool2d_exclude_pad(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Any:
    """``avg_pool2d`` averaging over the window's pixels inside the input only
    (``count_include_pad=False``)."""
    return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=False)


def avg_pool2d_backward_exclude_pad(
    grad_out: Any, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0
) -> Any:
    """The gradient of :func:`avg_pool2d_exclude_pad`."""
    return F.avg_pool2d_backward(grad_out, x, kernel_size, stride, padding, count_include_pad=False)


def batch_norm_train_nhwc(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> Any:
    """:func:`batch_norm_train` on x (N, H, W, C) (statistics over N, H and W)."""
    return _nhwc(batch_norm_train(_nchw(x), weight, bias, eps))


def batch_norm_train_stats(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> tuple:
    """``(out, mean, var)``: :func:`batch_norm_train`, the batch mean per channel and the
    unbiased batch variance per channel (the values a running estimate is updated with).
    The library writes them into running buffers when ``momentum`` is 1."""
    mean = np.zeros(x.shape[1], dtype=x.dtype)
    var = np.ones(x.shape[1], dtype=x.dtype)
    out = F.batch_norm(x, mean, var, weight, bias, training=True, momentum=1.0, eps=eps)
    return out, mean, var


def batch_norm_train_backward_nhwc(grad_out: Any, x: Any, weight: Any, eps: float = 1e-5) -> Any:
    """:func:`batch_norm_train_backward` on grad_out and x (N, H, W, C)."""
    grad_x, grad_weight, grad_bias = batch_norm_train_backward(
        _nchw(grad_out), _nchw(x), weight, eps
    )
    return _nhwc(grad_x), grad_weight, grad_bias


def _xyxy(boxes: Any) -> Any:
    """(cx, cy, w, h) boxes -> (x1, y1, x2, y2)."""
    centre, size = boxes[:, :2], boxes[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def box_iou_cxcywh(a: Any, b: Any) -> Any:
    """``box_iou`` of boxes given as (cx, cy, w, h)."""
    return detection.box_iou(_xyxy(a), _xyxy(b))


def nms_cxcywh(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """``nms`` of boxes given as (cx, cy, w, h)."""
    return detection.nms(_xyxy(boxes), scores, iou_threshold)


def sgd_nesterov(param: Any, grads: Any, lr: float, momentum: float) -> Any:
    """:func:`sgd_momentum` with Nesterov momentum (``optim.SGD(nesterov=True)``)."""
    steps = [(g,) for g in grads]
    return _optimize(optim.SGD, [param], steps, lr=lr, momentum=momentum, nesterov=True)[0]
