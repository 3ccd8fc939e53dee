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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnn_course._checks import nonnegative_pair, positive_pair
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


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the units of one feature map, per axis ``(rows, cols)``.

    Attributes
    ----------
    size : (int, int)
        ``r``: how many input pixels one unit sees.
    stride : (int, int)
        Effective stride ``j`` ("jump"): input distance between neighbouring units.
    padding : (int, int)
        Effective padding ``P``: unit ``u`` sees input indices ``u j - P .. u j - P + r - 1``.
    """

    size: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)

    def then(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
    ) -> ReceptiveField:
        """The receptive field after one more window layer (convolution or pooling)."""
        k = positive_pair(kernel_size, "kernel_size", "receptive_field")
        s = positive_pair(stride, "stride", "receptive_field")
        p = nonnegative_pair(padding, "padding", "receptive_field")
        d = positive_pair(dilation, "dilation", "receptive_field")
        return ReceptiveField(
            size=tuple(
                r + (ki - 1) * di * j
                for r, ki, di, j in zip(self.size, k, d, self.stride, strict=True)
            ),
            stride=tuple(j * si for j, si in zip(self.stride, s, strict=True)),
            padding=tuple(
                pp + pi * j for pp, pi, j in zip(self.padding, p, self.stride, strict=True)
            ),
        )

    def union(self, *others: ReceptiveField) -> ReceptiveField:
        """The receptive field of a sum or concatenation of branches: the union of their
        regions (all branches must have the same effective stride to be aligned)."""
        fields = (self, *others)
        if len({f.stride for f in fields}) > 1:
            raise ValueError(
                "receptive_field: branches have different effective strides "
                f"{[f.stride for f in fields]}, their units are not aligned"
            )
        left = tuple(max(f.padding[a] for f in fields) for a in range(2))
        right = tuple(max(f.size[a] - f.padding[a] for f in fields) for a in range(2))
        return ReceptiveField(
            size=(left[0] + right[0], left[1] + right[1]), stride=self.stride, padding=left
        )

    def region(self, unit: Pair) -> tuple[Pair, Pair]:
        """``((first_row, last_row), (first_col, last_col))`` of the input seen by ``unit``."""
        return tuple(
            (u * j - p, u * j - p + r - 1)
            for u, j, p, r in zip(unit, self.stride, self.padding, self.size, strict=True)
        )


LayerSpec = Any  # a Module, or (kernel_size, stride[, padding[, dilation]])


def receptive_field(
    layers: LayerSpec | Iterable[LayerSpec], input_shape: Sequence[int] | None = None
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
        params = layer.rf_params(None) if hasattr(layer, "rf_params") else layer
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

    def record(name: str, layer: Any, in_shape: tuple, out_shape: tuple, rf: Any) -> None:
        own = sum(p.size for _, p in layer.named_parameters(recurse=False))
        rows.append(
            Row(name, type(layer).__name__, in_shape, out_shape, own, layer.macs(in_shape), rf)
        )

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
    nothing cancels. To make sure nothing does, the measurement runs in eval mode (no dropout, batch
    norm a fixed positive affine map) on a float64 copy of the weights set to positive
    constants, biases 0 and an all-ones input: every pre-activation is then positive, so each
    ReLU passes its gradient and every path contributes a positive amount. Max pooling sends
    the gradient to a single arg-max per window, which depends on the input; the set of
    pixels that *can* influence the unit is the whole window, so max pooling is measured as
    average pooling over the same window. The weights are restored afterwards.

    Parameters
    ----------
    model : nn Module whose output is a feature map (N, C, H, W)
    input_shape : (C, H, W) or (N, C, H, W)
    unit : (row, col) of the output unit, optional
    """
    from cnn_course import nn

    shape = (1, *_full_shape(input_shape)[1:])
    saved = [(p, p._data, p.dtype, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    swapped = _pool_as_average(model, nn)
    norms = [
        (m, m.running_mean, m.running_var) for m in model.modules() if isinstance(m, nn._BatchNorm)
    ]
    try:
        model.eval()
        for m, _, _ in norms:  # fresh statistics (mean 0, variance 1): a positive scaling
            m.running_mean = m.running_var = None
        for p in model.parameters():
            p.to("float64")
            p.data = backend_module().full(p.shape, 0.0 if p.role == "bias" else 0.1)
        x = backend_module().ones(shape, dtype="float64")
        out = model.forward(x)
        if out.ndim != 4:
            raise ValueError(
                "empirical_receptive_field: the model must output a feature map (N, C, H, W), "
                f"got shape {tuple(out.shape)}"
            )
        unit = (out.shape[2] // 2, out.shape[3] // 2) if unit is None else tuple(unit)
        grad_out = backend_module().zeros_like(out)
        grad_out[0, :, unit[0], unit[1]] = 1.0
        grad_x = model.backward(grad_out)
    finally:
        for layer in swapped:
            del layer.forward, layer.backward
        for m, mean, var in norms:
            m.running_mean, m.running_var = mean, var
        for p, data, dtype, grad in saved:
            p._data, p.dtype, p.grad = data, dtype, grad
        for m, training in modes:
            m.training = training
    mask = (to_numpy(grad_x)[0] != 0).any(axis=0)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        raise RuntimeError("empirical_receptive_field: the output does not depend on the input")
    span = (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))
    size = (span[0][1] - span[0][0] + 1, span[1][1] - span[1][0] + 1)
    return EmpiricalReceptiveField(size, span[0], span[1], unit, mask)


def _pool_as_average(model: Any, nn: Any) -> list[Any]:
    """Let each MaxPool2d of ``model`` compute an average over the same windows (instance
    attributes that shadow its methods; deleting them restores max pooling)."""
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    if any(layer.dilation != (1, 1) for layer in pools):
        raise ValueError("empirical_receptive_field: dilated max pooling is not supported")
    for layer in pools:
        avg = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)
        layer.forward, layer.backward = avg.forward, avg.backward
    return pools


def depthwise_separable_cost_ratio(out_channels: int, kernel_size: int) -> float:
    """MACs of a depthwise separable convolution over those of a standard one with the same
    shapes: ``(C K^2 + C N) / (C N K^2) = 1/N + 1/K^2`` (MobileNet, section 3.1)."""
    if out_channels < 1 or kernel_size < 1:
        raise ValueError(
            "depthwise_separable_cost_ratio: out_channels and kernel_size must be positive, "
            f"got {out_channels} and {kernel_size}"
        )
    return 1 / out_channels + 1 / kernel_size**2
