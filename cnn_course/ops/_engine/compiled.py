"""The optional compiled path: depthwise convolutions, col2im, max pooling's windows and its
scatter as numba kernels (imported lazily); and the forward of dense layers as
register-blocked direct convolutions (:func:`blocked_forward`), with their weight gradient
(:func:`blocked_weight_grad`) and, at stride 1, their input gradient
(:func:`blocked_input_grad`), kernels in :mod:`._numba_blocked`, float32 on CPUs with
AVX-512.

The NumPy direct path (:class:`.conv.Taps`) makes about two passes over memory per kernel
tap (a multiply into a scratch array, then an add). A compiled loop reads each plane from
memory once: at stride 1 the plane is padded into a small scratch array that stays in cache
and the kh*kw taps run over it there as long contiguous runs; at other strides the taps run
row by row, the padding skipped by bounds. MiniTorch compiles its tensor loops with numba
the same way. numba is optional (``pip install 'cnn-course[fast]'``):
where it does not import, or ``CNN_COURSE_NUMBA=0``, :func:`enabled` is false and the plan
keeps the NumPy path; otherwise, on a CPU in float32 or float64, it chooses
``"direct-numba"`` for depthwise layers; ``"im2col-numba"`` for a per-sample input gradient
(the column gradient folded back onto the input by :func:`col2im`, where NumPy needs two
passes of strided adds); ``"direct-numba"`` for max pooling's forward with 2x2/2 and 3x3/2
windows (each window's maximum and arg-max read in place, instead of copying the windows);
and ``"scatter-numba"`` for max pooling's backward (each window's gradient added onto its
arg-max, plane by plane, instead of NumPy's scatter-add over index arrays). CuPy arrays
never come here.

Threads: the batch is cut into as many parts as the engine has threads (``threadpoolctl``
limits and ``OMP_NUM_THREADS`` included), and the engine's own pool (:mod:`.threads`) runs
each part through the same one-thread kernel; numba releases the GIL inside them. numba's
``parallel=True`` pool is not used: its OpenMP threads spin after each kernel and, on a
machine with few cores, take the cores from BLAS's threads (a LeNet epoch on 2 cores took
1.6 times as long with it). With one thread or little work the calling thread runs the whole
batch. The results do not depend on the thread count: each plane is computed by one thread,
in one order. A forked child starts a fresh pool (:mod:`.threads`), so it needs no care here.

Compilation: each kernel compiles on its first call for each dtype (seconds, once), and is
cached on disk (loaded in a fraction of a second) where numba finds a writable directory
(``__pycache__`` next to the source, else the user's cache directory); where none is
writable, numba would raise at decoration, so the kernels are compiled without a cache.
"""

from __future__ import annotations

import functools
import os
import threading
from types import ModuleType
from typing import NamedTuple

from cnn_course._types import Array
from cnn_course.backend import array_module, is_cupy_array, np
from cnn_course.ops._engine import threads
from cnn_course.ops._engine.windows import Window

__all__ = [
    "ENV",
    "enabled",
    "unavailable",
    "numba_version",
    "supports",
    "forward",
    "input_grad",
    "weight_grad",
    "col2im",
    "max_pool",
    "scatter_add",
    "blocked_supported",
    "Block",
    "blocked_block",
    "named_block",
    "blocked_forward",
    "blocked_weight_grad",
    "blocked_input_grad",
    "compile_vectorised",
    "spin_wait",
]

#: ``CNN_COURSE_NUMBA=0`` (or ``false``/``no``/``off``) keeps the NumPy path.
ENV = "CNN_COURSE_NUMBA"


@functools.cache
def _kernels() -> ModuleType | str:
    """The compiled kernels' module, or why it does not import."""
    try:
        from cnn_course.ops._engine import _numba_kernels
    except ImportError as exc:  # not installed, or a numba that does not support this NumPy
        return f"numba does not import ({exc})"
    return _numba_kernels


def unavailable() -> str | None:
    """Why the compiled path is off (the environment, or numba's import), else None."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}={os.environ[ENV]}"
    kernels = _kernels()
    return kernels if isinstance(kernels, str) else None


def enabled() -> bool:
    """Whether the plan may choose the compiled path (numba imports and is not switched off).
    The first call imports numba (about half a second)."""
    return unavailable() is None


def numba_version() -> str | None:
    """numba's version where it imports (whether or not ``CNN_COURSE_NUMBA`` is 0)."""
    kernels = _kernels()
    return None if isinstance(kernels, str) else kernels.numba.__version__


def supports(itemsize: int, cupy: bool, max_pool: Window | None = None) -> bool:
    """The compiled kernels take NumPy float32 and float64 arrays (a float of 4 or 8 bytes);
    max pooling's forward (``max_pool``: its window) has kernels for a few windows."""
    if cupy or itemsize not in (4, 8) or not enabled():
        return False
    return max_pool is None or _max_pool_window(max_pool) in _kernels().MAX_POOL


def _max_pool_window(win: Window) -> tuple[int, ...]:
    return tuple(int(v) for v in (*win.kernel, *win.stride, *win.dilation))


def _geom(win: Window) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = win.stride, win.dilation
    return int(sh), int(sw), int(win.pads[0][0]), int(win.pads[1][0]), int(dh), int(dw)


def _c(a: Array) -> Array:
    """``a`` as a C-contiguous array in native byte order (a copy only where needed)."""
    if is_cupy_array(a):
        raise TypeError("the compiled depthwise kernels take NumPy arrays, got a CuPy array")
    xp = array_module(a)
    return xp.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))


def _kernel(name: str):
    """The compiled kernel ``name`` (the plan chose this path, so numba imported)."""
    kernels = _kernels()
    assert not isinstance(kernels, str), kernels
    return getattr(kernels, name)


def _run(kernel, args: tuple, cut: tuple[int, ...], thread_count: int, nbytes: int) -> None:
    """Run ``kernel`` on ``args``, the arguments at positions ``cut`` cut along axis 0 (the
    same cut for all): the parts on the engine's threads, or all at once on this thread with
    one thread or less than :data:`.threads.MIN_PARALLEL_BYTES` of work."""

    def part(s: slice) -> None:
        kernel(*(a[s] if i in cut else a for i, a in enumerate(args)))

    with threads.limit(thread_count):
        threads.parallel(part, len(args[cut[0]]), nbytes)


def forward(x: Array, weight: Array, win: Window, thread_count: int) -> Array:
    """Depthwise cross-correlation without bias: x (N, C, H, W), weight (C, 1, kh, kw) ->
    (N, C, *win.out)."""
    x = _c(x)
    out = array_module(x).empty((*x.shape[:2], *win.out), dtype=x.dtype)
    args = (x, _c(weight[:, 0]), out, _geom(win))
    _run(_kernel("forward"), args, (0, 2), thread_count, out.nbytes)
    return out


def input_grad(grad_out: Array, weight: Array, win: Window, x_shape, thread_count: int):
    """The input gradient (N, C, H, W) of :func:`forward` for ``grad_out`` (N, C, *win.out)."""
    grad_out = _c(grad_out)
    grad_x = array_module(grad_out).empty(tuple(x_shape), dtype=grad_out.dtype)
    args = (grad_out, _c(weight[:, 0]), grad_x, _geom(win))
    _run(_kernel("input_grad"), args, (0, 2), thread_count, grad_x.nbytes)
    return grad_x


def weight_grad(grad_out: Array, x: Array, win: Window, weight_shape, thread_count: int):
    """The weight gradient (C, 1, kh, kw): per plane, then summed over the batch."""
    grad_out, x = _c(grad_out), _c(x)
    n, c = x.shape[:2]
    per_sample = array_module(x).empty((n, c, *weight_shape[2:]), dtype=x.dtype)
    args = (grad_out, x, per_sample, _geom(win))
    _run(_kernel("weight_grad"), args, (0, 1, 2), thread_count, x.nbytes)
    return per_sample.reshape(n, *weight_shape).sum(axis=0)


def col2im(cols: Array, win: Window, out: Array, thread_count: int) -> None:
    """``out`` (N, C, H, W), C-contiguous, = every column of ``cols`` (N, C, kh, kw, *win.out)
    added back onto the input position it was gathered from (overlaps add up, positions in
    the padding are dropped): the fold of a convolution's input gradient."""
    if not out.flags.c_contiguous:
        raise ValueError("col2im: out must be C-contiguous (it is written in place)")
    _run(_kernel("col2im"), (_c(cols), out, _geom(win)), (0, 1), thread_count, out.nbytes)


def scatter_add(values: Array, index: Array, size: int, thread_count: int) -> Array:
    """``out[p, j] = sum of values[p, o] where index[p, o] == j``: (P, O) -> (P, size), each
    plane zeroed and scattered into by one thread (max pooling's backward). Every index
    must lie in ``[0, size)``: the caller has checked (the kernel does not)."""
    values = _c(values)
    index = array_module(index).ascontiguousarray(index, dtype="int64")
    out = array_module(values).empty((len(values), size), dtype=values.dtype)
    _run(_kernel("scatter"), (values, index, out), (0, 1, 2), thread_count, out.nbytes)
    return out


def max_pool(x: Array, win: Window, arg_dtype, thread_count: int) -> tuple[Array, Array]:
    """Every window's maximum and the position ``i * kw + j`` of its first maximum (of its
    last NaN where it holds one), positions outside ``x`` counting as -inf: x (N, C, H, W)
    -> two (N, C, *win.out) arrays, the positions of dtype ``arg_dtype``."""
    x = _c(x)
    xp = array_module(x)
    out = xp.empty((*x.shape[:2], *win.out), dtype=x.dtype)
    arg = xp.empty(out.shape, dtype=arg_dtype)
    kernel = _kernel("MAX_POOL")[_max_pool_window(win)]
    pads = (int(win.pads[0][0]), int(win.pads[1][0]))
    _run(kernel, (x, out, arg, pads), (0, 1, 2), thread_count, x.nbytes)
    return out, arg


# --------------------------------------------------------------------------- dense layers

#: The register-blocked kernels are written for AVX-512's 32 vector registers (a block
#: fills up to 16 of them, see :mod:`._numba_blocked`); elsewhere the plan keeps im2col.
BLOCKED_FEATURE = "avx512f"
_compile_lock = threading.Lock()


@functools.cache
def _cpu_has(feature: str) -> bool:
    """Whether numba compiles for a CPU with ``feature``: the host's, or the one that
    ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` name (a named CPU's features are unknown
    here, so they count as absent)."""
    config = _kernels().numba.core.config
    if config.CPU_FEATURES:
        return f"+{feature}" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False
    import llvmlite.binding as llvm  # installed with numba

    return bool(llvm.get_host_cpu_features().get(feature, False))


def blocked_supported(itemsize: int, cupy: bool) -> bool:
    """Whether the plan may run a dense layer's forward through the register-blocked
    kernels: the compiled path is on, the arrays are NumPy float32 (in float64 a block
    takes twice the registers), and the CPU has AVX-512 (where they were measured)."""
    return itemsize == 4 and supports(itemsize, cupy) and _cpu_has(BLOCKED_FEATURE)


class Block(NamedTuple):
    """A blocked kernel: its name in :mod:`._numba_blocked`, its block's filters and
    positions."""

    name: str
    filters: int
    positions: int


def blocked_block(
    out_channels: int, along_row: bool = False, weight_grad: bool = False, input_grad: bool = False
) -> Block:
    """The kernel for ``out_channels`` filters: the narrowest block of filters that holds
    them all (32 past 16: each input value loaded then feeds more filters); with
    ``along_row``, among the kernels whose blocks run along a row (stride 1); with
    ``weight_grad``, among the weight-gradient kernels (a block's ``positions`` are then
    its taps; with ``along_row`` too, those along a row); with ``input_grad``, the
    input-gradient kernels' (its ``filters`` its taps)."""
    kernels = _kernels_blocked()
    if weight_grad:
        blocks = kernels.ROW_WGRAD_BLOCKS if along_row else kernels.WGRAD_BLOCKS
    elif input_grad:
        blocks = kernels.IGRAD_BLOCKS
    else:
        blocks = kernels.ROW_BLOCKS if along_row else kernels.BLOCKS
    by_width = sorted(blocks.items(), key=lambda item: item[1][0])
    name, (g, p) = next((b for b in by_width if out_channels <= b[1][0]), by_width[-1])
    return Block(name, g, p)


def named_block(name: str) -> Block:
    """The blocked kernel ``name`` (a plan's ``block``)."""
    kernels = _kernels_blocked()
    every = (
        kernels.BLOCKS,
        kernels.ROW_BLOCKS,
        kernels.WGRAD_BLOCKS,
        kernels.IGRAD_BLOCKS,
        kernels.ROW_WGRAD_BLOCKS,
    )
    g, p = {k: v for blocks in every for k, v in blocks.items()}[name]
    return Block(name, g, p)


@functools.cache
def _kernels_blocked() -> ModuleType:
    from cnn_course.ops._engine import _numba_blocked

    return _numba_blocked


_compiled: set[tuple[str, str]] = set()


def compile_vectorised(kernel, args: tuple) -> None:
    """Compile the numba ``kernel`` for ``args``' types with LLVM's SLP vectoriser on. numba
    leaves it off unless ``NUMBA_SLP_VECTORIZE`` is set when it is imported; without it the
    blocked kernels run scalar, 4 to 6 times slower. Only this compilation sees the setting,
    under a lock; numba's on-disk cache then loads the result."""
    numba = _kernels().numba
    if not hasattr(kernel, "compile"):  # NUMBA_DISABLE_JIT: plain Python
        return
    with _compile_lock:
        config = numba.core.config
        before, config.SLP_VECTORIZE = config.SLP_VECTORIZE, 1
        try:
            kernel.compile(tuple(numba.typeof(a) for a in args))
        finally:
            config.SLP_VECTORIZE = before


def _blocked_scratch(xp: ModuleType, plane: tuple, block: tuple, dtype) -> tuple[Array, Array]:
    """A thread's scratch: a padded plane (or a dummy without padding), a block."""
    return xp.empty(plane, dtype=dtype), xp.empty(block, dtype=dtype)


def _frozen(offsets: Array) -> Array:
    """``offsets`` flat, as int64 and read-only: the cached offsets are shared between calls."""
    frozen = offsets.reshape(-1).astype(np.int64)
    frozen.flags.writeable = False
    return frozen


@functools.lru_cache(maxsize=64)
def _tap_offsets(c: int, kh: int, kw: int, hp: int, wp: int, dh: int, dw: int) -> Array:
    """Each tap's offset (channel, kernel row, kernel column, in that order) into a flat
    padded sample of C planes (hp, wp)."""
    return _frozen(
        np.arange(c)[:, None, None] * (hp * wp)
        + np.arange(kh)[None, :, None] * (dh * wp)
        + np.arange(kw)[None, None, :] * dw
    )


@functools.lru_cache(maxsize=64)
def _taps_by_position(c: int, kh: int, kw: int, hp: int, wp: int, dh: int, dw: int) -> Array:
    """:func:`_tap_offsets` in the order kernel row, kernel column, channel."""
    offsets = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    return _frozen(offsets.reshape(c, kh, kw).transpose(1, 2, 0))


@functools.lru_cache(maxsize=64)
def _position_offsets(oh: int, ow: int, sh: int, sw: int, wp: int) -> Array:
    """Each output position's offset (row, column) into a flat padded plane of width
    ``wp``: where its window's first tap lies."""
    return _frozen(np.arange(oh)[:, None] * (sh * wp) + np.arange(ow)[None, :] * sw)


def _tap_blocks(taps: Array, t: int) -> Array:
    """``taps`` in blocks of ``t`` (blocks, t); the taps past the last have offset 0: a
    kernel reads the first tap there, and its sums for them are dropped (or zero)."""
    blocks = np.zeros(-(-len(taps) // t) * t, dtype=np.int64)
    blocks[: len(taps)] = taps
    return blocks.reshape(-1, t)


def _weights_from_blocks(sums: Array, f: int, taps: int, weight_shape) -> Array:
    """The weight gradient (F, C, kh, kw) from block sums (filter blocks, tap blocks, T, G):
    the filters and taps past the real ones dropped."""
    fb, tb, t, g = sums.shape
    grad_w = sums.transpose(0, 3, 1, 2).reshape(fb * g, tb * t)
    return array_module(sums).ascontiguousarray(grad_w[:f, :taps]).reshape(weight_shape)


def _run_blocked(name: str, dtype, length: int, thread_count: int, args_for) -> None:
    """Run the blocked kernel ``name`` over ``length`` items shared by the engine's threads:
    ``args_for(s)`` gives its arguments for the items ``s`` (with a thread's own scratch),
    the hand-off signal and the round's number follow. The first call for a ``dtype``
    compiles the kernel with the SLP vectoriser (:func:`compile_vectorised`)."""
    kernel = getattr(_kernels_blocked(), name)
    if (name, dtype.str) not in _compiled:  # the types depend on the dtype alone
        compile_vectorised(kernel, (*args_for(slice(0, length)), np.zeros(1, "int64"), 0))
        _compiled.add((name, dtype.str))

    def part(s: slice, go: Array, seq: int) -> None:
        kernel(*args_for(s), go, seq)

    with threads.limit(thread_count):  # the plan gives one thread to a small layer
        threads.parallel_signalled(part, length, spin_wait())


def spin_wait():
    """The compiled spin-wait of the engine's hand-offs (:func:`.threads.parallel_signalled`)
    where numba is on and the C library has ``sched_yield`` and ``clock_gettime`` (POSIX);
    else None."""
    if not enabled():
        return None
    return _kernels().spin_wait if os.name == "posix" else None


def blocked_forward(x: Array, weight: Array, win: Window, thread_count: int, block: str) -> Array:
    """Cross-correlation without bias of a dense layer (``groups == 1``) by the
    register-blocked kernel ``block`` (the plan's, :func:`blocked_block`): x (N, C, H, W),
    weight (F, C, kh, kw) -> (N, F, *win.out). No columns are built; each thread pads one
    sample at a time into its own scratch plane."""
    x = _c(x)
    xp = array_module(x)
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    (sh, sw), (dh, dw) = win.stride, win.dilation
    name, g, p = named_block(block)
    if name in _kernels_blocked().ROW_BLOCKS and sw != 1:
        raise ValueError(f"blocked_forward: {name} runs along rows at stride 1, got {win.stride}")
    acc = (p, g)  # the shape of a thread's scratch block
    rows = c * kh * kw
    wb = xp.zeros((-(-f // g), rows, g), dtype=x.dtype)  # filters past F stay zero
    for b, first in enumerate(range(0, f, g)):
        wb[b, :, : min(g, f - first)] = weight[first : first + g].reshape(-1, rows).T
    hp, wp = win.padded_hw((h, w))
    if win.out[1] < p:
        raise ValueError(f"blocked_forward: output rows of {win.out[1]} < {p} positions")
    offs = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    geom = (int(sh), int(sw), int(win.pads[0][0]), int(win.pads[1][0]), int(hp), int(wp))
    out = xp.empty((n, f, *win.out), dtype=x.dtype)
    plane = (int(c), int(hp), int(wp)) if (hp, wp) != (h, w) else (1, 1, 1)

    def args_for(s: slice) -> tuple:
        return (x[s], wb, offs, out[s], geom, *_blocked_scratch(xp, plane, acc, x.dtype))

    _run_blocked(name, x.dtype, n, thread_count, args_for)
    return out


def blocked_weight_grad(
    grad_out: Array, x: Array, win: Window, weight_shape, thread_count: int, block: str
) -> Array:
    """The weight gradient of a dense layer (``groups == 1``) by the register-blocked kernel
    ``block`` (the plan's, :func:`blocked_block` with ``weight_grad``): grad_out (N, F, H_out,
    W_out), x (N, C, H, W) -> (F, C, kh, kw). No columns are built: each block of taps times
    filters is summed over the positions of one sample in registers, then added to the
    block's total, sample after sample. The threads share the blocks, each thread padding
    every sample into its own scratch plane, so every sum runs in the same order whatever the
    thread count. A kernel along a row (few taps and filters, stride 1 along the rows) sums
    16 positions at a time instead (:func:`_row_weight_grad`)."""
    x, grad_out = _c(x), _c(grad_out)
    name, g, t = named_block(block)
    if name in _kernels_blocked().ROW_WGRAD_BLOCKS:
        return _row_weight_grad(grad_out, x, win, weight_shape, thread_count, name)
    xp = array_module(x)
    n, c, h, w = x.shape
    f, _, kh, kw = weight_shape
    hp, wp = win.padded_hw((h, w))
    taps = _tap_offsets(c, kh, kw, hp, wp, *win.dilation)
    toffs = _tap_blocks(taps, t)
    poffs = _position_offsets(*win.out, *win.stride, wp)
    geom = (*map(int, win.stride), int(win.pads[0][0]), int(win.pads[1][0]), int(hp), int(wp))
    dwb = xp.zeros((-(-f // g), len(toffs), t, g), dtype=x.dtype)
    plane = (int(c), int(hp), int(wp)) if (hp, wp) != (h, w) else (1, 1, 1)

    def args_for(s: slice) -> tuple:  # s: units (filter block, tap block), all samples
        padded, acc = _blocked_scratch(xp, plane, (t, g), x.dtype)
        gt = xp.empty((len(poffs), g), dtype=x.dtype)
        return (x, grad_out, toffs, poffs, dwb, geom, padded, gt, acc, s.start, s.stop)

    _run_blocked(name, x.dtype, dwb.shape[0] * len(toffs), thread_count, args_for)
    return _weights_from_blocks(dwb, f, len(taps), weight_shape)


def blocked_input_grad(
    grad_out: Array, weight: Array, win: Window, x_shape, thread_count: int, block: str
) -> Array:
    """The input gradient (N, C, H, W) of a dense layer (``groups == 1``) at stride 1 by the
    register-blocked kernel ``block`` (the plan's, :func:`blocked_block` with
    ``input_grad``): the column gradient of a block of taps at 16 consecutive positions held
    in registers, then added onto a padded scratch copy of the sample's input gradient; no
    column matrix is built. The threads share the samples, each sample summed by one thread
    in one order."""
    if win.stride != (1, 1) or win.groups != 1:
        raise ValueError(
            f"blocked_input_grad: stride 1 and one group only, got {win.stride}, {win.groups}"
        )
    grad_out = _c(grad_out)
    xp = array_module(grad_out)
    n, c, h, w = x_shape
    f, _, kh, kw = weight.shape
    name, t, p = named_block(block)
    hp, wp = win.padded_hw((h, w))
    taps = _taps_by_position(c, kh, kw, hp, wp, *win.dilation)
    toffs = _tap_blocks(taps, t)  # the taps past the last add zeros at offset 0
    # the weights of each block's taps (kernel row, kernel column, channel), zero past the last
    wb = xp.zeros((toffs.size, f), dtype=grad_out.dtype)
    wb[: len(taps)] = weight.transpose(0, 2, 3, 1).reshape(f, -1).T
    wb = xp.ascontiguousarray(wb.reshape(len(toffs), t, f).transpose(0, 2, 1))
    positions = (win.out[0] - 1) * wp + win.out[1]  # the last one's index in a padded plane
    plane = -(-positions // p) * p
    geom = (int(win.pads[0][0]), int(win.pads[1][0]), int(hp), int(wp))
    grad_x = xp.empty(tuple(x_shape), dtype=grad_out.dtype)

    def args_for(s: slice) -> tuple:
        gpad = xp.empty((f, plane), dtype=grad_out.dtype)
        dpad = xp.empty(c * hp * wp + p, dtype=grad_out.dtype)
        return (grad_out[s], wb, toffs, grad_x[s], geom, gpad, dpad)

    _run_blocked(name, grad_out.dtype, n, thread_count, args_for)
    return grad_x


#: The weight gradient along a row sums the batch in chunks of this many samples, each into
#: its own partial sums, added in order at the end: the threads share the chunks, and the
#: result does not depend on their number.
ROW_WGRAD_CHUNK = 16


def _row_weight_grad(
    grad_out: Array, x: Array, win: Window, weight_shape, thread_count: int, name: str
) -> Array:
    """:func:`blocked_weight_grad` by a kernel along a row (``ROW_WGRAD_BLOCKS``): blocks of
    16 consecutive positions of an output row, the lanes of each block's sums kept apart
    until the end; stride 1 along the rows."""
    if win.stride[1] != 1 or win.groups != 1:
        raise ValueError(
            f"blocked_weight_grad: {name} runs along rows at stride 1 and one group, got "
            f"{win.stride}, {win.groups}"
        )
    xp = array_module(x)
    n, c, h, w = x.shape
    f, _, kh, kw = weight_shape
    _, g, t = named_block(name)
    (oh, ow), (sh, _), (dh, dw) = win.out, win.stride, win.dilation
    row = -(-ow // 16) * 16  # an output row's positions, rounded up to whole blocks
    # the padded input, wide enough that the lanes past a row's end read zeros there
    hp = h + sum(win.pads[0])
    wp = max(w + sum(win.pads[1]), row + (kw - 1) * dw)
    taps = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    toffs = _tap_blocks(taps, t)
    starts = np.arange(0, row, 16)
    xo = (np.arange(oh)[:, None] * (sh * wp) + starts).reshape(-1).astype(np.int64)
    gofs = (np.arange(oh)[:, None] * row + starts).reshape(-1).astype(np.int64)
    chunks = -(-n // ROW_WGRAD_CHUNK)
    dwb = xp.zeros((chunks, -(-f // g), len(toffs), t, g, 16), dtype=x.dtype)
    geom = (int(win.pads[0][0]), int(win.pads[1][0]), ROW_WGRAD_CHUNK, len(taps), int(sh))

    def args_for(s: slice) -> tuple:  # s: chunks of samples
        xpad, gpad = xp.empty((c, hp, wp), dtype=x.dtype), xp.empty((g, oh, row), dtype=x.dtype)
        return (x, grad_out, toffs, xo, gofs, dwb, geom, xpad, gpad, s.start, s.stop)

    _run_blocked(name, x.dtype, chunks, thread_count, args_for)
    # (chunks, filter blocks, tap blocks, t, g, lanes) summed in one order, whatever the threads
    return _weights_from_blocks(dwb.sum(axis=(0, 5)), f, len(taps), weight_shape)
