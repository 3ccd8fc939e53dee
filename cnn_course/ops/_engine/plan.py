"""The plan: the one place that decides how a convolution or pooling call runs.

:func:`plan` looks at the backend, the shapes and the window of a call and returns a
:class:`Plan` (a small frozen dataclass): which backend, which algorithm, which layout for
the GEMMs, how many samples per batch chunk and per cache tile, how many threads. The
engine's functions follow it and branch on nothing else; the benchmark and the tests read it
(``conv2d_plan``) instead of guessing the path.

Algorithms
----------
``"im2col"``
    Gather each window into a column, then GEMMs (per sample, or per batch chunk).
``"gemm"``
    A pointwise layer (1x1 kernel, stride 1, no padding) with per-sample GEMMs: each sample's
    input *is* its column matrix, so the layer is one GEMM per sample and copies nothing.
``"direct"``
    A depthwise layer (``groups == C_in == C_out``) on a CPU: a sum over the kh*kw kernel
    offsets of shifted input planes times per-channel weights (no columns).
``"direct-numba"``
    The same sum, compiled (:mod:`.compiled`): one pass over each plane for all the taps.
    Chosen for every depthwise layer on a CPU in float32/float64 (any stride) when numba
    imports and ``CNN_COURSE_NUMBA`` is not ``0``; otherwise ``"direct"`` (or im2col). For
    max pooling's forward (``op="max_pool2d"``) with 2x2/2 or 3x3/2 windows (no dilation),
    under the same conditions: each window's maximum and arg-max read in place by a
    compiled loop, instead of ``"windows"``.
``"im2col-numba"``
    A per-sample input gradient (``op="conv2d_input_grad"``) as im2col's: the GEMMs give
    the column gradient, and a compiled loop (:func:`.compiled.col2im`) adds it back onto
    the input, where NumPy needs two passes of strided adds over a padded copy (measured
    2.5 to 7 times faster). Chosen under the same conditions as ``"direct-numba"``.
``"blocked-numba"``
    A dense layer's forward (``op="conv2d"``, ``groups == 1``, not pointwise) as a compiled
    direct convolution (:func:`.compiled.blocked_forward`): blocks of a few output positions of
    a row times up to 32 filters are held in vector registers while they sum over every tap, so
    no columns are built (the idea of implicit GEMM, and of oneDNN's direct kernels). Chosen on
    a CPU with AVX-512, in float32, where numba is on, for layers with :data:`BLOCKED_MIN_ROWS`
    to :data:`BLOCKED_MAX_ROWS` rows C*kh*kw whose output rows are at least a block wide; and,
    with blocks of 16 positions along a row (the plan's ``block`` ``"g8r16"``), for layers with
    fewer rows, at most :data:`ROW_MAX_FILTERS` filters and a stride of 1 along the rows
    (LeNet's C1). The batch is shared between threads from :data:`BLOCKED_MIN_PARALLEL_MACS`,
    each share handed over without the GIL. Measured on 2 cores (AVX-512), in one process with
    PyTorch, calls interleaved, against im2col: ResNet's 64-channel 3x3 layer 17.7 against 24.8
    ms at 1 thread and 9.3 against 16.4 ms at 2; the 128- and 256-channel layers within a few
    percent of im2col at 2 threads, 4 to 10% faster at 1; LeNet's C3 0.38 against 0.51 ms (the
    benchmark's tables before and after, 1 thread).
    The weight gradient of a dense layer (``op="conv2d_weight_grad"``, same conditions, at least
    :data:`BLOCKED_MIN_ROWS` rows and :data:`BLOCKED_GRAD_MIN_POSITIONS` output positions) by
    the same kind of kernel (:func:`.compiled.blocked_weight_grad`, block ``"wg16t10"``): 10
    taps times 16 filters held in registers while they sum over a sample's positions, the
    threads sharing the blocks. Measured there against im2col, 1 thread / 2 threads: ResNet's
    64-channel 3x3 layer 18.6 / 10.4 against 30.2 / 17.5 ms, its 256-channel layer 19.2 /
    10.3 against 21.7 / 14.1 ms, the strided 3x3/2 layer 10.7 / 5.4 against 16.4 / 8.4 ms,
    LeNet's C3 0.45 / 0.38 against 0.72 / 0.69 ms. And the input gradient at stride 1
    (``op="conv2d_input_grad"``, same conditions; :func:`.compiled.blocked_input_grad`, block
    ``"ig8r16"``): 8 taps times 16 positions of the column gradient summed over the filters in
    registers, then added onto a padded copy of the sample's input gradient (the fold without
    a column matrix), the threads sharing the samples. Measured there against im2col's GEMMs
    and compiled fold, 1 thread / 2 threads, best of interleaved calls: LeNet's C3 0.55 / 0.36
    against 0.73 / 0.74 ms; ResNet's 64-, 128- and 256-channel layers 0.83 to 0.93 times
    im2col's time at 1 thread, and from 0.64 to 1.13 times at 2 (runs varied by a third).
    With fewer than :data:`BLOCKED_MIN_ROWS` rows, at most :data:`ROW_MAX_FILTERS` filters,
    a stride of 1 along the rows and rows of 16 positions or more (LeNet's C1), the weight
    gradient runs along the rows (blocks ``"wr4t5"``, ``"wr6t3"``, ``"wr8t2"``: the narrowest
    that holds the filters): LeNet's C1 at batch 64, 0.32 / 0.25 ms against 0.40 / 0.39 ms
    (PyTorch: 0.46 / 0.32 ms).
``"kernel"``
    One CUDA elementwise kernel (depthwise layers and pooling on a GPU).
``"windows"``
    Pooling on a CPU: the windows copied into a contiguous array, then reduced.
``"scatter-numba"``
    Max pooling's backward on a CPU (``op="max_pool2d_backward"``), the gradient scattered
    onto the arg-max positions by a compiled loop (:mod:`.compiled`) where numba is on;
    otherwise ``"windows"`` (NumPy's scatter-add).

Split (how the threads share the work): ``"tiles"``, for per-sample GEMMs where every thread
gets a tile and the call's GEMMs hold at least :data:`.threads.MIN_PARALLEL_MACS`
multiply-accumulates: whole tiles (the padding, gather and GEMM; for the input gradient,
whole chunks and their fold) run side by side, each GEMM on one BLAS thread
(:func:`.threads.parallel` with ``gemms``). Otherwise ``"copies"``: the tiles one after
another, each copy and elementwise pass cut over the threads (when large), each GEMM on
BLAS's threads. Measured on 2 cores, the strided 3x3/2 layer of the benchmark took 12 to 14
ms as ``"copies"`` and 6.4 ms as ``"tiles"`` (its GEMM alone: 5.0 ms): the padding and the
gathers of small tiles ran on one core, and BLAS's threads, spinning after each GEMM, held
the cores the copies' threads waited for. The GEMMs of LeNet's layers (15 million
multiply-accumulates or fewer at batch 64) stay on one thread: split, they ran slower (the
blocked forward shares even these: its shares are single compiled calls, handed over
without the GIL).

Layouts (of the im2col GEMMs): ``"per-sample"``, (F, C*kh*kw) @ (C*kh*kw, L) per sample,
written straight into NCHW, when there are at least as many output positions L as filters F
(BLAS is slow when a side is narrow; batching would not widen it); ``"batch-last"``, one
(F, C*kh*kw) @ (C*kh*kw, nb*L) per chunk, when L < F (the batch widens the narrow side) and
always on a GPU (which wants few, wide GEMMs and has no cache for tiles to stay in). The
weight gradient of a small layer (below :data:`.threads.MIN_PARALLEL_MACS`) with fewer
positions than rows (L < C/G*kh*kw) is batch-last too, where the blocked kernels do not
apply: per sample its GEMM sums only L products per weight, over the batch nb*L (LeNet's C3
on 2 cores: 0.71 against 1.03 ms).

Not chosen: Winograd's F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 layers at stride 1. A
compiled version was measured on 2 cores (numba transforms, the 16 GEMMs (F, C) @ (C, tiles)
per band of tile rows, each band in cache, whole samples side by side). Against im2col, in
one process, calls interleaved, on the benchmark's ResNet layers of 64, 128 and 256 channels:

- at 1 thread it took 0.62 to 0.66 times im2col's time (0.86 to 0.88 times PyTorch's);
- at 2 threads it took 0.68, 1.03 and 1.24 times im2col's time. Its GEMMs are narrow
  (K = C), and its transforms write 4 times the input and read 4 times the output. On two
  cores that share cache and memory, these ran barely faster than on one.
- on the 512-channel 7x7 layer it took 2.3 times im2col's time. A sample has only 16
  tiles, so each GEMM is a few columns wide; transforming the weights (16*F*C values) alone
  took 3.7 ms, against 20 ms for im2col's whole layer (1 thread).

The plan would have chosen it at one thread only, so results would depend on the thread
count. im2col stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnn_course.ops._engine import compiled, threads
from cnn_course.ops._engine.windows import Window

__all__ = [
    "Plan",
    "plan",
    "COLUMN_BUDGET_BYTES",
    "CACHE_TILE_BYTES",
    "DEPTHWISE_STEP_BYTES",
    "BLOCKED_MIN_ROWS",
    "BLOCKED_MAX_ROWS",
    "ROW_MAX_FILTERS",
    "BLOCKED_MIN_PARALLEL_MACS",
    "WEIGHT_GRAD_SWAP_MAX_FILTERS",
    "BLOCKED_GRAD_MIN_POSITIONS",
]

#: Largest column matrix (bytes) a convolution builds at once; bigger batches are chunked.
COLUMN_BUDGET_BYTES = 256 * 2**20
#: Per-sample GEMMs take their columns in tiles (whole samples, or a few output rows of one
#: sample) of at most this size, so each tile is multiplied while it is still in cache.
CACHE_TILE_BYTES = 2 * 2**20
#: Planes per step of the depthwise loops: the accumulator of this many output bytes stays in
#: cache across the kh*kw taps (measured fastest near 256 KiB on a 2 MiB L2).
DEPTHWISE_STEP_BYTES = 256 * 2**10
#: The register-blocked forward (``"blocked-numba"``) takes dense layers with at least
#: :data:`BLOCKED_MIN_ROWS` and at most :data:`BLOCKED_MAX_ROWS` rows C*kh*kw. With fewer,
#: writing a block out costs more than its sums (LeNet's C1, 25 rows, a block of 8 filters
#: for its 6: 1.6 times its GEMM's time, against 0.76 times by im2col, 1 thread); with
#: more, the weights of a block of 32 filters (C*kh*kw*32 values) no longer stay in L2.
#: Output rows must be at least as wide as a block: ResNet's 512-channel 7x7 layer (4608
#: rows, output rows of 7 positions) took 2.6 to 2.9 times im2col's time.
BLOCKED_MIN_ROWS = 64
BLOCKED_MAX_ROWS = 2304
#: Below :data:`BLOCKED_MIN_ROWS` rows, the forward takes blocks along the output rows
#: (16 positions of a row times 8 filters, written out as 8 vectors) for layers of at most
#: this many filters at stride 1 (width); more filters keep im2col. Measured on 2 cores,
#: LeNet's C1 (25 rows, 6 filters) at batch 64: 0.32 against 0.34 ms for im2col at 1 thread,
#: and, shared over 2 threads, 0.22 ms against 0.36 (its GEMM: 0.27 ms). Its sums are
#: bounded by the multiply-adds (8 vector FMAs per tap, 2 of the 8 filters zero).
ROW_MAX_FILTERS = 8
#: The register-blocked forward shares the batch between threads from this many
#: multiply-accumulates: its shares are handed over without the GIL
#: (:func:`.threads.parallel_signalled`), about 10 microseconds. Measured on 2 cores, LeNet's
#: C3 (240,000 per sample), best/median of 400 calls, one thread against two: 8 samples
#: (1.9 million) 69/84 against 67/76 us; 16 (3.8 million) 111/121 against 97/146 us; 32
#: (7.7 million) 194/212 against 145/161 us; 64 (15.4 million) 362/369 against 211/239 us.
BLOCKED_MIN_PARALLEL_MACS = 4 * 2**20
#: A batch-last weight gradient with at most this many filters per group is computed as
#: ``(cols @ grads^T)^T`` rather than ``grads @ cols^T``: the same products, but BLAS runs
#: a product with a long inner axis and a narrow first side slowly. Measured on 2 cores,
#: inner axis 6,400 and 150 rows (LeNet's C3 at batch 64), 1 thread / 2 threads: 16 filters
#: 0.75/0.46 ms against 0.43/0.25; 64 filters 1.66/1.05 against 1.44/0.85; 128 filters
#: (576 rows, inner axis 1,568) 2.54/1.43 against 2.38/1.32; but 256 filters (2,304 rows)
#: 19.3/9.5 against 20.1/10.8, and 512 (4,608 rows) 18.6/9.4 against 30.5/19.8 ms.
WEIGHT_GRAD_SWAP_MAX_FILTERS = 128
#: The gradients of a dense layer with :data:`BLOCKED_MIN_ROWS` to :data:`BLOCKED_MAX_ROWS`
#: rows are register-blocked (``"blocked-numba"``; the input gradient at stride 1) where a
#: sample has at least this many output positions: a weight-gradient block sums one sample's
#: positions in registers, then adds its 160 sums to the total, so with few positions the
#: adds and the set-up dominate (the input gradient's blocks, 16 positions wide, likewise).
#: The weight gradient, measured on 2 cores against im2col, 1 thread / 2 threads, in one
#: process, calls interleaved (batch 8, 3x3): 512 channels at 7x7 (49 positions) 26.3 /
#: 17.8 against 20.6 / 12.1 ms; 256 at 8x8 (64) 8.1 / 5.1 against 10.4 / 4.2 ms; 256 at 10x10
#: (100) 11.8 / 6.0 against 10.9 / 6.3 ms; 64 at 12x12 (144) 1.0 / 0.61 against 1.2 / 1.0
#: ms; ResNet's 64-channel layer (3,136) 18.6 / 10.4 against 30.2 / 17.5 ms; LeNet's C3
#: (100, batch 64) 0.45 / 0.38 against 0.72 / 0.69 ms. The input gradient of 512 channels at
#: 7x7: 34.2 / 23.6 against 26.8 / 16.4 ms.
BLOCKED_GRAD_MIN_POSITIONS = 100

OPS = (
    "conv2d",
    "conv2d_weight_grad",
    "conv2d_input_grad",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
)


@dataclass(frozen=True)
class Plan:
    """How one call runs (see the module docstring for the values).

    Attributes
    ----------
    op : one of :data:`OPS`
    backend : ``"numpy"`` or ``"cupy"``
    algorithm : ``"im2col"``, ``"im2col-numba"``, ``"gemm"``, ``"direct"``,
        ``"direct-numba"``, ``"blocked-numba"``, ``"kernel"``, ``"windows"`` or
        ``"scatter-numba"``
    layout : ``"per-sample"``, ``"batch-last"`` (im2col GEMMs) or ``"planes"``
    chunk : samples per batch chunk (the columns of a chunk fit :data:`COLUMN_BUDGET_BYTES`)
    tile_samples, tile_rows : a per-sample tile: this many samples, of this many output rows
    column_bytes : bytes of one sample's column matrix (C*kh*kw*H_out*W_out values)
    threads : threads the copies and elementwise passes use
    split : ``"copies"`` or ``"tiles"`` (see the module docstring)
    block : the compiled kernel of ``"blocked-numba"`` (its block of filters and positions,
        :func:`.compiled.blocked_block`), else ``""``
    """

    op: str
    backend: str
    algorithm: str
    layout: str
    chunk: int
    tile_samples: int
    tile_rows: int
    column_bytes: int
    threads: int
    split: str = "copies"
    block: str = ""

    def chunks(self, n: int) -> list[slice]:
        """The batch chunks of ``n`` samples."""
        return [slice(i, min(i + self.chunk, n)) for i in range(0, n, self.chunk)]

    def tiles(self, nb: int, oh: int) -> list[tuple[slice, slice]]:
        """(samples, output rows) tiles of a chunk of ``nb`` samples with ``oh`` rows."""
        if self.tile_rows < oh:
            return [
                (slice(b, b + 1), slice(r, min(r + self.tile_rows, oh)))
                for b in range(nb)
                for r in range(0, oh, self.tile_rows)
            ]
        step = self.tile_samples
        return [(slice(b, min(b + step, nb)), slice(0, oh)) for b in range(0, nb, step)]


def plan(
    op: str,
    x_shape: tuple[int, ...],
    win: Window,
    out_channels: int,
    itemsize: int,
    cupy: bool = False,
) -> Plan:
    """The plan of ``op`` on an input of ``x_shape`` (N, C, H, W) with window ``win``.

    ``out_channels`` is the convolution's F (pooling: C); ``cupy`` whether the arrays live
    on a GPU. Shapes in, a plan out (nothing is allocated); besides the shapes it reads only
    the engine's thread count, whether the compiled path is on (:func:`.compiled.enabled`)
    and whether the CPU has AVX-512 (:func:`.compiled.blocked_supported`).
    """
    if op not in OPS:
        raise ValueError(f"plan: unknown op {op!r}; expected one of {OPS}")
    backend = "cupy" if cupy else "numpy"
    n, c = x_shape[:2]
    oh, ow = win.out
    positions = oh * ow
    column_bytes = c * win.kernel[0] * win.kernel[1] * positions * itemsize
    cpu_threads = 1 if cupy else threads.num_threads()
    if op in ("max_pool2d", "max_pool2d_backward", "avg_pool2d"):
        algorithm = "kernel" if cupy else "windows"
        if op == "max_pool2d_backward" and compiled.supports(itemsize, cupy):
            algorithm = "scatter-numba"
        elif op == "max_pool2d" and compiled.supports(itemsize, cupy, win):
            algorithm = "direct-numba"
        return Plan(op, backend, algorithm, "planes", n, n, oh, column_bytes, cpu_threads)
    depthwise = win.groups > 1 and win.groups == c == out_channels
    if depthwise and compiled.supports(itemsize, cupy):
        return Plan(op, backend, "direct-numba", "planes", n, n, oh, column_bytes, cpu_threads)
    direct = depthwise and (
        (op == "conv2d" and (cupy or win.stride == (1, 1)))
        or op == "conv2d_input_grad"
        or (op == "conv2d_weight_grad" and not cupy)
    )
    if direct:
        algorithm = "kernel" if cupy else "direct"
        return Plan(op, backend, algorithm, "planes", n, n, oh, column_bytes, cpu_threads)
    per_sample = positions >= out_channels and not cupy
    rows = c // win.groups * win.kernel[0] * win.kernel[1]
    macs = out_channels // win.groups * column_bytes // itemsize * n
    if (
        op == "conv2d"
        and win.groups == 1
        and not win.pointwise
        and rows <= BLOCKED_MAX_ROWS
        and compiled.blocked_supported(itemsize, cupy)
    ):
        # few taps: blocks along the row, at stride 1 and for few filters (LeNet's C1)
        along_row = rows < BLOCKED_MIN_ROWS
        block = compiled.blocked_block(out_channels, along_row)
        fits = not along_row or (win.stride[1] == 1 and out_channels <= ROW_MAX_FILTERS)
        if fits and ow >= block.positions:
            share = cpu_threads if macs >= BLOCKED_MIN_PARALLEL_MACS else 1
            return Plan(
                op,
                backend,
                "blocked-numba",
                "planes",
                n,
                n,
                oh,
                column_bytes,
                share,
                block=block.name,
            )
    if (
        op == "conv2d_weight_grad"
        and win.groups == 1
        and rows < BLOCKED_MIN_ROWS
        and win.stride[1] == 1
        and out_channels <= ROW_MAX_FILTERS
        and ow >= 16
        and compiled.blocked_supported(itemsize, cupy)
    ):
        # few taps and filters (LeNet's C1): blocks of 16 positions along the rows
        block = compiled.blocked_block(out_channels, along_row=True, weight_grad=True)
        share = cpu_threads if macs >= BLOCKED_MIN_PARALLEL_MACS else 1
        return Plan(
            op, backend, "blocked-numba", "planes", n, n, oh, column_bytes, share, block=block.name
        )
    if (
        op in ("conv2d_weight_grad", "conv2d_input_grad")
        and win.groups == 1
        and not win.pointwise
        and (op == "conv2d_weight_grad" or win.stride == (1, 1))
        and BLOCKED_MIN_ROWS <= rows <= BLOCKED_MAX_ROWS
        and positions >= BLOCKED_GRAD_MIN_POSITIONS
        and compiled.blocked_supported(itemsize, cupy)
    ):
        # blocks of taps times filters summed over each sample's positions in registers;
        # blocks of a column gradient added onto the input at stride 1
        weight_grad = op == "conv2d_weight_grad"
        block = compiled.blocked_block(
            out_channels, weight_grad=weight_grad, input_grad=not weight_grad
        )
        share = cpu_threads if macs >= BLOCKED_MIN_PARALLEL_MACS else 1
        return Plan(
            op, backend, "blocked-numba", "planes", n, n, oh, column_bytes, share, block=block.name
        )
    if op == "conv2d_weight_grad" and positions < rows and macs < threads.MIN_PARALLEL_MACS:
        # per sample, the weight gradient's GEMM sums only L products per value: a small
        # layer with fewer positions than rows (LeNet's C3) takes one GEMM over the batch
        per_sample = False
    layout = "per-sample" if per_sample else "batch-last"
    algorithm = "gemm" if per_sample and win.pointwise else "im2col"
    if algorithm == "im2col" and per_sample and op == "conv2d_input_grad":
        if compiled.supports(itemsize, cupy):
            algorithm = "im2col-numba"  # the column gradient folded back by a compiled loop
    budget = COLUMN_BUDGET_BYTES
    if per_sample and op == "conv2d_input_grad":
        budget = min(budget, CACHE_TILE_BYTES)  # the column gradient is folded in cache
    chunk = min(n, max(1, budget // max(column_bytes, 1)))
    if column_bytes > CACHE_TILE_BYTES:
        tile_samples, tile_rows = 1, max(1, CACHE_TILE_BYTES * oh // column_bytes)
    else:
        tile_samples, tile_rows = max(1, CACHE_TILE_BYTES // max(column_bytes, 1)), oh
    # whole tiles side by side, each GEMM on one BLAS thread, wherever every thread gets a
    # tile and the GEMMs are large enough to pay for the hand-offs; the tiles do not depend
    # on the thread count, so neither do the sums over them
    if op == "conv2d_input_grad":  # the input gradient folds whole chunks side by side
        units = -(-n // chunk)
    else:
        units = -(-min(n, chunk) // tile_samples) * -(-oh // tile_rows)
    side_by_side = units >= cpu_threads > 1 and macs >= threads.MIN_PARALLEL_MACS
    split = "tiles" if per_sample and side_by_side else "copies"
    return Plan(
        op,
        backend,
        algorithm,
        layout,
        chunk,
        tile_samples,
        tile_rows,
        column_bytes,
        cpu_threads,
        split,
    )
