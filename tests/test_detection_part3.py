"""Chapter 21: IoU losses (against torchvision's own loss modules), their backward passes
(float64 gradient checks and PyTorch autograd), Soft-NMS, FCOS targets, Hungarian matching
(against SciPy, in the tests only)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import os
import sys
import types

import numpy as np
import pytest

from cnn_course import detection as D
from cnn_course.gradcheck import check_gradients

LOSSES = {
    "giou": (
        D.generalized_box_iou_loss,
        D.generalized_box_iou_loss_backward,
        "giou_loss",
        "generalized_box_iou_loss",
    ),
    "diou": (
        D.distance_box_iou_loss,
        D.distance_box_iou_loss_backward,
        "diou_loss",
        "distance_box_iou_loss",
    ),
    "ciou": (
        D.complete_box_iou_loss,
        D.complete_box_iou_loss_backward,
        "ciou_loss",
        "complete_box_iou_loss",
    ),
}


@pytest.fixture(scope="module")
def torchvision_losses(torch):
    """torchvision's pure-PyTorch IoU-loss modules, loaded from their files.

    ``import torchvision`` fails beside this torch build (its compiled operators do not
    register), but ``torchvision/ops/{giou,diou,ciou}_loss.py`` and ``_utils.py`` use torch
    only. They are imported as submodules of a stand-in package whose ``utils`` provides the
    one helper they need (an API-usage logger), without running torchvision's ``__init__``.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            pytest.fail("CI must run the torchvision oracle: pip install -e '.[oracle]'")
        pytest.skip("torchvision (oracle extra) is not installed")
    ops_dir = os.path.join(spec.submodule_search_locations[0], "ops")
    root = types.ModuleType("_tv_oracle")
    root.__path__ = []
    utils = types.ModuleType("_tv_oracle.utils")
    utils._log_api_usage_once = lambda *args: None
    ops = types.ModuleType("_tv_oracle.ops")
    ops.__path__ = [ops_dir]
    sys.modules.update({"_tv_oracle": root, "_tv_oracle.utils": utils, "_tv_oracle.ops": ops})
    return {
        key: getattr(importlib.import_module(f"_tv_oracle.ops.{module}"), name)
        for key, (_, _, module, name) in LOSSES.items()
    }


def random_boxes(rng, n):
    xy = rng.uniform(0, 10, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, 5, (n, 2))], axis=1)


def test_giou_hand_example():
    # A = (0,0,2,2), B = (1,1,3,3): intersection 1, union 7, enclosing box 3 x 3 = 9
    a, b = np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 1, 3, 3]])
    assert D.generalized_box_iou_loss(a, b, eps=0)[0] == pytest.approx(1 - 1 / 7 + 2 / 9)
    # disjoint: IoU 0, (0,0,1,1) and (2,0,3,1): enclosing 3 x 1, union 2 -> 1 + 1/3
    c, d = np.array([[0.0, 0, 1, 1]]), np.array([[2.0, 0, 3, 1]])
    assert D.generalized_box_iou_loss(c, d, eps=0)[0] == pytest.approx(4 / 3)
    # DIoU: centres (1, 1) and (2, 2): rho^2 = 2, diagonal^2 = 18
    assert D.distance_box_iou_loss(a, b, eps=0)[0] == pytest.approx(1 - 1 / 7 + 2 / 18)
    # CIoU: a rectangle 4 x 2 against a square 2 x 2 with the same centre
    r, s = np.array([[0.0, 0, 4, 2]]), np.array([[1.0, 0, 3, 2]])
    v = 4 / math.pi**2 * (math.atan(1) - math.atan(2)) ** 2
    alpha = v / (1 - 0.5 + v)
    assert D.complete_box_iou_loss(r, s, eps=0)[0] == pytest.approx(0.5 + alpha * v, rel=1e-6)


@pytest.mark.oracle
@pytest.mark.parametrize("key", list(LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_iou_losses_match_torchvision(torch, torchvision_losses, rng, key, reduction):
    forward, backward, _, _ = LOSSES[key]
    a, b = random_boxes(rng, 40), random_boxes(rng, 40)
    a[0] = b[0]  # identical boxes: every max and min ties
    a[1, :2] = b[1, :2]  # shared corner
    a[2, 0] = b[2, 2]  # touching edges (zero-area intersection)
    a[3] = b[3] + [20, 0, 20, 0]  # disjoint
    for eps in (1e-7, 1e-2):
        ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
        expected = torchvision_losses[key](ta, tb, reduction=reduction, eps=eps)
        grad = rng.standard_normal(tuple(expected.shape))
        expected.backward(torch.tensor(grad))
        got = forward(a, b, reduction, eps)
        assert got.shape == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
        grad_a, grad_b = backward(grad, a, b, reduction, eps)
        np.testing.assert_allclose(grad_a, ta.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grad_b, tb.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.oracle
def test_single_box_and_empty_inputs_match_torchvision(torch, torchvision_losses):
    a, b = np.array([0.0, 0, 2, 2]), np.array([1.0, 1, 3, 4])
    for key, (forward, _, _, _) in LOSSES.items():
        tv = torchvision_losses[key]
        assert forward(a, b).shape == ()
        assert float(forward(a, b)) == pytest.approx(float(tv(torch.tensor(a), torch.tensor(b))))
        empty = np.zeros((0, 4))
        assert float(forward(empty, empty, "mean")) == 0.0
        assert float(tv(torch.tensor(empty), torch.tensor(empty), reduction="mean")) == 0.0


@pytest.mark.parametrize("key", list(LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_iou_loss_backward_gradcheck(rng, key, reduction):
    forward, backward, _, _ = LOSSES[key]
    # coordinates of order 1: gradients of order 1, well above the differences' round-off
    a, b = random_boxes(rng, 6) / 10, random_boxes(rng, 6) / 10
    a[5] = b[5] + [1.2, 0.3, 1.2, 0.3]  # a disjoint pair: GIoU and DIoU still have a gradient
    grad = rng.standard_normal(6) if reduction == "none" else np.asarray(rng.standard_normal())
    analytic = backward(grad, a, b, reduction)
    if key == "ciou":  # alpha is a constant of the backward pass: check with it frozen
        _, v, alpha, _ = D._ciou_terms(a, b, 1e-7)

        def f(p, q):
            diou = D.distance_box_iou_loss(p, q, "none", 1e-7)
            t = D._ciou_terms(p, q, 1e-7)[3]
            loss = diou + alpha * (4 / math.pi**2) * t["angle"] ** 2
            return D._reduce(loss, reduction)
    else:

        def f(p, q):
            return forward(p, q, reduction)

    check_gradients(f, [a, b], analytic, grad, ["boxes1", "boxes2"])


def test_giou_gradient_is_nonzero_for_disjoint_boxes_and_iou_loss_is_not():
    a, b = np.array([[0.0, 0, 1, 1]]), np.array([[3.0, 0, 4, 1]])
    grad_a, _ = D.generalized_box_iou_loss_backward(np.ones(1), a, b)
    assert np.abs(grad_a).sum() > 0
    # 1 - IoU has zero gradient there: IoU is 0 in a neighbourhood
    assert D.box_iou(a + 1e-3, b)[0, 0] == D.box_iou(a, b)[0, 0] == 0


def test_iou_losses_reject_bad_input():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match="reduction"):
        D.generalized_box_iou_loss(a, a, reduction="avg")
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(2, 4\)"):
        D.distance_box_iou_loss(a, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="boxes1"):
        D.complete_box_iou_loss(a.astype(int), a)
    with pytest.raises(ValueError, match="grad_out"):
        D.generalized_box_iou_loss_backward(np.ones(2), a, a)
    b = a.copy()
    D.generalized_box_iou_loss_backward(np.ones(3), a + [0, 0, 1, 1], b + [0, 0, 2, 2])
    assert (b == 0).all()


# ------------------------------------------------------------------------------ Soft-NMS


def _soft_nms_loop(boxes, scores, method, nt, sigma, thresh):
    """Bodla et al.'s Algorithm 1, written with Python lists."""

    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = w * h
        return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)

    s = list(map(float, scores))
    left = list(range(len(s)))
    keep, kept = [], []
    while left:
        m = max(left, key=lambda i: (s[i], -i))
        keep.append(m)
        kept.append(s[m])
        left.remove(m)
        for i in left:
            o = iou(boxes[m], boxes[i])
            if method == "gaussian":
                s[i] *= math.exp(-o * o / sigma)
            elif o >= nt:
                s[i] *= 1 - o
        left = [i for i in left if s[i] >= thresh]
    return keep, kept


def test_soft_nms_hand_example():
    boxes = np.array([[0.0, 0, 10, 10], [0.0, 0, 10, 5], [20.0, 20, 30, 30]])
    scores = np.array([0.9, 0.8, 0.7])
    keep, new = D.soft_nms(boxes, scores, iou_threshold=0.3, method="linear")
    # IoU(box 0, box 1) = 50 / 100 = 0.5 -> 0.8 * (1 - 0.5) = 0.4; box 2 untouched
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(new, [0.9, 0.7, 0.4])
    keep, new = D.soft_nms(boxes, scores, sigma=0.5)
    np.testing.assert_allclose(new, [0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)])


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_matches_the_algorithm(rng, method):
    for _ in range(20):
        n = int(rng.integers(1, 15))
        centres = rng.uniform(0, 10, (3, 2))[rng.integers(0, 3, n)] + rng.normal(0, 1, (n, 2))
        boxes = np.concatenate([centres, centres + rng.uniform(2, 5, (n, 2))], axis=1)
        scores = rng.uniform(0.05, 1, n)
        keep, new = D.soft_nms(boxes, scores, 0.3, 0.5, 0.1, method)
        ref_keep, ref_scores = _soft_nms_loop(boxes, scores, method, 0.3, 0.5, 0.1)
        assert keep.tolist() == ref_keep
        np.testing.assert_allclose(new, ref_scores, rtol=1e-12)


def test_soft_nms_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        D.soft_nms(np.zeros((1, 4)), np.ones(1), method="hard")
    with pytest.raises(ValueError, match="one score per box"):
        D.soft_nms(np.zeros((2, 4)), np.ones(1))


# ---------------------------------------------------------------------------- FCOS targets


def test_ltrb_and_centerness_hand_example():
    points = np.array([[5.0, 5.0], [2.0, 8.0], [12.0, 5.0]])
    boxes = np.array([[0.0, 0, 10, 10]])
    ltrb = D.ltrb_targets(points, boxes)[:, 0]
    np.testing.assert_array_equal(ltrb, [[5, 5, 5, 5], [2, 8, 8, 2], [12, 5, -2, 5]])
    assert D.centerness(ltrb[:2]).tolist() == pytest.approx([1.0, 0.25])


def test_fcos_assign_prefers_the_smaller_box_and_respects_the_size_range():
    points = np.array([[5.0, 5.0], [15.0, 15.0], [50.0, 50.0]])
    boxes = np.array([[0.0, 0, 20, 20], [2.0, 2, 8, 8]])
    assigned, targets = D.fcos_assign(points, boxes)
    assert assigned.tolist() == [1, 0, -1]
    np.testing.assert_array_equal(targets[2], 0)
    np.testing.assert_array_equal(targets[0], [3, 3, 3, 3])
    assigned, _ = D.fcos_assign(points, boxes, size_range=(8, 64))  # the small box is too small
    assert assigned.tolist() == [0, 0, -1]


# ---------------------------------------------------------------------- Hungarian matching


def test_hungarian_hand_example():
    cost = np.array([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]])
    rows, cols = D.hungarian_match(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]
    assert cost[rows, cols].sum() == 5  # greedy (row 1 takes its 0 first) pays 6


def test_hungarian_matches_brute_force_and_scipy(rng):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    for trial in range(200):
        n, m = (int(v) for v in rng.integers(1, 7, 2))
        cost = rng.standard_normal((n, m))
        if trial % 3 == 0:
            cost = np.round(cost)  # ties
        rows, cols = D.hungarian_match(cost)
        ref_rows, ref_cols = scipy_optimize.linear_sum_assignment(cost)
        naive_rows, naive_cols = D.hungarian_match_naive(cost)
        assert len(rows) == min(n, m) and len(set(cols.tolist())) == len(cols)
        assert (np.diff(rows) > 0).all()
        total = cost[rows, cols].sum()
        assert total == pytest.approx(cost[ref_rows, ref_cols].sum(), abs=1e-12)
        assert total == pytest.approx(cost[naive_rows, naive_cols].sum(), abs=1e-12)
    big = rng.standard_normal((60, 80))
    rows, cols = D.hungarian_match(big)
    ref = scipy_optimize.linear_sum_assignment(big)
    assert big[rows, cols].sum() == pytest.approx(big[ref].sum(), abs=1e-9)


def test_hungarian_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        D.hungarian_match(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="2 dimensions"):
        D.hungarian_match(np.ones(3))


def test_cnn_course_does_not_import_scipy():
    import cnn_course

    root = os.path.dirname(cnn_course.__file__)
    for path in itertools.chain.from_iterable(
        (os.path.join(d, f) for f in files if f.endswith(".py")) for d, _, files in os.walk(root)
    ):
        text = open(path, encoding="utf-8").read()
        assert "import scipy" not in text and "from scipy" not in text, path
