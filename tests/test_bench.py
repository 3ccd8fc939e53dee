"""The benchmark harness: a quick run writes a complete, sane JSON report."""

from __future__ import annotations

import json
import math
import os

import pytest

from cnn_course import bench
from cnn_course.ops._engine import compiled


def finite_positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", "--json", str(path), "--threads", "1,2"]) == 0
    return json.loads(path.read_text(encoding="utf-8"))


RUN_KEYS = {"threads", "conv", "pool", "lenet_epoch", "summary"}


def test_quick_report_structure(report):
    assert set(report) == {"meta", "notes", "single_thread"} | RUN_KEYS
    assert report["meta"]["quick"] is True
    assert report["meta"]["thread_counts"] == [1, 2]
    assert report["meta"]["threads"] == report["threads"] == 2
    assert report["single_thread"]["threads"] == 1 and set(report["single_thread"]) == RUN_KEYS
    assert report["meta"]["dtype"] == "float32"
    assert [run["threads"] for run in bench.runs(report)] == [1, 2]
    for run in bench.runs(report):
        assert [r["name"] for r in run["conv"]] == [s.name for s in bench.QUICK_CONV_SHAPES]
        assert set(run["summary"]) == {t.key for t in bench.TARGETS}
        for target in run["summary"].values():
            assert set(target) == {"value", "limit", "met", "meaning"}
            assert target["met"] in (True, False, None)


def test_thread_counts_are_parsed():
    assert bench.parse_threads("1,all") == sorted({1, os.cpu_count()})
    assert bench.parse_threads("4,2,2") == [2, 4]
    with pytest.raises(ValueError, match="--threads"):
        bench.parse_threads("0")


def test_peak_extra_memory_is_measured():
    import numpy as np

    def makes_a_temporary():
        scratch = np.ones(2**20, dtype=np.uint8)  # 1 MiB, freed before returning
        return np.zeros(10, dtype=np.uint8) + scratch[:10]

    peak = bench.peak_extra_bytes(makes_a_temporary)
    assert 2**20 <= peak < 2**20 + 2**16


@pytest.mark.parametrize("run", [0, 1])
def test_quick_report_times_and_ratios_are_positive_finite(report, run):
    has_torch = report["meta"]["torch"] is not None
    report = bench.runs(report)[run]
    for row in report["conv"]:
        for key, value in row["times_s"].items():
            assert finite_positive(value) or (value is None and not has_torch), key
        for key, value in row["ratios"].items():
            assert finite_positive(value) or (value is None and not has_torch), key
        assert finite_positive(row["ratios"]["forward_vs_gemm"])
        n, k = row["gemm_shape"][0], row["gemm_shape"][1]
        assert row["memory_bytes"]["columns"] == n * k * 4  # float32 columns, whole batch
        # measured: the chunk's columns, their sources, and Python's own objects (a few KiB)
        assert 0 <= row["memory_bytes"]["peak"] <= 2 * row["memory_bytes"]["columns"] + 2**16
        assert row["plan"]["forward"]["algorithm"] == row["path"]
        assert row["naive"] is None or finite_positive(row["naive"]["speedup"])
    for row in report["pool"]:
        for value in row["times_s"].values():
            assert finite_positive(value) or (value is None and not has_torch)


def test_quick_report_says_what_is_missing(report):
    # Pooling and the LeNet row are either measured or explained, never silently absent.
    assert report["pool"] or any("pooling" in note for note in report["notes"])
    assert "unavailable" in report["lenet_epoch"] or finite_positive(report["lenet_epoch"]["ratio"])
    if report["meta"]["torch"] is None:
        assert any("PyTorch" in note for note in report["notes"])


def test_summary_compares_with_the_limits():
    rows = [
        {"ratios": {"forward_vs_gemm": 1.2, "forward_vs_torch": 1.0, "backward_vs_torch": 2.0}},
        {"ratios": {"forward_vs_gemm": 1.5, "forward_vs_torch": 1.44, "backward_vs_torch": 1.0}},
    ]
    summary = bench._summary(rows, [], {"unavailable": "no"})
    assert summary["conv_forward_vs_gemm_worst"]["value"] == 1.5
    assert summary["conv_forward_vs_gemm_worst"]["met"] is False
    assert summary["conv_forward_vs_torch_geomean"]["value"] == pytest.approx(1.2)
    assert summary["conv_forward_vs_torch_geomean"]["met"] is True
    assert summary["conv_backward_vs_torch_worst"]["met"] is True
    assert summary["lenet_epoch_vs_torch"]["met"] is None
    # on a GPU the forward geometric mean is held to 1.5x cuDNN
    gpu = bench._summary(
        [{**rows[0], "ratios": {**rows[0]["ratios"], "forward_vs_torch": 1.4}}],
        [],
        {"unavailable": "no"},
        gpu=True,
    )
    assert gpu["conv_forward_vs_torch_geomean"]["limit"] == 1.5
    assert gpu["conv_forward_vs_torch_geomean"]["met"] is True


def test_pointwise_target_holds_a_1x1_layer_to_its_gemm():
    rows = [
        {
            "path": "gemm",
            "ratios": {"forward_vs_gemm": 1.15, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
        {
            "path": "im2col",
            "ratios": {"forward_vs_gemm": 1.25, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
    ]
    summary = bench._summary(rows, [], {"unavailable": "no"})
    assert summary["conv_pointwise_vs_gemm_worst"]["value"] == 1.15
    assert summary["conv_pointwise_vs_gemm_worst"]["met"] is False
    assert summary["conv_forward_vs_gemm_worst"]["value"] == 1.25


@pytest.mark.parametrize("direct", ["direct", "direct-numba"])
def test_gemm_target_leaves_out_the_direct_path(direct):
    rows = [
        {
            "path": "im2col",
            "ratios": {"forward_vs_gemm": 1.2, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
        {
            "path": direct,
            "ratios": {"forward_vs_gemm": 2.0, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
    ]
    summary = bench._summary(rows, [], {"unavailable": "no"})
    assert summary["conv_forward_vs_gemm_worst"]["value"] == 1.2


def test_max_pool_target_compares_like_with_like():
    # The backward that recomputes the arg-max (10x) and forward+backward are reported but
    # not held to the target; the forward and the backward from saved indices are.
    ratios = {
        "forward_vs_torch": 0.5,
        "backward_vs_torch": 10.0,
        "backward_from_indices_vs_torch": 2.5,
        "forward_backward_vs_torch": 3.5,
    }
    pool = [
        {"kind": "max", "ratios": ratios},
        {"kind": "avg", "ratios": {**ratios, "forward_vs_torch": 9.0}},
    ]
    summary = bench._summary([], pool, {"unavailable": "no"})
    assert summary["max_pool_vs_torch_worst"]["value"] == 2.5
    assert summary["max_pool_vs_torch_worst"]["met"] is False


def test_quick_report_says_which_path_each_layer_runs(report):
    paths = {r["name"]: r["path"] for r in report["conv"]}
    # the depthwise layer runs compiled where numba is installed (and not switched off)
    direct = "direct-numba" if compiled.enabled() else "direct"
    assert report["meta"]["numba"] == (
        compiled.numba_version() if direct != "direct" else f"off: {compiled.unavailable()}"
    )
    assert paths["tiny depthwise 3x3, 8 ch, 12x12"] == direct
    assert paths["tiny 1x1, 8->4, 12x12"] == "gemm"
    assert set(paths.values()) == {direct, "im2col", "gemm"}
    for row in report["conv"]:  # the plan's thread count is the run's (a small blocked
        # kernel's, one: see BLOCKED_MIN_PARALLEL_MACS)
        for how in row["plan"].values():
            small = how["algorithm"] == "blocked-numba"
            assert how["threads"] in ({1, report["threads"]} if small else {report["threads"]})


def test_quick_report_times_max_pooling_both_ways(report):
    for row in report["pool"]:
        assert ("backward_from_indices" in row["times_s"]) == (row["kind"] == "max")
        assert finite_positive(row["times_s"]["forward_backward"])


def test_cpu_timer_needs_one_thread():
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--timer", "cpu", "--threads", "2"])


@pytest.mark.slow
def test_bench_lenet_epoch_reports_both_timings():
    result = bench.bench_lenet_epoch(batch_size=64, seed=0, train_size=500)
    assert result["images"] == 500 and result["ours_s"] > 0
    if result["torch_s"] is not None:
        assert result["ratio"] == pytest.approx(result["ours_s"] / result["torch_s"])
