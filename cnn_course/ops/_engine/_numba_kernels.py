"""The compiled kernels (numba): depthwise convolution, and max pooling's windows and scatter.
Imported only by :mod:`.compiled`, lazily.

Each kernel works on one (H, W) plane at a time, and a driver runs the planes it is given on
the calling thread; :mod:`.compiled` hands each of the engine's threads a part of the batch.
(numba's own ``prange`` pool is not used: its OpenMP threads keep spinning after a kernel,
and on a machine with few cores they then take the cores from BLAS's threads and the
engine's.) A plane and its output stay in L1/L2 across the kh*kw taps. At stride 1 the plane
is padded into a scratch array, flat, and each tap is one long contiguous run over it (the
``*_flat`` kernels: long loops vectorise best); at other strides the taps run row by row,
each only over the output columns whose input column lies inside the plane (:func:`_span`),
so no padding is materialised (the ``*_rows`` kernels). Innermost loops index 1-D slices
from 0, which spares numba's negative-index checks and lets LLVM vectorise them.

``geom`` is ``(stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w)``. Every array
is C-contiguous (the caller makes sure); float32 and float64 compile separately, on first use.
"""

from __future__ import annotations

import os

import numba

from cnn_course.backend import np

__all__ = [
    "CACHED",
    "forward",
    "input_grad",
    "weight_grad",
    "col2im",
    "MAX_POOL",
    "scatter",
    "spin_wait",
]


def _cache_usable() -> bool:
    """Whether numba can write its on-disk cache for this file.

    Numba looks for a writable directory (``NUMBA_CACHE_DIR``, the package's ``__pycache__``,
    the user's cache directory) when a function is decorated with ``cache=True`` and raises
    ``RuntimeError`` when there is none; without a cache, every process compiles again.
    """
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def _probe() -> int:
    return 0


CACHED = _cache_usable() and os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")
_OPTIONS = dict(cache=CACHED, nogil=True, error_model="numpy")


def _jit(fn):
    return numba.njit(**_OPTIONS)(fn)


@_jit
def _span(offset, stride, width, out_width):
    """The output columns ``[lo, hi)`` whose input column ``ow * stride + offset`` lies in
    ``[0, width)``."""
    lo = max(0, -(offset // stride))
    hi = min(out_width, (width - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@_jit
def _axpy(dst, scale, src):
    """dst += scale * src (1-D; indexed from 0, so no negative-index checks: it vectorises)."""
    for t in range(dst.shape[0]):
        dst[t] += scale * src[t]


@_jit
def _fma(dst, a, b):
    """dst += a * b, elementwise (1-D)."""
    for t in range(dst.shape[0]):
        dst[t] += a[t] * b[t]


@_jit
def _scale(dst, scale, src):
    """dst = scale * src (1-D)."""
    for t in range(dst.shape[0]):
        dst[t] = scale * src[t]


@numba.njit(fastmath={"reassoc"}, **_OPTIONS)
def _dot(a, b):
    """sum(a * b) (1-D), in any order: reassociating lets the sum vectorise."""
    total = a[0] * b[0] * 0
    for t in range(a.shape[0]):
        total += a[t] * b[t]
    return total


@_jit
def _flat_size(oh_n, ow_n, kh, kw, dh, dw):
    """Stride 1: the padded plane (hp, wp) the output needs, and the run ``length`` one tap
    reads from it: output (oh, ow) is grid position ``oh * wp + ow``."""
    wp = ow_n + dw * (kw - 1)
    hp = oh_n + dh * (kh - 1)
    return hp, wp, (oh_n - 1) * wp + ow_n


@_jit
def _pad_into(x, pt, pl, hp, wp, dst):
    """dst[r * wp + c] = x[r - pt, c - pl], zero outside ``x`` (rows and columns of ``x``
    beyond the padded plane are not read)."""
    h, width = x.shape
    lo, hi = min(pl, wp), min(wp, pl + width)
    for r in range(hp):
        row = dst[r * wp : (r + 1) * wp]
        ih = r - pt
        if ih < 0 or ih >= h:
            for t in range(wp):
                row[t] = 0
            continue
        for t in range(lo):
            row[t] = 0
        if hi > lo:
            _scale(row[lo:hi], 1, x[ih, lo - pl : hi - pl])
        for t in range(max(lo, hi), wp):
            row[t] = 0


@_jit
def _grid_into(g, wp, dst):
    """dst[oh * wp + ow] = g[oh, ow]; the ``wp - W_out`` other positions of a row zero."""
    oh_n, ow_n = g.shape
    for oh in range(oh_n):
        _scale(dst[oh * wp : oh * wp + ow_n], 1, g[oh])
        if oh < oh_n - 1:
            for t in range(oh * wp + ow_n, (oh + 1) * wp):
                dst[t] = 0


@_jit
def _forward_flat(x, w, out, geom, scratch):
    """Stride 1: each tap is one long run over the padded plane, the plane a flat array."""
    _, _, pt, pl, dh, dw = geom
    oh_n, ow_n = out.shape
    kh, kw = w.shape
    hp, wp, length = _flat_size(oh_n, ow_n, kh, kw, dh, dw)
    xpad, grid = scratch[: hp * wp], scratch[hp * wp : hp * wp + length]
    _pad_into(x, pt, pl, hp, wp, xpad)
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j * dw
            if i == 0 and j == 0:
                _scale(grid, w[i, j], xpad[start : start + length])
            else:
                _axpy(grid, w[i, j], xpad[start : start + length])
    for oh in range(oh_n):
        _scale(out[oh], 1, grid[oh * wp : oh * wp + ow_n])


@_jit
def _input_grad_flat(g, w, gx, geom, scratch):
    """Stride 1: each tap adds one long run of the weighted gradient grid into the flat
    padded plane; the plane is then cropped."""
    _, _, pt, pl, dh, dw = geom
    oh_n, ow_n = g.shape
    kh, kw = w.shape
    h, width = gx.shape
    hp, wp, length = _flat_size(oh_n, ow_n, kh, kw, dh, dw)
    gpad, grid = scratch[: hp * wp], scratch[hp * wp : hp * wp + length]
    _grid_into(g, wp, grid)
    for t in range(hp * wp):
        gpad[t] = 0
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j * dw
            _axpy(gpad[start : start + length], w[i, j], grid)
    for ih in range(h):
        row = gx[ih]
        r = ih + pt
        hi = min(width, wp - pl) if r < hp else 0  # output_padding: rows/columns no window met
        if hi > 0:
            _scale(row[:hi], 1, gpad[r * wp + pl : r * wp + pl + hi])
        for t in range(max(hi, 0), width):
            row[t] = 0


@_jit
def _weight_grad_flat(g, x, gw, geom, scratch):
    """Stride 1: per tap, one dot product of the gradient grid with a run of the plane."""
    _, _, pt, pl, dh, dw = geom
    oh_n, ow_n = g.shape
    kh, kw = gw.shape
    hp, wp, length = _flat_size(oh_n, ow_n, kh, kw, dh, dw)
    xpad, grid = scratch[: hp * wp], scratch[hp * wp : hp * wp + length]
    _pad_into(x, pt, pl, hp, wp, xpad)
    _grid_into(g, wp, grid)
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j * dw
            gw[i, j] = _dot(grid, xpad[start : start + length])


@_jit
def _forward_rows(x, w, out, geom):
    """out[oh, ow] = sum_ij w[i, j] * x[oh*sh - pt + i*dh, ow*sw - pl + j*dw] (zero outside)."""
    sh, sw, pt, pl, dh, dw = geom
    h, width = x.shape
    oh_n, ow_n = out.shape
    kh, kw = w.shape
    for oh in range(oh_n):
        row = out[oh]
        for t in range(ow_n):
            row[t] = 0
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                offset = j * dw - pl
                lo, hi = _span(offset, sw, width, ow_n)
                if sw == 1:  # a contiguous run: its own, vectorised, specialisation
                    _axpy(row[lo:hi], w[i, j], x[ih, lo + offset : hi + offset])
                else:
                    _axpy(row[lo:hi], w[i, j], x[ih, lo * sw + offset :: sw][: hi - lo])


@_jit
def _input_grad_rows(g, w, gx, geom):
    """The adjoint of :func:`_forward_rows`: gx[ih, iw] gets w[i, j] * g[oh, ow] from every
    output position whose window met (ih, iw)."""
    sh, sw, pt, pl, dh, dw = geom
    h, width = gx.shape
    oh_n, ow_n = g.shape
    kh, kw = w.shape
    for ih in range(h):
        row = gx[ih]
        for t in range(width):
            row[t] = 0
    for oh in range(oh_n):
        src = g[oh]
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                offset = j * dw - pl
                lo, hi = _span(offset, sw, width, ow_n)
                if sw == 1:
                    _axpy(gx[ih, lo + offset : hi + offset], w[i, j], src[lo:hi])
                else:
                    _axpy(gx[ih, lo * sw + offset :: sw][: hi - lo], w[i, j], src[lo:hi])


@_jit
def _weight_grad_rows(g, x, gw, geom):
    """gw[i, j] = sum_{oh, ow} g[oh, ow] * x[oh*sh - pt + i*dh, ow*sw - pl + j*dw]: one
    running sum per tap and output column (elementwise, so it vectorises without
    reassociating), added up at the end."""
    sh, sw, pt, pl, dh, dw = geom
    h, width = x.shape
    oh_n, ow_n = g.shape
    kh, kw = gw.shape
    acc = np.zeros((kh * kw, ow_n), dtype=gw.dtype)
    for oh in range(oh_n):
        grads = g[oh]
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                offset = j * dw - pl
                lo, hi = _span(offset, sw, width, ow_n)
                dst = acc[i * kw + j, lo:hi]
                if sw == 1:
                    _fma(dst, grads[lo:hi], x[ih, lo + offset : hi + offset])
                else:
                    _fma(dst, grads[lo:hi], x[ih, lo * sw + offset :: sw][: hi - lo])
    for i in range(kh):
        for j in range(kw):
            total = 0.0
            for t in range(ow_n):
                total += acc[i * kw + j, t]
            gw[i, j] = total


@_jit
def _scratch(a, kernel, out_hw, geom):
    """One plane's scratch for the flat (stride 1) kernels; empty for the others."""
    sh, sw, _, _, dh, dw = geom
    if sh != 1 or sw != 1:
        return np.empty(0, dtype=a.dtype)
    hp, wp, length = _flat_size(out_hw[0], out_hw[1], kernel[0], kernel[1], dh, dw)
    return np.empty(hp * wp + length, dtype=a.dtype)


@_jit
def _forward_plane(x, w, out, geom, scratch):
    if geom[0] == 1 and geom[1] == 1:
        _forward_flat(x, w, out, geom, scratch)
    else:
        _forward_rows(x, w, out, geom)


@_jit
def _input_grad_plane(g, w, gx, geom, scratch):
    if geom[0] == 1 and geom[1] == 1:
        _input_grad_flat(g, w, gx, geom, scratch)
    else:
        _input_grad_rows(g, w, gx, geom)


@_jit
def _weight_grad_plane(g, x, gw, geom, scratch):
    if geom[0] == 1 and geom[1] == 1:
        _weight_grad_flat(g, x, gw, geom, scratch)
    else:
        _weight_grad_rows(g, x, gw, geom)


# The drivers, each on one thread (the engine's pool runs them side by side on parts of the
# batch): x (N, C, H, W), w (C, kh, kw), out (N, C, H_out, W_out); per_sample (N, C, kh, kw).
# Each plane is computed the same way whichever part or thread takes it.


@_jit
def forward(x, w, out, geom):
    c = x.shape[1]
    scratch = _scratch(x, w.shape[1:], out.shape[2:], geom)
    for p in range(x.shape[0] * c):
        _forward_plane(x[p // c, p % c], w[p % c], out[p // c, p % c], geom, scratch)


@_jit
def input_grad(g, w, gx, geom):
    c = g.shape[1]
    scratch = _scratch(g, w.shape[1:], g.shape[2:], geom)
    for p in range(g.shape[0] * c):
        _input_grad_plane(g[p // c, p % c], w[p % c], gx[p // c, p % c], geom, scratch)


@_jit
def weight_grad(g, x, per_sample, geom):
    c = x.shape[1]
    scratch = _scratch(x, per_sample.shape[2:], g.shape[2:], geom)
    for p in range(x.shape[0] * c):
        gw = per_sample[p // c, p % c]
        _weight_grad_plane(g[p // c, p % c], x[p // c, p % c], gw, geom, scratch)


# The fold of im2col's column gradient: cols (N, C, kh, kw, H_out, W_out) -> gx (N, C, H, W),
# both C-contiguous. The loops run over flat views with offsets computed once per run, and
# unsigned: a 6-D index, or a signed one (numba tests it for negative values), cost more than
# the short runs of a small layer's rows (measured: 2.3 ms instead of 0.4 ms on LeNet's C3).


@_jit
def col2im(cols, gx, geom):
    """gx[n, c] = every cols[n, c, i, j, r, t] added at (r*sh - pt + i*dh, t*sw - pl + j*dw),
    the positions outside gx dropped: the adjoint of im2col (overlaps add up).

    The additions come in the order of NumPy's fold (:func:`.windows.add_windows`), so the
    two paths give the same bits: first, for each column shift j, the kh row shifts summed
    in order of i into a (kw, H, W_out) scratch; then the kw shifts added onto gx in order
    of j."""
    sh, sw, pt, pl, dh, dw = geom
    h, width = gx.shape[2], gx.shape[3]
    kh, kw, oh_n, ow_n = cols.shape[2], cols.shape[3], cols.shape[4], cols.shape[5]
    src, dst = cols.reshape(-1), gx.reshape(-1)
    shifted = np.empty(kw * h * ow_n, dtype=gx.dtype)  # (kw, H, W_out), flat
    plane_cols = kh * kw * oh_n * ow_n
    for plane in range(gx.shape[0] * gx.shape[1]):
        for t in range(shifted.shape[0]):
            shifted[t] = 0
        first = plane * plane_cols  # flat index of cols[n, c, 0, 0, 0, 0]
        for i in range(kh):
            for r in range(oh_n):
                ih = r * sh - pt + i * dh
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    run = np.uint64(first + ((i * kw + j) * oh_n + r) * ow_n)
                    row = np.uint64((j * h + ih) * ow_n)
                    for t in range(ow_n):
                        shifted[row + np.uint64(t)] += src[run + np.uint64(t)]
        base = plane * h * width
        for t in range(h * width):
            dst[base + t] = 0
        for j in range(kw):
            offset = j * dw - pl
            lo, hi = _span(offset, sw, width, ow_n)
            for ih in range(h):
                row = np.uint64((j * h + ih) * ow_n)
                start = np.uint64(base + ih * width + offset)
                for t in range(lo, hi):
                    dst[start + np.uint64(t * sw)] += shifted[row + np.uint64(t)]


# Max pooling: the maximum of every window and its position ``i * kw + j``, read in place.


@_jit
def _max_border(x, out, arg, n, c, oh, ow, pads, window):
    """One window of :func:`_max_pool` at the border: positions outside the plane skipped."""
    kh, kw, sh, sw, dh, dw = window
    pt, pl = pads
    h, width = x.shape[2], x.shape[3]
    best = -np.inf
    at = 0
    for i in range(kh):
        for j in range(kw):
            ih, iw = oh * sh - pt + i * dh, ow * sw - pl + j * dw
            if 0 <= ih < h and 0 <= iw < width:
                v = x[n, c, ih, iw]
                if v > best or v != v:
                    best, at = v, i * kw + j
    out[n, c, oh, ow] = best
    arg[n, c, oh, ow] = at


@numba.njit(inline="always", error_model="numpy")
def _max_pool(x, out, arg, pads, kh, kw, sh, sw, dh, dw):
    """For every plane of x (N, C, H, W): out[n, c, oh, ow] = the window's maximum and
    arg[n, c, oh, ow] its position ``i * kw + j``: the first maximum in row-major window
    order, or the last NaN (a running maximum that every NaN replaces, as PyTorch's);
    positions outside the plane count as -inf (never taken).

    Inlined into each kernel below (numba's ``inline="always"``), whose literal window then
    is a constant of the compiled code: LLVM unrolls the window and turns its comparisons
    into selects (with the window as arguments the loop ran three to ten times slower).
    Windows inside the plane are read without bounds checks and with unsigned indices (numba
    adds no negative-index test then); only the border's (padding, ceil_mode) are checked."""
    pt, pl = pads
    h, width = x.shape[2], x.shape[3]
    oh_n, ow_n = out.shape[2], out.shape[3]
    window = (kh, kw, sh, sw, dh, dw)
    # the output rows and columns whose whole window lies inside the plane
    r0, r1 = _span(-pt, sh, h - (kh - 1) * dh, oh_n)
    c0, c1 = _span(-pl, sw, width - (kw - 1) * dw, ow_n)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh in range(oh_n):
                if not r0 <= oh < r1:
                    for ow in range(ow_n):
                        _max_border(x, out, arg, n, c, oh, ow, pads, window)
                    continue
                for ow in range(c0):
                    _max_border(x, out, arg, n, c, oh, ow, pads, window)
                for ow in range(c1, ow_n):
                    _max_border(x, out, arg, n, c, oh, ow, pads, window)
                for ow in range(c0, c1):
                    best = -np.inf
                    at = 0
                    for i in range(kh):
                        for j in range(kw):
                            ih = np.uint64(oh * sh - pt + i * dh)
                            v = x[n, c, ih, np.uint64(ow * sw - pl + j * dw)]
                            if v > best or v != v:
                                best, at = v, i * kw + j
                    out[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = at


@_jit
def max_pool_2x2s2(x, out, arg, pads):
    _max_pool(x, out, arg, pads, 2, 2, 2, 2, 1, 1)


@_jit
def max_pool_3x3s2(x, out, arg, pads):
    _max_pool(x, out, arg, pads, 3, 3, 2, 2, 1, 1)


#: The compiled max pooling kernels by window (kh, kw, stride_h, stride_w, dilation_h,
#: dilation_w): LeNet's and VGG's, and ResNet's stem. The plan keeps NumPy's for the others.
MAX_POOL = {(2, 2, 2, 2, 1, 1): max_pool_2x2s2, (3, 3, 2, 2, 1, 1): max_pool_3x3s2}


# The scatter of max pooling's backward: values and index (P, O), out (P, size).


@_jit
def scatter(values, index, out):
    """out[p] = 0, then out[p, index[p, o]] += values[p, o] (indices checked by the caller)."""
    for p in range(out.shape[0]):
        dst, src, at = out[p], values[p], index[p]
        for t in range(dst.shape[0]):
            dst[t] = 0
        for o in range(src.shape[0]):
            dst[at[o]] += src[o]


# sched_yield(2) from the C library: lets another thread ready on this core run. An external
# call may write any memory, so LLVM reads the flag again after each (no hoisted load).
_sched_yield = numba.types.ExternalFunction("sched_yield", numba.types.int32())
# clock_gettime(2), its struct timespec (two 64-bit fields) written through the address
_clock_gettime = numba.types.ExternalFunction(
    "clock_gettime", numba.types.int32(numba.types.int32, numba.types.intp)
)


@_jit
def _now_ns(clock):
    _clock_gettime(np.int32(clock[0]), clock[1:].ctypes.data)
    return clock[1] * 1_000_000_000 + clock[2]


@_jit
def spin_wait(flags, i, seen, timeout_ns, clock, signal, slot, value):
    """First ``signal[slot] = value``; then ``flags[i]`` once it differs from ``seen``,
    read until ``timeout_ns`` nanoseconds have passed (yielding the core between reads),
    else ``seen``. ``clock`` is scratch: (clock id, then the 2 fields of a timespec), int64.
    The engine's threads hand work over this way (:mod:`.threads`): both the signal and the
    wait happen with the GIL released, so whoever is signalled finds the GIL free."""
    signal[slot] = value
    deadline = _now_ns(clock) + timeout_ns
    while True:
        current = flags[i]
        if current != seen:
            return current
        _sched_yield()
        if _now_ns(clock) > deadline:
            return flags[i]
