"""Shape-only analysis of a network: output sizes, parameters, MACs, receptive fields.

Nothing here runs a forward pass (except :func:`empirical_receptive_field`, which exists to
check the analytic answer), and nothing allocates the weights: ``summary(vgg16(), ...)``
costs microseconds, not 550 MB.

Conventions
-----------
- **MACs** (multiply-accumulates) are counted per sample for convolutions and fully connected
  layers: ``C_out * H_out * W_out * (C_in / groups) * kh * kw`` for a convolution and
  ``in * out`` for a linear layer. Bias additions, normalisation, activations and pooling are
  not counted. This is the convention of torchvision's "GFLOPS" column, which, despite its
  name, counts MACs. **FLOPs = 2 x MACs** (one multiply and one add); both are reported.
- **Receptive field** (Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional
  Neural Networks", Distill 2019): after layers ``1..l`` with kernel ``k``, stride ``s``,
  padding ``p`` and dilation ``d``, the size ``r``, effective stride (the "jump" ``j``) and
  effective padding ``P`` follow

      r_l = r_{l-1} + (k_l - 1) d_l j_{l-1},   j_l = j_{l-1} s_l,   P_l = P_{l-1} + p_l j_{l-1}

  from ``r_0 = j_0 = 1``, ``P_0 = 0``. Output unit ``u`` (0-based) then sees the input
  indices ``u j - P`` to ``u j - P + r - 1`` (negative indices are padding). Where paths
  branch and merge (residual, inception), the merged unit sees the union of the regions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnn_course import nn
from cnn_course._receptive import ReceptiveField
from cnn_course.backend import backend_module, np, to_numpy
from cnn_course.ops.conv import conv_output_size, conv_transpose_output_size
from cnn_course.ops.pooling import pool_output_size

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
    "ReceptiveField",
    "receptive_field",
    "count_parameters",
    "Row",
    "Summary",
    "summary",
    "EmpiricalReceptiveField",
    "empirical_receptive_field",
    "depthwise_separable_cost_ratio",
]

Pair = tuple[int, int]


LayerOrWindow = Any  # a Module, or (kernel_size, stride[, padding[, dilation]])


def receptive_field(
    layers: LayerOrWindow | Iterable[LayerOrWindow], input_shape: Sequence[int] | None = None
) -> ReceptiveField:
    """Receptive field of a network's deepest feature map.

    Parameters
    ----------
    layers : model or sequence of layers
        An ``nn`` model (then ``input_shape`` is needed, because adaptive pooling depends on
        the input size), or a sequence whose items are ``nn`` window layers or tuples
        ``(kernel_size, stride[, padding[, dilation]])`` (ints or pairs).
    input_shape : (C, H, W) or (N, C, H, W), optional
        The input shape, for a model.
    """
    if hasattr(layers, "trace"):
        if input_shape is None:
            raise ValueError("receptive_field: a model needs input_shape, e.g. (3, 224, 224)")
        return summary(layers, input_shape).receptive_field
    rf = ReceptiveField()
    for i, layer in enumerate(layers):
        params = layer.describe().window if isinstance(layer, nn.Module) else layer
        if params is None:
            raise ValueError(
                f"receptive_field: layer {i} ({type(layer).__name__}) has no fixed window; "
                "pass the whole model with input_shape instead"
            )
        if not isinstance(params, (tuple, list)) or not 1 <= len(params) <= 4:
            raise TypeError(
                f"receptive_field: layer {i} must be an nn layer or (kernel_size, stride"
                f"[, padding[, dilation]]), got {params!r}"
            )
        rf = rf.then(*params)
    return rf


def count_parameters(model: Any) -> int:
    """Number of parameters of ``model`` (from the shapes: no weight is allocated)."""
    return sum(p.size for p in model.parameters())


@dataclass
class Row:
    """One layer of a :class:`Summary`: MACs per sample, ``flops = 2 * macs``;
    ``receptive_field`` is None where a unit has no fixed window (after global pooling,
    a fully connected layer or a transposed convolution)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: ReceptiveField | None

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass
class Summary:
    """Per-layer rows of a model, with totals. ``receptive_field`` is the deepest feature
    map's (the largest window any unit of the network has)."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: list[Row] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def receptive_field(self) -> ReceptiveField | None:
        fields = [r.receptive_field for r in self.rows if r.receptive_field is not None]
        return max(fields, key=lambda f: f.size[0] * f.size[1], default=None)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "params", "MACs", "RF (r / j / P)")
        lines = [header] + [
            (r.name, r.type, str(r.output_shape), f"{r.params:,}", f"{r.macs:,}", _rf_text(r))
            for r in self.rows
        ]
        widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
        fmt = "  ".join(f"{{:{'<' if c < 3 else '>'}{w}}}" for c, w in enumerate(widths))
        table = [fmt.format(*line) for line in lines]
        rule = "-" * len(table[0])
        rf = self.receptive_field
        totals = [
            f"input {self.input_shape} -> output {self.output_shape}",
            f"total params: {self.total_params:,}",
            f"total MACs per sample: {self.total_macs:,} ({self.total_macs / 1e9:.2f} G); "
            f"FLOPs = 2 x MACs = {self.total_flops:,}",
            f"receptive field: {rf.size if rf else '-'}",
        ]
        return "\n".join([table[0], rule, *table[1:], rule, *totals])


def _rf_text(row: Row) -> str:
    rf = row.receptive_field
    if rf is None:
        return "-"
    return "/".join(f"{a}x{b}" if a != b else str(a) for a, b in (rf.size, rf.stride, rf.padding))


def _full_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(
            f"summary: input_shape must be (C, H, W) or (N, C, H, W) with positive ints, "
            f"got {tuple(input_shape)}"
        )
    return shape


def summary(model: Any, input_shape: Sequence[int]) -> Summary:
    """Per-layer output shapes, parameters, MACs and receptive fields, from shapes alone.

    Parameters
    ----------
    model : nn Module
    input_shape : (C, H, W) or (N, C, H, W)
        MACs are per sample whatever N is.

    Returns
    -------
    Summary
        ``rows`` (one per leaf layer, in execution order), ``total_params``, ``total_macs``,
        ``total_flops``, ``receptive_field``; ``str()`` prints the table.
    """
    shape = _full_shape(input_shape)
    rows: list[Row] = []

    def record(name: str, layer: Any, in_shape: tuple, spec: nn.LayerSpec, rf: Any) -> None:
        rows.append(Row(name, spec.type, in_shape, spec.output_shape, spec.params, spec.macs, rf))

    out_shape, _ = model.trace(shape, ReceptiveField(), record, "")
    result = Summary(shape, tuple(out_shape), rows)
    expected = count_parameters(model)
    if result.total_params != expected:  # a parameter held outside a leaf layer
        raise RuntimeError(
            f"summary: rows hold {result.total_params} parameters but the model has {expected}"
        )
    return result


@dataclass
class EmpiricalReceptiveField:
    """The input region that influences one output unit, measured by back-propagation.

    ``rows``/``cols`` are inclusive index ranges, ``size`` their lengths, ``mask`` the
    (H, W) boolean map of input pixels with a non-zero gradient, ``unit`` the output unit."""

    size: Pair
    rows: Pair
    cols: Pair
    unit: Pair
    mask: Any


def empirical_receptive_field(
    model: Any, input_shape: Sequence[int], unit: Pair | None = None
) -> EmpiricalReceptiveField:
    """Measure the receptive field of one output unit with the model's own backward pass.

    The gradient of the outputs at position ``unit`` (default: the centre one; all channels,
    since after a concatenation different channels come from different branches) with
    respect to the input is non-zero exactly where the input can change that unit, provided
    nothing cancels. To make sure nothing does, the measurement runs on a copy of the model
    in eval mode (no dropout, batch norm a fixed positive affine map), with float64 weights
    set to positive constants, biases 0 and an all-ones input: every pre-activation is then
    positive, so each ReLU passes its gradient and every path contributes a positive amount.
    Max pooling sends the gradient to a single arg-max per window, which depends on the
    input; the set of pixels that *can* influence the unit is the whole window, so max
    pooling is measured as average pooling over the same window. The model itself is left
    untouched.

    Parameters
    ----------
    model : nn Module whose output is a feature map (N, C, H, W)
    input_shape : (C, H, W) or (N, C, H, W)
    unit : (row, col) of the output unit, optional
    """
    shape = (1, *_full_shape(input_shape)[1:])
    probe = _probe(model)
    x = backend_module().ones(shape, dtype="float64")
    out = probe.forward(x)
    if out.ndim != 4:
        raise ValueError(
            "empirical_receptive_field: the model must output a feature map (N, C, H, W), "
            f"got shape {tuple(out.shape)}"
        )
    unit = (out.shape[2] // 2, out.shape[3] // 2) if unit is None else tuple(unit)
    grad_out = backend_module().zeros_like(out)
    grad_out[0, :, unit[0], unit[1]] = 1.0
    grad_x = probe.backward(grad_out)
    mask = (to_numpy(grad_x)[0] != 0).any(axis=0)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        raise RuntimeError("empirical_receptive_field: the output does not depend on the input")
    span = (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))
    size = (span[0][1] - span[0][0] + 1, span[1][1] - span[1][0] + 1)
    return EmpiricalReceptiveField(size, span[0], span[1], unit, mask)


def _probe(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every path passes a positive gradient: eval mode (no
    dropout; batch norm with fresh statistics, mean 0 and variance 1, a positive scaling),
    float64 weights 0.1 and biases 0 (through the public ``Parameter.data``), and each
    ``MaxPool2d`` replaced by an ``AvgPool2d`` over the same windows. The model itself is
    left untouched."""
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    if any(layer.dilation != (1, 1) for layer in pools):
        raise ValueError("empirical_receptive_field: dilated max pooling is not supported")
    probe = copy.deepcopy(model).eval()
    xp = backend_module()
    for module in probe.modules():
        if hasattr(module, "running_mean"):  # batch norm: fresh statistics
            module.running_mean = module.running_var = None
        for name, value in vars(module).items():
            if isinstance(value, nn.MaxPool2d):
                setattr(module, name, _as_average(value))
            elif isinstance(value, list):
                value[:] = [_as_average(v) if isinstance(v, nn.MaxPool2d) else v for v in value]
    for p in probe.parameters():
        p.data = xp.full(p.shape, 0.0 if p.role == "bias" else 0.1, dtype="float64")
    return probe


def _as_average(layer: nn.MaxPool2d) -> nn.AvgPool2d:
    return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)


def depthwise_separable_cost_ratio(out_channels: int, kernel_size: int) -> float:
    """MACs of a depthwise separable convolution over those of a standard one with the same
    shapes: ``(C K^2 + C N) / (C N K^2) = 1/N + 1/K^2`` (MobileNet, section 3.1)."""
    if out_channels < 1 or kernel_size < 1:
        raise ValueError(
            "depthwise_separable_cost_ratio: out_channels and kernel_size must be positive, "
            f"got {out_channels} and {kernel_size}"
        )
    return 1 / out_channels + 1 / kernel_size**2


def attention_macs(height: int, width: int, dim: int, window_size: int | None = None) -> int:
    """Multiply-accumulates of one multi-head self-attention layer over an ``height x width``
    grid of tokens of size ``dim`` (per sample; softmax and bias not counted).

    The four projections (queries, keys, values, output) cost ``4 h w C^2``; the scores
    ``Q K^T`` and the weighted sum of the values cost ``N^2 C`` each for ``N`` tokens that see
    each other. Global attention (ViT, ``window_size=None``): ``N = h w``, so
    ``4 h w C^2 + 2 (h w)^2 C``, quadratic in the number of tokens. Windowed attention (Swin,
    ``window_size = M``): each token sees the ``M^2`` tokens of its window, so
    ``4 h w C^2 + 2 M^2 h w C``, linear in it (Liu et al., 2021, equations 1 and 2). The
    number of heads does not change the count (they split ``C``). Chapter 22 (q900-22-3).
    """
    for name, value in (("height", height), ("width", width), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"attention_macs: {name} must be a positive int, got {value!r}")
    tokens = height * width
    if window_size is None:
        seen = tokens
    else:
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(
                f"attention_macs: window_size must be a positive int or None, got {window_size!r}"
            )
        if height % window_size or width % window_size:
            raise ValueError(
                f"attention_macs: window_size {window_size} must divide the grid "
                f"{height} x {width} (Swin pads the feature map to a multiple)"
            )
        seen = window_size * window_size
    return 4 * tokens * dim * dim + 2 * tokens * seen * dim


__all__ += ["attention_macs"]
