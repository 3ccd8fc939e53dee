"""``cnn-course bench``: time the course's operations against the bounds that matter.

For each convolution shape (ResNet-style 3x3 layers at several widths, a strided layer, a
1x1 bottleneck, a MobileNet depthwise layer, first layers with 1 and 3 input channels,
LeNet's layers; float32) it times ``conv2d`` forward and backward against

(a) the plain GEMM the convolution reduces to, (N*H_out*W_out, C*kh*kw) x (C*kh*kw, F) (one
    per group, batched, for a grouped layer): the limit of any im2col design;
(b) PyTorch (oneDNN on the CPU, cuDNN on a GPU) with the same number of threads, when
    PyTorch is installed;
(c) the naive loop definition ``conv2d_naive``, on a small batch of the small shapes.

A depthwise layer (one 3x3 filter per channel, stride 1) runs the direct path of ``conv2d``
(no columns, no GEMM; on a GPU one kernel), so its "GEMM" column, the batch of one-row matrix
products the im2col path would run, is only a reference and not held to the GEMM target.

Then max and average pooling forward and backward against PyTorch. PyTorch's max-pooling
backward receives the indices its forward saved; ours by default recomputes them from ``x``
(a backward takes the forward's arguments), which costs more than the backward itself. The
table therefore shows both of ours (from ``x``, and from the forward's ``indices``) against
PyTorch's backward, and forward+backward as each library runs it in training; the DESIGN
target compares like with like (forward, backward from indices, forward+backward).

With ``--backend cupy`` the same tables compare CuPy with PyTorch CUDA (cuDNN) in full
float32: TF32, which cuDNN uses for float32 convolutions by default, is turned off. The
DESIGN targets were set for the CPU; on a GPU they are printed for reference. There, small
layers are bound by kernel launches (each CuPy call costs several microseconds on the host,
a cuDNN convolution is one launch) and large ones by the im2col gather, which moves kh*kw
times the input through memory while the GEMM itself takes only tens of microseconds.

Last, a LeNet training epoch (``bench_lenet_epoch``), ours against the same model in
PyTorch. Every time is the best of several runs after a warm-up, and every ratio compares
times measured in the same run. ``--json FILE`` writes all of it (the book's chapters on
im2col and on FLOPs display it).

LeNet C3 (5x5, 6->16 channels, 14x14) is the shape closest to the 1.3x GEMM limit on a CPU
(1.27x to 1.29x over the runs that produced the book's table, single-threaded): its column
matrix has 150 rows but only 16 filters use it, so the GEMM does just 32 flops per column
value the gather writes. Measured on one core: the per-sample GEMMs take about 0.29 ms (near
the core's peak, and less than the 0.39 ms plain GEMM, whose narrow side of 16 is its worst
shape) and the gather about 0.17 ms: 0.07 ms for the first, column-shift copy (26,880 runs
of W_out = 10 values) and 0.10 ms for the second (runs of 100). NumPy's copy pays about
5 ns per innermost loop, and with float items its innermost loop is one run, so the gather
first took 0.25 ms (1.45x); copying each run as one opaque item (``_copy_blocks``) makes the
innermost loop run over the runs. Every other gather measured was slower: one strided copy;
the whole batch at once, with one wide GEMM (16 x 150) @ (150 x 6400) (0.42 ms for that GEMM
alone); cache-sized tiles from 64 KiB to 4 MiB (no consistent difference); a reused buffer;
one fancy-index ``take`` from precomputed flat indices (0.53 ms for the take alone); the
windows copied once in the (N*L, C*kh*kw) order of the plain GEMM (runs of kw values, 1.35 ms
in all); output rows of the padded width, one copy with runs of 136 values but 36% more GEMM
columns; and no second copy at all, five GEMMs over the kernel rows (K = 30 each) reading the
column-shifted copy in place as strided matrices (as fast as the second copy plus one GEMM:
the narrower GEMMs lose what the copy saves). Only a design without columns (a direct or
Winograd kernel in compiled code, as in oneDNN) avoids the gather.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnn_course import functional as F
from cnn_course import zoo
from cnn_course.backend import get_backend, to_numpy
from cnn_course.data import batches, load_digits
from cnn_course.ops.conv import conv2d, conv2d_backward, conv2d_naive, conv2d_workspace_bytes
from cnn_course.optim import Adam
from cnn_course.training import subset

# (name, N, C, H, W, F, kernel, stride, padding, groups); sizes keep a full CPU run near
# 2 minutes.
CONV_SHAPES = [
    ("ResNet 3x3, 64 ch, 56x56", 8, 64, 56, 56, 64, 3, 1, 1, 1),
    ("ResNet 3x3, 128 ch, 28x28", 8, 128, 28, 28, 128, 3, 1, 1, 1),
    ("ResNet 3x3, 256 ch, 14x14", 8, 256, 14, 14, 256, 3, 1, 1, 1),
    ("ResNet 3x3, 512 ch, 7x7", 8, 512, 7, 7, 512, 3, 1, 1, 1),
    ("strided 3x3/2, 64->128, 56x56", 8, 64, 56, 56, 128, 3, 2, 1, 1),
    ("bottleneck 1x1, 256->64, 56x56", 8, 256, 56, 56, 64, 1, 1, 0, 1),
    ("MobileNet depthwise 3x3, 128 ch, 56x56", 8, 128, 56, 56, 128, 3, 1, 1, 128),
    ("first layer 7x7/2, 3->64, 224x224", 8, 3, 224, 224, 64, 7, 2, 3, 1),
    ("LeNet C1 5x5, 1->6, 32x32", 64, 1, 32, 32, 6, 5, 1, 0, 1),
    ("LeNet C3 5x5, 6->16, 14x14", 64, 6, 14, 14, 16, 5, 1, 0, 1),
]
QUICK_CONV_SHAPES = [
    ("tiny 3x3, 8 ch, 12x12", 2, 8, 12, 12, 8, 3, 1, 1, 1),
    ("tiny 3x3/2, 8->16, 12x12", 2, 8, 12, 12, 16, 3, 2, 1, 1),
    ("tiny depthwise 3x3, 8 ch, 12x12", 2, 8, 12, 12, 8, 3, 1, 1, 8),
    ("tiny LeNet-like 5x5, 1->4, 16x16", 4, 1, 16, 16, 4, 5, 1, 0, 1),
]
# (name, kind, N, C, H, W, kernel, stride, padding)
POOL_SHAPES = [
    ("ResNet stem max 3x3/2, 64 ch, 112x112", "max", 8, 64, 112, 112, 3, 2, 1),
    ("max 2x2/2, 128 ch, 56x56", "max", 8, 128, 56, 56, 2, 2, 0),
    ("LeNet avg 2x2/2, 6 ch, 28x28", "avg", 64, 6, 28, 28, 2, 2, 0),
    ("avg 3x3/2, 64 ch, 56x56", "avg", 8, 64, 56, 56, 3, 2, 1),
]
QUICK_POOL_SHAPES = [
    ("tiny max 3x3/2, 8 ch, 12x12", "max", 2, 8, 12, 12, 3, 2, 1),
    ("tiny avg 2x2/2, 8 ch, 12x12", "avg", 2, 8, 12, 12, 2, 2, 0),
]
# The naive loops run on this many samples, and only where the layer is this small.
NAIVE_BATCH = 2
NAIVE_MAX_OUTPUTS = 20_000

# DESIGN section 7: (key in the summary, limit, what it means)
TARGETS = [
    ("conv_forward_vs_gemm_worst", 1.3, "conv2d forward / plain GEMM, every shape"),
    ("conv_forward_vs_torch_geomean", 2.0, "conv2d forward / PyTorch, geometric mean"),
    ("conv_forward_vs_torch_worst", 4.0, "conv2d forward / PyTorch, worst shape"),
    ("conv_backward_vs_torch_geomean", 2.5, "conv2d backward / PyTorch, geometric mean"),
    ("conv_backward_vs_torch_worst", 5.0, "conv2d backward / PyTorch, worst shape"),
    (
        "max_pool_vs_torch_worst",
        3.0,
        "max pooling / PyTorch, worst of forward, backward from indices, forward+backward",
    ),
    ("lenet_epoch_vs_torch", 2.0, "LeNet training epoch / PyTorch"),
]


# --------------------------------------------------------------------------- backends


class _Backend:
    """Array creation, synchronisation and the PyTorch twin for one backend."""

    def __init__(self, name: str, threads: int, timer: str) -> None:
        self.name = name
        # Wall-clock time, or this process's CPU time: with one thread, CPU time is the
        # compute time even on a machine shared with other work (wall-clock then is not).
        self.clock = time.perf_counter if timer == "wall" else time.process_time
        self.xp = np if name == "numpy" else importlib.import_module("cupy")
        self.torch, self.torch_note = _import_torch()
        self.device = "cpu" if name == "numpy" else "cuda"
        if self.torch is not None:
            self.torch.set_num_threads(threads)
            if self.device == "cuda" and not self.torch.cuda.is_available():
                self.torch, self.torch_note = None, "PyTorch has no CUDA device here"
            elif self.device == "cuda":
                _full_float32(self.torch)
                self.torch_note = (
                    "PyTorch CUDA in full float32 (TF32 off), the precision CuPy computes in"
                )

    def sync(self) -> None:
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()
            if self.torch is not None:
                self.torch.cuda.synchronize()

    def random(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
        return self.xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    def device_name(self) -> str | None:
        """The GPU's name on CuPy (None on the CPU: ``machine`` describes that)."""
        if self.name == "numpy":
            return None
        name = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def to_torch(self, a: Any) -> Any:
        if self.name == "numpy":
            return self.torch.from_numpy(a)
        return self.torch.as_tensor(a, device="cuda")


def _full_float32(torch: Any) -> None:
    """Turn off TF32 (10-bit mantissa products), which cuDNN uses for float32 convolutions by
    default: CuPy's matmul rounds as float32 does, and ratios must compare equal precision."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _import_torch() -> tuple[Any, str]:
    try:
        return importlib.import_module("torch"), ""
    except ImportError:
        return None, "PyTorch is not installed (pip install 'cnn-course[oracle]'): no torch column"


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[str]:
    """Limit NumPy's BLAS to ``threads`` (PyTorch gets the same number)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "threadpoolctl missing: BLAS uses its default thread count"
        return
    with threadpool_limits(limits=threads):
        yield ""


def _best_time(fn: Callable[[], Any], backend: _Backend, repeat: int) -> float:
    """Best seconds of ``repeat`` calls, after one warm-up call, on the backend's clock."""
    fn()
    backend.sync()
    best = math.inf
    for _ in range(repeat):
        start = backend.clock()
        fn()
        backend.sync()
        best = min(best, backend.clock() - start)
    return best


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


# --------------------------------------------------------------------------- convolution


def _bench_conv(shape: tuple, backend: _Backend, repeat: int, rng) -> dict[str, Any]:
    name, n, c, h, w, f, k, stride, padding, groups = shape
    xp, torch = backend.xp, backend.torch
    x, weight = backend.random(rng, (n, c, h, w)), backend.random(rng, (f, c // groups, k, k))
    args = (stride, padding, 1, groups)
    out = conv2d(x, weight, None, *args)
    oh, ow = out.shape[2:]
    grad_out = backend.random(rng, tuple(out.shape))
    # One GEMM per group: (N*H_out*W_out, C/G*kh*kw) x (C/G*kh*kw, F/G), batched over groups.
    gemm_a = backend.random(rng, (groups, n * oh * ow, c // groups * k * k))
    gemm_b = backend.random(rng, (groups, c // groups * k * k, f // groups))
    if groups == 1:
        gemm_a, gemm_b = gemm_a[0], gemm_b[0]
    times = {
        "gemm": _best_time(lambda: xp.matmul(gemm_a, gemm_b), backend, repeat),
        "forward": _best_time(lambda: conv2d(x, weight, None, *args), backend, repeat),
        "backward": _best_time(
            lambda: conv2d_backward(grad_out, x, weight, *args), backend, repeat
        ),
        "torch_forward": None,
        "torch_backward": None,
    }
    if torch is not None:
        xt, wt, gt = (backend.to_torch(a) for a in (x, weight, grad_out))
        conv = torch.nn.functional.conv2d
        times["torch_forward"] = _best_time(lambda: conv(xt, wt, None, *args), backend, repeat)
        times["torch_backward"] = _best_time(
            lambda: torch.ops.aten.convolution_backward(
                gt,
                xt,
                wt,
                [f],
                [stride] * 2,
                [padding] * 2,
                [1, 1],
                False,
                [0, 0],
                groups,
                [True, True, True],
            ),
            backend,
            repeat,
        )
    memory = conv2d_workspace_bytes((n, c, h, w), (f, c // groups, k, k), stride, padding)
    return {
        "name": name,
        "shape": {
            "N": n,
            "C": c,
            "H": h,
            "W": w,
            "F": f,
            "kernel": k,
            "stride": stride,
            "padding": padding,
            "groups": groups,
        },
        "gemm_shape": [n * oh * ow, c * k * k, f],
        # conv2d's path: a depthwise layer runs without columns or GEMM on a CPU with
        # stride 1, and on a GPU always
        "path": "direct"
        if groups == c == f and (stride == 1 or backend.name == "cupy")
        else "im2col",
        "times_s": times,
        "ratios": {
            "forward_vs_gemm": _ratio(times["forward"], times["gemm"]),
            "forward_vs_torch": _ratio(times["forward"], times["torch_forward"]),
            "backward_vs_torch": _ratio(times["backward"], times["torch_backward"]),
        },
        "memory_bytes": {"columns": memory["columns"], "peak": memory["peak"]},
        "naive": _bench_naive(shape, backend, repeat, rng),
    }


def _bench_naive(shape: tuple, backend: _Backend, repeat: int, rng) -> dict[str, Any] | None:
    """The loop definition vs the fast path on ``NAIVE_BATCH`` samples of small layers."""
    _, n, c, h, w, f, k, stride, padding, groups = shape
    outputs = NAIVE_BATCH * f * ((h + 2 * padding - k) // stride + 1) ** 2
    if backend.name != "numpy" or outputs > NAIVE_MAX_OUTPUTS:
        return None
    x = backend.random(rng, (NAIVE_BATCH, c, h, w))
    weight = backend.random(rng, (f, c // groups, k, k))
    args = (stride, padding, 1, groups)
    naive = _best_time(lambda: conv2d_naive(x, weight, None, *args), backend, 1)
    fast = _best_time(lambda: conv2d(x, weight, None, *args), backend, repeat)
    return {"batch": NAIVE_BATCH, "naive_s": naive, "ours_s": fast, "speedup": naive / fast}


# --------------------------------------------------------------------------- pooling


POOL_FUNCTIONS = {
    "max": (F.max_pool2d, F.max_pool2d_backward),
    "avg": (F.avg_pool2d, F.avg_pool2d_backward),
}


def _bench_pool(shape: tuple, funcs: dict, backend: _Backend, repeat: int, rng) -> dict:
    """Forward and backward against PyTorch's. PyTorch's max-pooling backward receives the
    indices its forward saved; ours by default recomputes them from ``x`` (the course's
    convention: a backward takes the forward's arguments), so max pooling is timed both ways,
    and forward+backward as each library runs it in training (ours: forward, then backward
    from ``x``; PyTorch: forward with indices, then backward from them)."""
    name, kind, n, c, h, w, k, stride, padding = shape
    forward, backward = funcs[kind]
    x = backend.random(rng, (n, c, h, w))
    out = forward(x, k, stride, padding)
    grad_out = backend.random(rng, tuple(out.shape))

    def both() -> None:
        forward(x, k, stride, padding)
        backward(grad_out, x, k, stride, padding)

    times = {
        "forward": _best_time(lambda: forward(x, k, stride, padding), backend, repeat),
        "backward": _best_time(lambda: backward(grad_out, x, k, stride, padding), backend, repeat),
        "forward_backward": _best_time(both, backend, repeat),
        "torch_forward": None,
        "torch_backward": None,
        "torch_forward_backward": None,
    }
    if kind == "max":
        _, indices = forward(x, k, stride, padding, return_indices=True)
        times["backward_from_indices"] = _best_time(
            lambda: backward(grad_out, x, k, stride, padding, indices=indices), backend, repeat
        )
    torch = backend.torch
    if torch is not None:
        times.update(_torch_pool_times(kind, x, grad_out, shape, backend, repeat))
    return {
        "name": name,
        "kind": kind,
        "shape": {
            "N": n,
            "C": c,
            "H": h,
            "W": w,
            "kernel": k,
            "stride": stride,
            "padding": padding,
        },
        "times_s": times,
        "ratios": {
            "forward_vs_torch": _ratio(times["forward"], times["torch_forward"]),
            "backward_vs_torch": _ratio(times["backward"], times["torch_backward"]),
            "backward_from_indices_vs_torch": _ratio(
                times.get("backward_from_indices"), times["torch_backward"]
            ),
            "forward_backward_vs_torch": _ratio(
                times["forward_backward"], times["torch_forward_backward"]
            ),
        },
    }


def _torch_pool_times(kind, x, grad_out, shape, backend: _Backend, repeat: int) -> dict:
    torch = backend.torch
    _, _, _, _, _, _, k, stride, padding = shape
    xt, gt = backend.to_torch(x), backend.to_torch(grad_out)
    aten, ks, ss, ps = torch.ops.aten, [k, k], [stride, stride], [padding, padding]
    if kind == "max":
        _, indices = aten.max_pool2d_with_indices(xt, ks, ss, ps)
        fwd = lambda: torch.nn.functional.max_pool2d(xt, k, stride, padding)  # noqa: E731

        def bwd(saved=indices):
            return aten.max_pool2d_with_indices_backward(gt, xt, ks, ss, ps, [1, 1], False, saved)

        def both():
            return bwd(aten.max_pool2d_with_indices(xt, ks, ss, ps)[1])

    else:
        fwd = lambda: torch.nn.functional.avg_pool2d(xt, k, stride, padding)  # noqa: E731

        def bwd():
            return aten.avg_pool2d_backward(gt, xt, ks, ss, ps, False, True, None)

        def both():
            fwd()
            return bwd()

    return {
        "torch_forward": _best_time(fwd, backend, repeat),
        "torch_backward": _best_time(bwd, backend, repeat),
        "torch_forward_backward": _best_time(both, backend, repeat),
    }


# --------------------------------------------------------------------------- LeNet epoch


def _torch_lenet(torch: Any) -> Any:
    """The same LeNet-5 in PyTorch (for timing only)."""
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(400, 120),
        tnn.ReLU(),
        tnn.Linear(120, 84),
        tnn.ReLU(),
        tnn.Linear(84, 10),
    )


def _numpy_blas_threads() -> int | None:
    """Threads of the BLAS NumPy uses (so PyTorch can be given as many)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return max(counts) if counts else None


def _time_epoch(step: Any, batch_list: list[tuple[Any, Any]]) -> float:
    """Seconds for ``step(x, y)`` over every batch, after one untimed warm-up step (first
    calls pay for kernel selection and memory pools). ``step`` returns an array whose
    conversion to float waits for an asynchronous device."""
    step(*batch_list[0])
    start = time.perf_counter()
    for xb, yb in batch_list:
        out = step(xb, yb)
    float(out.sum())
    return time.perf_counter() - start


def bench_lenet_epoch(
    batch_size: int = 64, seed: int = 0, train_size: int | None = None
) -> dict[str, Any]:
    """Time one training epoch (Adam) of LeNet-5: ours, and the same model in PyTorch, on
    the current backend's device (NumPy: PyTorch CPU; CuPy: PyTorch CUDA).

    The epoch covers the 4,000 training digits, or a stratified subset of ``train_size``,
    in the same batches for both. Returns ``ours_s``, ``torch_s`` (``None`` when PyTorch is
    not installed), ``ratio`` (ours / torch), ``images``, ``batch_size``, ``device`` and
    ``threads`` (on the CPU, PyTorch is given as many threads as NumPy's BLAS uses).
    """
    data = subset(load_digits("mnist5k", seed=0), train_size, None)
    batch_list = list(batches(data.x_train, data.y_train, batch_size, seed=seed))
    model = zoo.lenet5(seed=seed)
    opt = Adam(model.parameters(), lr=1e-3)

    def ours_step(xb: Any, yb: Any) -> Any:
        logits = model.forward(xb)
        opt.zero_grad()
        model.backward(F.cross_entropy_backward(1.0, logits, yb))
        opt.step()
        return logits

    threads = _numpy_blas_threads()
    device = "cpu" if get_backend() == "numpy" else "cuda"
    result = {"ours_s": _time_epoch(ours_step, batch_list), "torch_s": None, "ratio": None}
    result.update(
        images=int(data.x_train.shape[0]), batch_size=batch_size, device=device, threads=threads
    )
    try:
        import torch
    except ImportError:
        return result
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        _full_float32(torch)
    torch.manual_seed(seed)
    tmodel = _torch_lenet(torch).to(device)
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)

    def torch_step(xb: Any, yb: Any) -> Any:
        loss = torch.nn.functional.cross_entropy(tmodel(xb), yb)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return loss.detach()

    tensors = [
        (torch.as_tensor(to_numpy(xb), device=device), torch.as_tensor(to_numpy(yb), device=device))
        for xb, yb in batch_list
    ]
    result["torch_s"] = _time_epoch(torch_step, tensors)
    result["ratio"] = result["ours_s"] / result["torch_s"]
    return result


def _bench_lenet(quick: bool) -> dict[str, Any]:
    if quick:
        return {"unavailable": "skipped with --quick"}
    return bench_lenet_epoch()


# --------------------------------------------------------------------------- summary


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _summary(conv: list[dict], pool: list[dict], lenet: dict) -> dict[str, Any]:
    def ratios(rows: list[dict], key: str) -> list[float]:
        return [r["ratios"][key] for r in rows if r["ratios"][key] is not None]

    # The GEMM bound is that of the im2col design: layers on the direct path run no GEMM.
    fwd_gemm = ratios([r for r in conv if r.get("path") != "direct"], "forward_vs_gemm")
    fwd, bwd = ratios(conv, "forward_vs_torch"), ratios(conv, "backward_vs_torch")
    # Like for like: the backward from the saved indices against PyTorch's (which receives
    # them); the backward that recomputes them is in the table, not in the target.
    max_rows = [r for r in pool if r["kind"] == "max"]
    max_pool = [
        value
        for key in (
            "forward_vs_torch",
            "backward_from_indices_vs_torch",
            "forward_backward_vs_torch",
        )
        for value in ratios(max_rows, key)
    ]
    values = {
        "conv_forward_vs_gemm_worst": max(fwd_gemm, default=None),
        "conv_forward_vs_torch_geomean": _geomean(fwd),
        "conv_forward_vs_torch_worst": max(fwd, default=None),
        "conv_backward_vs_torch_geomean": _geomean(bwd),
        "conv_backward_vs_torch_worst": max(bwd, default=None),
        "max_pool_vs_torch_worst": max(max_pool, default=None),
        "lenet_epoch_vs_torch": lenet.get("ratio"),
    }
    return {
        key: {
            "value": values[key],
            "limit": limit,
            "met": None if values[key] is None else values[key] <= limit,
            "meaning": meaning,
        }
        for key, limit, meaning in TARGETS
    }


# --------------------------------------------------------------------------- printing


def _fmt_s(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:9.2f}"


def _fmt_r(r: float | None) -> str:
    return "-" if r is None else f"{r:6.2f}x"


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    line = "  ".join(
        h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)
    )
    print(line)
    print("-" * len(line))
    for r in rows:
        print(
            "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r))
        )


def _print_report(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(
        f"cnn-course bench: backend {meta['backend']}, {meta['threads']} thread(s), float32, "
        f"best of {meta['repeat']} after a warm-up, {meta['timer']}; times in ms"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    rows = []
    for r in report["conv"]:
        t, q = r["times_s"], r["ratios"]
        rows.append(
            [
                r["name"],
                _fmt_s(t["gemm"]),
                _fmt_s(t["forward"]),
                _fmt_r(q["forward_vs_gemm"]),
                _fmt_s(t["torch_forward"]),
                _fmt_r(q["forward_vs_torch"]),
                _fmt_s(t["backward"]),
                _fmt_s(t["torch_backward"]),
                _fmt_r(q["backward_vs_torch"]),
                f"{r['memory_bytes']['columns'] / 2**20:.1f}",
                f"{r['memory_bytes']['peak'] / 2**20:.1f}",
            ]
        )
    _print_table(
        "conv2d (columns: im2col matrix of the whole batch, peak: held at once, MiB)",
        [
            "layer",
            "GEMM",
            "fwd",
            "fwd/GEMM",
            "torch fwd",
            "fwd/torch",
            "bwd",
            "torch bwd",
            "bwd/torch",
            "columns",
            "peak",
        ],
        rows,
    )
    naive = [r for r in report["conv"] if r["naive"]]
    if naive:
        _print_table(
            f"conv2d vs its naive loop definition (batch {NAIVE_BATCH})",
            ["layer", "naive", "ours", "speed-up"],
            [
                [
                    r["name"],
                    _fmt_s(r["naive"]["naive_s"]),
                    _fmt_s(r["naive"]["ours_s"]),
                    f"{r['naive']['speedup']:.0f}x",
                ]
                for r in naive
            ],
        )
    if report["pool"]:
        _print_table(
            "pooling (bwd: from x, recomputing the arg-max; bwd idx: from the forward's indices, "
            "as PyTorch's bwd; fwd+bwd: ours from x, PyTorch from indices)",
            [
                "layer",
                "fwd",
                "torch fwd",
                "fwd/torch",
                "bwd",
                "bwd idx",
                "torch bwd",
                "bwd/torch",
                "idx/torch",
                "fwd+bwd",
                "torch f+b",
                "f+b/torch",
            ],
            [
                [
                    r["name"],
                    *(_fmt_s(r["times_s"][key]) for key in ("forward", "torch_forward")),
                    _fmt_r(r["ratios"]["forward_vs_torch"]),
                    *(
                        _fmt_s(r["times_s"].get(key))
                        for key in ("backward", "backward_from_indices", "torch_backward")
                    ),
                    _fmt_r(r["ratios"]["backward_vs_torch"]),
                    _fmt_r(r["ratios"]["backward_from_indices_vs_torch"]),
                    *(
                        _fmt_s(r["times_s"][k])
                        for k in ("forward_backward", "torch_forward_backward")
                    ),
                    _fmt_r(r["ratios"]["forward_backward_vs_torch"]),
                ]
                for r in report["pool"]
            ],
        )
    lenet = report["lenet_epoch"]
    if "unavailable" in lenet:
        print(f"\nLeNet training epoch: unavailable ({lenet['unavailable']})")
    else:
        print(
            f"\nLeNet training epoch: ours {lenet.get('ours_s', float('nan')):.2f} s, PyTorch "
            f"{lenet.get('torch_s', float('nan')):.2f} s, ratio {_fmt_r(lenet.get('ratio'))}"
        )
    cpu_only = (
        "" if report["meta"]["backend"] == "numpy" else " (set for the CPU; shown for reference)"
    )
    _print_table(
        "DESIGN targets" + cpu_only,
        ["target", "value", "limit", "met"],
        [
            [
                t["meaning"],
                _fmt_r(t["value"]),
                f"{t['limit']:.1f}x",
                {True: "yes", False: "NO", None: "n/a"}[t["met"]],
            ]
            for t in report["summary"].values()
        ],
    )


# --------------------------------------------------------------------------- main


def run(
    backend_name: str = "numpy",
    quick: bool = False,
    threads: int | None = None,
    repeat: int | None = None,
    timer: str = "wall",
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark and return the report (what ``--json`` writes)."""
    threads = threads or os.cpu_count() or 1
    # A GPU's times of small layers jitter with the host's launch latency: more (and cheap)
    # runs find their floor.
    repeat = repeat or (2 if quick else 7 if backend_name == "numpy" else 30)
    if timer == "cpu" and (threads > 1 or backend_name == "cupy"):
        raise ValueError("bench: --timer cpu measures only single-threaded CPU runs (--threads 1)")
    backend = _Backend(backend_name, threads, timer)
    rng = np.random.default_rng(seed)
    notes = [n for n in [backend.torch_note] if n]
    with _blas_threads(threads) as blas_note:
        if blas_note:
            notes.append(blas_note)
        conv = [
            _bench_conv(s, backend, repeat, rng)
            for s in (QUICK_CONV_SHAPES if quick else CONV_SHAPES)
        ]
        pool = [
            _bench_pool(s, POOL_FUNCTIONS, backend, repeat, rng)
            for s in (QUICK_POOL_SHAPES if quick else POOL_SHAPES)
        ]
        lenet = _bench_lenet(quick)
    torch = backend.torch
    return {
        "meta": {
            "backend": backend_name,
            "threads": threads,
            "repeat": repeat,
            "timer": "wall-clock" if timer == "wall" else "process CPU time",
            "quick": quick,
            "dtype": "float32",
            "numpy": np.__version__,
            "torch": None if torch is None else torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.processor()}",
            "gpu": backend.device_name(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            # other work on the machine while it ran (1-minute load average, where known)
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "notes": notes,
        "conv": conv,
        "pool": pool,
        "lenet_epoch": lenet,
        "summary": _summary(conv, pool, lenet),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-course bench",
        description="Time conv2d and pooling against the GEMM they reduce to, PyTorch and "
        "naive loops.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two runs each")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--backend",
        choices=["numpy", "cupy"],
        default="numpy",
        help="numpy (vs PyTorch CPU) or cupy (vs PyTorch CUDA)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS and PyTorch threads (default: all CPUs)"
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per measurement")
    parser.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="wall-clock (default) or process CPU time (with --threads 1: stable on a shared "
        "machine)",
    )
    args = parser.parse_args(argv)
    if args.timer == "cpu" and args.threads != 1:
        parser.error("--timer cpu needs --threads 1 (CPU time adds up over threads)")
    if args.backend == "cupy":
        from cnn_course.backend import BackendUnavailableError, set_backend

        try:
            set_backend("cupy")
        except BackendUnavailableError as exc:
            print(f"cnn-course bench: {exc}")
            return 2
    report = run(args.backend, args.quick, args.threads, args.repeat, args.timer)
    _print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
            fh.write("\n")
        print(f"\nwrote {args.json}")
    return 0
