"""The convolution engine: im2col + GEMM in chunks and tiles, depthwise taps, GPU kernels.

Every function takes the call's :class:`~.windows.Window` and its :class:`~.plan.Plan` and
follows the plan: the public module (:mod:`cnn_course.ops.conv`) validates the arguments,
asks :func:`~.plan.plan`, and calls :func:`forward`, :func:`weight_grad` or
:func:`input_grad`.

- im2col, per sample: the columns of a cache-sized tile (whole samples, or a few output
  rows of one) are gathered, in two copies with long contiguous runs (:func:`.windows.windows`)
  split over the threads, then one GEMM per sample writes NCHW in place. Fresh memory for
  each tile would cost page faults, so all tiles of a chunk share one buffer.
- im2col, batch-last: one (F, C*kh*kw) @ (C*kh*kw, nb*L) GEMM per chunk, for late layers
  with fewer positions than filters, and on a GPU (where the columns are one kernel).
- gemm: a pointwise layer's samples are their own columns; no copy at all.
- direct: a depthwise layer as a sum over the kh*kw offsets of shifted planes (:class:`Taps`),
  in cache-sized groups of planes, the groups split over the threads.
- direct-numba: the same, compiled with numba where it is installed (:mod:`.compiled`).
- im2col-numba: im2col's input gradient with the column gradient folded back by a compiled
  loop (:func:`.compiled.col2im`).
- kernel: a depthwise layer on a GPU, one elementwise kernel (:mod:`.gpu`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cnn_course._types import Array
from cnn_course.backend import array_module
from cnn_course.ops._engine import compiled, gpu, threads
from cnn_course.ops._engine import plan as plans
from cnn_course.ops._engine.plan import Plan
from cnn_course.ops._engine.windows import Window, add_windows, copy, copy_blocks, crop, pad
from cnn_course.ops._engine.windows import windows as window_view

__all__ = ["forward", "weight_grad", "input_grad", "workspace_bytes", "Taps", "gpu_geometry"]


def gpu_geometry(x_shape: Sequence[int], win: Window) -> tuple[int, ...]:
    """The geometry arguments of the GPU kernels (:data:`.gpu.GEOMETRY`) for ``win``."""
    return gpu.geometry(x_shape, win.kernel, win.stride, win.pads, win.dilation, win.out)


# --------------------------------------------------------------------------- columns


def _batch_columns(x: Array, win: Window, how: Plan) -> Array:
    """The windows of ``x`` (nb, C, H, W) as one matrix per group, (G, C/G*kh*kw, nb*L),
    gathered with one contiguous copy (batch after the kernel axes)."""
    xp = array_module(x)
    rows = x.shape[1] // win.groups * win.kernel[0] * win.kernel[1]
    if how.backend == "cupy":
        cols = xp.empty((win.groups, rows, x.shape[0] * win.out[0] * win.out[1]), dtype=x.dtype)
        gpu.run("im2col", (x,), gpu_geometry(x.shape, win), cols)
        return cols
    view = window_view(pad(x, win.pads), win, "bijahw")
    cols = xp.empty(view.shape, dtype=x.dtype)
    copy_blocks(cols, view, 2)
    return cols.reshape(win.groups, rows, -1)


def _per_sample_tiles(x: Array, win: Window, how: Plan, work) -> None:
    """Call ``work(batch, rows, cols, k)`` for every cache-sized tile of the columns of
    ``x``, for per-sample GEMMs: ``batch`` a slice of the samples, ``rows`` of the output
    rows, ``cols`` their columns (nb, G, C/G*kh*kw, rows*W_out), ``k`` the tile's number.

    With ``how.split == "copies"`` the tiles come one after another, each gathered by a copy
    cut over the threads into one buffer (fresh memory for each tile would cost page faults,
    a third of the GEMM's time on large layers), so a tile is valid only during its call.
    With ``"tiles"`` the threads take whole tiles, each into its own buffer, and each GEMM
    runs on one BLAS thread. The tiles, and so the numbering ``k``, are the plan's, whatever
    the thread count. A pointwise kernel (``how.algorithm == "gemm"``) passes views of ``x``.
    """
    rows_per_group = x.shape[1] // win.groups * win.kernel[0] * win.kernel[1]
    count = 0
    for chunk in how.chunks(x.shape[0]):
        if how.algorithm == "gemm":
            xpad = pad(x[chunk], win.pads)
            work(
                chunk,
                slice(0, win.out[0]),
                xpad.reshape(len(xpad), win.groups, rows_per_group, -1),
                count,
            )
            count += 1
            continue
        tiles = how.tiles(chunk.stop - chunk.start, win.out[0])

        def run(s: slice, tiles=tiles, chunk=chunk, first=count) -> None:
            # the padding and the column shifts of this share's samples only: made by the
            # thread that gathers them, not by the caller before the threads start
            low, high = tiles[s.start][0].start, tiles[s.stop - 1][0].stop
            start = chunk.start + low
            view = window_view(pad(x[start : chunk.start + high], win.pads), win, "abijhw")
            size = view[: tiles[0][0].stop - tiles[0][0].start, :, :, :, tiles[0][1]].size
            buffer = array_module(x).empty(size, dtype=x.dtype)  # the first tile: largest
            for k in range(s.start, s.stop):
                samples, rows = tiles[k]
                part = view[samples.start - low : samples.stop - low, :, :, :, rows]
                cols = buffer[: part.size].reshape(part.shape)  # (nb, C, kh, kw, rows, OW)
                copy_blocks(cols, part, 2)
                batch = slice(chunk.start + samples.start, chunk.start + samples.stop)
                cols = cols.reshape(len(part), win.groups, rows_per_group, -1)
                work(batch, rows, cols, first + k)

        if how.split == "tiles":
            threads.parallel(run, len(tiles), gemms=True)
        else:
            run(slice(0, len(tiles)))
        count += len(tiles)


def _grad_matrix(grad_out: Array, groups: int) -> Array:
    """(nb, F, OH, OW) -> (G, F/G, nb*OH*OW), the batch-last layout of the columns."""
    xp = array_module(grad_out)
    nb, f = grad_out.shape[:2]
    out = xp.empty((f, nb, *grad_out.shape[2:]), dtype=grad_out.dtype)
    copy(out, grad_out.transpose(1, 0, 2, 3))
    return out.reshape(groups, f // groups, -1)


# --------------------------------------------------------------------------- the GEMM core


def _macs(x_shape: Sequence[int], win: Window, out_channels: int) -> int:
    """Multiply-accumulates of the layer's GEMMs: F * C/G * kh*kw * H_out*W_out * N."""
    kernel = win.kernel[0] * win.kernel[1] * win.out[0] * win.out[1]
    return out_channels * x_shape[1] // win.groups * kernel * x_shape[0]


def forward(x: Array, weight: Array, win: Window, how: Plan) -> Array:
    """Cross-correlation without bias: (N, C, H, W) -> (N, F, *win.out)."""
    if how.algorithm == "kernel":
        return _gpu_depthwise(x, weight, win, win.out, "forward")
    if how.algorithm == "direct":
        return _depthwise_forward(x, weight, win, how)
    if how.algorithm == "direct-numba":
        return compiled.forward(x, weight, win, how.threads)
    if how.algorithm == "blocked-numba":
        return compiled.blocked_forward(x, weight, win, how.threads, how.block)
    with threads.blas_for(_macs(x.shape, win, weight.shape[0]), how.backend == "cupy"):
        return _gemm_forward(x, weight, win, how)


def _gemm_forward(x: Array, weight: Array, win: Window, how: Plan) -> Array:
    xp = array_module(x, weight)
    n, f, g = x.shape[0], weight.shape[0], win.groups
    w3 = weight.reshape(g, f // g, -1)
    out = xp.empty((n, f, *win.out), dtype=x.dtype)
    if how.layout == "per-sample":

        def gemm(samples: slice, rows: slice, cols: Array, _: int) -> None:
            target = out[samples, :, rows].reshape(len(cols), g, f // g, -1)
            xp.matmul(w3, cols, out=target)  # writes NCHW in place

        _per_sample_tiles(x, win, how, gemm)
        return out
    for chunk in how.chunks(n):
        res = xp.matmul(w3, _batch_columns(x[chunk], win, how))
        copy(out[chunk], res.reshape(f, -1, *win.out).transpose(1, 0, 2, 3))
    return out


def weight_grad(grad_out: Array, x: Array, win: Window, weight_shape, how: Plan) -> Array:
    """d(sum(grad_out * conv(x, w)))/dw: grad_out (N, F, OH, OW), x (N, C, H, W)."""
    if how.algorithm == "direct":
        return _depthwise_weight_grad(grad_out, x, win, weight_shape, how)
    if how.algorithm == "direct-numba":
        return compiled.weight_grad(grad_out, x, win, weight_shape, how.threads)
    if how.algorithm == "blocked-numba":
        return compiled.blocked_weight_grad(grad_out, x, win, weight_shape, how.threads, how.block)
    with threads.blas_for(_macs(x.shape, win, weight_shape[0]), how.backend == "cupy"):
        return _gemm_weight_grad(grad_out, x, win, weight_shape, how)


def _gemm_weight_grad(grad_out: Array, x: Array, win: Window, weight_shape, how: Plan) -> Array:
    xp = array_module(grad_out, x)
    f, g = weight_shape[0], win.groups
    grad_w = xp.zeros((g, f // g, math.prod(weight_shape[1:])), dtype=x.dtype)
    if how.layout == "per-sample":  # sum over samples of grad_out[n] @ cols[n]^T
        sums: dict[int, Array] = {}

        def gemm(samples: slice, rows: slice, cols: Array, k: int) -> None:
            part = grad_out[samples, :, rows].reshape(len(cols), g, f // g, -1)
            term = xp.matmul(part, cols.transpose(0, 1, 3, 2)).sum(axis=0)
            if how.split == "tiles":
                sums[k] = term  # added below in the tiles' order, whichever thread made it
            else:
                grad_w[...] += term

        _per_sample_tiles(x, win, how, gemm)
        for k in sorted(sums):
            grad_w += sums[k]
        return grad_w.reshape(weight_shape)
    narrow = f // g <= plans.WEIGHT_GRAD_SWAP_MAX_FILTERS
    for chunk in how.chunks(x.shape[0]):
        cols = _batch_columns(x[chunk], win, how)
        grads = _grad_matrix(grad_out[chunk], g)
        if narrow:  # (cols @ grads^T)^T: the same sums, BLAS faster with few filters
            grad_w += xp.matmul(cols, grads.transpose(0, 2, 1)).transpose(0, 2, 1)
        else:
            grad_w += xp.matmul(grads, cols.transpose(0, 2, 1))
    return grad_w.reshape(weight_shape)


def input_grad(grad_out: Array, weight: Array, win: Window, x_shape, how: Plan) -> Array:
    """d(sum(grad_out * conv(x, w)))/dx: GEMM with the transposed weights, then col2im."""
    if how.algorithm == "kernel":
        return _gpu_depthwise(grad_out, weight, win, x_shape[2:], "input_grad")
    if how.algorithm == "direct":
        return _depthwise_input_grad(grad_out, weight, win, x_shape, how)
    if how.algorithm == "direct-numba":
        return compiled.input_grad(grad_out, weight, win, x_shape, how.threads)
    if how.algorithm == "blocked-numba":
        return compiled.blocked_input_grad(grad_out, weight, win, x_shape, how.threads, how.block)
    with threads.blas_for(_macs(x_shape, win, weight.shape[0]), how.backend == "cupy"):
        return _gemm_input_grad(grad_out, weight, win, x_shape, how)


def _gemm_input_grad(grad_out: Array, weight: Array, win: Window, x_shape, how: Plan) -> Array:
    xp = array_module(grad_out, weight)
    n, c, h, w = x_shape
    (kh, kw), g, f = win.kernel, win.groups, weight.shape[0]
    positions = win.out[0] * win.out[1]
    w_t = weight.reshape(g, f // g, -1).transpose(0, 2, 1)
    grad_x = xp.empty(x_shape, dtype=grad_out.dtype)
    padded_hw = win.padded_hw((h, w))
    batch_last = how.layout == "batch-last"
    chunks = how.chunks(n)

    def fold(s: slice) -> None:
        for chunk in chunks[s]:
            _fold_chunk(chunk)

    def _fold_chunk(chunk: slice) -> None:
        part = grad_out[chunk]
        nb = part.shape[0]
        if how.algorithm == "gemm":  # the column gradient is the input gradient
            out = grad_x[chunk].reshape(nb, g, c // g, positions)
            xp.matmul(w_t, part.reshape(nb, g, f // g, positions), out=out)
            return
        if batch_last and how.backend == "cupy":
            dcols = xp.matmul(w_t, _grad_matrix(part, g))
            gpu.run("col2im", (dcols,), gpu_geometry((nb, c, h, w), win), grad_x[chunk])
            return
        if batch_last:  # columns (C, kh, kw, nb, OH, OW) fold into (C, nb, Hp, Wp)
            dcols = xp.matmul(w_t, _grad_matrix(part, g))
            dcols = dcols.reshape(c, kh, kw, nb, *win.out).transpose(0, 3, 1, 2, 4, 5)
            target = xp.zeros((c, nb, *padded_hw), dtype=grad_out.dtype)
        else:  # columns (nb, C, kh, kw, OH, OW) fold into (nb, C, Hp, Wp)
            dcols = xp.matmul(w_t, part.reshape(nb, g, f // g, positions))
            dcols = dcols.reshape(nb, c, kh, kw, *win.out)
            if how.algorithm == "im2col-numba":  # folded straight into grad_x, compiled
                compiled.col2im(dcols, win, grad_x[chunk], how.threads)
                return
            target = xp.zeros((nb, c, *padded_hw), dtype=grad_out.dtype)
        add_windows(target, dcols, win)
        folded = crop(target, win.pads, (h, w))
        copy(grad_x[chunk], folded.transpose(1, 0, 2, 3) if batch_last else folded)

    if how.split == "tiles":  # whole chunks side by side, each GEMM on one BLAS thread
        threads.parallel(fold, len(chunks), gemms=True)
    else:
        fold(slice(0, len(chunks)))
    return grad_x


def workspace_bytes(x_shape: Sequence[int], win: Window, out_channels: int, itemsize: int):
    """``{"columns", "peak"}``: bytes of the whole batch's columns and of the columns the
    forward pass holds at once (see ``conv2d_workspace_bytes``)."""
    how = plans.plan("conv2d", tuple(x_shape), win, out_channels, itemsize)
    n, c, h, _ = x_shape
    per_sample = how.column_bytes
    samples = how.chunks(n)[0].stop
    shifted = c * win.kernel[1] * (h + sum(win.pads[0])) * win.out[1] * itemsize
    if how.algorithm == "blocked-numba":  # no columns: a padded plane per thread, the weights
        rows = c * win.kernel[0] * win.kernel[1]
        g = compiled.named_block(how.block).filters
        padded = any(sum(win.pads, ()))  # else the kernels read the samples in place
        plane = c * (h + sum(win.pads[0])) * (x_shape[3] + sum(win.pads[1])) * itemsize * padded
        weights = -(-out_channels // g) * g * rows * itemsize + rows * 8  # blocks, offsets
        return {"columns": per_sample * n, "peak": plane * how.threads + weights}
    if how.layout != "per-sample":
        return {"columns": per_sample * n, "peak": (per_sample + shifted) * samples}
    if how.algorithm == "gemm":
        return {"columns": per_sample * n, "peak": 0}
    tile_samples, tile_rows = how.tiles(samples, win.out[0])[0]
    tile = per_sample * (tile_samples.stop - tile_samples.start)
    tile = tile * (tile_rows.stop - tile_rows.start) // win.out[0]
    if how.split == "tiles":  # whole tiles side by side: one tile's columns per thread
        tile *= how.threads
    return {"columns": per_sample * n, "peak": tile + shifted * samples}


# --------------------------------------------------------------------------- GPU


def _gpu_depthwise(a: Array, weight: Array, win: Window, hw, direction: str) -> Array:
    """A depthwise layer's forward pass (``a`` = x (N, C, H, W), ``hw`` the output size) or
    input gradient (``a`` = grad_out (N, C, H_out, W_out), ``hw`` the input size) on a GPU,
    with ``weight`` (C, 1, kh, kw). Average pooling is the same with a constant weight."""
    xp = array_module(a, weight)
    n, c = a.shape[:2]
    x_hw = a.shape[2:] if direction == "forward" else hw
    out = xp.empty((n, c, *hw), dtype=a.dtype)
    gpu.run(f"depthwise_{direction}", (a, weight), gpu_geometry((n, c, *x_hw), win), out)
    return out


# --------------------------------------------------------------------------- depthwise


class Taps:
    """Where each kernel offset (i, j) of a depthwise convolution reads its padded planes
    (N*C, Hp, Wp), as one contiguous run per plane.

    The planes are split into their ``sh*sw`` stride phases (rows ``r % sh``, columns
    ``c % sw``; no copy for stride 1), each (Hq, Wq), and flattened. Offset (i, j) then reads
    phase ``(i*dh % sh, j*dw % sw)`` from row ``i*dh // sh``, column ``j*dw // sw`` on, with
    stride 1: one run of ``L = (H_out - 1) * Wq + W_out`` values. Output position
    ``(oh, ow)`` is grid position ``oh * Wq + ow``; the ``Wq - W_out`` others of each row are
    discarded. Long contiguous runs vectorise well even on 7x7 maps, where 2-D strided slices
    would run 7 values at a time.
    """

    def __init__(self, win: Window, padded_hw) -> None:
        self.win, self.out_hw = win, tuple(win.out)
        (sh, sw), (hp, wp) = win.stride, padded_hw
        self.phase_hw = (-(-hp // sh), -(-wp // sw))
        self.length = (win.out[0] - 1) * self.phase_hw[1] + win.out[1]

    def planes(self, a: Array) -> Array:
        """Padded (N, C, Hp, Wp) -> (N*C, sh*sw*Hq*Wq), stride phases one after another."""
        xp = array_module(a)
        (sh, sw), (hq, wq) = self.win.stride, self.phase_hw
        n, c, hp, wp = a.shape
        if (sh, sw) == (1, 1):
            return a.reshape(n * c, hp * wp)
        full = xp.zeros((n * c, hq * sh, wq * sw), dtype=a.dtype)
        full[:, :hp, :wp] = a.reshape(n * c, hp, wp)
        phases = full.reshape(n * c, hq, sh, wq, sw).transpose(0, 2, 4, 1, 3)
        return xp.ascontiguousarray(phases).reshape(n * c, -1)

    def unplanes(self, planes: Array, n: int) -> Array:
        """Inverse of :meth:`planes`: (N, C, Hq*sh, Wq*sw), the padded planes and beyond."""
        (sh, sw), (hq, wq) = self.win.stride, self.phase_hw
        phases = planes.reshape(len(planes), sh, sw, hq, wq).transpose(0, 3, 1, 4, 2)
        return phases.reshape(n, -1, hq * sh, wq * sw)

    def at(self, planes: Array, i: int, j: int) -> Array:
        """(N*C, L): the values offset (i, j) meets at every grid position."""
        (sh, sw), (dh, dw), (hq, wq) = self.win.stride, self.win.dilation, self.phase_hw
        phase = (i * dh % sh) * sw + j * dw % sw
        start = phase * hq * wq + (i * dh // sh) * wq + j * dw // sw
        return planes[:, start : start + self.length]

    def offsets(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.win.kernel[0]) for j in range(self.win.kernel[1])]

    def to_grid(self, a: Array) -> Array:
        """(N, C, H_out, W_out) -> (N*C, L), discarded grid positions zero."""
        xp = array_module(a)
        (oh, ow), wq = self.out_hw, self.phase_hw[1]
        wide = xp.zeros((a.shape[0] * a.shape[1], oh, wq), dtype=a.dtype)
        copy(wide[:, :, :ow], a.reshape(-1, oh, ow))
        return wide.reshape(len(wide), -1)[:, : self.length]

    def from_grid(self, g: Array, n: int) -> Array:
        """(N*C, L) -> (N, C, H_out, W_out)."""
        xp = array_module(g)
        (oh, ow), wq = self.out_hw, self.phase_hw[1]
        wide = xp.empty((len(g), oh * wq), dtype=g.dtype)
        wide[:, : self.length] = g
        out = xp.empty((n, len(g) // n, oh, ow), dtype=g.dtype)
        copy(out, wide.reshape(n, -1, oh, wq)[..., :ow])
        return out

    def steps(self, planes: int, itemsize: int) -> list[slice]:
        """Plane slices whose grid takes about :data:`.plan.DEPTHWISE_STEP_BYTES`."""
        step = max(1, plans.DEPTHWISE_STEP_BYTES // (self.length * itemsize))
        return [slice(a, min(a + step, planes)) for a in range(0, planes, step)]


def _plane_kernels(weight: Array, n: int) -> Array:
    """(C, 1, kh, kw) -> (N*C, kh, kw): plane ``b*C + c`` uses channel c's kernel."""
    xp = array_module(weight)
    c, _, kh, kw = weight.shape
    return xp.broadcast_to(weight[:, 0], (n, c, kh, kw)).reshape(n * c, kh, kw)


def _over_steps(steps: list[slice], work, nbytes: int, scratch=None) -> None:
    """Run ``work(step, buffer)`` for every step, the steps split over the threads; each
    thread reuses one ``scratch()`` buffer (fresh memory per step costs page faults)."""

    def part(s: slice) -> None:
        buffer = None if scratch is None else scratch()
        for step in steps[s]:
            work(step, buffer)

    threads.parallel(part, len(steps), nbytes)


def _depthwise_forward(x: Array, weight: Array, win: Window, how: Plan) -> Array:
    """Depthwise cross-correlation without im2col: the sum over the kh*kw kernel offsets of
    the values each offset meets times that plane's weight at the offset, a cache-sized group
    of planes at a time. No columns: kh*kw times less memory traffic than per-channel GEMMs
    of one row each."""
    xp = array_module(x, weight)
    taps = Taps(win, win.padded_hw(x.shape[2:]))
    planes = taps.planes(pad(x, win.pads))
    kernels = _plane_kernels(weight, x.shape[0])
    out = xp.empty((len(planes), taps.length), dtype=x.dtype)
    offsets = taps.offsets()

    steps = taps.steps(len(planes), x.itemsize)

    def step(s: slice, buffer: Array) -> None:
        acc, tmp = out[s], buffer[: s.stop - s.start]
        for k, (i, j) in enumerate(offsets):
            xp.multiply(taps.at(planes, i, j)[s], kernels[s, i, j, None], out=tmp if k else acc)
            if k:
                acc += tmp

    scratch = lambda: xp.empty((steps[0].stop, taps.length), dtype=x.dtype)  # noqa: E731
    _over_steps(steps, step, out.nbytes, scratch)
    return taps.from_grid(out, x.shape[0])


def _depthwise_weight_grad(grad_out: Array, x: Array, win: Window, weight_shape, how) -> Array:
    """Depthwise weight gradient: per plane and kernel offset, the dot product of ``grad_out``
    with the values that offset met (one fused multiply and sum per plane); then summed over
    the batch."""
    xp = array_module(grad_out, x)
    taps = Taps(win, win.padded_hw(x.shape[2:]))
    planes = taps.planes(pad(x, win.pads))
    grads = taps.to_grid(grad_out)
    per_plane = xp.empty((len(planes), *win.kernel), dtype=x.dtype)

    # row-wise dot products: NumPy 2's vecdot runs them twice as fast as einsum
    vecdot = getattr(xp, "vecdot", None) or (lambda a, b: xp.einsum("pl,pl->p", a, b))

    def step(s: slice, _: None) -> None:
        for i, j in taps.offsets():
            per_plane[s, i, j] = vecdot(grads[s], taps.at(planes, i, j)[s])

    _over_steps(taps.steps(len(planes), x.itemsize), step, grads.nbytes)
    return per_plane.reshape(x.shape[0], *weight_shape).sum(axis=0)


def _depthwise_input_grad(grad_out: Array, weight: Array, win: Window, x_shape, how) -> Array:
    """Depthwise input gradient: each offset's weighted ``grad_out`` added back onto the
    values it came from (overlapping windows accumulate), then the padding cropped."""
    xp = array_module(grad_out, weight)
    n, c, *hw = x_shape
    taps = Taps(win, win.padded_hw(hw))
    size = win.stride[0] * win.stride[1] * math.prod(taps.phase_hw)
    planes = xp.zeros((n * c, size), dtype=grad_out.dtype)
    grads = taps.to_grid(grad_out)
    kernels = _plane_kernels(weight, n)

    steps = taps.steps(len(planes), grad_out.itemsize)

    def step(s: slice, buffer: Array) -> None:
        tmp = buffer[: s.stop - s.start]
        for i, j in taps.offsets():
            xp.multiply(grads[s], kernels[s, i, j, None], out=tmp)
            taps.at(planes, i, j)[s] += tmp

    scratch = lambda: xp.empty((steps[0].stop, taps.length), dtype=grad_out.dtype)  # noqa: E731
    _over_steps(steps, step, planes.nbytes, scratch)
    grad_x = xp.empty(x_shape, dtype=grad_out.dtype)
    copy(grad_x, crop(taps.unplanes(planes, n), win.pads, hw))
    return grad_x
