"""Animations of convolution arithmetic, recorded from the library's own operations.

Book: chapter 2 (The convolution layer): padding and stride; chapter 7 (Convolution
variants): dilation, group and depthwise convolution; chapter 8 (Up- and down-sampling):
transposed convolution, max pooling, bilinear upsampling.

Nothing here works out by hand which input positions meet which kernel taps. Each ``record_*``
function asks the operation itself:

- a convolution or a transposed convolution is linear in its input and in its kernel, so it is a
  sum of products ``x[p] * weight[t]``. Feeding a one-hot input ``e_p`` (every ``p`` at once, as
  a batch) and a one-hot kernel ``e_t`` gives 1 exactly at the outputs where that product
  appears and 0 elsewhere: ``links[p, t, o]``;
- bilinear interpolation is linear in its input: feeding ``e_p`` gives the weight of input ``p``
  in every output, ``links[p, 0, o]``;
- max pooling of ``e_p`` is 1 exactly at the outputs whose window holds ``p``.

The animated values are then recomputed from these windows and the input values alone
(:attr:`Recording.output`), and :meth:`Recording.check` asserts that they equal the operation's
own output, so an animation cannot show a window the operation does not use. Where a kernel tap
meets no input (padding, or for a transposed convolution an output cropped by ``padding``), its
place is found from the taps that do: each tap sits at a fixed offset from the others, and
those offsets are read off the recorded windows too.

Frames are drawn with Pillow (in matplotlib's DejaVu Sans) and played by
:meth:`Animation.to_jshtml`, matplotlib's JavaScript animation player: PNG frames and a little
JavaScript in one HTML fragment that plays offline (no CDN, no video codec).
"""

from __future__ import annotations

import base64
import functools
import io
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_course import analysis
from cnn_course import functional as F
from cnn_course.backend import np, to_numpy

__all__ = [
    "Recording",
    "Animation",
    "record_conv2d",
    "record_conv_transpose2d",
    "record_max_pool2d",
    "record_interpolate",
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "interpolate",
]

Cell = tuple[int, int, int]  # (channel, row, column)

# ------------------------------------------------------------------------------- recording


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _as_sample(name: str, x: Any, ndim: int = 3) -> Any:
    """A (C, H, W) float64 host copy of ``x`` given as (C, H, W) or (1, C, H, W)."""
    a = np.asarray(to_numpy(x), dtype=np.float64)
    if a.ndim == ndim + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(
            f"animate: {name} must have shape (C, H, W) or (1, C, H, W), got {a.shape}"
        )
    return a.copy()


def _one_hots(shape: tuple[int, ...]) -> Any:
    """All one-hot arrays of ``shape``, stacked: ``out[p]`` is 1 at flat index ``p``."""
    size = int(np.prod(shape))
    return np.eye(size).reshape(size, *shape)


def _bilinear_links(op: Callable, x_shape, w_shape, kwargs: dict) -> Any:
    """``links[p, t, o]``: 1 where input element ``p`` times weight element ``t`` reaches
    output element ``o``, read off ``op(e_p, e_t)`` for every ``t`` (batched over ``p``)."""
    inputs = _one_hots(tuple(x_shape))
    columns = []
    for kernel in _one_hots(tuple(w_shape)):
        out = to_numpy(op(inputs, kernel, **kwargs))
        columns.append(out.reshape(out.shape[0], -1))
    links = np.stack(columns, axis=1)
    if not np.allclose(links, np.round(links)) or links.min() < 0 or links.max() > 1:
        raise AssertionError(f"animate: {op.__name__} is not a plain sum of products x * w")
    return np.round(links), tuple(out.shape[1:])


@dataclass
class Recording:
    """The windows of one operation on one sample, as the operation itself reports them.

    Attributes
    ----------
    op : str
        ``"conv2d"``, ``"conv_transpose2d"``, ``"max_pool2d"`` or ``"interpolate"``.
    x : array (C, H, W)
        The input values shown.
    weight : array or None
        The kernel values shown (convolutions only), in the operation's layout.
    kwargs : dict
        The operation's other arguments.
    links : array (C*H*W, T, O)
        ``links[p, t, o]``: how input element ``p`` (with weight element ``t``; ``T = 1`` for
        operations without a kernel) enters output element ``o``: 1 or 0 for a convolution and
        max pooling, the interpolation weight for ``interpolate``.
    out_shape : (C_out, H_out, W_out)
    """

    op: str
    x: Any
    weight: Any
    kwargs: dict
    links: Any
    out_shape: tuple[int, int, int]
    run: Callable = field(repr=False)

    @property
    def scatter(self) -> bool:
        """Frames follow the input (each element spreads into the output), not the output."""
        return self.op == "conv_transpose2d"

    @property
    def n_steps(self) -> int:
        """One step per output element, or per input element for a transposed convolution."""
        return self.links.shape[0] if self.scatter else self.links.shape[2]

    def input_cell(self, p: int) -> Cell:
        return tuple(int(i) for i in np.unravel_index(p, self.x.shape))

    def output_cell(self, o: int) -> Cell:
        return tuple(int(i) for i in np.unravel_index(o, self.out_shape))

    def tap(self, t: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(t, self.weight.shape))

    def window(self, step: int) -> list[tuple[int, int, int, float]]:
        """The ``(p, t, o, coefficient)`` links of one step: the window read by output ``step``
        (or the window input ``step`` spreads into, for a transposed convolution)."""
        if self.scatter:
            sl = self.links[step]  # (T, O)
            return [
                (step, int(t), int(o), float(sl[t, o]))
                for t, o in zip(*np.nonzero(sl), strict=True)
            ]
        sl = self.links[:, :, step]  # (P, T)
        return [
            (int(p), int(t), step, float(sl[p, t])) for p, t in zip(*np.nonzero(sl), strict=True)
        ]

    def contributions(self) -> Any:
        """(n_steps, O): what each step adds to (or, for max pooling, sets in) the output."""
        xv = self.x.ravel()
        if self.op in ("conv2d", "conv_transpose2d"):
            per = np.einsum("pto,p,t->pto", self.links, xv, self.weight.ravel()).sum(axis=1)
            return per if self.scatter else np.diag(per.sum(axis=0))
        if self.op == "interpolate":
            return np.diag(np.einsum("po,p->o", self.links[:, 0], xv))
        members = self.links[:, 0] > 0  # max pooling: the largest member of each window
        return np.diag(np.where(members, xv[:, None], -np.inf).max(axis=0))

    @property
    def output(self) -> Any:
        """(1, C_out, H_out, W_out): the result the animation ends on, computed from the
        recorded windows and the values alone (not by the operation)."""
        return self.contributions().sum(axis=0).reshape(1, *self.out_shape)

    def reference(self) -> Any:
        """(1, C_out, H_out, W_out): the library operation's own result on the same input."""
        return to_numpy(self.run(self.x[None]))

    def check(self, expected: Any = None, rtol: float = 1e-12) -> None:
        """Assert that the animated result equals ``expected`` (by default the library
        operation with the recorded arguments): same shape, same values."""
        expected = self.reference() if expected is None else to_numpy(expected)
        if expected.shape != self.output.shape:
            raise AssertionError(
                f"animate: the animation of {self.op} ends on shape {self.output.shape}, "
                f"the operation gives {expected.shape}"
            )
        if not np.allclose(self.output, expected, rtol=rtol, atol=1e-12):
            worst = float(np.abs(self.output - expected).max())
            raise AssertionError(
                f"animate: the animation of {self.op} differs from the operation by {worst}"
            )


def record_conv2d(
    x: Any,
    weight: Any,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Recording:
    """Record the windows of :func:`cnn_course.functional.conv2d` on one sample.

    Parameters
    ----------
    x : array (C, H, W) or (1, C, H, W)
    weight : array (F, C/groups, kh, kw)
    stride, padding, dilation, groups
        As for ``conv2d`` (bias is left out: it adds the same number to every window).
    """
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x, weight = _as_sample("x", x), _as_sample("weight", weight, 4)
    links, out_shape = _bilinear_links(F.conv2d, x.shape, weight.shape, kwargs)
    return Recording(
        "conv2d", x, weight, kwargs, links, out_shape, lambda v: F.conv2d(v, weight, **kwargs)
    )


def record_conv_transpose2d(
    x: Any,
    weight: Any,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
) -> Recording:
    """Record the windows of :func:`cnn_course.functional.conv_transpose2d` on one sample.

    Parameters
    ----------
    x : array (C_in, H, W) or (1, C_in, H, W)
    weight : array (C_in, C_out/groups, kh, kw)
    stride, padding, output_padding, groups, dilation
        As for ``conv_transpose2d``.
    """
    kwargs = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    )
    x, weight = _as_sample("x", x), _as_sample("weight", weight, 4)
    links, out_shape = _bilinear_links(F.conv_transpose2d, x.shape, weight.shape, kwargs)
    return Recording(
        "conv_transpose2d",
        x,
        weight,
        kwargs,
        links,
        out_shape,
        lambda v: F.conv_transpose2d(v, weight, **kwargs),
    )


def _linear_record(op: str, x: Any, run: Callable, kwargs: dict) -> Recording:
    x = _as_sample("x", x)
    out = to_numpy(run(_one_hots(x.shape)))
    links = out.reshape(out.shape[0], 1, -1)
    return Recording(op, x, None, kwargs, links, tuple(out.shape[1:]), run)


def record_max_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> Recording:
    """Record the windows of :func:`cnn_course.functional.max_pool2d` on one sample: max
    pooling of a one-hot input is 1 exactly where the window holds the hot element."""
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    return _linear_record("max_pool2d", x, lambda v: F.max_pool2d(v, **kwargs), kwargs)


def record_interpolate(
    x: Any,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "bilinear",
    align_corners: bool | None = None,
) -> Recording:
    """Record the weights of :func:`cnn_course.functional.interpolate` on one sample: the
    output for a one-hot input ``e_p`` is the weight of input ``p`` in every output."""
    kwargs = dict(size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)
    return _linear_record("interpolate", x, lambda v: F.interpolate(v, **kwargs), kwargs)


# ------------------------------------------------------------------------------- geometry


def _tap_offsets(rec: Recording) -> dict[tuple[int, int], tuple[int, int]]:
    """Where each spatial kernel tap ``(i, j)`` sits relative to tap ``(0, 0)``, read off the
    recorded windows: within one window every pair (position, tap) has ``position - offset``
    equal (the window's anchor)."""
    windows = []
    for step in range(rec.n_steps):
        pairs = []
        for p, t, o, _ in rec.window(step):
            cell = rec.output_cell(o) if rec.scatter else rec.input_cell(p)
            pairs.append((rec.tap(t)[2:], cell[1:]))
        windows.append(pairs)
    offsets: dict[tuple[int, int], tuple[int, int]] = {}
    seed = next(pairs[0][0] for pairs in windows if pairs)
    offsets[seed] = (0, 0)
    changed = True
    while changed:
        changed = False
        for pairs in windows:
            known = [(tap, pos) for tap, pos in pairs if tap in offsets]
            if not known:
                continue
            tap0, pos0 = known[0]
            anchor = (pos0[0] - offsets[tap0][0], pos0[1] - offsets[tap0][1])
            for tap, pos in pairs:
                off = (pos[0] - anchor[0], pos[1] - anchor[1])
                if tap not in offsets:
                    offsets[tap], changed = off, True
                elif offsets[tap] != off:
                    raise AssertionError(f"animate: tap {tap} moves within the kernel")
    base = offsets.get((0, 0), (0, 0))
    return {tap: (r - base[0], c - base[1]) for tap, (r, c) in offsets.items()}


@dataclass
class _Frame:
    """What one frame shows (cells are (channel, row, column); rows may lie in the border)."""

    caption: str = ""
    focus_in: set = field(default_factory=set)  # highlighted input cells
    focus_out: set = field(default_factory=set)  # highlighted output cells
    window: dict = field(default_factory=dict)  # cell in the window plane -> small label
    border: set = field(default_factory=set)  # window cells in the padding / cropped border
    kernel: set = field(default_factory=set)  # highlighted weight elements
    kernel_filter: int | None = None  # which weight[k] is shown (None: no kernel panel)
    best: set = field(default_factory=set)  # the maximum of a max-pooling window
    out_values: dict = field(default_factory=dict)  # output cell -> value shown


def _paren(v: float) -> str:
    return f"({_fmt(v)})" if v < 0 else _fmt(v)


def _fmt(v: float) -> str:
    if v == -np.inf:
        return "-inf"
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.2f}".rstrip("0")


# ------------------------------------------------------------------------------- drawing

SCALE = 28  # pixels per grid cell
TOP = 2.4  # first grid row, below the title lines (in cells)
SEP = 1.6  # vertical space between stacked channels
COLORS = {
    "window": "#9ecae1",
    "border": "#e5e5e5",
    "border_window": "#c6dbef",
    "focus_out": "#fdae6b",
    "filled": "#fee6ce",
    "focus_in": "#fdae6b",
    "kernel": "#a1d99b",
    "best": "#e6550d",
    "edge": "#525252",
    "border_edge": "#a0a0a0",
    "text": "#222222",
    "small": "#08519c",
    "note": "#525252",
}
# The matplotlib player's buttons use Font Awesome icons from a CDN; text glyphs need nothing.
_BUTTONS = {
    "fa fa-minus": "&minus;",
    "fa fa-fast-backward": "&#x23EE;",
    "fa fa-step-backward": "&#x25C0;&#x2759;",
    "fa fa-play fa-flip-horizontal": "&#x25C0;",
    "fa fa-pause": "&#x2759;&#x2759;",
    "fa fa-play": "&#x25B6;",
    "fa fa-step-forward": "&#x2759;&#x25B6;",
    "fa fa-fast-forward": "&#x23ED;",
    "fa fa-plus": "+",
}


@functools.cache
def _font(size: int, bold: bool = False):
    """matplotlib's own DejaVu Sans (installed with it: nothing is downloaded)."""
    from matplotlib import font_manager
    from PIL import ImageFont

    prop = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    return ImageFont.truetype(font_manager.findfont(prop), size)


def _png(image) -> bytes:
    """A frame as a PNG with a 64-colour palette (flat cells and text need no more)."""
    out = io.BytesIO()
    image.quantize(64).save(out, format="png", optimize=True)
    return out.getvalue()


def _html_writer(render: Callable[[int], Any]):
    """matplotlib's HTML writer (embedded frames and its JavaScript player), with frame ``i``
    drawn by ``render(i)`` (Pillow) instead of by the figure."""
    from matplotlib.animation import HTMLWriter

    class FrameWriter(HTMLWriter):
        def __init__(self, fps: float):
            super().__init__(fps=fps, embed_frames=True, default_mode="loop")
            self._next = 0

        def grab_frame(self, **savefig_kwargs) -> None:
            data = _png(render(self._next))
            self._next += 1
            self._saved_frames.append(base64.encodebytes(data).decode("ascii"))

    return FrameWriter


@dataclass
class _Panel:
    title: str
    x0: float
    y0: float
    shape: tuple[int, int]  # rows, columns of real cells
    border: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    border_text: str = ""

    @property
    def width(self) -> int:
        return self.shape[1] + self.border[1] + self.border[3]

    @property
    def height(self) -> int:
        return self.shape[0] + self.border[0] + self.border[2]

    def xy(self, r: int, c: int) -> tuple[float, float]:
        """Top-left corner (in cells, y downwards) of cell (r, c)."""
        return self.x0 + self.border[1] + c, self.y0 + self.border[0] + r


class Animation:
    """Frames of a :class:`Recording`: the input, the kernel window moving, the output filling.

    Every grid is labelled (input or output, its size; the output size comes from the formula
    in :mod:`cnn_course.analysis` and is checked against the recorded shape). ``len(anim)`` is
    the number of frames: a start frame, one per step, and the finished result.
    """

    def __init__(self, recording: Recording, title: str | None = None, fps: float = 2.0):
        self.rec = recording
        self.fps = fps
        self.title = title or self._default_title()
        self.formula, size = self._formula()
        if size != recording.out_shape[1:]:
            raise AssertionError(
                f"animate: the formula gives {size}, the operation {recording.out_shape[1:]}"
            )
        self._plan_geometry()
        self.frames = self._frames()

    # -- description -----------------------------------------------------------------------

    def _default_title(self) -> str:
        rec, kw = self.rec, self.rec.kwargs
        if rec.op in ("conv2d", "conv_transpose2d"):
            kh, kw_ = rec.weight.shape[2:]
            parts = [f"kernel {kh} x {kw_}"]
            for name, default in [
                ("stride", 1),
                ("padding", 0),
                ("output_padding", 0),
                ("dilation", 1),
                ("groups", 1),
            ]:
                if name in kw and kw[name] != default:
                    parts.append(f"{name}={kw[name]!r}")
            return f"{rec.op}: " + ", ".join(parts)
        if rec.op == "max_pool2d":
            stride = kw["stride"] if kw["stride"] is not None else kw["kernel_size"]
            return f"max_pool2d: window {kw['kernel_size']}, stride {stride}"
        how = f"scale_factor={kw['scale_factor']}" if kw["size"] is None else f"size={kw['size']}"
        return f"interpolate: {kw['mode']}, {how}"

    def _formula(self) -> tuple[str, tuple[int, int]]:
        """The output-size formula with the numbers filled in, from cnn_course.analysis."""
        rec, kw = self.rec, self.rec.kwargs
        h, w = rec.x.shape[1:]
        hw = ((0, h), (1, w))
        if rec.op == "interpolate":
            if kw["size"] is not None:
                size = _pair(kw["size"])
                return f"H_out = size = {size[0]}", size
            s = kw["scale_factor"]
            s = (s, s) if not isinstance(s, Sequence) else s
            size = (int(h * s[0]), int(w * s[1]))
            return f"H_out = floor({h} x {s[0]:g}) = {size[0]}", size
        if rec.op == "max_pool2d":
            k, st = _pair(kw["kernel_size"]), _pair(kw["stride"] or kw["kernel_size"])
            p, d = _pair(kw["padding"]), _pair(kw["dilation"])
            size = tuple(analysis.pool_output_size(n, k[a], st[a], p[a], d[a]) for a, n in hw)
            text = f"floor(({h} + 2*{p[0]} - {d[0]}*({k[0]}-1) - 1) / {st[0]}) + 1"
            return f"H_out = {text} = {size[0]}", size
        k = rec.weight.shape[2:]
        s, d = _pair(kw["stride"]), _pair(kw["dilation"])
        if rec.op == "conv_transpose2d":
            p, op = _pair(kw["padding"]), _pair(kw["output_padding"])
            size = tuple(
                analysis.conv_transpose_output_size(n, k[a], s[a], p[a], op[a], d[a]) for a, n in hw
            )
            return (
                f"H_out = ({h}-1)*{s[0]} - 2*{p[0]} + {d[0]}*({k[0]}-1) + {op[0]} + 1 = {size[0]}",
                size,
            )
        if kw["padding"] == "same":
            return f"padding 'same': H_out = H = {h}", (h, w)
        p = (0, 0) if kw["padding"] == "valid" else _pair(kw["padding"])
        size = tuple(analysis.conv_output_size(n, k[a], s[a], p[a], d[a]) for a, n in hw)
        return (
            f"H_out = floor(({h} + 2*{p[0]} - {d[0]}*({k[0]}-1) - 1) / {s[0]}) + 1 = {size[0]}",
            size,
        )

    # -- geometry --------------------------------------------------------------------------

    def _plan_geometry(self) -> None:
        rec = self.rec
        self.offsets = _tap_offsets(rec) if rec.weight is not None else {}
        c_in, h, w = rec.x.shape
        c_out, ho, wo = rec.out_shape
        # The window plane (input, or output for a transposed convolution) grows by the border
        # the kernel taps reach outside it: padding, or outputs cropped away by ``padding``.
        plane = (ho, wo) if rec.scatter else (h, w)
        reach = [0, 0, 0, 0]
        self.windows = [self._window_cells(step) for step in range(rec.n_steps)]
        for cells in self.windows:
            for (_, r, c), _ in cells.items():
                reach[0], reach[1] = max(reach[0], -r), max(reach[1], -c)
                reach[2], reach[3] = (
                    max(reach[2], r - plane[0] + 1),
                    max(reach[3], c - plane[1] + 1),
                )
        if rec.op in ("conv2d", "max_pool2d") and not isinstance(rec.kwargs["padding"], str):
            ph, pw = _pair(rec.kwargs["padding"])
            reach = [max(reach[0], ph), max(reach[1], pw), max(reach[2], ph), max(reach[3], pw)]
        border = tuple(reach)
        gap = 3
        self.panels_in = []
        self.panels_out = []
        self.panels_k = []
        y = TOP
        in_border = (0, 0, 0, 0) if rec.scatter else border
        out_border = border if rec.scatter else (0, 0, 0, 0)
        x = 1.6 if c_in > 1 else 0.5
        for ch in range(c_in):
            label = f"input, {h} x {w}" if ch == 0 else ""
            pnl = _Panel(label, x, y, (h, w), in_border)
            self.panels_in.append(pnl)
            y += pnl.height + SEP
        height = y
        x += max(p.width for p in self.panels_in) + gap
        if rec.weight is not None:
            y = TOP
            kh, kw = rec.weight.shape[2:]
            for ch in range(rec.weight.shape[1]):
                pnl = _Panel(f"kernel, {kh} x {kw}" if ch == 0 else "", x, y, (kh, kw))
                self.panels_k.append(pnl)
                y += pnl.height + SEP
            height = max(height, y)
            x += max(p.width for p in self.panels_k) + gap
        y = TOP
        for ch in range(c_out):
            pnl = _Panel(f"output, {ho} x {wo}" if ch == 0 else "", x, y, (ho, wo), out_border)
            self.panels_out.append(pnl)
            y += pnl.height + SEP
        height = max(height, y)
        x += max(max(p.width for p in self.panels_out), 5) + 0.5
        self.extent = (max(x, 16.0), height + 1.0)

    def _window_cells(self, step: int) -> dict[Cell, tuple[int, float]]:
        """Cells of the window plane that step ``step`` touches, each with the weight element
        (or -1) and coefficient; taps that meet no cell are placed by the tap offsets."""
        rec = self.rec
        links = rec.window(step)
        cells: dict[Cell, tuple[int, float]] = {}
        for p, t, o, coef in links:
            cell = rec.output_cell(o) if rec.scatter else rec.input_cell(p)
            cells[cell] = (t if rec.weight is not None else -1, coef)
        if rec.weight is None or not links:
            return cells
        # The kernel slice this step uses: weight[f] (conv2d) or weight[c_in] (transposed).
        first = rec.tap(links[0][1])
        p0, t0, o0, _ = links[0]
        pos0 = (rec.output_cell(o0) if rec.scatter else rec.input_cell(p0))[1:]
        off0 = self.offsets[first[2:]]
        anchor = (pos0[0] - off0[0], pos0[1] - off0[1])
        channel_of = {}  # kernel channel -> plane channel, from the real links
        for p, t, o, _ in links:
            cell = rec.output_cell(o) if rec.scatter else rec.input_cell(p)
            channel_of[rec.tap(t)[1]] = cell[0]
        kh, kw = rec.weight.shape[2:]
        for kc, plane_c in channel_of.items():
            for i in range(kh):
                for j in range(kw):
                    off = self.offsets[(i, j)]
                    cell = (plane_c, anchor[0] + off[0], anchor[1] + off[1])
                    if cell not in cells:
                        t = int(np.ravel_multi_index((first[0], kc, i, j), rec.weight.shape))
                        cells[cell] = (t, 0.0)
        return cells

    # -- frames ----------------------------------------------------------------------------

    def _frames(self) -> list[_Frame]:
        rec = self.rec
        contrib = rec.contributions()
        shown = np.full(contrib.shape[1], np.nan)
        frames = [_Frame(caption=self.formula)]
        xv = rec.x.ravel()
        for step in range(rec.n_steps):
            fr = _Frame()
            links = rec.window(step)
            plane = rec.out_shape[1:] if rec.scatter else rec.x.shape[1:]
            for cell, (t, coef) in self.windows[step].items():
                inside = 0 <= cell[1] < plane[0] and 0 <= cell[2] < plane[1]
                if rec.scatter:  # what this input adds to the output cell
                    fr.window[cell] = "+" + _fmt(xv[step] * rec.weight.ravel()[t])
                    fr.kernel.add(t)
                elif rec.weight is not None:  # the kernel tap on this input cell
                    fr.window[cell] = "\u00d7" + _fmt(rec.weight.ravel()[t])
                    fr.kernel.add(t)
                elif rec.op == "interpolate":
                    fr.window[cell] = _fmt(coef)
                else:
                    fr.window[cell] = ""
                if not inside:
                    fr.border.add(cell)
            if rec.weight is not None and links:
                fr.kernel_filter = rec.tap(links[0][1])[0]
            if rec.scatter:
                fr.focus_in.add(rec.input_cell(step))
                touched = sorted({o for _, _, o, _ in links})
                shown[touched] = np.nan_to_num(shown[touched]) + contrib[step, touched]
                fr.focus_out = {rec.output_cell(o) for o in touched}
                val = _fmt(xv[step])
                fr.caption = f"x{list(rec.input_cell(step))} = {val} spreads {val} x kernel"
            else:
                o = step
                shown[o] = contrib[step, o]
                fr.focus_out.add(rec.output_cell(o))
                fr.caption = self._gather_caption(links, o, shown[o])
                if rec.op == "max_pool2d":
                    ps = [p for p, _, _, _ in links]
                    fr.best.add(rec.input_cell(max(ps, key=lambda p: xv[p])))
            fr.out_values = {
                rec.output_cell(o): shown[o] for o in range(shown.size) if not np.isnan(shown[o])
            }
            frames.append(fr)
        last = _Frame(caption=f"done: {self.rec.op} output, shape {tuple(self.rec.output.shape)}")
        last.out_values = {rec.output_cell(o): v for o, v in enumerate(rec.output.ravel())}
        frames.append(last)
        return frames

    def _gather_caption(self, links, o: int, value: float) -> str:
        rec, xv = self.rec, self.rec.x.ravel()
        cell = list(rec.output_cell(o))
        if rec.op == "max_pool2d":
            vals = ", ".join(_fmt(xv[p]) for p, _, _, _ in links)
            return f"y{cell} = max({vals}) = {_fmt(value)}"
        if rec.op == "interpolate":
            terms = [f"{c:.4g}*{_fmt(xv[p])}" for p, _, _, c in links]
        else:
            wv = rec.weight.ravel()
            terms = [f"{_fmt(xv[p])}*{_paren(wv[t])}" for p, t, _, _ in links]
        if len(terms) > 6:
            return f"y{cell} = sum of {len(terms)} products = {_fmt(value)}"
        return f"y{cell} = " + " + ".join(terms) + f" = {_fmt(value)}"

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"<Animation {self.title}; {len(self.frames)} frames>"

    @property
    def output(self) -> Any:
        """(1, C_out, H_out, W_out): the result the last frame shows, from the windows."""
        return self.rec.output

    # -- rendering -------------------------------------------------------------------------

    def render(self, index: int):
        """Frame ``index`` as a Pillow image."""
        from PIL import Image, ImageDraw

        rec, fr = self.rec, self.frames[index]
        width, height = (round(v * SCALE) for v in self.extent)
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        big, small, note = _font(11), _font(8), _font(9)

        def px(v: float) -> int:
            return round(v * SCALE)

        draw.text((px(0.5), px(0.9)), self.title, font=_font(13, True), fill="black", anchor="ls")
        caption_y = px(self.extent[1] - 0.6)
        draw.text((px(0.5), caption_y), fr.caption, font=_font(11), fill="black", anchor="lm")

        def cell(pnl, r, c, face, text="", tap="", border=False, bold=False):
            x, y = pnl.xy(r, c)
            box = [px(x), px(y), px(x + 1), px(y + 1)]
            edge = COLORS["border_edge"] if border else COLORS["edge"]
            draw.rectangle(box, fill=face, outline=edge, width=1)
            if text:
                font = _font(11, True) if bold else big
                color = COLORS["note"] if border else COLORS["text"]
                draw.text(
                    ((box[0] + box[2]) / 2, px(y + (0.38 if tap else 0.5))),
                    text,
                    font=font,
                    fill=color,
                    anchor="mm",
                )
            if tap:
                draw.text(
                    (box[2] - 1, box[3] - 1), tap, font=small, fill=COLORS["small"], anchor="rd"
                )

        def title(pnl, text):
            if text:
                draw.text(
                    (px(pnl.x0), px(pnl.y0 - 0.3)),
                    text,
                    font=_font(11, True),
                    fill="black",
                    anchor="ls",
                )

        def channel(pnl, ch, count):
            if count > 1:
                draw.text(
                    (px(pnl.x0 - 0.2), px(pnl.y0 + pnl.height / 2)),
                    f"c={ch}",
                    font=note,
                    fill=COLORS["note"],
                    anchor="rm",
                )

        def legend(pnl, text):
            if text:
                draw.text(
                    (px(pnl.x0), px(pnl.y0 + pnl.height + 0.2)),
                    text,
                    font=note,
                    fill=COLORS["note"],
                    anchor="la",
                )

        def cells(pnl):
            top, left, bottom, right = pnl.border
            for r in range(-top, pnl.shape[0] + bottom):
                for c in range(-left, pnl.shape[1] + right):
                    yield r, c, 0 <= r < pnl.shape[0] and 0 <= c < pnl.shape[1]

        pad_text = "-inf" if rec.op == "max_pool2d" else "0"
        for ch, pnl in enumerate(self.panels_in):
            title(pnl, pnl.title)
            channel(pnl, ch, len(self.panels_in))
            if any(pnl.border) and not rec.scatter and ch == len(self.panels_in) - 1:
                legend(pnl, "grey: padding")
            for r, c, inside in cells(pnl):
                key = (ch, r, c)
                tap = "" if rec.scatter else fr.window.get(key, "")
                if not inside:
                    face = COLORS["border_window"] if key in fr.window else COLORS["border"]
                    cell(pnl, r, c, face, pad_text, tap, border=True)
                    continue
                face = "white"
                if key in fr.focus_in:
                    face = COLORS["focus_in"]
                elif not rec.scatter and key in fr.window:
                    face = COLORS["window"]
                cell(pnl, r, c, face, _fmt(rec.x[key]), tap, bold=key in fr.best)
                if key in fr.best:
                    x, y = pnl.xy(r, c)
                    box = [px(x) + 2, px(y) + 2, px(x + 1) - 2, px(y + 1) - 2]
                    draw.rectangle(box, outline=COLORS["best"], width=2)
        f = fr.kernel_filter
        for kc, pnl in enumerate(self.panels_k):
            title(pnl, pnl.title)
            if f is not None and kc == len(self.panels_k) - 1 and rec.weight.shape[0] > 1:
                role = "output" if rec.op == "conv2d" else "input"
                legend(pnl, f"weight[{f}], for {role} channel {f}")
            if f is None and kc == len(self.panels_k) - 1 and rec.weight.shape[0] > 1:
                legend(pnl, f"weight[0] of {rec.weight.shape[0]}")
            for i, j, _ in cells(pnl):  # first and last frames: weight[0], nothing highlighted
                t = int(np.ravel_multi_index((f or 0, kc, i, j), rec.weight.shape))
                face = COLORS["kernel"] if t in fr.kernel else "white"
                cell(pnl, i, j, face, _fmt(rec.weight.ravel()[t]))
        for ch, pnl in enumerate(self.panels_out):
            title(pnl, pnl.title)
            channel(pnl, ch, len(self.panels_out))
            if any(pnl.border) and ch == len(self.panels_out) - 1:
                legend(pnl, "grey: cropped by padding")
            for r, c, inside in cells(pnl):
                key = (ch, r, c)
                tap = fr.window.get(key, "") if rec.scatter else ""
                if not inside:
                    face = COLORS["border_window"] if key in fr.window else COLORS["border"]
                    cell(pnl, r, c, face, "", tap, border=True)
                    continue
                face = "white"
                if key in fr.out_values:
                    face = COLORS["filled"]
                if key in fr.focus_out:
                    face = COLORS["focus_out"]
                value = fr.out_values.get(key)
                cell(pnl, r, c, face, "" if value is None else _fmt(value), tap)
        return image

    def frame_png(self, index: int) -> bytes:
        """Frame ``index`` as PNG bytes."""
        return _png(self.render(index))

    def to_jshtml(self) -> str:
        """The animation as an HTML fragment (PNG frames + JavaScript player) that plays
        offline: ``FuncAnimation.to_jshtml``'s writer and player, frames drawn with Pillow (a
        tenth of the time matplotlib's text rendering takes), no icon font from a CDN."""
        from matplotlib.animation import FuncAnimation
        from matplotlib.figure import Figure

        holder = Figure(figsize=(1, 1), dpi=10)  # the writer's figure; the frames are ours
        anim = FuncAnimation(holder, lambda i: [], frames=len(self.frames), repeat=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "animation.html")
            anim.save(str(path), writer=_html_writer(self.render)(fps=self.fps))
            html = path.read_text()
        html = re.sub(r"<link rel=\"stylesheet\"\s+href=\"https?://[^\"]*\">", "", html)
        for icon, glyph in _BUTTONS.items():
            html = html.replace(f'<i class="{icon}"></i>', glyph)
        return html

    def _repr_html_(self) -> str:
        return self.to_jshtml()

    def _repr_png_(self) -> bytes:  # plain-image front ends show the finished frame
        return self.frame_png(len(self.frames) - 1)


def _animate(rec: Recording, title: str | None, fps: float) -> Animation:
    rec.check()
    return Animation(rec, title=title, fps=fps)


def conv2d(x: Any, weight: Any, *, title: str | None = None, fps: float = 2.0, **kwargs):
    """Animate :func:`cnn_course.functional.conv2d` (arguments as :func:`record_conv2d`).
    Raises ``AssertionError`` if the animated result differs from ``conv2d``'s."""
    return _animate(record_conv2d(x, weight, **kwargs), title, fps)


def conv_transpose2d(x: Any, weight: Any, *, title: str | None = None, fps: float = 2.0, **kwargs):
    """Animate :func:`cnn_course.functional.conv_transpose2d`: each input element spreads
    ``value x kernel`` into the output, which accumulates. Checked like :func:`conv2d`."""
    return _animate(record_conv_transpose2d(x, weight, **kwargs), title, fps)


def max_pool2d(x: Any, *, title: str | None = None, fps: float = 2.0, **kwargs):
    """Animate :func:`cnn_course.functional.max_pool2d` (the maximum of each window is
    outlined). Checked like :func:`conv2d`."""
    return _animate(record_max_pool2d(x, **kwargs), title, fps)


def interpolate(x: Any, *, title: str | None = None, fps: float = 2.0, **kwargs):
    """Animate :func:`cnn_course.functional.interpolate` (each input's weight is shown in its
    corner). Checked like :func:`conv2d`."""
    return _animate(record_interpolate(x, **kwargs), title, fps)
