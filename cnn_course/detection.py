"""Detection: IoU, non-maximum suppression, RoI pooling and RoI align, precision, recall and
average precision (chapter 19); IoU losses with their backward passes, Soft-NMS, FCOS-style
targets and Hungarian matching (chapter 21).

Boxes are ``(x1, y1, x2, y2)`` rows (xyxy, ``x2 > x1``, ``y2 > y1``) in pixel units; RoIs are
``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image coordinates, mapped onto the
feature map by ``spatial_scale`` (1/16 for a stride-16 backbone). The semantics, rounding
included, are torchvision's (``torchvision.ops``), so results agree with it number for number.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from cnn_course._checks import (
    positive_pair,
    require_array,
    require_float,
    require_number,
    require_same_backend,
)
from cnn_course.backend import array_module, np, to_numpy

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "roi_pool",
    "roi_align",
    "precision_recall",
    "average_precision",
    "mean_average_precision",
    "generalized_box_iou_loss",
    "generalized_box_iou_loss_backward",
    "distance_box_iou_loss",
    "distance_box_iou_loss_backward",
    "complete_box_iou_loss",
    "complete_box_iou_loss_backward",
    "soft_nms",
    "ltrb_targets",
    "centerness",
    "fcos_assign",
    "hungarian_match",
    "hungarian_match_naive",
]


def _require_rows(a: Any, name: str, op: str, rows: str, layout: str) -> None:
    """``a`` is a 2-D float array with one ``layout`` per row, e.g. ``rows="N"`` and
    ``layout="(x1, y1, x2, y2)"``: a shape (N, 4)."""
    require_float(a, name, op, ndim=2)
    width = layout.count(",") + 1
    if a.shape[1] != width:
        raise ValueError(
            f"{op}: {name} must have shape ({rows}, {width}) as rows {layout}, "
            f"got shape {tuple(a.shape)}"
        )


def _require_boxes(boxes: Any, name: str, op: str) -> None:
    _require_rows(boxes, name, op, "N", "(x1, y1, x2, y2)")


def box_area(boxes: Any) -> Any:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` xyxy boxes, shape ``(N,)``."""
    _require_boxes(boxes, "boxes", "box_area")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: Any, b: Any) -> Any:
    """Pairwise intersection over union of two sets of xyxy boxes.

    Parameters
    ----------
    a : (N, 4) float array
    b : (M, 4) float array

    Returns
    -------
    (N, M) array, ``iou[i, j] = |a_i & b_j| / |a_i | b_j|``, in [0, 1]. Two boxes of zero area
    have IoU 0 here (torchvision gives 0/0 = NaN).
    """
    _require_boxes(a, "a", "box_iou")
    _require_boxes(b, "b", "box_iou")
    require_same_backend("box_iou", a=a, b=b)
    xp = array_module(a, b)
    top_left = xp.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = xp.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    # union is 0 only when both boxes are empty, and then the intersection is 0 as well
    return inter / xp.where(union > 0, union, 1)


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Non-maximum suppression: the full greedy algorithm, as ``torchvision.ops.nms``.

    Repeatedly keep the highest-scoring box that is left and discard every remaining box
    whose IoU with it is *greater than* ``iou_threshold``, until no box is left.

    Parameters
    ----------
    boxes : (N, 4) float array of xyxy boxes
    scores : (N,) float array
    iou_threshold : float

    Returns
    -------
    (K,) int64 indices into ``boxes`` of the kept boxes, by decreasing score (equal scores
    keep their input order).
    """
    _require_boxes(boxes, "boxes", "nms")
    require_float(scores, "scores", "nms", ndim=1)
    require_same_backend("nms", boxes=boxes, scores=scores)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"nms: scores has shape {tuple(scores.shape)} but boxes has shape "
            f"{tuple(boxes.shape)}: one score per box is needed"
        )
    xp = array_module(boxes, scores)
    order = xp.argsort(-scores, kind="stable")
    n = order.shape[0]
    # suppresses[i, j]: box i (by rank) would suppress the lower-ranked box j
    suppresses = (box_iou(boxes[order], boxes[order]) > iou_threshold) & xp.triu(
        xp.ones((n, n), dtype=bool), k=1
    )
    keep = xp.ones(n, dtype=bool)
    # Rank i's fate is final once the higher-ranked boxes are processed; a kept box then
    # suppresses its overlaps. Array operations only: no per-box transfer to the host.
    for i in range(n):
        keep &= ~(suppresses[i] & keep[i])
    return order[keep].astype(xp.int64)


def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
    """NMS within each category: boxes with different ``idxs`` never suppress each other
    (``torchvision.ops.batched_nms``; per-class NMS of a detector).

    Each category's boxes are shifted by ``idx * (extent + 1)``, ``extent`` being the span
    of all coordinates, so boxes of different categories cannot overlap; then one
    :func:`nms` runs. Arguments as :func:`nms`, plus ``idxs``: (N,) integer category of
    each box. Returns (K,) int64 indices by decreasing score.
    """
    require_array(idxs, "idxs", "batched_nms", ndim=1)
    if idxs.dtype.kind not in "iu" or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            "batched_nms: idxs must be an integer array with one category per box, got "
            f"dtype {idxs.dtype} and shape {tuple(idxs.shape)} for boxes of shape "
            f"{tuple(boxes.shape)}"
        )
    if boxes.shape[0] == 0:
        return nms(boxes, scores, iou_threshold)
    extent = boxes.max() - boxes.min()
    return nms(boxes + (idxs.astype(boxes.dtype) * (extent + 1))[:, None], scores, iou_threshold)


def _roi_output_size(x: Any, rois: Any, output_size: Any, op: str) -> tuple[int, int]:
    """Check the arguments RoI pooling and RoI align share; return ``(PH, PW)``."""
    require_float(x, "x", op, ndim=4)
    _require_rows(rois, "rois", op, "K", "[batch_index, x1, y1, x2, y2]")
    require_same_backend(op, x=x, rois=rois)
    return positive_pair(output_size, "output_size", op)


def _round_half_away(v: Any) -> Any:
    """C's ``round``: halves go away from zero (NumPy's ``round`` goes to even)."""
    xp = array_module(v)
    return xp.sign(v) * xp.floor(xp.abs(v) + 0.5)


def roi_pool(
    x: Any, rois: Any, output_size: int | Sequence[int], spatial_scale: float = 1.0
) -> Any:
    """RoI max pooling (Fast R-CNN), as ``torchvision.ops.roi_pool``.

    Each RoI is scaled by ``spatial_scale`` and *rounded* to whole feature-map cells
    (``x1 = round(x1 * scale)``, half away from zero; width ``x2 - x1 + 1``), cut into
    ``PH x PW`` bins whose edges are rounded again (``floor`` of the start, ``ceil`` of the
    end), and each bin is max-pooled; an empty bin gives 0. These two roundings misalign
    the pooled features with the box by up to a cell: what :func:`roi_align` removes.
    (Vectorised with bin masks: the intermediate array is (K, C, H, PW, W), fine for the
    course's map sizes.)

    Parameters
    ----------
    x : (N, C, H, W) float array
    rois : (K, 5) float array, rows ``[batch_index, x1, y1, x2, y2]``
    output_size : int or (PH, PW)
    spatial_scale : float

    Returns
    -------
    (K, C, PH, PW) array.
    """
    ph_count, pw_count = _roi_output_size(x, rois, output_size, "roi_pool")
    xp = array_module(x, rois)
    _, _, height, width = x.shape
    corners = _round_half_away(rois[:, 1:] * spatial_scale).astype(xp.int64)

    def bin_mask(start: Any, end: Any, bins: int, size: int) -> Any:
        """(K, bins, size) membership of each feature-map row (column) in each bin."""
        length = xp.maximum(end - start + 1, 1).astype(x.dtype)
        bin_size = (length / bins)[:, None]
        edges = xp.arange(bins, dtype=x.dtype)[None, :]
        lo = xp.clip(xp.floor(edges * bin_size).astype(xp.int64) + start[:, None], 0, size)
        hi = xp.clip(xp.ceil((edges + 1) * bin_size).astype(xp.int64) + start[:, None], 0, size)
        pos = xp.arange(size)[None, None, :]
        return (pos >= lo[..., None]) & (pos < hi[..., None])

    mask_h = bin_mask(corners[:, 1], corners[:, 3], ph_count, height)  # (K, PH, H)
    mask_w = bin_mask(corners[:, 0], corners[:, 2], pw_count, width)  # (K, PW, W)
    feats = x[rois[:, 0].astype(xp.int64)]  # (K, C, H, W)
    # Max over the columns of each horizontal bin, then over the rows of each vertical bin.
    cols = xp.where(mask_w[:, None, None], feats[:, :, :, None, :], -xp.inf).max(axis=-1)
    out = xp.where(mask_h[:, None, :, :, None], cols[:, :, None], -xp.inf).max(axis=3)
    return xp.where(xp.isneginf(out), 0, out).astype(x.dtype)


def _bilinear_weights(
    start: Any, bin_size: Any, grid: Any, max_grid: int, bins: int, size: int
) -> Any:
    """Interpolation weights along one axis for RoI align, shape (K, bins, size).

    ``weights[k, p, i]`` is the total bilinear weight that the samples of bin ``p`` of RoI
    ``k`` put on feature row (or column) ``i``. Bilinear interpolation is a product of a
    weight along y and one along x, and torchvision's out-of-range test (``y < -1`` or
    ``y > H`` or the same for x) is an "or", so the 2-D average factorizes into these two
    matrices.
    """
    xp = array_module(start)
    dtype = start.dtype
    k = xp.arange(max_grid, dtype=dtype)[None, None, :]
    p = xp.arange(bins, dtype=dtype)[None, :, None]
    grid_f = xp.maximum(grid, 1).astype(dtype)[:, None, None]
    # sample coordinate of sub-cell k in bin p: the centre of the k-th of `grid` sub-cells
    y = (
        start[:, None, None]
        + p * bin_size[:, None, None]
        + (k + 0.5) * bin_size[:, None, None] / grid_f
    )
    used = (k < grid[:, None, None]) & (y >= -1.0) & (y <= size)
    y = xp.clip(y, 0, None)
    low = xp.minimum(xp.floor(y), size - 1)
    # past the last row both neighbours are that row, so it gets the whole weight
    high = xp.minimum(low + 1, size - 1)
    frac = y - low
    pos = xp.arange(size, dtype=dtype)
    weights = ((1 - frac)[..., None] * (pos == low[..., None])) + (
        frac[..., None] * (pos == high[..., None])
    )
    return (weights * used[..., None]).sum(axis=2)


def roi_align(
    x: Any,
    rois: Any,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Any:
    """RoI align (Mask R-CNN), as ``torchvision.ops.roi_align``: no rounding anywhere.

    Each RoI (scaled by ``spatial_scale``, shifted by -0.5 when ``aligned``) is cut into
    ``PH x PW`` equal bins; each bin averages ``gh x gw`` bilinearly interpolated samples at
    the centres of a regular sub-grid, with ``gh = sampling_ratio`` or, when it is <= 0,
    ``ceil(roi_height / PH)`` (per RoI; likewise ``gw``). Without ``aligned`` an RoI is at
    least 1 x 1. A sample more than one cell outside the map counts as 0.

    Parameters
    ----------
    x, rois, output_size, spatial_scale
        As for :func:`roi_pool`: (N, C, H, W), (K, 5), int or (PH, PW), float.
    sampling_ratio : int
        Samples per bin along each axis; <= 0 for the adaptive ``ceil(roi_size / bins)``.
    aligned : bool
        Shift by half a pixel so that a box's corner maps onto the pixel-corner grid.

    Returns
    -------
    (K, C, PH, PW) array.
    """
    ph_count, pw_count = _roi_output_size(x, rois, output_size, "roi_align")
    if not isinstance(sampling_ratio, int):
        raise TypeError(f"roi_align: sampling_ratio must be an int, got {sampling_ratio!r}")
    xp = array_module(x, rois)
    _, _, height, width = x.shape
    box = rois[:, 1:].astype(x.dtype) * spatial_scale - (0.5 if aligned else 0.0)
    size = box[:, 2:] - box[:, :2]  # (K, 2) as (width, height)
    if not aligned:
        size = xp.maximum(size, 1.0)
    bins = xp.asarray([pw_count, ph_count], dtype=x.dtype)
    bin_size = size / bins
    if sampling_ratio > 0:
        grid = xp.full(size.shape, sampling_ratio, dtype=xp.int64)
    else:
        grid = xp.clip(xp.ceil(size / bins), 0, None).astype(xp.int64)
    # The sub-grid size differs per RoI; the weight arrays are padded to the largest one
    # (a single scalar read from the device) and the padding masked out.
    max_grid = max(int(grid.max()), 1) if grid.size else 1
    wx = _bilinear_weights(box[:, 0], bin_size[:, 0], grid[:, 0], max_grid, pw_count, width)
    wy = _bilinear_weights(box[:, 1], bin_size[:, 1], grid[:, 1], max_grid, ph_count, height)
    count = xp.maximum(grid[:, 0] * grid[:, 1], 1).astype(x.dtype)
    feats = x[rois[:, 0].astype(xp.int64)]
    out = xp.einsum("kph,kchw,kqw->kcpq", wy, feats, wx)
    return (out / count[:, None, None, None]).astype(x.dtype)


def _require_scores_labels(scores: Any, labels: Any, op: str) -> None:
    require_float(scores, "scores", op, ndim=1)
    require_array(labels, "labels", op, ndim=1)
    require_same_backend(op, scores=scores, labels=labels)
    if labels.shape != scores.shape:
        raise ValueError(
            f"{op}: labels has shape {tuple(labels.shape)} but scores has shape "
            f"{tuple(scores.shape)}"
        )


def precision_recall(scores: Any, labels: Any, num_positives: int | None = None):
    """Precision and recall after each prediction, ranked by decreasing score.

    Parameters
    ----------
    scores : (N,) float array
        Confidence of each prediction (detection).
    labels : (N,) bool or 0/1 array
        Whether each prediction is correct (a true positive).
    num_positives : int, optional
        The number of positives that exist (ground-truth objects, some possibly never
        detected); default ``labels.sum()``.

    Returns
    -------
    precision, recall : (N,) float64 arrays; entry ``i`` counts the ``i + 1`` highest-scoring
    predictions: ``precision = TP / (i + 1)``, ``recall = TP / num_positives``. Equal scores
    keep their input order (as the VOC evaluation code ranks them).
    """
    _require_scores_labels(scores, labels, "precision_recall")
    xp = array_module(scores, labels)
    order = xp.argsort(-scores, kind="stable")
    tp = xp.cumsum(labels[order].astype(xp.float64))
    ranks = xp.arange(1, scores.shape[0] + 1, dtype=xp.float64)
    if num_positives is None:
        positives = xp.maximum(labels.astype(bool).sum(), 1)  # no positives: recall stays 0
    elif isinstance(num_positives, int) and num_positives > 0:
        positives = num_positives
    else:
        raise ValueError(
            f"precision_recall: num_positives must be a positive int, got {num_positives!r}"
        )
    return tp / ranks, tp / positives


def average_precision(scores: Any, labels: Any, num_positives: int | None = None) -> Any:
    """Average precision with all-point interpolation (PASCAL VOC 2010 and later).

    The area under the precision-recall curve after replacing each precision by the highest
    precision at any equal or higher recall (the curve's monotone envelope):
    ``AP = sum_i (r_i - r_{i-1}) * max_{j >= i} p_j``. Arguments as for
    :func:`precision_recall`; returns a 0-d float64 array (0 when there are no positives).
    """
    precision, recall = precision_recall(scores, labels, num_positives)
    xp = array_module(precision)
    # CuPy has no ufunc.accumulate; the ranking is short, so the running maximum is taken on
    # the host (one value per detection).
    envelope = xp.asarray(np.maximum.accumulate(to_numpy(precision)[::-1])[::-1])
    steps = xp.diff(recall, prepend=0.0)
    return (steps * envelope).sum()


def mean_average_precision(
    scores: Sequence[Any], labels: Sequence[Any], num_positives: Sequence[int] | None = None
) -> Any:
    """Mean over classes of :func:`average_precision`.

    Parameters
    ----------
    scores, labels : sequences with one (N_c,) array per class
        The predictions of class ``c`` and whether each is correct. For a multi-label
        classifier with (N, K) score and 0/1 label matrices, pass ``list(scores.T)`` and
        ``list(labels.T)``.
    num_positives : sequence of int, optional
        Ground-truth count per class.

    Returns
    -------
    0-d float64 array.
    """
    if len(scores) != len(labels) or len(scores) == 0:
        raise ValueError(
            "mean_average_precision: need one scores and one labels array per class, got "
            f"{len(scores)} and {len(labels)}"
        )
    counts = [None] * len(scores) if num_positives is None else list(num_positives)
    aps = [average_precision(s, y, n) for s, y, n in zip(scores, labels, counts, strict=True)]
    xp = array_module(*aps)
    return xp.stack(aps).mean()


# ------------------------------------------------------------------ IoU losses (chapter 21)
_REDUCTIONS = ("none", "mean", "sum")


def _check_box_pair(op: str, boxes1: Any, boxes2: Any, reduction: str, eps: Any) -> None:
    """Two float arrays of xyxy boxes of one shape ``(..., 4)``, a known reduction, eps >= 0."""
    require_float(boxes1, "boxes1", op)
    require_float(boxes2, "boxes2", op)
    require_same_backend(op, boxes1=boxes1, boxes2=boxes2)
    if boxes1.ndim == 0 or boxes1.shape[-1] != 4 or boxes1.shape != boxes2.shape:
        raise ValueError(
            f"{op}: boxes1 and boxes2 must have one shape (N, 4) or (4,) of xyxy rows, got "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if require_number(eps, "eps", op) < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")


def _reduce(loss: Any, reduction: str) -> Any:
    """torchvision's reductions; the mean of no boxes is 0 (``0.0 * loss.sum()``)."""
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.size == 0:
        return loss.sum() * (1.0 if reduction == "sum" else 0.0)
    return loss.mean()


def _expand_grad(op: str, grad_out: Any, loss_shape: tuple, reduction: str, like: Any) -> Any:
    """The upstream gradient of each box pair, shape ``loss_shape``."""
    xp = array_module(like)
    require_array(grad_out, "grad_out", op)
    require_same_backend(op, grad_out=grad_out, boxes1=like)
    expected = loss_shape if reduction == "none" else ()
    if tuple(grad_out.shape) != expected:
        raise ValueError(
            f"{op}: grad_out must have the loss's shape {expected} (reduction={reduction!r}), "
            f"got {tuple(grad_out.shape)}"
        )
    g = xp.broadcast_to(grad_out.astype(like.dtype), loss_shape)
    if reduction == "mean" and g.size:
        g = g / g.size
    return g


def _tie_max(a: Any, b: Any) -> tuple[Any, Any]:
    """d max(a, b) / da and / db with PyTorch's rule: a tie splits the gradient in halves."""
    xp = array_module(a, b)
    da = xp.where(a > b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(a.dtype)
    return da, 1 - da


def _box_terms(boxes1: Any, boxes2: Any) -> dict[str, Any]:
    """The intermediate quantities every IoU loss shares (torchvision's ``_loss_inter_union``
    and the smallest enclosing box), one entry per box pair."""
    xp = array_module(boxes1, boxes2)
    t = {"b1": [boxes1[..., i] for i in range(4)], "b2": [boxes2[..., i] for i in range(4)]}
    (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
    t["iw"] = xp.minimum(x2, x2g) - xp.maximum(x1, x1g)
    t["ih"] = xp.minimum(y2, y2g) - xp.maximum(y1, y1g)
    t["overlap"] = (t["iw"] > 0) & (t["ih"] > 0)
    t["inter"] = xp.where(t["overlap"], t["iw"] * t["ih"], 0.0).astype(boxes1.dtype)
    t["union"] = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - t["inter"]
    t["cw"] = xp.maximum(x2, x2g) - xp.minimum(x1, x1g)  # enclosing box's width and height
    t["ch"] = xp.maximum(y2, y2g) - xp.minimum(y1, y1g)
    return t


class _BoxGrads:
    """Gradients of the eight coordinates of a box pair, accumulated term by term."""

    def __init__(self, boxes1: Any) -> None:
        xp = array_module(boxes1)
        self.g = [xp.zeros(boxes1.shape[:-1], dtype=boxes1.dtype) for _ in range(8)]

    def add(self, i: int, value: Any) -> None:
        self.g[i] = self.g[i] + value

    def through_iou(self, t: dict, g_inter: Any, g_union: Any) -> None:
        """Back through ``inter`` and ``union`` to the coordinates."""
        (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
        g_inter = g_inter - g_union  # union = area1 + area2 - inter
        # areas: area1 = (x2 - x1)(y2 - y1), area2 likewise
        w1, h1, w2, h2 = x2 - x1, y2 - y1, x2g - x1g, y2g - y1g
        for lo, w, h in ((0, w1, h1), (4, w2, h2)):
            self.add(lo, -g_union * h)
            self.add(lo + 2, g_union * h)
            self.add(lo + 1, -g_union * w)
            self.add(lo + 3, g_union * w)
        # inter = iw * ih where both are positive; iw = min(x2, x2g) - max(x1, x1g)
        g_iw = _masked(t["overlap"], g_inter * t["ih"])
        g_ih = _masked(t["overlap"], g_inter * t["iw"])
        self._edges(x1, x1g, x2, x2g, g_iw, 0, "inner")
        self._edges(y1, y1g, y2, y2g, g_ih, 1, "inner")

    def through_enclosing(self, t: dict, g_cw: Any, g_ch: Any) -> None:
        """Back through the enclosing box's width ``max(x2) - min(x1)`` and height."""
        (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
        self._edges(x1, x1g, x2, x2g, g_cw, 0, "outer")
        self._edges(y1, y1g, y2, y2g, g_ch, 1, "outer")

    def _edges(self, lo1: Any, lo2: Any, hi1: Any, hi2: Any, g: Any, axis: int, kind: str):
        """``g`` times d(extent)/d(coordinates): inner extent ``min(hi) - max(lo)``, outer
        extent ``max(hi) - min(lo)``."""
        if kind == "inner":
            d_hi1, d_hi2 = _tie_max(-hi1, -hi2)  # d min(hi1, hi2)
            d_lo1, d_lo2 = _tie_max(lo1, lo2)  # d max(lo1, lo2)
        else:
            d_hi1, d_hi2 = _tie_max(hi1, hi2)
            d_lo1, d_lo2 = _tie_max(-lo1, -lo2)
        self.add(axis, -g * d_lo1)
        self.add(4 + axis, -g * d_lo2)
        self.add(2 + axis, g * d_hi1)
        self.add(6 + axis, g * d_hi2)

    def result(self) -> tuple[Any, Any]:
        xp = array_module(self.g[0])
        return xp.stack(self.g[:4], axis=-1), xp.stack(self.g[4:], axis=-1)


def _masked(mask: Any, value: Any) -> Any:
    """``value`` where ``mask``, else 0."""
    return array_module(value).where(mask, value, 0.0).astype(value.dtype)


def generalized_box_iou_loss(
    boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> Any:
    """GIoU loss (Rezatofighi et al., 2019), as ``torchvision.ops.generalized_box_iou_loss``.

    ``loss = 1 - IoU + (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing both;
    ``IoU = inter / (union + eps)`` and the last term's denominator is ``|C| + eps``, as in
    torchvision. Unlike ``1 - IoU``, it still has a gradient when the boxes do not overlap.
    Chapter 21 (question q900-21-3).

    Parameters
    ----------
    boxes1, boxes2 : (N, 4) or (4,) float arrays
        Paired xyxy boxes (``x1 < x2``, ``y1 < y2``): row ``i`` of one against row ``i`` of
        the other.
    reduction : {"none", "mean", "sum"}
    eps : float
        Keeps the divisions finite for empty boxes.

    Returns
    -------
    (N,) or () array with ``reduction="none"``, else a 0-d array.
    """
    _check_box_pair("generalized_box_iou_loss", boxes1, boxes2, reduction, eps)
    t = _box_terms(boxes1, boxes2)
    area_c = t["cw"] * t["ch"]
    iou = t["inter"] / (t["union"] + eps)
    loss = 1 - iou + (area_c - t["union"]) / (area_c + eps)
    return _reduce(loss, reduction)


def generalized_box_iou_loss_backward(
    grad_out: Any, boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> tuple[Any, Any]:
    """Gradients ``(grad_boxes1, grad_boxes2)`` of :func:`generalized_box_iou_loss`, each of
    the boxes' shape; ``grad_out`` has the loss's shape. Where an ``max``/``min`` ties (equal
    edges) the gradient splits in halves, as PyTorch's autograd does."""
    op = "generalized_box_iou_loss_backward"
    _check_box_pair(op, boxes1, boxes2, reduction, eps)
    t = _box_terms(boxes1, boxes2)
    g = _expand_grad(op, grad_out, boxes1.shape[:-1], reduction, boxes1)
    area_c = t["cw"] * t["ch"]
    den = t["union"] + eps
    g_inter = -g / den  # d(-IoU)/d inter
    g_union = g * t["inter"] / den**2 - g / (area_c + eps)
    g_area_c = g * (t["union"] + eps) / (area_c + eps) ** 2
    grads = _BoxGrads(boxes1)
    grads.through_iou(t, g_inter, g_union)
    grads.through_enclosing(t, g_area_c * t["ch"], g_area_c * t["cw"])
    return grads.result()


def _centre_terms(t: dict) -> tuple[Any, Any]:
    """Centre offsets ``(x_p - x_g, y_p - y_g)`` of each pair."""
    (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
    return (x1 + x2) / 2 - (x1g + x2g) / 2, (y1 + y2) / 2 - (y1g + y2g) / 2


def _diou_forward(boxes1: Any, boxes2: Any, eps: float) -> tuple[Any, Any, dict]:
    t = _box_terms(boxes1, boxes2)
    iou = t["inter"] / (t["union"] + eps)
    dx, dy = _centre_terms(t)
    t["diag"] = t["cw"] ** 2 + t["ch"] ** 2 + eps
    t["rho"] = dx**2 + dy**2
    t["dx"], t["dy"] = dx, dy
    return 1 - iou + t["rho"] / t["diag"], iou, t


def _diou_backward(t: dict, g: Any, eps: float, grads: _BoxGrads) -> None:
    """Accumulate ``g * d(DIoU loss)`` into ``grads``."""
    den = t["union"] + eps
    grads.through_iou(t, -g / den, g * t["inter"] / den**2)
    g_diag = -g * t["rho"] / t["diag"] ** 2
    grads.through_enclosing(t, g_diag * 2 * t["cw"], g_diag * 2 * t["ch"])
    g_dx, g_dy = g * 2 * t["dx"] / t["diag"], g * 2 * t["dy"] / t["diag"]
    for lo, sign in ((0, 0.5), (4, -0.5)):  # each centre is the mean of its two edges
        for axis, g_d in ((0, g_dx), (1, g_dy)):
            grads.add(lo + axis, sign * g_d)
            grads.add(lo + 2 + axis, sign * g_d)


def distance_box_iou_loss(
    boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> Any:
    """DIoU loss (Zheng et al., 2020), as ``torchvision.ops.distance_box_iou_loss``.

    ``loss = 1 - IoU + rho^2 / (c^2 + eps)``: ``rho`` the distance between the two centres,
    ``c`` the diagonal of the smallest enclosing box. The penalty pulls the centres together
    directly, so it converges faster than GIoU, whose penalty vanishes as soon as one box
    contains the other. Arguments and returns as :func:`generalized_box_iou_loss`.
    Chapter 21 (question q900-21-3).
    """
    _check_box_pair("distance_box_iou_loss", boxes1, boxes2, reduction, eps)
    return _reduce(_diou_forward(boxes1, boxes2, eps)[0], reduction)


def distance_box_iou_loss_backward(
    grad_out: Any, boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> tuple[Any, Any]:
    """Gradients ``(grad_boxes1, grad_boxes2)`` of :func:`distance_box_iou_loss`."""
    op = "distance_box_iou_loss_backward"
    _check_box_pair(op, boxes1, boxes2, reduction, eps)
    g = _expand_grad(op, grad_out, boxes1.shape[:-1], reduction, boxes1)
    _, _, t = _diou_forward(boxes1, boxes2, eps)
    grads = _BoxGrads(boxes1)
    _diou_backward(t, g, eps, grads)
    return grads.result()


# torchvision's complete_box_iou_loss calls its DIoU helper without passing ``eps``, so the
# DIoU part always uses the default 1e-7; ``eps`` reaches only the trade-off weight alpha.
_CIOU_DIOU_EPS = 1e-7


def _ciou_terms(boxes1: Any, boxes2: Any, eps: float) -> tuple[Any, Any, Any, dict]:
    xp = array_module(boxes1, boxes2)
    diou, iou, t = _diou_forward(boxes1, boxes2, _CIOU_DIOU_EPS)
    (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
    t["angle"] = xp.arctan((x2g - x1g) / (y2g - y1g)) - xp.arctan((x2 - x1) / (y2 - y1))
    v = (4 / math.pi**2) * t["angle"] ** 2
    alpha = v / (1 - iou + v + eps)  # a constant in the backward pass (torch.no_grad)
    return diou, v, alpha, t


def complete_box_iou_loss(
    boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> Any:
    """CIoU loss (Zheng et al., 2020), as ``torchvision.ops.complete_box_iou_loss``.

    ``loss = DIoU loss + alpha * v`` with the aspect-ratio term
    ``v = 4 / pi^2 * (arctan(w_g / h_g) - arctan(w / h))^2`` and the trade-off
    ``alpha = v / (1 - IoU + v + eps)``, which is treated as a constant when differentiating
    (the paper's choice; torchvision computes it under ``torch.no_grad``). As in torchvision,
    ``eps`` enters ``alpha`` only: the DIoU part uses 1e-7 whatever ``eps`` is. Arguments and
    returns as :func:`generalized_box_iou_loss`. Chapter 21 (question q900-21-3).
    """
    _check_box_pair("complete_box_iou_loss", boxes1, boxes2, reduction, eps)
    diou, v, alpha, _ = _ciou_terms(boxes1, boxes2, eps)
    return _reduce(diou + alpha * v, reduction)


def complete_box_iou_loss_backward(
    grad_out: Any, boxes1: Any, boxes2: Any, reduction: str = "none", eps: float = 1e-7
) -> tuple[Any, Any]:
    """Gradients ``(grad_boxes1, grad_boxes2)`` of :func:`complete_box_iou_loss`, with
    ``alpha`` held constant (so this is not the derivative of the loss's value when ``alpha``
    is seen as a function of the boxes: it is the gradient torchvision's autograd and the
    paper use)."""
    op = "complete_box_iou_loss_backward"
    _check_box_pair(op, boxes1, boxes2, reduction, eps)
    g = _expand_grad(op, grad_out, boxes1.shape[:-1], reduction, boxes1)
    _, _, alpha, t = _ciou_terms(boxes1, boxes2, eps)
    grads = _BoxGrads(boxes1)
    _diou_backward(t, g, _CIOU_DIOU_EPS, grads)
    # v = k * angle^2, angle = arctan(w_g / h_g) - arctan(w / h)
    g_angle = g * alpha * (8 / math.pi**2) * t["angle"]
    (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = t["b1"], t["b2"]
    for sign, (lo_x, lo_y), (w, h) in (
        (-1.0, (0, 1), (x2 - x1, y2 - y1)),
        (1.0, (4, 5), (x2g - x1g, y2g - y1g)),
    ):
        r2 = w * w + h * h  # d arctan(w/h)/dw = h / r2, /dh = -w / r2
        g_w, g_h = sign * g_angle * h / r2, -sign * g_angle * w / r2
        grads.add(lo_x, -g_w)
        grads.add(lo_x + 2, g_w)
        grads.add(lo_y, -g_h)
        grads.add(lo_y + 2, g_h)
    return grads.result()


# ------------------------------------------------------------------ Soft-NMS (chapter 21)
def soft_nms(
    boxes: Any,
    scores: Any,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Any, Any]:
    """Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of
    deleting them.

    Repeatedly take the box ``M`` with the highest current score, keep it, and multiply the
    score of every remaining box ``b`` by ``exp(-IoU(M, b)^2 / sigma)`` (``method="gaussian"``)
    or, where ``IoU(M, b) >= iou_threshold``, by ``1 - IoU(M, b)`` (``method="linear"``);
    boxes whose score falls below ``score_threshold`` are dropped. Hard NMS is the special
    case of a factor 0 above the threshold. Chapter 21 (question q900-21-4).

    Parameters
    ----------
    boxes : (N, 4) float array of xyxy boxes
    scores : (N,) float array
    iou_threshold : float
        ``N_t`` of the linear rule (unused by the Gaussian one).
    sigma : float
        Width of the Gaussian penalty, > 0.
    score_threshold : float
    method : {"gaussian", "linear"}

    Returns
    -------
    keep : (K,) int64 indices, in the order they were kept (decreasing decayed score)
    new_scores : (K,) the decayed scores of the kept boxes
    """
    op = "soft_nms"
    _require_boxes(boxes, "boxes", op)
    require_float(scores, "scores", op, ndim=1)
    require_same_backend(op, boxes=boxes, scores=scores)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{op}: scores has shape {tuple(scores.shape)} but boxes has shape "
            f"{tuple(boxes.shape)}: one score per box is needed"
        )
    if method not in ("gaussian", "linear"):
        raise ValueError(f"{op}: method must be 'gaussian' or 'linear', got {method!r}")
    if require_number(sigma, "sigma", op) <= 0:
        raise ValueError(f"{op}: sigma must be positive, got {sigma!r}")
    xp = array_module(boxes, scores)
    current = scores.copy()
    alive = xp.ones(scores.shape[0], dtype=bool)
    iou = box_iou(boxes, boxes)
    keep, kept_scores = [], []
    for _ in range(scores.shape[0]):
        if not bool(alive.any()):
            break
        best = int(xp.argmax(xp.where(alive, current, -xp.inf)))
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        overlap = iou[best]
        if method == "gaussian":
            decay = xp.exp(-(overlap**2) / sigma)
        else:
            decay = xp.where(overlap >= iou_threshold, 1 - overlap, 1.0)
        current = xp.where(alive, current * decay, current)
        alive &= current >= score_threshold
    new_scores = xp.stack(kept_scores) if kept_scores else xp.zeros(0, dtype=scores.dtype)
    return xp.asarray(keep, dtype=xp.int64), new_scores.astype(scores.dtype)


# --------------------------------------------------------- anchor-free targets (chapter 21)
def ltrb_targets(points: Any, boxes: Any) -> Any:
    """FCOS regression targets: the distances from each location to the four sides of each
    box.

    Parameters
    ----------
    points : (P, 2) float array of locations ``(x, y)`` in image pixels
    boxes : (M, 4) float array of xyxy ground-truth boxes

    Returns
    -------
    (P, M, 4) array ``(l, t, r, b) = (x - x1, y - y1, x2 - x, y2 - y)``; a location lies
    inside a box exactly where all four are positive. Chapter 21 (question q900-21-2).
    """
    _require_rows(points, "points", "ltrb_targets", "P", "(x, y)")
    _require_boxes(boxes, "boxes", "ltrb_targets")
    require_same_backend("ltrb_targets", points=points, boxes=boxes)
    xp = array_module(points, boxes)
    p, b = points[:, None, :], boxes[None, :, :]
    return xp.concatenate([p - b[..., :2], b[..., 2:] - p], axis=-1)


def centerness(ltrb: Any) -> Any:
    """FCOS centre-ness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``, shape
    ``ltrb.shape[:-1]``: 1 at a box's centre, falling to 0 at its edges; multiplied into the
    classification score at test time so that boxes predicted far from an object's centre
    rank low in NMS. Chapter 21 (question q900-21-2)."""
    require_float(ltrb, "ltrb", "centerness")
    if ltrb.ndim == 0 or ltrb.shape[-1] != 4:
        raise ValueError(f"centerness: ltrb must have shape (..., 4), got {tuple(ltrb.shape)}")
    xp = array_module(ltrb)
    lr, tb = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    return xp.sqrt(lr.min(-1) / lr.max(-1) * tb.min(-1) / tb.max(-1))


def fcos_assign(points: Any, boxes: Any, size_range: tuple[float, float] = (0, math.inf)):
    """FCOS label assignment on one pyramid level.

    A location is positive for a box when it lies inside it and the box's largest
    regression distance ``max(l, t, r, b)`` is within ``size_range`` (the level's share of
    object sizes); when several boxes qualify, the one of smallest area wins (the ambiguity
    rule of Tian et al., 2019). Chapter 21 (questions q900-21-2, q900-21-5).

    Returns
    -------
    assigned : (P,) int64 index of the assigned box, -1 for background
    targets : (P, 4) the ltrb targets for the assigned box (0 for background)
    """
    xp = array_module(points, boxes)
    ltrb = ltrb_targets(points, boxes)
    reach = ltrb.max(-1)
    ok = (ltrb.min(-1) > 0) & (reach >= size_range[0]) & (reach <= size_range[1])
    area = xp.broadcast_to(box_area(boxes)[None, :], ok.shape)
    masked = xp.where(ok, area, xp.inf)
    best = xp.argmin(masked, axis=1) if boxes.shape[0] else xp.zeros(ok.shape[0], xp.int64)
    found = ok.any(axis=1)
    assigned = xp.where(found, best, -1).astype(xp.int64)
    rows = xp.arange(points.shape[0])
    targets = ltrb[rows, best] if boxes.shape[0] else xp.zeros((points.shape[0], 4))
    return assigned, xp.where(found[:, None], targets, 0.0).astype(points.dtype)


# -------------------------------------------------------- Hungarian matching (chapter 21)
def _check_cost(cost: Any, op: str) -> Any:
    require_float(cost, "cost", op, ndim=2)
    host = to_numpy(cost).astype(np.float64)
    if not np.isfinite(host).all():
        raise ValueError(f"{op}: cost must be finite (shape {tuple(cost.shape)})")
    return host


def hungarian_match(cost: Any) -> tuple[Any, Any]:
    """Minimum-cost assignment of rows to columns (the Hungarian / Kuhn-Munkres method, in
    the shortest-augmenting-path form with dual potentials, O(n^2 m)).

    DETR matches its N predictions to the M ground-truth objects of an image with it: each
    object gets exactly one prediction, the one-to-one assignment of least total cost, so no
    NMS is needed. Same answer as ``scipy.optimize.linear_sum_assignment`` (the course does
    not depend on SciPy; the tests compare the two). Chapter 21 (question q900-21-6).

    Parameters
    ----------
    cost : (N, M) float array
        ``cost[i, j]``: the cost of assigning row ``i`` to column ``j``; finite.

    Returns
    -------
    row_ind, col_ind : (min(N, M),) int64 arrays, rows in increasing order, so the optimal
    total is ``cost[row_ind, col_ind].sum()``.
    """
    host = _check_cost(cost, "hungarian_match")
    xp = array_module(cost)
    transposed = host.shape[0] > host.shape[1]
    a = host.T if transposed else host  # n <= m: every row is assigned
    n, m = a.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # dual potentials (1-based; column 0 is virtual)
    match = np.zeros(m + 1, dtype=np.int64)  # match[j]: the row (1-based) holding column j
    for row in range(1, n + 1):
        match[0] = row
        j0 = 0
        slack = np.full(m + 1, np.inf)
        way = np.zeros(m + 1, dtype=np.int64)
        used = np.zeros(m + 1, dtype=bool)
        while True:  # grow a tree of tight edges until it reaches a free column
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            reduced = a[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, slack[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            slack[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # augment along the alternating path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.flatnonzero(match[1:])
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return xp.asarray(rows[order], dtype=xp.int64), xp.asarray(cols[order], dtype=xp.int64)


def hungarian_match_naive(cost: Any) -> tuple[Any, Any]:
    """The definition, by brute force over every injective assignment (for N, M <= 8):
    the reference :func:`hungarian_match` is tested against. Same arguments and returns;
    among assignments of equal total, the first in lexicographic order."""
    host = _check_cost(cost, "hungarian_match_naive")
    xp = array_module(cost)
    transposed = host.shape[0] > host.shape[1]
    a = host.T if transposed else host
    n, m = a.shape
    if m > 8:
        raise ValueError(f"hungarian_match_naive: at most 8 columns, got shape {a.shape}")
    rows = np.arange(n)
    best = min(itertools.permutations(range(m), n), key=lambda p: a[rows, list(p)].sum())
    cols = np.asarray(best, dtype=np.int64)
    if transposed:
        order = np.argsort(cols)
        rows, cols = cols[order], rows[order]
    return xp.asarray(rows, dtype=xp.int64), xp.asarray(cols, dtype=xp.int64)
