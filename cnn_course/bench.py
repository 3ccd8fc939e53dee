"""``cnn-course bench``: time the course's operations against the bounds that matter.

For each convolution shape (ResNet-style 3x3 layers at several widths, a strided layer, a
1x1 bottleneck, first layers with 1 and 3 input channels, LeNet's layers; float32) it times
``conv2d`` forward and backward against

(a) the plain GEMM the convolution reduces to, (N*H_out*W_out, C*kh*kw) x (C*kh*kw, F): the
    limit of any im2col design;
(b) PyTorch (oneDNN on the CPU, cuDNN on a GPU) with the same number of threads, when
    PyTorch is installed;
(c) the naive loop definition ``conv2d_naive``, on a small batch of the small shapes.

Then max and average pooling forward and backward against PyTorch, and a LeNet training
epoch when ``cnn_course.training.bench_lenet_epoch`` exists. Every time is the best of
several runs after a warm-up, and every ratio compares times measured in the same run.
``--json FILE`` writes all of it (the book's chapters on im2col and on FLOPs display it).
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

from cnn_course.ops.conv import conv2d, conv2d_backward, conv2d_naive, conv2d_workspace_bytes

# (name, N, C, H, W, F, kernel, stride, padding); sizes keep a full CPU run near 2 minutes.
CONV_SHAPES = [
    ("ResNet 3x3, 64 ch, 56x56", 8, 64, 56, 56, 64, 3, 1, 1),
    ("ResNet 3x3, 128 ch, 28x28", 8, 128, 28, 28, 128, 3, 1, 1),
    ("ResNet 3x3, 256 ch, 14x14", 8, 256, 14, 14, 256, 3, 1, 1),
    ("ResNet 3x3, 512 ch, 7x7", 8, 512, 7, 7, 512, 3, 1, 1),
    ("strided 3x3/2, 64->128, 56x56", 8, 64, 56, 56, 128, 3, 2, 1),
    ("bottleneck 1x1, 256->64, 56x56", 8, 256, 56, 56, 64, 1, 1, 0),
    ("first layer 7x7/2, 3->64, 224x224", 8, 3, 224, 224, 64, 7, 2, 3),
    ("LeNet C1 5x5, 1->6, 32x32", 64, 1, 32, 32, 6, 5, 1, 0),
    ("LeNet C3 5x5, 6->16, 14x14", 64, 6, 14, 14, 16, 5, 1, 0),
]
QUICK_CONV_SHAPES = [
    ("tiny 3x3, 8 ch, 12x12", 2, 8, 12, 12, 8, 3, 1, 1),
    ("tiny 3x3/2, 8->16, 12x12", 2, 8, 12, 12, 16, 3, 2, 1),
    ("tiny LeNet-like 5x5, 1->4, 16x16", 4, 1, 16, 16, 4, 5, 1, 0),
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
    ("max_pool_vs_torch_worst", 3.0, "max pooling forward and backward / PyTorch, worst"),
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

    def sync(self) -> None:
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()
            if self.torch is not None:
                self.torch.cuda.synchronize()

    def random(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
        return self.xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    def to_torch(self, a: Any) -> Any:
        if self.name == "numpy":
            return self.torch.from_numpy(a)
        return self.torch.as_tensor(a, device="cuda")


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
    name, n, c, h, w, f, k, stride, padding = shape
    xp, torch = backend.xp, backend.torch
    x, weight = backend.random(rng, (n, c, h, w)), backend.random(rng, (f, c, k, k))
    out = conv2d(x, weight, None, stride, padding)
    oh, ow = out.shape[2:]
    grad_out = backend.random(rng, tuple(out.shape))
    gemm_a = backend.random(rng, (n * oh * ow, c * k * k))
    gemm_b = backend.random(rng, (c * k * k, f))
    times = {
        "gemm": _best_time(lambda: xp.matmul(gemm_a, gemm_b), backend, repeat),
        "forward": _best_time(lambda: conv2d(x, weight, None, stride, padding), backend, repeat),
        "backward": _best_time(
            lambda: conv2d_backward(grad_out, x, weight, stride, padding), backend, repeat
        ),
        "torch_forward": None,
        "torch_backward": None,
    }
    if torch is not None:
        xt, wt, gt = (backend.to_torch(a) for a in (x, weight, grad_out))
        conv = torch.nn.functional.conv2d
        times["torch_forward"] = _best_time(
            lambda: conv(xt, wt, None, stride, padding), backend, repeat
        )
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
                1,
                [True, True, True],
            ),
            backend,
            repeat,
        )
    memory = conv2d_workspace_bytes((n, c, h, w), (f, c, k, k), stride, padding)
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
        },
        "gemm_shape": [n * oh * ow, c * k * k, f],
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
    _, n, c, h, w, f, k, stride, padding = shape
    outputs = NAIVE_BATCH * f * ((h + 2 * padding - k) // stride + 1) ** 2
    if backend.name != "numpy" or outputs > NAIVE_MAX_OUTPUTS:
        return None
    x, weight = backend.random(rng, (NAIVE_BATCH, c, h, w)), backend.random(rng, (f, c, k, k))
    naive = _best_time(lambda: conv2d_naive(x, weight, None, stride, padding), backend, 1)
    fast = _best_time(lambda: conv2d(x, weight, None, stride, padding), backend, repeat)
    return {"batch": NAIVE_BATCH, "naive_s": naive, "ours_s": fast, "speedup": naive / fast}


# --------------------------------------------------------------------------- pooling


def _pool_functions() -> tuple[dict[str, tuple[Callable, Callable]] | None, str]:
    try:
        functional = importlib.import_module("cnn_course.functional")
        return {
            "max": (functional.max_pool2d, functional.max_pool2d_backward),
            "avg": (functional.avg_pool2d, functional.avg_pool2d_backward),
        }, ""
    except (ImportError, AttributeError) as exc:
        return None, f"pooling is not available yet ({type(exc).__name__}: {exc})"


def _bench_pool(shape: tuple, funcs: dict, backend: _Backend, repeat: int, rng) -> dict:
    name, kind, n, c, h, w, k, stride, padding = shape
    forward, backward = funcs[kind]
    x = backend.random(rng, (n, c, h, w))
    out = forward(x, k, stride, padding)
    grad_out = backend.random(rng, tuple(out.shape))
    times = {
        "forward": _best_time(lambda: forward(x, k, stride, padding), backend, repeat),
        "backward": _best_time(lambda: backward(grad_out, x, k, stride, padding), backend, repeat),
        "torch_forward": None,
        "torch_backward": None,
    }
    torch = backend.torch
    if torch is not None:
        xt, gt = backend.to_torch(x), backend.to_torch(grad_out)
        aten, ks, ss, ps = torch.ops.aten, [k, k], [stride, stride], [padding, padding]
        if kind == "max":
            _, indices = aten.max_pool2d_with_indices(xt, ks, ss, ps)
            fwd = lambda: torch.nn.functional.max_pool2d(xt, k, stride, padding)  # noqa: E731
            bwd = lambda: aten.max_pool2d_with_indices_backward(  # noqa: E731
                gt, xt, ks, ss, ps, [1, 1], False, indices
            )
        else:
            fwd = lambda: torch.nn.functional.avg_pool2d(xt, k, stride, padding)  # noqa: E731
            bwd = lambda: aten.avg_pool2d_backward(  # noqa: E731
                gt, xt, ks, ss, ps, False, True, None
            )
        times["torch_forward"] = _best_time(fwd, backend, repeat)
        times["torch_backward"] = _best_time(bwd, backend, repeat)
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
        },
    }


# --------------------------------------------------------------------------- LeNet epoch


def _bench_lenet(quick: bool) -> dict[str, Any]:
    if quick:
        return {"unavailable": "skipped with --quick"}
    try:
        training = importlib.import_module("cnn_course.training")
        bench_lenet_epoch = training.bench_lenet_epoch
    except (ImportError, AttributeError):
        return {"unavailable": "cnn_course.training.bench_lenet_epoch does not exist yet"}
    result = dict(bench_lenet_epoch())
    result["ratio"] = _ratio(result.get("ours_s"), result.get("torch_s"))
    return result


# --------------------------------------------------------------------------- summary


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _summary(conv: list[dict], pool: list[dict], lenet: dict) -> dict[str, Any]:
    def ratios(rows: list[dict], key: str) -> list[float]:
        return [r["ratios"][key] for r in rows if r["ratios"][key] is not None]

    fwd_gemm = ratios(conv, "forward_vs_gemm")
    fwd, bwd = ratios(conv, "forward_vs_torch"), ratios(conv, "backward_vs_torch")
    max_rows = [r for r in pool if r["kind"] == "max"]
    max_pool = ratios(max_rows, "forward_vs_torch") + ratios(max_rows, "backward_vs_torch")
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
            "pooling",
            ["layer", "fwd", "torch fwd", "fwd/torch", "bwd", "torch bwd", "bwd/torch"],
            [
                [
                    r["name"],
                    _fmt_s(r["times_s"]["forward"]),
                    _fmt_s(r["times_s"]["torch_forward"]),
                    _fmt_r(r["ratios"]["forward_vs_torch"]),
                    _fmt_s(r["times_s"]["backward"]),
                    _fmt_s(r["times_s"]["torch_backward"]),
                    _fmt_r(r["ratios"]["backward_vs_torch"]),
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
    _print_table(
        "DESIGN targets",
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
    repeat = repeat or (2 if quick else 7)
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
        funcs, pool_note = _pool_functions()
        pool = []
        if funcs is None:
            notes.append(pool_note)
        else:
            pool = [
                _bench_pool(s, funcs, backend, repeat, rng)
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
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
