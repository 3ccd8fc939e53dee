"""IoU, NMS, RoI pool/align and average precision: hand-worked cases first, then brute-force
references (direct ports of the loop definitions) on random inputs, then bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_course.detection import (
    average_precision,
    batched_nms,
    box_iou,
    mean_average_precision,
    nms,
    precision_recall,
    roi_align,
    roi_pool,
)


def _map4(xp, dtype="float64"):
    """The 4 x 4 map x[r, c] = 4 r + c (a linear function, so bilinear sampling is exact:
    the value at a point (y, x) inside the map is 4 y + x)."""
    return xp.arange(16, dtype=dtype).reshape(1, 1, 4, 4)


# --- IoU and NMS ---------------------------------------------------------------------------


def test_box_iou_hand_example(xp):
    a = xp.asarray([[0.0, 0, 2, 2]])
    b = xp.asarray([[1.0, 1, 3, 3], [0, 0, 2, 2], [2, 2, 3, 3], [0, 0, 1, 4], [5, 5, 5, 5]])
    # overlap 1 of union 4 + 4 - 1; itself; touching corner; 1 x 2 of 4 + 4 - 2; empty box
    expected = [[1 / 7, 1.0, 0.0, 1 / 3, 0.0]]
    np.testing.assert_allclose(np.asarray(box_iou(a, b).tolist()), expected, rtol=1e-15)


def test_nms_hand_example_needs_iterating(xp):
    # A = [0, 10], B = [5, 15], C = [10, 20] along x (height 10). IoU(A, B) = IoU(B, C) =
    # 50 / 150 = 1/3, IoU(A, C) = 0. Scores A 0.9 > B 0.8 > C 0.7; input order C, A, B.
    boxes = xp.asarray([[10.0, 0, 20, 10], [0, 0, 10, 10], [5, 0, 15, 10]])
    scores = xp.asarray([0.7, 0.9, 0.8])
    # threshold 0.3: A suppresses B; C survives because B, which overlaps it, is gone
    assert nms(boxes, scores, 0.3).tolist() == [1, 0]
    # IoU exactly at the threshold is not suppressed ("> threshold")
    assert nms(boxes, scores, 1 / 3).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.0).tolist() == [1, 0]
    empty = nms(xp.zeros((0, 4)), xp.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == xp.int64


def _iou_scalar(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _nms_brute_force(boxes, scores, threshold):
    """The textbook loop: take the best remaining box, drop its overlaps, repeat."""
    remaining = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [j for j in remaining if _iou_scalar(boxes[best], boxes[j]) <= threshold]
    return keep


@settings(max_examples=40)
@given(
    n=st.integers(0, 30),
    threshold=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_nms_matches_brute_force(n, threshold, seed):
    rng = np.random.default_rng(seed)
    # integer corners on a small grid: many overlaps, exact IoU ties, some empty boxes
    corners = rng.integers(0, 12, size=(n, 2, 2)).astype(np.float64)
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    scores = rng.integers(0, 5, size=n) / 4.0  # ties between scores
    boxes_view = np.asfortranarray(boxes)  # non-contiguous rows
    expected = _nms_brute_force(boxes.tolist(), scores.tolist(), threshold)
    assert nms(boxes_view, scores, threshold).tolist() == expected


def test_batched_nms_hand_example(xp):
    # two identical boxes: in one category the lower score goes, in two categories both stay
    boxes = xp.asarray([[0.0, 0, 4, 4], [0, 0, 4, 4], [-3, -3, -1, -1]])
    scores = xp.asarray([0.5, 0.9, 0.1])
    assert batched_nms(boxes, scores, xp.asarray([0, 0, 0]), 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, xp.asarray([1, 0, 1]), 0.5).tolist() == [1, 0, 2]
    assert batched_nms(xp.zeros((0, 4)), xp.zeros(0), xp.zeros(0, dtype=xp.int64), 0.5).shape == (
        0,
    )


@settings(max_examples=25)
@given(n=st.integers(1, 25), seed=st.integers(0, 2**16))
def test_batched_nms_matches_per_class_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    corners = rng.integers(-6, 6, size=(n, 2, 2)).astype(np.float64)  # negative coordinates
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    scores = rng.integers(0, 4, size=n) / 3.0
    idxs = rng.integers(0, 3, size=n)
    keep = []
    for c in range(3):
        members = np.flatnonzero(idxs == c)
        kept = _nms_brute_force(boxes[members].tolist(), scores[members].tolist(), 0.4)
        keep += members[kept].tolist()
    expected = sorted(keep, key=lambda i: (-scores[i], i))
    assert batched_nms(boxes, scores, idxs, 0.4).tolist() == expected


@pytest.mark.oracle
def test_box_iou_matches_torch_formula(torch, rng):
    # torchvision is not installable beside this torch: its box_iou formula in torch ops
    a = rng.uniform(0, 10, (6, 2))
    a = np.concatenate([a, a + rng.uniform(0.5, 5, (6, 2))], axis=1)
    b = rng.uniform(0, 10, (5, 2))
    b = np.concatenate([b, b + rng.uniform(0.5, 5, (5, 2))], axis=1)
    ta, tb = torch.tensor(a), torch.tensor(b)
    lt = torch.max(ta[:, None, :2], tb[:, :2])
    rb = torch.min(ta[:, None, 2:], tb[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    expected = inter / (area(ta)[:, None] + area(tb) - inter)
    np.testing.assert_allclose(box_iou(a, b), expected.numpy(), rtol=1e-14)


# --- RoI pooling -----------------------------------------------------------------------------


def test_roi_pool_hand_example(xp):
    x = _map4(xp)
    rois = xp.asarray(
        [
            [0, 0.0, 0.0, 3.0, 3.0],  # whole map, 4 x 4 cells -> 2 x 2 bins of 2 x 2
            [0, 0.6, 0.4, 2.4, 2.6],  # rounds to x 1..2, y 0..3: bins 2 rows x 1 column
        ]
    )
    out = roi_pool(x, rois, 2)
    assert out.shape == (2, 1, 2, 2)
    assert out[0, 0].tolist() == [[5, 7], [13, 15]]
    assert out[1, 0].tolist() == [[5, 6], [13, 14]]
    # 3 x 3 bins over 4 cells: edges floor(k * 4/3), ceil((k + 1) * 4/3) = [0,2), [1,3), [2,4)
    # overlap; each bin's max is at its last row and column
    three = roi_pool(x, rois[:1], (3, 3))
    assert three[0, 0].tolist() == [[5, 6, 7], [9, 10, 11], [13, 14, 15]]


def test_roi_pool_rounds_half_away_from_zero_and_scales(xp):
    x = _map4(xp)
    # 0.5 * [2, 2, 5, 5] = [1, 1, 2.5, 2.5]; C's round(2.5) = 3 (round-half-even would give
    # 2): one bin over rows and columns 1..3, max x[3, 3] = 15 (not x[2, 2] = 10)
    out = roi_pool(x, xp.asarray([[0, 2.0, 2.0, 5.0, 5.0]]), 1, spatial_scale=0.5)
    assert out.tolist() == [[[[15.0]]]]
    # a RoI right of the map: every bin is empty and gives 0
    assert roi_pool(x, xp.asarray([[0, 10.0, 10.0, 12.0, 12.0]]), 2).tolist() == [
        [[[0.0, 0.0], [0.0, 0.0]]]
    ]


def test_roi_pool_picks_the_batch_image(xp):
    x = xp.concatenate([_map4(xp), -_map4(xp)])
    out = roi_pool(x, xp.asarray([[1, 0.0, 0.0, 1.0, 1.0]]), 1)
    assert out.tolist() == [[[[0.0]]]]  # max of -0, -1, -4, -5


def _roi_pool_loops(x, rois, ph_n, pw_n, scale):
    """Direct port of torchvision's CPU loops (roi_pool_kernel.cpp)."""
    k_n, (_, c_n, h_n, w_n) = len(rois), x.shape
    out = np.zeros((k_n, c_n, ph_n, pw_n), x.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh, ew, eh = (math.floor(abs(v * scale) + 0.5) * np.sign(v) for v in (x1, y1, x2, y2))
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        for ph in range(ph_n):
            hs = min(max(math.floor(ph * rh / ph_n) + sh, 0), h_n)
            he = min(max(math.ceil((ph + 1) * rh / ph_n) + sh, 0), h_n)
            for pw in range(pw_n):
                ws = min(max(math.floor(pw * rw / pw_n) + sw, 0), w_n)
                we = min(max(math.ceil((pw + 1) * rw / pw_n) + sw, 0), w_n)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = x[int(b), :, int(hs) : int(he), int(ws) : int(we)].max(
                        axis=(1, 2)
                    )
    return out


def _random_rois(rng, n_images, size, count):
    """RoIs that overhang the map, are tiny, or inverted (malformed), with batch indices."""
    xy = rng.uniform(-3, size + 3, (count, 2))
    wh = rng.uniform(-1, size, (count, 2))
    batch = rng.integers(0, n_images, (count, 1)).astype(np.float64)
    return np.concatenate([batch, xy, xy + wh], axis=1)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**16),
    out_h=st.integers(1, 4),
    out_w=st.integers(1, 4),
    scale=st.sampled_from([1.0, 0.5, 0.25]),
)
def test_roi_pool_matches_loops(seed, out_h, out_w, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 7, 9)).transpose(0, 1, 3, 2)  # non-contiguous (2, 3, 9, 7)
    rois = _random_rois(rng, 2, 9 / scale, 5)
    expected = _roi_pool_loops(x, rois, out_h, out_w, scale)
    np.testing.assert_array_equal(roi_pool(x, rois, (out_h, out_w), scale), expected)


# --- RoI align -----------------------------------------------------------------------------


def test_roi_align_hand_example(xp):
    x = _map4(xp)
    # [0, 2] x [0, 2] in 2 x 2 bins of size 1, 2 x 2 samples each at 0.25, 0.75 (+1):
    # each bin averages to its centre (0.5 or 1.5), value 4 y + x
    out = roi_align(x, xp.asarray([[0, 0.0, 0.0, 2.0, 2.0]]), 2, sampling_ratio=2)
    np.testing.assert_allclose(np.asarray(out.tolist())[0, 0], [[2.5, 3.5], [6.5, 7.5]])
    # the same box at spatial_scale 0.5 from image coordinates [0, 4]
    out = roi_align(x, xp.asarray([[0, 0.0, 0.0, 4.0, 4.0]]), 2, 0.5, 2)
    np.testing.assert_allclose(np.asarray(out.tolist())[0, 0], [[2.5, 3.5], [6.5, 7.5]])
    # aligned: the box moves by -0.5 to [-0.5, 1.5]; bin 0 samples -0.25 (clamped to 0) and
    # 0.25 -> mean 0.125; bin 1 samples 0.75, 1.25 -> mean 1.0. Value 4 y + x.
    out = roi_align(x, xp.asarray([[0, 0.0, 0.0, 2.0, 2.0]]), 2, sampling_ratio=2, aligned=True)
    np.testing.assert_allclose(np.asarray(out.tolist())[0, 0], [[0.625, 1.5], [4.125, 5.0]])


def test_roi_align_edges_and_adaptive_grid(xp):
    x = _map4(xp)

    def one(box, **kw):
        return float(roi_align(x, xp.asarray([[0.0, *box]]), 1, **kw)[0, 0, 0, 0])

    # adaptive grid ceil(3 / 1) = 3 samples per axis at 0.5, 1.5, 2.5: mean 1.5 -> 7.5
    assert one([0, 0, 3, 3]) == pytest.approx(7.5, abs=1e-14)
    # samples at 2.5 and 3.5; 3.5 is past the last row and is read at row 3: mean 2.75,
    # value 4 * 2.75 + 2.75 = 13.75
    assert one([2, 2, 4, 4]) == pytest.approx(13.75, abs=1e-14)
    # y samples 3.75 and 5.25 (> H = 4: that sample is 0 but still counted), x samples
    # 0.25 and 0.75 at row 3: (12.25 + 12.75 + 0 + 0) / 4 = 6.25
    assert one([0, 3, 1, 6], sampling_ratio=2) == pytest.approx(6.25, abs=1e-14)
    # a 0.2 x 0.2 box is widened to 1 x 1 (not aligned): one sample at (1.5, 1.5) -> 7.5
    assert one([1, 1, 1.2, 1.2]) == pytest.approx(7.5, abs=1e-14)
    # aligned keeps it at 0.2: ceil(0.2) = 1 sample at 0.6 (= 1.1 - 0.5) -> 3.0
    assert one([1, 1, 1.2, 1.2], aligned=True) == pytest.approx(3.0, abs=1e-14)


def test_roi_align_bilinear_hand_example(xp):
    # a map that is not linear: f(0.5, 0.5) = (0 + 1 + 2 + 4) / 4 = 1.75
    x = xp.asarray([[[[0.0, 1.0], [2.0, 4.0]]]])
    out = roi_align(x, xp.asarray([[0, 0.0, 0.0, 1.0, 1.0]]), 1, sampling_ratio=1)
    assert out.tolist() == [[[[1.75]]]]


def _bilinear(img, y, x):
    """torchvision's bilinear_interpolate for one channel-stack (C, H, W)."""
    _, h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * img[:, y0, x0]
        + hy * lx * img[:, y0, x1]
        + ly * hx * img[:, y1, x0]
        + ly * lx * img[:, y1, x1]
    )


def _roi_align_loops(x, rois, ph_n, pw_n, scale, ratio, aligned):
    """Direct port of torchvision's CPU loops (roi_align_kernel.cpp)."""
    out = np.zeros((len(rois), x.shape[1], ph_n, pw_n))
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sw, y2 * scale - off - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = ratio if ratio > 0 else math.ceil(rh / ph_n)
        gw = ratio if ratio > 0 else math.ceil(rw / pw_n)
        count = max(gh * gw, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = np.zeros(x.shape[1])
                for iy in range(gh):
                    y = sh + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = sw + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(x[int(b)], y, xx)
                out[k, :, ph, pw] = acc / count
    return out


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**16),
    out_h=st.integers(1, 3),
    out_w=st.integers(1, 4),
    scale=st.sampled_from([1.0, 0.5]),
    ratio=st.sampled_from([-1, 0, 1, 2, 3]),
    aligned=st.booleans(),
)
def test_roi_align_matches_loops(seed, out_h, out_w, scale, ratio, aligned):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 6, 5)).transpose(0, 1, 3, 2)  # non-contiguous (2, 2, 5, 6)
    rois = _random_rois(rng, 2, 6 / scale, 4)
    expected = _roi_align_loops(x, rois, out_h, out_w, scale, ratio, aligned)
    got = roi_align(x, rois, (out_h, out_w), scale, ratio, aligned)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_roi_ops_keep_dtype_and_inputs(xp, rng):
    x = xp.asarray(rng.standard_normal((1, 2, 5, 5)), dtype=xp.float32)
    rois = xp.asarray([[0, 0.5, 1.0, 3.5, 4.0]], dtype=xp.float32)
    x_copy, rois_copy = x.copy(), rois.copy()
    for op in (roi_pool, roi_align):
        out = op(x, rois, 2)
        assert out.dtype == xp.float32 and out.shape == (1, 2, 2, 2)
    assert bool((x == x_copy).all()) and bool((rois == rois_copy).all())


def test_box_ops_keep_dtype_and_inputs(xp, rng):
    boxes = xp.asarray(rng.uniform(0, 5, (6, 4)), dtype=xp.float32)
    boxes[:, 2:] += boxes[:, :2]
    scores = xp.asarray(rng.random(6), dtype=xp.float32)
    labels = xp.asarray([1, 0, 1, 1, 0, 0])
    before = boxes.copy(), scores.copy(), labels.copy()
    assert box_iou(boxes, boxes).dtype == xp.float32
    nms(boxes, scores, 0.3)
    batched_nms(boxes, scores, labels, 0.3)
    average_precision(scores, labels)
    for a, b in zip((boxes, scores, labels), before, strict=True):
        assert bool((a == b).all())


# --- precision, recall, AP -------------------------------------------------------------------


def test_average_precision_worked_example(xp):
    # Five detections ranked by score, correct / wrong / correct / wrong / correct, and four
    # ground-truth objects (one never detected):
    #   precision 1, 1/2, 2/3, 2/4, 3/5 ; recall 1/4, 1/4, 2/4, 2/4, 3/4
    # The envelope (best precision at equal or higher recall) is 1, 2/3, 2/3, 3/5, 3/5 and
    # recall rises by 1/4 at ranks 1, 3, 5: AP = (1 + 2/3 + 3/5) / 4 = 17/30.
    scores = xp.asarray([0.5, 0.9, 0.7, 0.8, 0.6])
    labels = xp.asarray([1, 1, 1, 0, 0])
    precision, recall = precision_recall(scores, labels, num_positives=4)
    np.testing.assert_allclose(precision.tolist(), [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(recall.tolist(), [1 / 4, 1 / 4, 2 / 4, 2 / 4, 3 / 4])
    assert float(average_precision(scores, labels, num_positives=4)) == pytest.approx(17 / 30)
    # without the missed object, recall reaches 1: AP = (1 + 2/3 + 3/5) / 3 = 34/45
    assert float(average_precision(scores, labels)) == pytest.approx(34 / 45)
    # mAP over that class and a perfectly ranked one: (17/30 + 1) / 2 = 47/60
    perfect = (xp.asarray([0.3, 0.2]), xp.asarray([1, 0]))
    m = mean_average_precision([scores, perfect[0]], [labels, perfect[1]], [4, 1])
    assert float(m) == pytest.approx(47 / 60)


def _voc_ap_loops(scores, labels):
    """The PASCAL VOC devkit's voc_ap (use_07_metric=False), as a plain loop."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = np.cumsum([labels[i] for i in order])
    rec = tp / max(sum(labels), 1)
    prec = tp / np.arange(1, len(scores) + 1)
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    return sum(
        (mrec[i + 1] - mrec[i]) * mpre[i + 1]
        for i in range(len(mrec) - 1)
        if mrec[i + 1] != mrec[i]
    )


@settings(max_examples=30)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 40))
def test_average_precision_matches_voc_loop(seed, n):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n) / n  # distinct scores: the ranking is unambiguous
    labels = rng.integers(0, 2, n)
    expected = _voc_ap_loops(scores.tolist(), labels.tolist())
    assert float(average_precision(scores, labels)) == pytest.approx(expected, abs=1e-12)


def test_average_precision_edge_cases(xp):
    assert float(average_precision(xp.asarray([0.3, 0.1]), xp.asarray([0, 0]))) == 0.0
    assert float(average_precision(xp.zeros(0), xp.zeros(0, dtype=xp.int64))) == 0.0
    assert float(average_precision(xp.asarray([0.9, 0.1]), xp.asarray([True, True]))) == 1.0


# --- bad input ------------------------------------------------------------------------------


def test_detection_rejects_bad_input(xp):
    boxes = xp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"box_iou: a must have shape \(N, 4\).*\(3, 5\)"):
        box_iou(xp.zeros((3, 5)), boxes)
    with pytest.raises(TypeError, match="box_iou: b must have a floating-point dtype"):
        box_iou(boxes, xp.zeros((2, 4), dtype=xp.int64))
    with pytest.raises(ValueError, match=r"nms: scores has shape \(2,\) but boxes has shape"):
        nms(boxes, xp.zeros(2), 0.5)
    x = xp.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="batched_nms: idxs must be an integer array"):
        batched_nms(boxes, xp.zeros(3), xp.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"roi_pool: rois must have shape \(K, 5\).*\(2, 4\)"):
        roi_pool(x, xp.zeros((2, 4)), 2)
    with pytest.raises(ValueError, match=r"roi_align: x must have 4 dimensions.*\(4, 4\)"):
        roi_align(xp.zeros((4, 4)), xp.zeros((1, 5)), 2)
    with pytest.raises(ValueError, match="roi_align: output_size must be positive, got 0"):
        roi_align(x, xp.zeros((1, 5)), 0)
    with pytest.raises(ValueError, match=r"precision_recall: labels has shape \(3,\) but scores"):
        precision_recall(xp.zeros(2), xp.zeros(3))
    with pytest.raises(ValueError, match="precision_recall: num_positives must be a positive"):
        average_precision(xp.zeros(2), xp.zeros(2), num_positives=0)
    with pytest.raises(ValueError, match="mean_average_precision: need one scores and one"):
        mean_average_precision([xp.zeros(2)], [])
