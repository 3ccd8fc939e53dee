"""``cnn-course bench``: time the course's operations against the bounds that matter.

For each convolution shape (:data:`CONV_SHAPES`: ResNet-style 3x3 layers at several widths,
a strided layer, a 1x1 bottleneck, a MobileNet depthwise layer, first layers with 1 and 3
input channels, LeNet's layers; float32) it times ``conv2d`` forward and backward against

(a) the plain GEMM the convolution reduces to, (N*H_out*W_out, C*kh*kw) x (C*kh*kw, F) (one
    per group, batched, for a grouped layer): the limit of any im2col design;
(b) PyTorch (oneDNN on the CPU, cuDNN on a GPU) with the same number of threads, when
    PyTorch is installed;
(c) the naive loop definition ``conv2d_naive``, on a small batch of the small shapes.

Each row says which path the call's plan chose (``conv2d_plan``: ``im2col``, ``gemm`` for a
1x1 layer that needs no copy, ``direct`` for a depthwise layer, ``direct-numba`` for the same
compiled where numba is installed: see ``meta["numba"]``) and the extra memory: the
column matrix of the whole batch, and the peak the forward pass allocated beyond its output,
measured (``tracemalloc``), which the batch chunks and cache tiles keep bounded. A layer on
the direct path runs no GEMM, so its "GEMM" column is only a reference.

Then max and average pooling forward and backward against PyTorch. PyTorch's max-pooling
backward receives the indices its forward saved; ours by default recomputes them from ``x``
(a backward takes the forward's arguments), so the table shows both of ours (from ``x``, and
from the forward's ``indices``); the DESIGN target compares like with like (forward, and
backward from indices). Last, a LeNet training epoch (:func:`bench_lenet_epoch`), ours
against the same model in PyTorch.

The CPU tables are measured twice in one process: with one thread and with every core
(``--threads 1,all``, the default): BLAS, the engine's thread pool and PyTorch all get the
same count. Times are the best of several runs after a warm-up; ours and PyTorch's are timed
in alternating rounds, so both see the same load on a shared machine, and every ratio
compares times of the same run. ``--json FILE`` writes all of it (the book's chapters on
im2col and on FLOPs display it): the run with the most threads at the top level, the
1-thread run under ``"single_thread"``.

With ``--backend cupy`` the same tables compare CuPy with PyTorch CUDA (cuDNN) in full
float32 (TF32 off). The DESIGN targets were set for the CPU; on a GPU the forward geometric
mean is held to 1.5x cuDNN and the rest is printed for reference.

"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn_course import functional as F
from cnn_course import zoo
from cnn_course.backend import get_backend, to_numpy
from cnn_course.data import batches, load_digits
from cnn_course.ops._engine import compiled
from cnn_course.ops._engine import threads as engine_threads
from cnn_course.ops.conv import (
    conv2d,
    conv2d_backward,
    conv2d_naive,
    conv2d_plan,
    conv2d_workspace_bytes,
)
from cnn_course.optim import Adam
from cnn_course.training import subset


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer to time: input (n, c, h, w), f filters of kernel x kernel."""

    name: str
    n: int
    c: int
    h: int
    w: int
    f: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def args(self) -> tuple[int, int, int, int]:
        """(stride, padding, dilation, groups), conv2d's arguments after the bias."""
        return self.stride, self.padding, 1, self.groups


@dataclass(frozen=True)
class PoolShape:
    """One pooling layer to time: ``kind`` is ``"max"`` or ``"avg"``."""

    name: str
    kind: str
    n: int
    c: int
    h: int
    w: int
    kernel: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class Target:
    """A DESIGN target: ``key`` in the summary, its ``limit`` and what it means."""

    key: str
    limit: float
    meaning: str


# sizes keep a full CPU run (both thread counts) to a few minutes
#: Seconds without work before each round of timed calls, with more than one thread.
SETTLE_S = 0.2

#: Epochs each library runs, taking turns, in the LeNet row (each keeps its best). On this
#: course's 2-core machine, the load from elsewhere comes in phases of seconds that slow a
#: whole epoch of either library by up to a third. With 5 turns, the 2-thread ratio came out
#: 0.94 and 1.16 in two runs of the benchmark an hour apart, while 12 sets of 3 turns in one
#: process, taken over a few minutes, had a median of 0.92 to 0.95.
LENET_ROUNDS = 9
CONV_SHAPES = [
    ConvShape("ResNet 3x3, 64 ch, 56x56", 8, 64, 56, 56, 64, 3, 1, 1),
    ConvShape("ResNet 3x3, 128 ch, 28x28", 8, 128, 28, 28, 128, 3, 1, 1),
    ConvShape("ResNet 3x3, 256 ch, 14x14", 8, 256, 14, 14, 256, 3, 1, 1),
    ConvShape("ResNet 3x3, 512 ch, 7x7", 8, 512, 7, 7, 512, 3, 1, 1),
    ConvShape("strided 3x3/2, 64->128, 56x56", 8, 64, 56, 56, 128, 3, 2, 1),
    ConvShape("bottleneck 1x1, 256->64, 56x56", 8, 256, 56, 56, 64, 1, 1, 0),
    ConvShape("MobileNet depthwise 3x3, 128 ch, 56x56", 8, 128, 56, 56, 128, 3, 1, 1, 128),
    ConvShape("first layer 7x7/2, 3->64, 224x224", 8, 3, 224, 224, 64, 7, 2, 3),
    ConvShape("LeNet C1 5x5, 1->6, 32x32", 64, 1, 32, 32, 6, 5),
    ConvShape("LeNet C3 5x5, 6->16, 14x14", 64, 6, 14, 14, 16, 5),
]
QUICK_CONV_SHAPES = [
    ConvShape("tiny 3x3, 8 ch, 12x12", 2, 8, 12, 12, 8, 3, 1, 1),
    ConvShape("tiny 3x3/2, 8->16, 12x12", 2, 8, 12, 12, 16, 3, 2, 1),
    ConvShape("tiny depthwise 3x3, 8 ch, 12x12", 2, 8, 12, 12, 8, 3, 1, 1, 8),
    ConvShape("tiny 1x1, 8->4, 12x12", 2, 8, 12, 12, 4, 1),
    ConvShape("tiny LeNet-like 5x5, 1->4, 16x16", 4, 1, 16, 16, 4, 5),
]
POOL_SHAPES = [
    PoolShape("ResNet stem max 3x3/2, 64 ch, 112x112", "max", 8, 64, 112, 112, 3, 2, 1),
    PoolShape("max 2x2/2, 128 ch, 56x56", "max", 8, 128, 56, 56, 2, 2),
    PoolShape("LeNet avg 2x2/2, 6 ch, 28x28", "avg", 64, 6, 28, 28, 2, 2),
    PoolShape("avg 3x3/2, 64 ch, 56x56", "avg", 8, 64, 56, 56, 3, 2, 1),
]
QUICK_POOL_SHAPES = [
    PoolShape("tiny max 3x3/2, 8 ch, 12x12", "max", 2, 8, 12, 12, 3, 2, 1),
    PoolShape("tiny avg 2x2/2, 8 ch, 12x12", "avg", 2, 8, 12, 12, 2, 2),
]
# The naive loops run on this many samples, and only where the layer is this small.
NAIVE_BATCH = 2
NAIVE_MAX_OUTPUTS = 20_000

# DESIGN section 7, at every thread count
TARGETS = [
    Target("conv_forward_vs_gemm_worst", 1.3, "conv2d forward / plain GEMM, every dense shape"),
    Target("conv_pointwise_vs_gemm_worst", 1.1, "1x1 conv2d forward / plain GEMM"),
    Target("conv_forward_vs_torch_geomean", 1.3, "conv2d forward / PyTorch, geometric mean"),
    Target("conv_forward_vs_torch_worst", 2.0, "conv2d forward / PyTorch, worst shape"),
    Target("conv_backward_vs_torch_geomean", 1.5, "conv2d backward / PyTorch, geometric mean"),
    Target("conv_backward_vs_torch_worst", 2.5, "conv2d backward / PyTorch, worst shape"),
    Target(
        "max_pool_vs_torch_worst",
        2.0,
        "max pooling / PyTorch, worst of forward and backward from indices",
    ),
    Target("lenet_epoch_vs_torch", 1.2, "LeNet training epoch / PyTorch"),
]
GPU_TARGETS = {"conv_forward_vs_torch_geomean": 1.5}


# --------------------------------------------------------------------------- backends


class _Backend:
    """Array creation, synchronisation, the clock and the PyTorch twin for one backend."""

    def __init__(self, name: str, timer: str) -> None:
        self.name = name
        # Wall-clock time, or this process's CPU time: with one thread, CPU time is the
        # compute time even on a machine shared with other work (wall-clock then is not).
        self.clock = time.perf_counter if timer == "wall" else time.process_time
        self.xp = np if name == "numpy" else importlib.import_module("cupy")
        self.torch, self.torch_note = _import_torch()
        self.device = "cpu" if name == "numpy" else "cuda"
        if self.torch is not None and self.device == "cuda":
            if not self.torch.cuda.is_available():
                self.torch, self.torch_note = None, "PyTorch has no CUDA device here"
            else:
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
def thread_count(threads: int, torch: Any = None) -> Iterator[str]:
    """Run NumPy's BLAS, the engine's thread pool and PyTorch on ``threads`` threads."""
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits, note = contextlib.nullcontext(), "threadpoolctl missing: BLAS keeps its threads"
    else:
        limits, note = threadpool_limits(limits=threads), ""
    try:
        with limits, engine_threads.limit(threads):
            yield note
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


def best_times(fns: Sequence[Callable[[], Any]], backend: _Backend, repeat: int) -> list[float]:
    """Best seconds of each function over ``repeat`` calls, after a warm-up call each.

    The functions take turns in rounds (a few calls of one, then of the next), so that all
    of them see the same load on a shared machine; a round of several calls lets the thread
    pools of the previous library go idle before the timed calls count. Up to five rounds:
    a burst of load from elsewhere that outlasts one round still leaves each function the
    quiet rounds (with three, one burst changed a 2-thread ratio by half).

    With more than one thread, each round starts after :data:`SETTLE_S` without work: the
    threads of the library timed just before (OpenBLAS's spin for about 0.1 s after each
    GEMM, waiting for the next) would otherwise hold cores that the function timed next
    needs. Measured on 2 cores, a convolution right after a GEMM ran 1.9 times as long for
    0.1 s, PyTorch's as well as ours; a loop that calls one function sees no such threads.
    One untimed call then wakes the function's own threads, parked during the pause, as a
    loop's previous call would have (LeNet C3's backward, 2 ms: 2.4 ms timed right after
    the pause, 1.6 ms in a loop).
    """
    for fn in fns:
        fn()
    backend.sync()
    best = [math.inf] * len(fns)
    rounds = max(1, min(5, repeat // 4))
    per_round = -(-repeat // rounds)
    settle = SETTLE_S if engine_threads.num_threads() > 1 else 0.0
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if settle:
                time.sleep(settle)
                fn()  # untimed: a loop's calls find its threads awake, not parked by the pause
                backend.sync()
            for _ in range(per_round):
                start = backend.clock()
                fn()
                backend.sync()
                best[i] = min(best[i], backend.clock() - start)
    return best


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def peak_extra_bytes(fn: Callable[[], Any]) -> int | None:
    """Bytes ``fn`` allocated at its peak beyond what it returns (NumPy reports its arrays
    to ``tracemalloc``); None where that cannot be measured (CuPy's memory pool)."""
    if tracemalloc.is_tracing():
        return None
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(getattr(a, "nbytes", 0) for a in (result if isinstance(result, tuple) else [result]))
    return max(0, peak - kept)


# --------------------------------------------------------------------------- convolution


def _bench_conv(shape: ConvShape, backend: _Backend, repeat: int, rng) -> dict[str, Any]:
    s, xp, torch = shape, backend.xp, backend.torch
    x = backend.random(rng, (s.n, s.c, s.h, s.w))
    weight = backend.random(rng, (s.f, s.c // s.groups, s.kernel, s.kernel))
    out = conv2d(x, weight, None, *s.args)
    oh, ow = out.shape[2:]
    grad_out = backend.random(rng, tuple(out.shape))
    # One GEMM per group: (N*H_out*W_out, C/G*kh*kw) x (C/G*kh*kw, F/G), batched over groups.
    k = s.c // s.groups * s.kernel * s.kernel
    gemm_a = backend.random(rng, (s.groups, s.n * oh * ow, k))
    gemm_b = backend.random(rng, (s.groups, k, s.f // s.groups))
    if s.groups == 1:
        gemm_a, gemm_b = gemm_a[0], gemm_b[0]
    ours = [
        lambda: xp.matmul(gemm_a, gemm_b),
        lambda: conv2d(x, weight, None, *s.args),
        lambda: conv2d_backward(grad_out, x, weight, *s.args),
    ]
    twins = []
    if torch is not None:
        xt, wt, gt = (backend.to_torch(a) for a in (x, weight, grad_out))
        stride, padding = [s.stride] * 2, [s.padding] * 2
        twins = [
            lambda: torch.nn.functional.conv2d(xt, wt, None, *s.args),
            lambda: torch.ops.aten.convolution_backward(
                gt, xt, wt, [s.f], stride, padding, [1, 1], False, [0, 0], s.groups, [True] * 3
            ),
        ]
    measured = best_times(ours + twins, backend, repeat)
    times = dict(zip(["gemm", "forward", "backward"], measured[:3], strict=True))
    times["torch_forward"], times["torch_backward"] = (measured[3:] + [None, None])[:2]
    plans = conv2d_plan(x.shape, weight.shape, *s.args, x.itemsize, backend.name)
    columns = conv2d_workspace_bytes(x.shape, (s.f, s.c, s.kernel, s.kernel), s.stride, s.padding)
    peak = None
    if backend.name == "numpy":
        peak = peak_extra_bytes(lambda: conv2d(x, weight, None, *s.args))
    return {
        "name": s.name,
        "shape": {k: v for k, v in dataclasses.asdict(s).items() if k != "name"},
        "gemm_shape": [s.n * oh * ow, s.c * s.kernel * s.kernel, s.f],
        "path": plans["forward"].algorithm,
        "plan": {key: dataclasses.asdict(how) for key, how in plans.items()},
        "times_s": times,
        "ratios": {
            "forward_vs_gemm": _ratio(times["forward"], times["gemm"]),
            "forward_vs_torch": _ratio(times["forward"], times["torch_forward"]),
            "backward_vs_torch": _ratio(times["backward"], times["torch_backward"]),
        },
        "memory_bytes": {"columns": columns["columns"], "peak": peak},
        "naive": _bench_naive(s, backend, repeat, rng),
    }


def _bench_naive(s: ConvShape, backend: _Backend, repeat: int, rng) -> dict[str, Any] | None:
    """The loop definition vs the fast path on ``NAIVE_BATCH`` samples of small layers."""
    outputs = NAIVE_BATCH * s.f * ((s.h + 2 * s.padding - s.kernel) // s.stride + 1) ** 2
    if backend.name != "numpy" or outputs > NAIVE_MAX_OUTPUTS:
        return None
    x = backend.random(rng, (NAIVE_BATCH, s.c, s.h, s.w))
    weight = backend.random(rng, (s.f, s.c // s.groups, s.kernel, s.kernel))
    (naive,) = best_times([lambda: conv2d_naive(x, weight, None, *s.args)], backend, 1)
    (fast,) = best_times([lambda: conv2d(x, weight, None, *s.args)], backend, repeat)
    return {"batch": NAIVE_BATCH, "naive_s": naive, "ours_s": fast, "speedup": naive / fast}


# --------------------------------------------------------------------------- pooling


def _bench_pool(shape: PoolShape, backend: _Backend, repeat: int, rng) -> dict[str, Any]:
    """Forward and backward against PyTorch's, and forward+backward as each library runs it
    in training (ours: forward, then backward from ``x``; PyTorch: forward with indices,
    then backward from them). Max pooling's backward is timed from ``x`` and from the
    forward's ``indices``."""
    s = shape
    forward, backward = {
        "max": (F.max_pool2d, F.max_pool2d_backward),
        "avg": (F.avg_pool2d, F.avg_pool2d_backward),
    }[s.kind]
    args = (s.kernel, s.stride, s.padding)
    x = backend.random(rng, (s.n, s.c, s.h, s.w))
    grad_out = backend.random(rng, tuple(forward(x, *args).shape))

    def both() -> None:
        forward(x, *args)
        backward(grad_out, x, *args)

    keys = ["forward", "backward", "forward_backward"]
    ours = [lambda: forward(x, *args), lambda: backward(grad_out, x, *args), both]
    if s.kind == "max":
        _, indices = forward(x, *args, return_indices=True)
        keys.append("backward_from_indices")
        ours.append(lambda: backward(grad_out, x, *args, indices=indices))
    twins = _torch_pool_twins(s, x, grad_out, backend) if backend.torch is not None else {}
    measured = best_times(ours + list(twins.values()), backend, repeat)
    times = dict(zip(keys + list(twins), measured, strict=True))
    for key in ("torch_forward", "torch_backward", "torch_forward_backward"):
        times.setdefault(key, None)
    return {
        "name": s.name,
        "kind": s.kind,
        "shape": {k: v for k, v in dataclasses.asdict(s).items() if k not in ("name", "kind")},
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


def _torch_pool_twins(s: PoolShape, x, grad_out, backend: _Backend) -> dict[str, Callable]:
    torch = backend.torch
    xt, gt = backend.to_torch(x), backend.to_torch(grad_out)
    aten, ks, ss, ps = torch.ops.aten, [s.kernel] * 2, [s.stride] * 2, [s.padding] * 2
    if s.kind == "max":
        _, saved = aten.max_pool2d_with_indices(xt, ks, ss, ps)

        def bwd(indices=saved):
            return aten.max_pool2d_with_indices_backward(gt, xt, ks, ss, ps, [1, 1], False, indices)

        return {
            "torch_forward": lambda: torch.nn.functional.max_pool2d(
                xt, *ks[:1], s.stride, s.padding
            ),
            "torch_backward": bwd,
            "torch_forward_backward": lambda: bwd(aten.max_pool2d_with_indices(xt, ks, ss, ps)[1]),
        }

    def avg_bwd():
        return aten.avg_pool2d_backward(gt, xt, ks, ss, ps, False, True, None)

    def avg_both():
        torch.nn.functional.avg_pool2d(xt, s.kernel, s.stride, s.padding)
        return avg_bwd()

    return {
        "torch_forward": lambda: torch.nn.functional.avg_pool2d(xt, s.kernel, s.stride, s.padding),
        "torch_backward": avg_bwd,
        "torch_forward_backward": avg_both,
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
    batch_size: int = 64, seed: int = 0, train_size: int | None = None, rounds: int = 1
) -> dict[str, Any]:
    """Time one training epoch (Adam) of LeNet-5: ours, and the same model in PyTorch, on
    the current backend's device (NumPy: PyTorch CPU; CuPy: PyTorch CUDA).

    The epoch covers the 4,000 training digits, or a stratified subset of ``train_size``,
    in the same batches for both; with ``rounds`` > 1 the two take turns and each keeps its
    best epoch. Returns ``ours_s``, ``torch_s`` (``None`` when PyTorch is not installed),
    ``ratio`` (ours / torch), ``images``, ``batch_size``, ``device`` and ``threads`` (the
    engine's thread count; PyTorch runs with as many as it is given by the caller).
    """
    data = subset(load_digits("mnist5k", seed=0), train_size, None)
    batch_list = list(batches(data.x_train, data.y_train, batch_size, seed=seed))
    model = zoo.lenet5(seed=seed)
    opt = Adam(model.parameters(), lr=1e-3)

    def ours_step(xb: Any, yb: Any) -> Any:
        logits = model.forward(xb)
        opt.zero_grad()
        # like PyTorch's autograd, no gradient for the digits themselves
        model.backward_params(F.cross_entropy_backward(1.0, logits, yb))
        opt.step()
        return logits

    device = "cpu" if get_backend() == "numpy" else "cuda"
    result = {"ours_s": math.inf, "torch_s": None, "ratio": None}
    result.update(
        images=int(data.x_train.shape[0]),
        batch_size=batch_size,
        device=device,
        threads=engine_threads.num_threads(),
    )
    torch_step, tensors = _torch_lenet_step(seed, device, batch_list)
    for _ in range(max(1, rounds)):
        result["ours_s"] = min(result["ours_s"], _time_epoch(ours_step, batch_list))
        if torch_step is not None:
            torch_s = _time_epoch(torch_step, tensors)
            result["torch_s"] = min(result["torch_s"] or math.inf, torch_s)
    if result["torch_s"] is not None:
        result["ratio"] = result["ours_s"] / result["torch_s"]
    return result


def _torch_lenet_step(seed: int, device: str, batch_list) -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        return None, None
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
    return torch_step, tensors


# --------------------------------------------------------------------------- summary


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _summary(conv: list[dict], pool: list[dict], lenet: dict, gpu: bool = False) -> dict:
    def ratios(rows: list[dict], key: str) -> list[float]:
        return [r["ratios"][key] for r in rows if r["ratios"][key] is not None]

    # The GEMM bound is that of the im2col design: layers on the direct path run no GEMM.
    dense = [r for r in conv if r.get("path") not in ("direct", "direct-numba", "kernel")]
    fwd, bwd = ratios(conv, "forward_vs_torch"), ratios(conv, "backward_vs_torch")
    # Like for like: the backward from the saved indices against PyTorch's (which receives
    # them); the backward that recomputes them, and forward+backward, are in the table.
    max_rows = [r for r in pool if r["kind"] == "max"]
    max_pool = ratios(max_rows, "forward_vs_torch") + ratios(
        max_rows, "backward_from_indices_vs_torch"
    )
    values = {
        "conv_forward_vs_gemm_worst": max(ratios(dense, "forward_vs_gemm"), default=None),
        "conv_pointwise_vs_gemm_worst": max(
            ratios([r for r in dense if r.get("path") == "gemm"], "forward_vs_gemm"),
            default=None,
        ),
        "conv_forward_vs_torch_geomean": _geomean(fwd),
        "conv_forward_vs_torch_worst": max(fwd, default=None),
        "conv_backward_vs_torch_geomean": _geomean(bwd),
        "conv_backward_vs_torch_worst": max(bwd, default=None),
        "max_pool_vs_torch_worst": max(max_pool, default=None),
        "lenet_epoch_vs_torch": lenet.get("ratio"),
    }
    summary = {}
    for t in TARGETS:
        limit = GPU_TARGETS.get(t.key, t.limit) if gpu else t.limit
        value = values[t.key]
        met = None if value is None else value <= limit
        summary[t.key] = {"value": value, "limit": limit, "met": met, "meaning": t.meaning}
    return summary


# --------------------------------------------------------------------------- printing


def _fmt_s(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:9.2f}"


def _fmt_r(r: float | None) -> str:
    return "-" if r is None else f"{r:6.2f}x"


def _fmt_mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)
        )

    print(f"\n{title}")
    print(line(header))
    print("-" * len(line(header)))
    for r in rows:
        print(line(r))


def _print_run(run: dict[str, Any], gpu: bool) -> None:
    label = f"{run['threads']} thread(s)"
    rows = []
    for r in run["conv"]:
        t, q = r["times_s"], r["ratios"]
        rows.append(
            [
                r["name"],
                r["path"],
                _fmt_s(t["gemm"]),
                _fmt_s(t["forward"]),
                _fmt_r(q["forward_vs_gemm"]),
                _fmt_s(t["torch_forward"]),
                _fmt_r(q["forward_vs_torch"]),
                _fmt_s(t["backward"]),
                _fmt_s(t["torch_backward"]),
                _fmt_r(q["backward_vs_torch"]),
                _fmt_mib(r["memory_bytes"]["columns"]),
                _fmt_mib(r["memory_bytes"]["peak"]),
            ]
        )
    header = ["layer", "path", "GEMM", "fwd", "fwd/GEMM", "torch fwd", "fwd/torch", "bwd"]
    header += ["torch bwd", "bwd/torch", "columns", "peak"]
    _print_table(
        f"conv2d, {label} (MiB: columns of the whole batch; peak extra memory, measured)",
        header,
        rows,
    )
    naive = [r for r in run["conv"] if r["naive"]]
    if naive:
        _print_table(
            f"conv2d vs its naive loop definition (batch {NAIVE_BATCH}), {label}",
            ["layer", "naive", "ours", "speed-up"],
            [
                [r["name"], _fmt_s(r["naive"]["naive_s"]), _fmt_s(r["naive"]["ours_s"])]
                + [f"{r['naive']['speedup']:.0f}x"]
                for r in naive
            ],
        )
    if run["pool"]:
        _print_table(
            f"pooling, {label} (bwd: from x; bwd idx: from the forward's indices, as PyTorch's)",
            ["layer", "fwd", "torch fwd", "fwd/torch", "bwd", "bwd idx", "torch bwd"]
            + ["bwd/torch", "idx/torch", "fwd+bwd", "torch f+b", "f+b/torch"],
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
                for r in run["pool"]
            ],
        )
    lenet = run["lenet_epoch"]
    if "unavailable" in lenet:
        print(f"\nLeNet training epoch, {label}: unavailable ({lenet['unavailable']})")
    else:
        torch_s = lenet.get("torch_s")
        print(
            f"\nLeNet training epoch, {label}: ours {lenet['ours_s']:.2f} s, PyTorch "
            f"{'-' if torch_s is None else f'{torch_s:.2f}'} s, ratio {_fmt_r(lenet.get('ratio'))}"
        )
    _print_table(
        f"DESIGN targets, {label}" + (" (GPU: the forward geometric mean is held)" if gpu else ""),
        ["target", "value", "limit", "met"],
        [
            [
                t["meaning"],
                _fmt_r(t["value"]),
                f"{t['limit']:.1f}x",
                {True: "yes", False: "NO", None: "n/a"}[t["met"]],
            ]
            for t in run["summary"].values()
        ],
    )


def _print_report(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(
        f"cnn-course bench: backend {meta['backend']}, thread counts {meta['thread_counts']}, "
        f"float32, best of {meta['repeat']} after a warm-up, {meta['timer']}; times in ms"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    for run in runs(report):
        _print_run(run, meta["backend"] == "cupy")


def runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a report, fewest threads first (the 1-thread run, then all cores)."""
    main = {k: report[k] for k in ("threads", "conv", "pool", "lenet_epoch", "summary")}
    single = report.get("single_thread")
    return [single, main] if single else [main]


# --------------------------------------------------------------------------- main


def _run_once(backend: _Backend, quick: bool, repeat: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    conv = [
        _bench_conv(s, backend, repeat, rng) for s in (QUICK_CONV_SHAPES if quick else CONV_SHAPES)
    ]
    pool = [
        _bench_pool(s, backend, repeat, rng) for s in (QUICK_POOL_SHAPES if quick else POOL_SHAPES)
    ]
    lenet = (
        {"unavailable": "skipped with --quick"} if quick else bench_lenet_epoch(rounds=LENET_ROUNDS)
    )
    return {
        "threads": engine_threads.num_threads(),
        "conv": conv,
        "pool": pool,
        "lenet_epoch": lenet,
        "summary": _summary(conv, pool, lenet, gpu=backend.name == "cupy"),
    }


def parse_threads(text: str | None) -> list[int]:
    """``"1,all"`` -> ``[1, os.cpu_count()]``: the thread counts to run, ascending, unique."""
    counts = set()
    for part in (text or "1,all").split(","):
        part = part.strip().lower()
        if part == "all":
            counts.add(os.cpu_count() or 1)
        elif part.isdigit() and int(part) > 0:
            counts.add(int(part))
        else:
            raise ValueError(f"bench: --threads takes positive ints or 'all', got {text!r}")
    return sorted(counts)


def run(
    backend_name: str = "numpy",
    quick: bool = False,
    threads: int | Sequence[int] | None = None,
    repeat: int | None = None,
    timer: str = "wall",
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark at each thread count and return the report (what ``--json``
    writes): the run with the most threads at the top level, the 1-thread run (when there
    are several) under ``"single_thread"``."""
    counts = parse_threads(None) if threads is None else threads
    counts = sorted({counts} if isinstance(counts, int) else set(counts))
    if backend_name == "cupy":
        counts = counts[-1:]  # a GPU's kernels do not depend on the host's threads
    # A GPU's times of small layers jitter with the host's launch latency: more (and cheap)
    # runs find their floor.
    repeat = repeat or (2 if quick else 7 if backend_name == "numpy" else 30)
    if timer == "cpu" and (counts != [1] or backend_name == "cupy"):
        raise ValueError("bench: --timer cpu measures only single-threaded CPU runs (--threads 1)")
    backend = _Backend(backend_name, timer)
    notes = [n for n in [backend.torch_note] if n]
    measured = []
    for count in counts:
        with thread_count(count, backend.torch) as note:
            if note and note not in notes:
                notes.append(note)
            measured.append(_run_once(backend, quick, repeat, seed))
    torch = backend.torch
    report = {
        "meta": {
            "backend": backend_name,
            "threads": counts[-1],
            "thread_counts": counts,
            "repeat": repeat,
            "timer": "wall-clock" if timer == "wall" else "process CPU time",
            "quick": quick,
            "dtype": "float32",
            "numpy": np.__version__,
            "torch": None if torch is None else torch.__version__,
            # the compiled depthwise path: numba's version, or why it is off
            "numba": _numba_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.processor()}",
            "gpu": backend.device_name(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            # other work on the machine while it ran (1-minute load average, where known)
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "notes": notes,
        **measured[-1],
    }
    if len(measured) > 1 and measured[0]["threads"] == 1:
        report["single_thread"] = measured[0]
    return report


def _numba_version() -> str:
    off = compiled.unavailable()
    return f"off: {off}" if off else str(compiled.numba_version())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-course bench",
        description="Time conv2d and pooling against the GEMM they reduce to, PyTorch and "
        "naive loops, with one thread and with every core.",
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
        "--threads",
        default="1,all",
        help="thread counts for BLAS, the engine and PyTorch, comma-separated ints or 'all' "
        "(default: 1,all)",
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
    try:
        counts = parse_threads(args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    if args.timer == "cpu" and counts != [1]:
        parser.error("--timer cpu needs --threads 1 (CPU time adds up over threads)")
    if args.backend == "cupy":
        from cnn_course.backend import BackendUnavailableError, set_backend

        try:
            set_backend("cupy")
        except BackendUnavailableError as exc:
            print(f"cnn-course bench: {exc}")
            return 2
    report = run(args.backend, args.quick, counts, args.repeat, args.timer)
    _print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
            fh.write("\n")
        print(f"\nwrote {args.json}")
    return 0
