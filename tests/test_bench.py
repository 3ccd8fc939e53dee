"""The benchmark harness: a quick run writes a complete, sane JSON report."""

from __future__ import annotations

import json
import math

import pytest

from cnn_course import bench


def finite_positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", "--json", str(path), "--threads", "1"]) == 0
    return json.loads(path.read_text(encoding="utf-8"))


def test_quick_report_structure(report):
    assert set(report) == {"meta", "notes", "conv", "pool", "lenet_epoch", "summary"}
    assert report["meta"]["quick"] is True
    assert report["meta"]["threads"] == 1
    assert report["meta"]["dtype"] == "float32"
    assert [r["name"] for r in report["conv"]] == [s[0] for s in bench.QUICK_CONV_SHAPES]
    assert set(report["summary"]) == {key for key, _, _ in bench.TARGETS}
    for target in report["summary"].values():
        assert set(target) == {"value", "limit", "met", "meaning"}
        assert target["met"] in (True, False, None)


def test_quick_report_times_and_ratios_are_positive_finite(report):
    has_torch = report["meta"]["torch"] is not None
    for row in report["conv"]:
        for key, value in row["times_s"].items():
            assert finite_positive(value) or (value is None and not has_torch), key
        for key, value in row["ratios"].items():
            assert finite_positive(value) or (value is None and not has_torch), key
        assert finite_positive(row["ratios"]["forward_vs_gemm"])
        n, k = row["gemm_shape"][0], row["gemm_shape"][1]
        assert row["memory_bytes"]["columns"] == n * k * 4  # float32 columns, whole batch
        assert 0 <= row["memory_bytes"]["peak"] <= 2 * row["memory_bytes"]["columns"]
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
        {"ratios": {"forward_vs_gemm": 1.2, "forward_vs_torch": 1.0, "backward_vs_torch": 4.0}},
        {"ratios": {"forward_vs_gemm": 1.5, "forward_vs_torch": 4.0, "backward_vs_torch": 1.0}},
    ]
    summary = bench._summary(rows, [], {"unavailable": "no"})
    assert summary["conv_forward_vs_gemm_worst"]["value"] == 1.5
    assert summary["conv_forward_vs_gemm_worst"]["met"] is False
    assert summary["conv_forward_vs_torch_geomean"]["value"] == pytest.approx(2.0)
    assert summary["conv_forward_vs_torch_geomean"]["met"] is True
    assert summary["conv_backward_vs_torch_worst"]["met"] is True
    assert summary["lenet_epoch_vs_torch"]["met"] is None


def test_gemm_target_leaves_out_the_direct_path():
    rows = [
        {
            "path": "im2col",
            "ratios": {"forward_vs_gemm": 1.2, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
        {
            "path": "direct",
            "ratios": {"forward_vs_gemm": 2.0, "forward_vs_torch": 1.0, "backward_vs_torch": 1.0},
        },
    ]
    summary = bench._summary(rows, [], {"unavailable": "no"})
    assert summary["conv_forward_vs_gemm_worst"]["value"] == 1.2


def test_max_pool_target_compares_like_with_like():
    # The backward that recomputes the arg-max (10x) is reported but not held to the target;
    # the backward from saved indices and forward+backward are.
    ratios = {
        "forward_vs_torch": 0.5,
        "backward_vs_torch": 10.0,
        "backward_from_indices_vs_torch": 2.0,
        "forward_backward_vs_torch": 3.5,
    }
    pool = [
        {"kind": "max", "ratios": ratios},
        {"kind": "avg", "ratios": {**ratios, "forward_vs_torch": 9.0}},
    ]
    summary = bench._summary([], pool, {"unavailable": "no"})
    assert summary["max_pool_vs_torch_worst"]["value"] == 3.5
    assert summary["max_pool_vs_torch_worst"]["met"] is False


def test_quick_report_says_which_path_each_layer_runs(report):
    paths = {r["name"]: r["path"] for r in report["conv"]}
    assert paths["tiny depthwise 3x3, 8 ch, 12x12"] == "direct"
    assert set(paths.values()) == {"direct", "im2col"}


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
