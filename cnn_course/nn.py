"""Layers with an explicit backward pass (no autograd: the backward pass is the lesson).

A layer's ``forward(x)`` keeps what its backward needs; ``backward(grad_out)`` returns the
gradient with respect to ``x`` and *adds* the parameter gradients to each
``Parameter.grad`` (so gradients of a shared layer, or of several batches, accumulate until
``zero_grad()``). Every computation is a call to :mod:`cnn_course.functional`; layers only
hold parameters and wire the calls.

Parameters are lazy: a :class:`Parameter` knows its shape, dtype and initializer and makes
its array on first access of ``.data``. Building ``vgg16()`` therefore allocates nothing,
and the shape-only description every layer gives (:meth:`Module.describe`, a
:class:`LayerSpec`: output shape, MACs, parameters, window; :meth:`Module.trace` walks a
network with it for :mod:`cnn_course.analysis`) never touches the weights.

Default initialisation is PyTorch's: convolution and linear weights
``kaiming_uniform_(a=sqrt(5))`` (i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), their biases
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, normalisation weights 1 and biases 0. Each Parameter
draws from its own seed, spawned at construction from the sequence set by
:func:`manual_seed`, so the values do not depend on the order in which arrays are first
touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import cnn_course.functional as F
from cnn_course import init
from cnn_course._checks import nonnegative_pair, positive_pair, require_float, require_number
from cnn_course._receptive import ReceptiveField
from cnn_course._types import Array
from cnn_course.backend import array_module, backend_module, np
from cnn_course.ops.conv import conv_output_size, conv_transpose_output_size
from cnn_course.ops.pooling import pool_output_size

__all__ = [
    "manual_seed",
    "Parameter",
    "Module",
    "LayerSpec",
    "Identity",
    "Sequential",
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Sigmoid",
    "Tanh",
    "SiLU",
    "GELU",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "GroupNorm",
    "LayerNorm",
    "LayerNorm2d",
    "Dropout",
    "Flatten",
    "ResidualAdd",
    "DenseConcat",
    "BasicBlock",
    "Bottleneck",
    "InceptionModule",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "SqueezeExcitation",
    "LayerScale",
    "conv_bn_act",
]

Shape = tuple[int, ...]
Record = Callable[[str, "Module", Shape, "LayerSpec", Any], None]
#: The window of a layer: (kernel_size, stride, padding, dilation), ints or pairs.
Window = tuple[Any, Any, Any, Any]

_seeds = np.random.SeedSequence(0)


def manual_seed(seed: int) -> None:
    """Seed the parameters created from now on (like ``torch.manual_seed``)."""
    global _seeds
    _seeds = np.random.SeedSequence(seed)


# ------------------------------------------------------------------------------ Parameter


class Parameter:
    """A trainable array, allocated on first access of ``.data``.

    Parameters
    ----------
    shape : tuple of int
    initializer : callable ``(array, generator=...) -> None`` filling a new array in place
        (an ``init.*_`` function); default zeros.
    dtype : str, default ``"float32"``
    role : ``"weight"`` or ``"bias"`` (informational: analysis zeroes biases when it
        measures receptive fields).

    Attributes
    ----------
    data : array of ``shape`` (made on the current backend on first access)
    grad : array of ``shape`` or None (accumulated by ``backward``, reset by ``zero_grad``)
    """

    def __init__(
        self,
        shape: Sequence[int],
        initializer: Callable[..., Any] | None = None,
        dtype: str = "float32",
        role: str = "weight",
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.role = role
        self.grad: Array | None = None
        self._initializer = initializer
        self._seed = _seeds.spawn(1)[0]
        self._data: Array | None = None

    @property
    def size(self) -> int:
        """Number of elements (from the shape; allocates nothing)."""
        return math.prod(self.shape)

    @property
    def allocated(self) -> bool:
        return self._data is not None

    @property
    def data(self) -> Array:
        if self._data is None:
            data = backend_module().zeros(self.shape, dtype=self.dtype)
            if self._initializer is not None:
                self._initializer(data, generator=np.random.default_rng(self._seed))
            self._data = data
        return self._data

    @data.setter
    def data(self, value: Array) -> None:
        require_float(value, "data", "Parameter")
        if tuple(value.shape) != self.shape:
            raise ValueError(
                f"Parameter: data must have shape {self.shape}, got {tuple(value.shape)}"
            )
        self._data, self.dtype = value, value.dtype

    def accumulate(self, grad: Array) -> None:
        """Add ``grad`` to ``.grad`` (which starts as None)."""
        self.grad = grad if self.grad is None else self.grad + grad

    def to(self, dtype: str) -> Parameter:
        """Convert to ``dtype`` in place (a lazy parameter stays unallocated)."""
        self.dtype = np.dtype(dtype)
        if self._data is not None:
            self._data = self._data.astype(self.dtype)
        if self.grad is not None:
            self.grad = self.grad.astype(self.dtype)
        return self

    def __repr__(self) -> str:
        state = "allocated" if self.allocated else "lazy"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, {state})"


def _fan_in_uniform(fan_in: int) -> Callable[..., Any]:
    """PyTorch's default bias initializer: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return partial(init.uniform_, a=-bound, b=bound)


def _fill_constant(array: Array, value: float, generator: Any = None) -> None:
    init.constant_(array, value)


def _constant(value: float) -> Callable[..., Any]:
    """An initializer filling ``value`` (it needs no random numbers)."""
    return partial(_fill_constant, value=value)


_default_weight_init = partial(init.kaiming_uniform_, a=math.sqrt(5))


# --------------------------------------------------------------------------------- Module


@dataclass(frozen=True)
class LayerSpec:
    """A layer's public description for one input shape (what :mod:`cnn_course.analysis`
    reads; nothing is allocated).

    Attributes
    ----------
    type : the layer's class name
    output_shape : shape of ``forward``'s output, N included
    macs : multiply-accumulates per sample (convolutions and linear layers; 0 otherwise)
    params : number of the layer's own parameters (not its children's)
    window : (kernel_size, stride, padding, dilation) of a unit's window on the input, or
        None when a unit has no fixed window (fully connected, global pooling, upsampling)
    """

    type: str
    output_shape: Shape
    macs: int
    params: int
    window: Window | None


class Module:
    """Base layer: ``forward``, ``backward``, parameters, train/eval and shape analysis.

    Sub-modules and Parameters are found among the instance attributes (lists of modules
    included), in the order they were assigned.
    """

    def __init__(self) -> None:
        self.training = True

    # ---- computation
    def forward(self, x: Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out: Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def backward_params(self, grad_out: Array) -> None:
        """The backward pass for the parameters only: their gradients are accumulated, the
        gradient with respect to the input is not needed (a network's input is the data).

        A training step calls this instead of :meth:`backward`: PyTorch's autograd likewise
        computes no gradient for an input that does not require one. Layers that can skip
        their input gradient (convolutions, :class:`Sequential`) override it; the default
        runs :meth:`backward` and drops its result.
        """
        self.backward(grad_out)

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def _saved(self, name: str = "_x") -> Any:
        """What ``forward`` kept for ``backward``, or a clear error if forward never ran."""
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value

    # ---- structure
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def modules(self) -> Iterator[Module]:
        """This module and all its descendants, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        if recurse:
            for name, child in self.named_children():
                yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: str) -> Module:
        """Convert every parameter (and normalisation statistics) to ``dtype``."""
        for m in self.modules():
            m._to(dtype)
        for p in self.parameters():
            p.to(dtype)
        return self

    def _to(self, dtype: str) -> None:
        """Convert state that is not a Parameter (buffers); nothing by default."""

    # ---- shape-only analysis
    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        """What this layer does to an input of ``input_shape`` (N included), from shapes
        alone: a :class:`LayerSpec`. The default is an elementwise layer (same shape, no
        MACs, a 1x1 window); a container sums over the layers :meth:`trace` visits. Without
        ``input_shape`` only the window is known (``output_shape`` is None)."""
        own = sum(p.size for _, p in self.named_parameters(recurse=False))
        if input_shape is None:
            return self._spec(None, window=None if self._has_children() else (1, 1, 0, 1))
        if self._has_children():
            specs: list[LayerSpec] = []
            out, _ = self.trace(tuple(input_shape), None, lambda *a: specs.append(a[3]), "")
            macs = sum(spec.macs for spec in specs)
            return LayerSpec(type(self).__name__, tuple(out), macs, own, None)
        return LayerSpec(type(self).__name__, tuple(input_shape), 0, own, (1, 1, 0, 1))

    def _has_children(self) -> bool:
        return any(True for _ in self.children())

    def _spec(self, out: Shape | None, macs: int = 0, window: Window | None = None) -> LayerSpec:
        """This leaf's :class:`LayerSpec`, its own parameters counted."""
        own = sum(p.size for _, p in self.named_parameters(recurse=False))
        shape = None if out is None else tuple(out)
        return LayerSpec(type(self).__name__, shape, int(macs), own, window)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of ``forward``'s output for an input of ``input_shape`` (N included)."""
        return self.describe(input_shape).output_shape

    def macs(self, input_shape: Shape) -> int:
        """Multiply-accumulates per sample (convolutions and linear layers only)."""
        return self.describe(input_shape).macs

    def trace(
        self, input_shape: Shape, rf: ReceptiveField | None, record: Record, name: str
    ) -> tuple[Shape, ReceptiveField | None]:
        """Walk the layer shape-only: call ``record(name, layer, in_shape, spec, rf)`` for
        each leaf layer (``spec`` its :class:`LayerSpec`, ``rf`` the receptive field after
        it), return ``(output_shape, receptive_field)``. Containers override it to visit
        their children."""
        spec = self.describe(tuple(input_shape))
        out_rf = None if rf is None or spec.window is None else rf.then(*spec.window)
        record(name or type(self).__name__, self, tuple(input_shape), spec, out_rf)
        return spec.output_shape, out_rf

    def __repr__(self) -> str:
        inner = "".join(
            f"\n  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in self.named_children()
        )
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self) -> str:
        return ""


def _ignore(*_: Any) -> None:
    """A ``record`` callback that keeps nothing."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Identity(Module):
    """``y = x``."""

    def forward(self, x: Array) -> Array:
        return x

    def backward(self, grad_out: Array) -> Array:
        return grad_out


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Module")
        self.layers = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out: Array) -> Array:
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def backward_params(self, grad_out: Array) -> None:
        """Backward through the layers down to the first one with parameters, which gets
        :meth:`~Module.backward_params`; the layers before it need no gradient at all."""
        first = next(
            (i for i, layer in enumerate(self.layers) if any(True for _ in layer.parameters())),
            None,
        )
        if first is None:
            return
        for layer in reversed(self.layers[first + 1 :]):
            grad_out = layer.backward(grad_out)
        self.layers[first].backward_params(grad_out)

    def trace(self, input_shape, rf, record, name):
        shape = input_shape
        for child_name, layer in self.named_children():
            shape, rf = layer.trace(shape, rf, record, _join(name, child_name))
        return shape, rf


# ----------------------------------------------------------------------------- convolution


def _window_repr(layer: Module, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={getattr(layer, n)}" for n in names)


def _data(param: Parameter | None) -> Array | None:
    """The array of an optional Parameter (an absent bias stays None)."""
    return None if param is None else param.data


class _OpLayer(Module):
    """A layer that is one call of ``F.<op>(x, **args)`` forward and
    ``F.<op>_backward(grad_out, x, **args)`` backward, ``args`` being the attributes named
    in ``arg_names`` (the functional op's keyword names)."""

    op = ""
    arg_names: tuple[str, ...] = ()

    def _args(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.arg_names}

    def forward(self, x: Array) -> Array:
        self._x = x
        return getattr(F, self.op)(x, **self._args())

    def backward(self, grad_out: Array) -> Array:
        return getattr(F, self.op + "_backward")(grad_out, self._saved(), **self._args())

    def extra_repr(self) -> str:
        return _window_repr(self, self.arg_names)


class _Conv(_OpLayer):
    """What :class:`Conv2d` and :class:`ConvTranspose2d` share: the window arguments, the
    groups check, the weight and bias Parameters, and the calls
    ``F.<op>(x, weight, bias, **args)`` and ``F.<op>_backward(grad_out, x, weight, **args)``.

    PyTorch stores a convolution's weight as (C_out, C_in/groups, kh, kw) and a transposed
    convolution's as (C_in, C_out/groups, kh, kw), and takes the bias's fan-in from the
    stored dimension 1 in both cases."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int],
        dilation: int | Sequence[int],
        groups: int,
        bias: bool,
        transposed: bool,
    ) -> None:
        super().__init__()
        op = type(self).__name__
        self.kernel_size = positive_pair(kernel_size, "kernel_size", op)
        self.stride = positive_pair(stride, "stride", op)
        self.padding = nonnegative_pair(padding, "padding", op)
        self.dilation = positive_pair(dilation, "dilation", op)
        _check_groups(op, in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        rows, cols = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = Parameter((rows, cols // groups, *self.kernel_size), _default_weight_init)
        fan_in = cols // groups * math.prod(self.kernel_size)
        self.bias = (
            Parameter((out_channels,), _fan_in_uniform(fan_in), role="bias") if bias else None
        )

    def forward(self, x: Array) -> Array:
        self._x = x
        return getattr(F, self.op)(x, self.weight.data, _data(self.bias), **self._args())

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_w, grad_b = getattr(F, self.op + "_backward")(
            grad_out, self._saved(), self.weight.data, **self._args()
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))
        return grad_x

    def backward_params(self, grad_out: Array) -> None:
        _, grad_w, grad_b = getattr(F, self.op + "_backward")(
            grad_out, self._saved(), self.weight.data, **self._args(), input_grad=False
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, " + _window_repr(
            self, ("kernel_size", *self.arg_names)
        )


class Conv2d(_Conv):
    """2-D convolution (cross-correlation), ``F.conv2d`` / ``F.conv2d_backward``.

    Input (N, C_in, H, W) -> (N, C_out, H_out, W_out); ``weight`` (C_out, C_in/groups, kh,
    kw); ``bias`` (C_out,) or None. ``padding`` is an int or a pair.
    """

    op = "conv2d"
    arg_names = ("stride", "padding", "dilation", "groups")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, False
        )

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        window = (self.kernel_size, self.stride, self.padding, self.dilation)
        if input_shape is None:
            return self._spec(None, window=window)
        n, c, h, w = _check_input_shape(type(self).__name__, input_shape, self.in_channels)
        h_out, w_out = (
            conv_output_size(i, k, s, p, d)
            for i, k, s, p, d in zip(
                (h, w), self.kernel_size, self.stride, self.padding, self.dilation, strict=True
            )
        )
        k = self.in_channels // self.groups * math.prod(self.kernel_size)
        return self._spec(
            (n, self.out_channels, h_out, w_out), self.out_channels * h_out * w_out * k, window
        )


class ConvTranspose2d(_Conv):
    """Transposed convolution, ``F.conv_transpose2d`` and its backward.

    ``weight`` (C_in, C_out/groups, kh, kw) as PyTorch; output size
    ``(H - 1) s - 2 p + d (k - 1) + output_padding + 1``. Its units have no fixed window on
    the input (it upsamples), so its window is None.
    """

    op = "conv_transpose2d"
    arg_names = ("stride", "padding", "output_padding", "groups", "dilation")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | Sequence[int] = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, True
        )
        self.output_padding = nonnegative_pair(
            output_padding, "output_padding", type(self).__name__
        )

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is None:
            return self._spec(None)
        n, c, h, w = _check_input_shape(type(self).__name__, input_shape, self.in_channels)
        size = [
            conv_transpose_output_size(i, k, s, p, op, d)
            for i, k, s, p, op, d in zip(
                (h, w),
                self.kernel_size,
                self.stride,
                self.padding,
                self.output_padding,
                self.dilation,
                strict=True,
            )
        ]
        # every input value is multiplied by a (C_out/groups, kh, kw) slice of the weight
        macs = c * h * w * self.out_channels // self.groups * math.prod(self.kernel_size)
        return self._spec((n, self.out_channels, *size), macs)


def _check_groups(op: str, in_channels: int, out_channels: int, groups: int) -> None:
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("groups", groups),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide in_channels={in_channels} and "
            f"out_channels={out_channels}"
        )


def _check_input_shape(op: str, shape: Shape, channels: int | None = None) -> Shape:
    if len(shape) != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {tuple(shape)}")
    if channels is not None and shape[1] != channels:
        raise ValueError(
            f"{op}: input has {shape[1]} channels, expected {channels} (shape {tuple(shape)})"
        )
    return tuple(shape)


def _accumulate(*pairs: tuple[Parameter | None, Array]) -> None:
    for param, grad in pairs:
        if param is not None:
            param.accumulate(grad)


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``: input (N, in_features) -> (N, out_features);
    ``weight`` (out_features, in_features), ``bias`` (out_features,) or None."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((out_features, in_features), _default_weight_init)
        self.bias = (
            Parameter((out_features,), _fan_in_uniform(in_features), role="bias") if bias else None
        )

    def forward(self, x: Array) -> Array:
        self._x = x
        return F.linear(x, self.weight.data, _data(self.bias))

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_w, grad_b = F.linear_backward(
            grad_out, self._saved(), self.weight.data, _data(self.bias)
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))
        return grad_x

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is None:
            return self._spec(None)
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(
                f"Linear: input must be (N, {self.in_features}), got shape {tuple(input_shape)}"
            )
        out = (input_shape[0], self.out_features)
        return self._spec(out, self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


# ----------------------------------------------------------------------------- activations


class ReLU(_OpLayer):
    """``max(x, 0)``."""

    op = "relu"


class LeakyReLU(_OpLayer):
    """``x`` for x > 0, ``negative_slope * x`` otherwise."""

    op = "leaky_relu"
    arg_names = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope


class ELU(_OpLayer):
    """``x`` for x > 0, ``alpha (exp(x) - 1)`` otherwise."""

    op = "elu"
    arg_names = ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha


class Sigmoid(_OpLayer):
    """``1 / (1 + exp(-x))``."""

    op = "sigmoid"


class Tanh(_OpLayer):
    """``tanh(x)``."""

    op = "tanh"


class SiLU(_OpLayer):
    """``x * sigmoid(x)`` (SiLU, also called Swish): EfficientNet's activation (chapter 10)."""

    op = "silu"


class GELU(_OpLayer):
    """``x * Phi(x)``, ``Phi`` the standard normal CDF (``approximate="tanh"``: its tanh
    approximation): ConvNeXt's and the transformers' activation (chapter 10)."""

    op = "gelu"
    arg_names = ("approximate",)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate


class ReLU6(Module):
    """``min(max(x, 0), 6)`` (MobileNetV2): a ReLU whose output is capped at 6, so it stays
    representable in low-precision arithmetic. Gradient 1 on (0, 6), 0 elsewhere."""

    def forward(self, x: Array) -> Array:
        self._x = x
        return array_module(x).clip(x, 0, 6)

    def backward(self, grad_out: Array) -> Array:
        x = self._saved()
        return grad_out * ((x > 0) & (x < 6))


class PReLU(Module):
    """Leaky ReLU with a learned slope: one (``num_parameters=1``) or one per channel,
    initialised to ``init`` (0.25, as PyTorch)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter((num_parameters,), _constant(init))

    def forward(self, x: Array) -> Array:
        self._x = x
        return F.prelu(x, self.weight.data)

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_w = F.prelu_backward(grad_out, self._saved(), self.weight.data)
        self.weight.accumulate(grad_w)
        return grad_x


# -------------------------------------------------------------------------------- pooling


class _Pool(_OpLayer):
    """Shared window bookkeeping of max and average pooling (``stride`` defaults to
    ``kernel_size``, as PyTorch)."""

    def _window(self, op: str, kernel_size, stride, padding, dilation, ceil_mode) -> None:
        self.kernel_size = positive_pair(kernel_size, "kernel_size", op)
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride", op)
        self.padding = nonnegative_pair(padding, "padding", op)
        self.dilation = positive_pair(dilation, "dilation", op)
        self.ceil_mode = bool(ceil_mode)

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        window = (self.kernel_size, self.stride, self.padding, self.dilation)
        if input_shape is None:
            return self._spec(None, window=window)
        n, c, h, w = _check_input_shape(type(self).__name__, input_shape)
        size = [
            pool_output_size(i, k, s, p, d, self.ceil_mode)
            for i, k, s, p, d in zip(
                (h, w), self.kernel_size, self.stride, self.padding, self.dilation, strict=True
            )
        ]
        return self._spec((n, c, *size), window=window)


class MaxPool2d(_Pool):
    """Max pooling, ``F.max_pool2d`` / ``F.max_pool2d_backward``."""

    op = "max_pool2d"
    arg_names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> None:
        super().__init__()
        self._window("MaxPool2d", kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: Array) -> Array:
        # Keep the arg-max positions, as PyTorch's autograd does: the backward then only
        # scatters instead of searching every window again.
        self._x = x
        out, self._indices = F.max_pool2d(x, **self._args(), return_indices=True)
        return out

    def backward(self, grad_out: Array) -> Array:
        return F.max_pool2d_backward(grad_out, self._saved(), **self._args(), indices=self._indices)


class AvgPool2d(_Pool):
    """Average pooling, ``F.avg_pool2d`` / ``F.avg_pool2d_backward``."""

    op = "avg_pool2d"
    arg_names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
    ) -> None:
        super().__init__()
        self._window("AvgPool2d", kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = count_include_pad


class AdaptiveAvgPool2d(_OpLayer):
    """Average pooling to a fixed ``output_size`` (int or pair). Its window is regular only
    when the input size is a multiple of the output size; a 1x1 output (global average
    pooling) sees the whole input, and its window is then None."""

    op = "adaptive_avg_pool2d"
    arg_names = ("output_size",)

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        self.output_size = positive_pair(output_size, "output_size", "AdaptiveAvgPool2d")

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is None:
            return self._spec(None)
        n, c, *hw = _check_input_shape("AdaptiveAvgPool2d", input_shape)
        out, window = (n, c, *self.output_size), None
        if self.output_size != (1, 1) and not any(
            i % o for i, o in zip(hw, self.output_size, strict=True)
        ):
            kernel = tuple(i // o for i, o in zip(hw, self.output_size, strict=True))
            window = (kernel, kernel, 0, 1)
        return self._spec(out, window=window)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) (``start_dim=1``); backward reshapes back."""

    def forward(self, x: Array) -> Array:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: Array) -> Array:
        return grad_out.reshape(self._saved("_shape"))

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is None:
            return self._spec(None)
        return self._spec((input_shape[0], math.prod(input_shape[1:])))


# -------------------------------------------------------------------------- normalization


class _BatchNorm(Module):
    """Batch normalisation over channel dimension 1: ``F.batch_norm`` in training (batch
    statistics, running statistics updated) or eval (running statistics).

    ``weight`` (gamma, init 1) and ``bias`` (beta, init 0) are Parameters; ``running_mean``
    and ``running_var`` are state, made (0 and 1) on the first forward."""

    ndims: tuple[int, ...] = ()

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter((num_features,), _constant(1.0)) if affine else None
        self.bias = Parameter((num_features,), role="bias") if affine else None
        self.running_mean: Array | None = None
        self.running_var: Array | None = None

    def _args(self) -> dict[str, Any]:
        return dict(
            weight=_data(self.weight),
            bias=_data(self.bias),
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )

    def forward(self, x: Array) -> Array:
        name = type(self).__name__
        if x.ndim not in self.ndims:
            raise ValueError(
                f"{name}: input must have {' or '.join(map(str, self.ndims))} dimensions, "
                f"got shape {tuple(x.shape)}"
            )
        if self.running_mean is None:
            xp = array_module(x)
            self.running_mean = xp.zeros(self.num_features, dtype=x.dtype)
            self.running_var = xp.ones(self.num_features, dtype=x.dtype)
        self._x = x
        # the statistics the batch was normalised with, for backward (training updates them)
        self._stats = (self.running_mean.copy(), self.running_var.copy())
        return F.batch_norm(x, self.running_mean, self.running_var, **self._args())

    def backward(self, grad_out: Array) -> Array:
        mean, var = self._saved("_stats")
        grad_x, grad_w, grad_b = F.batch_norm_backward(
            grad_out, self._saved(), mean, var, **self._args()
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))
        return grad_x

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is not None and (
            len(input_shape) not in self.ndims or input_shape[1] != self.num_features
        ):
            raise ValueError(
                f"{type(self).__name__}: input must have {self.num_features} channels, "
                f"got shape {tuple(input_shape)}"
            )
        return self._spec(input_shape, window=(1, 1, 0, 1))

    def _to(self, dtype: str) -> None:
        if self.running_mean is not None:
            self.running_mean = self.running_mean.astype(dtype)
            self.running_var = self.running_var.astype(dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2d(_BatchNorm):
    """Batch norm of an (N, C, H, W) input: statistics per channel over N, H, W."""

    ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch norm of an (N, C) or (N, C, L) input: statistics per channel."""

    ndims = (2, 3)


class _AffineNorm(Module):
    """Layer and group norm: ``F.<op>(x, <arg>, weight, bias, eps)``, same in train and eval."""

    op = ""

    def __init__(self, arg: Any, shape: Shape, eps: float, affine: bool) -> None:
        super().__init__()
        self.arg, self.eps = arg, eps
        self.weight = Parameter(shape, _constant(1.0)) if affine else None
        self.bias = Parameter(shape, role="bias") if affine else None

    def _args(self) -> tuple:
        return (self.arg, _data(self.weight), _data(self.bias), self.eps)

    def forward(self, x: Array) -> Array:
        self._x = x
        return getattr(F, self.op)(x, *self._args())

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_w, grad_b = getattr(F, self.op + "_backward")(
            grad_out, self._saved(), *self._args()
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))
        return grad_x


class GroupNorm(_AffineNorm):
    """Group normalisation: channels in ``num_groups`` groups, each normalised per sample;
    ``weight``/``bias`` per channel."""

    op = "group_norm"

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True
    ) -> None:
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={num_groups} must divide num_channels={num_channels}"
            )
        super().__init__(num_groups, (num_channels,), eps, affine)


class LayerNorm(_AffineNorm):
    """Layer normalisation over the trailing ``normalized_shape`` axes of each sample."""

    op = "layer_norm"

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
    ) -> None:
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        super().__init__(shape, shape, eps, elementwise_affine)


class LayerNorm2d(LayerNorm):
    """Layer normalisation over the channels of an (N, C, H, W) input, separately at every
    position (ConvNeXt's norm, torchvision's ``LayerNorm2d``): the input is moved to
    (N, H, W, C), ``F.layer_norm`` normalises its last axis, and the result is moved back.
    ``weight`` and ``bias`` have shape (C,)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__(num_channels, eps, elementwise_affine)

    def forward(self, x: Array) -> Array:
        _check_input_shape("LayerNorm2d", tuple(x.shape), self.arg[0])
        self._x = x.transpose(0, 2, 3, 1)
        return F.layer_norm(self._x, *self._args()).transpose(0, 3, 1, 2)

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_w, grad_b = F.layer_norm_backward(
            grad_out.transpose(0, 2, 3, 1), self._saved(), *self._args()
        )
        _accumulate((self.weight, grad_w), (self.bias, grad_b))
        return grad_x.transpose(0, 3, 1, 2)

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is not None:
            _check_input_shape("LayerNorm2d", tuple(input_shape), self.arg[0])
        return self._spec(input_shape, window=(1, 1, 0, 1))


# ------------------------------------------------------------------------- regularization


class Dropout(Module):
    """Inverted dropout (``F.dropout``): in training each value is zeroed with probability
    ``p`` and the rest scaled by ``1/(1-p)``; in eval the identity. The mask of each forward
    is drawn from the layer's own generator (``seed``) and kept for backward."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        p = require_number(p, "p", "Dropout")
        if not 0 <= p < 1:  # p = 1 would zero everything and scale by 1/0
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p}")
        self.p = p
        self._rng = np.random.default_rng(_seeds.spawn(1)[0] if seed is None else seed)

    def forward(self, x: Array) -> Array:
        self._x = x
        self._mask = None
        if self.training:
            seed = int(self._rng.integers(2**63))
            self._mask = F.dropout_mask(x.shape, self.p, seed=seed, xp=array_module(x))
        return F.dropout(x, self.p, self.training, mask=self._mask)

    def backward(self, grad_out: Array) -> Array:
        return F.dropout_backward(grad_out, self._saved(), self.p, self.training, mask=self._mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------- blocks


class ResidualAdd(Module):
    """``main(x) + shortcut(x)`` (the identity when ``shortcut`` is None): ResNet's merge.

    Backward sends the same gradient into both paths and adds the two input gradients; the
    identity path passes it unchanged, which is why deep residual networks still train.
    Adding needs equal shapes; compare :class:`DenseConcat`."""

    def __init__(self, main: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut if shortcut is not None else Identity()

    def forward(self, x: Array) -> Array:
        return self.main.forward(x) + self.shortcut.forward(x)

    def backward(self, grad_out: Array) -> Array:
        return self.main.backward(grad_out) + self.shortcut.backward(grad_out)

    def trace(self, input_shape, rf, record, name):
        shape_a, rf_a = self.main.trace(input_shape, rf, record, _join(name, "main"))
        shape_b, rf_b = self.shortcut.trace(input_shape, rf, record, _join(name, "shortcut"))
        if shape_a != shape_b:
            raise ValueError(
                f"ResidualAdd: main output {shape_a} and shortcut output {shape_b} differ"
            )
        return shape_a, _union(rf_a, rf_b)


class DenseConcat(Module):
    """Concatenate the branches' outputs along channels (Inception, DenseNet).

    ``DenseConcat(Identity(), f)`` is DenseNet's ``[x, f(x)]``: unlike :class:`ResidualAdd`
    it keeps ``x`` intact and grows the channels. Backward splits the gradient by channel
    and adds the branches' input gradients."""

    def __init__(self, *branches: Module) -> None:
        super().__init__()
        if not branches:
            raise ValueError("DenseConcat: need at least one branch")
        self.branches = list(branches)

    def forward(self, x: Array) -> Array:
        outs = [b.forward(x) for b in self.branches]
        self._splits = [o.shape[1] for o in outs]
        return array_module(x).concatenate(outs, axis=1)

    def backward(self, grad_out: Array) -> Array:
        bounds = np.cumsum(self._saved("_splits"))[:-1].tolist()
        xp = array_module(grad_out)
        parts = xp.split(grad_out, bounds, axis=1)
        grads = [b.backward(g) for b, g in zip(self.branches, parts, strict=True)]
        return sum(grads[1:], grads[0])

    def trace(self, input_shape, rf, record, name):
        results = [
            b.trace(input_shape, rf, record, _join(name, f"branches.{i}"))
            for i, b in enumerate(self.branches)
        ]
        shapes = [s for s, _ in results]
        if len({(s[0], *s[2:]) for s in shapes}) > 1:
            raise ValueError(f"DenseConcat: branch outputs differ beyond channels: {shapes}")
        out = (shapes[0][0], sum(s[1] for s in shapes), *shapes[0][2:])
        return out, _union(*(r for _, r in results))


def _union(*fields: ReceptiveField | None) -> ReceptiveField | None:
    if any(f is None for f in fields):
        return None
    return fields[0].union(*fields[1:])


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    groups: int = 1,
    eps: float = 1e-5,
    activation: type[Module] | None = ReLU,
) -> Sequential:
    """Convolution (no bias: batch norm's beta replaces it), batch norm, activation.
    ``padding`` defaults to ``kernel_size // 2`` ("same" size at stride 1)."""
    padding = kernel_size // 2 if padding is None else padding
    layers: list[Module] = [
        Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        BatchNorm2d(out_channels, eps=eps),
    ]
    if activation is not None:
        layers.append(activation())
    return Sequential(*layers)


def _projection(in_channels: int, out_channels: int, stride: int) -> Module | None:
    """ResNet's shortcut: identity when shapes match, else 1x1 convolution + batch norm."""
    if stride == 1 and in_channels == out_channels:
        return None
    return conv_bn_act(in_channels, out_channels, 1, stride, 0, activation=None)


class BasicBlock(Sequential):
    """ResNet-18/34 block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The first 3x3 convolution carries the stride; the shortcut is a 1x1 convolution + batch
    norm when the stride or the channel count changes (torchvision's choice)."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        main = Sequential(
            *conv_bn_act(in_channels, out_channels, 3, stride).layers,
            *conv_bn_act(out_channels, out_channels, 3, activation=None).layers,
        )
        super().__init__(ResidualAdd(main, _projection(in_channels, out_channels, stride)), ReLU())


class Bottleneck(Sequential):
    """ResNet-50/101/152 block: 1x1 reduce to ``width``, 3x3, 1x1 expand to ``4 * planes``,
    plus the shortcut, then ReLU.

    The stride sits in the 3x3 convolution ("ResNet v1.5", torchvision's choice; the original
    paper and Caffe put it in the first 1x1, which skips three quarters of the input
    positions). ``width = planes * base_width / 64 * groups`` (ResNeXt and wide ResNets)."""

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64
    ) -> None:
        width = planes * base_width // 64 * groups
        out_channels = planes * self.expansion
        main = Sequential(
            *conv_bn_act(in_channels, width, 1).layers,
            *conv_bn_act(width, width, 3, stride, groups=groups).layers,
            *conv_bn_act(width, out_channels, 1, activation=None).layers,
        )
        super().__init__(ResidualAdd(main, _projection(in_channels, out_channels, stride)), ReLU())


class InceptionModule(DenseConcat):
    """GoogLeNet's Inception module: four parallel branches concatenated along channels,
    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, each conv followed by batch norm
    (eps 0.001) and ReLU, as torchvision. The 1x1 "reduce" convolutions are the bottleneck
    that keeps the 3x3 and 5x5 branches cheap.

    ``branch3_kernel_size`` is 5 in the paper; torchvision's GoogLeNet uses 3 (its weights
    were trained that way), and :func:`cnn_course.zoo.googlenet` follows it."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel_size: int = 5,
    ) -> None:
        conv = partial(conv_bn_act, eps=0.001)
        super().__init__(
            conv(in_channels, ch1x1, 1),
            Sequential(*conv(in_channels, ch3x3red, 1).layers, *conv(ch3x3red, ch3x3, 3).layers),
            Sequential(
                *conv(in_channels, ch5x5red, 1).layers,
                *conv(ch5x5red, ch5x5, branch3_kernel_size).layers,
            ),
            Sequential(MaxPool2d(3, 1, 1, ceil_mode=True), *conv(in_channels, pool_proj, 1).layers),
        )


class DepthwiseSeparableConv(Sequential):
    """MobileNetV1 block: 3x3 depthwise convolution (``groups = in_channels``, one filter
    per channel) + BN + ReLU, then 1x1 pointwise convolution + BN + ReLU.

    Cost per output position: ``C K^2 + C N`` MACs instead of ``C N K^2``, a ratio of
    ``1/N + 1/K^2``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            *conv_bn_act(in_channels, in_channels, 3, stride, groups=in_channels).layers,
            *conv_bn_act(in_channels, out_channels, 1).layers,
        )


class InvertedResidual(Sequential):
    """MobileNetV2 block: 1x1 expand by ``expand_ratio`` + BN + ReLU6, 3x3 depthwise + BN +
    ReLU6, 1x1 linear projection + BN (no activation: a ReLU in the narrow layer would
    destroy information), and an identity shortcut when stride is 1 and channels match.
    It is "inverted" because the shortcut joins the narrow ends, not the wide ones."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        layers: list[Module] = []
        if expand_ratio != 1:
            layers += conv_bn_act(in_channels, hidden, 1, activation=ReLU6).layers
        layers += conv_bn_act(hidden, hidden, 3, stride, groups=hidden, activation=ReLU6).layers
        layers += conv_bn_act(hidden, out_channels, 1, activation=None).layers
        self.use_residual = stride == 1 and in_channels == out_channels
        body = Sequential(*layers)
        super().__init__(ResidualAdd(body) if self.use_residual else body)


class SqueezeExcitation(Module):
    """Squeeze-and-excitation (Hu et al. 2018), torchvision's ``SqueezeExcitation``: a gate
    ``s = scale_activation(fc2(activation(fc1(avgpool(x)))))`` of shape (N, C, 1, 1), with
    ``fc1``/``fc2`` 1x1 convolutions C -> ``squeeze_channels`` -> C (with bias), rescales each
    channel: ``y = s * x``. Input and output (N, C, H, W).

    Backward: ``grad_x = s * grad_out + gate.backward(sum_hw(grad_out * x))``, the direct path
    plus the path through the gate. Shape analysis traces the gate's layers and reports the
    receptive field of the direct path; through its global average pooling the gate makes
    every output depend on the whole input, as one scalar per channel."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: type[Module] = ReLU,
        scale_activation: type[Module] = Sigmoid,
    ) -> None:
        super().__init__()
        self.gate = Sequential(
            AdaptiveAvgPool2d(1),
            Conv2d(input_channels, squeeze_channels, 1),
            activation(),
            Conv2d(squeeze_channels, input_channels, 1),
            scale_activation(),
        )

    def forward(self, x: Array) -> Array:
        self._x = x
        self._scale = self.gate.forward(x)
        return x * self._scale

    def backward(self, grad_out: Array) -> Array:
        x, scale = self._saved(), self._saved("_scale")
        grad_scale = (grad_out * x).sum(axis=(2, 3), keepdims=True)
        return grad_out * scale + self.gate.backward(grad_scale)

    def trace(self, input_shape, rf, record, name):
        self.gate.trace(input_shape, rf, record, _join(name, "gate"))
        return tuple(input_shape), rf


class LayerScale(Module):
    """Multiply each channel by a learned scale ``gamma`` of shape (C, 1, 1), initialised to
    ``init_value`` (ConvNeXt's layer scale, Touvron et al. 2021: 1e-6, so that each residual
    block starts close to the identity). Input and output (N, C, H, W)."""

    def __init__(self, channels: int, init_value: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.gamma = Parameter((channels, 1, 1), _constant(init_value))

    def forward(self, x: Array) -> Array:
        self._x = x
        return x * self.gamma.data

    def backward(self, grad_out: Array) -> Array:
        self.gamma.accumulate(
            (grad_out * self._saved()).sum(axis=0).sum(axis=(1, 2), keepdims=True)
        )
        return grad_out * self.gamma.data

    def describe(self, input_shape: Shape | None = None) -> LayerSpec:
        if input_shape is not None:
            _check_input_shape("LayerScale", tuple(input_shape), self.channels)
        return self._spec(input_shape, window=(1, 1, 0, 1))

    def extra_repr(self) -> str:
        return f"{self.channels}"
