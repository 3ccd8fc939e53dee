"""The Part III exercises (chapters 21 to 23): the solutions score full marks, the stubs zero,
and each typical bug loses exactly the cases it should.

Case templates (cnn_course.grading.cases):
- generalized_box_iou_loss: 0 "none" float64, 1 "mean", 2 "sum" with eps = 0.5, 3 "none"
  float32; every case holds a pair disjoint along both axes, an identical and a contained
  pair.
- scaled_dot_product_attention_backward: 0 plain float64, 1 causal, 2 boolean mask float32,
  3 scale = 0.5.
- fold_batch_norm: 0 conv with bias, 1 linear without bias, 2 conv float32 with eps = 1e-3.
- calibrate: 0 int8 symmetric per channel, 1 uint8 affine per channel, 2 uint8 affine per
  tensor; channel 0 of every case has no negative values.
- quantize_per_channel: 0 int8 with zero points 0 (axis 0), 1 uint8 affine (axis 1), 2 int8
  affine (axis 0); every case has values on half steps and values outside the range.
"""

from __future__ import annotations

import pytest

from cnn_course.grading.runner import grade
from tests.grading.conftest import SEED, checks, variant

PART3 = {
    "generalized_box_iou_loss": 8,
    "scaled_dot_product_attention_backward": 8,
    "fold_batch_norm": 6,
    "calibrate": 6,
    "quantize_per_channel": 6,
}
FUNCTION = {"quantize_per_channel": "quantize"}


def test_part3_solutions_score_full_marks(grade_with):
    report = grade_with({}, list(PART3))
    assert [c for e in PART3 for c in checks(report, e) if c] == []
    assert report["total"] == report["max_total"] == sum(PART3.values())


def test_part3_stubs_score_zero(copy_of_exercises):
    report = grade(copy_of_exercises, exercise_ids=list(PART3), seed=SEED, run_notebooks=False)
    assert report["total"] == 0 and report["max_total"] == sum(PART3.values())
    for exercise in PART3:
        assert set(checks(report, exercise)) == {"raised"}


BUGS = {
    # exercise: {bug: (edits to the solution, failed check per case)}
    "generalized_box_iou_loss": {
        "plain IoU loss (no enclosing-box term)": (
            [("loss = 1 - iou + (area_c - union) / (area_c + eps)", "loss = 1 - iou")],
            ["values"] * 4,
        ),
        "intersection not masked (disjoint boxes overlap)": (
            [
                (
                    "np.where((inter_w > 0) & (inter_h > 0), inter_w * inter_h, 0.0)",
                    "inter_w * inter_h",
                )
            ],
            ["values"] * 4,
        ),  # fmt: skip
        "reduction ignored": (
            [
                ('    if reduction == "mean":\n        return loss.mean()\n', ""),
                ('    if reduction == "sum":\n        return loss.sum()\n', ""),
            ],
            [None, "type", "type", None],
        ),  # fmt: skip
        "eps dropped": (
            [("iou = inter / (union + eps)", "iou = inter / union"), ("(area_c + eps)", "area_c")],
            # the identical pair's loss is eps / area instead of 0: beyond float64's atol
            ["values", None, "values", None],
        ),  # fmt: skip
    },
    "scaled_dot_product_attention_backward": {
        "softmax Jacobian without the row-sum term": (
            [
                (
                    "grad_scores = weights * (grad_weights - rowsum)",
                    "grad_scores = weights * grad_weights",
                )
            ],
            ["values"] * 4,
        ),  # fmt: skip
        "scale forgotten in grad_q and grad_k": (
            [
                ("grad_q = (grad_scores @ k) * s", "grad_q = grad_scores @ k"),
                (
                    "grad_k = (np.swapaxes(grad_scores, -1, -2) @ q) * s",
                    "grad_k = np.swapaxes(grad_scores, -1, -2) @ q",
                ),
            ],
            ["values"] * 4,
        ),  # fmt: skip
        "causal mask ignored": (
            [("    if is_causal:\n", "    if False:\n")],
            [None, "values", None, None],
        ),
        "default scale used always": (
            [
                (
                    "s = 1 / np.sqrt(q.shape[-1]) if scale is None else scale",
                    "s = 1 / np.sqrt(q.shape[-1])",
                )
            ],
            [None, None, None, "values"],
        ),  # fmt: skip
        "always float64": (
            [
                (
                    "return grad_q.astype(q.dtype), grad_k.astype(k.dtype), grad_v.astype(v.dtype)",
                    "return grad_q, grad_k, grad_v",
                )
            ],
            [None, None, "dtype", None],
        ),  # fmt: skip
    },
    "fold_batch_norm": {
        "variance instead of standard deviation": (
            [("np.sqrt(running_var + eps)", "(running_var + eps)")],
            ["values"] * 3,
        ),
        "running mean not subtracted": (
            [("(bias - running_mean) * s + bn_bias", "bias * s + bn_bias")],
            ["values"] * 3,
        ),
        "no bias crashes": (
            [("    if bias is None:\n        bias = np.zeros_like(running_mean)\n", "")],
            [None, "raised", None],
        ),
    },
    "calibrate": {
        "range not widened to include zero": (
            [("    lo = np.minimum(lo, np.float32(0))\n", "")],
            [None, "values", None],
        ),
        "divides by 127 instead of 127.5": (
            [("np.float32((q_max - q_min) / 2)", "np.float32((q_max - q_min) // 2)")],
            ["values", None, None],
        ),
    },
    "quantize_per_channel": {
        "no clamping": (
            [("np.clip(np.rint(shifted), q_min, q_max)", "np.rint(shifted)")],
            ["values"] * 3,
        ),
        "zero point ignored": (
            [(" + zero_point.astype(np.float32)", "")],
            [None, "values", "values"],
        ),
        "rounds halves up": (
            [("np.rint(shifted)", "np.floor(shifted + 0.5)")],
            ["values"] * 3,
        ),
    },
}
CASES = [(exercise, bug) for exercise, bugs in BUGS.items() for bug in bugs]


@pytest.mark.parametrize(("exercise", "bug"), CASES)
def test_part3_bug_loses_exactly_its_cases(grade_with, exercise, bug):
    edits, expected = BUGS[exercise][bug]
    function = FUNCTION.get(exercise, exercise)
    report = grade_with({function: variant(function, *edits)}, [exercise])
    assert checks(report, exercise) == expected
    per_case = PART3[exercise] / len(expected)
    assert report["total"] == per_case * expected.count(None)
