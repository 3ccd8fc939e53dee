"""Reference adapters: the exercise's signature on top of the library's own API.

Where an exercise asks for a smaller piece than the library offers (one optimizer run, batch
norm in training mode only, one k-means step), the adapter calls the library and does no
arithmetic of its own beyond choosing arguments, so the reference stays the library.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cnn_course import analysis, nn, optim
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


def _run(opt_class: type, param: Any, grads: Any, **hyper: Any) -> Any:
    p = SimpleNamespace(data=param.copy(), grad=None)
    opt = opt_class([p], **hyper)
    for g in grads:
        p.grad = g.copy()
        opt.step()
    return p.data


def sgd_momentum(param: Any, grads: Any, lr: float, momentum: float) -> Any:
    """The parameter after one SGD-with-momentum step per gradient in ``grads``."""
    return _run(optim.SGD, param, grads, lr=lr, momentum=momentum)


def adam(param: Any, grads: Any, lr: float, betas: tuple, eps: float) -> Any:
    """The parameter after one Adam step per gradient in ``grads``."""
    return _run(optim.Adam, param, grads, lr=lr, betas=betas, eps=eps)
