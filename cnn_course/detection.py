"""Detection basics: IoU, non-maximum suppression, RoI pooling and RoI align, precision,
recall and average precision.

Boxes are ``(x1, y1, x2, y2)`` rows (xyxy, ``x2 > x1``, ``y2 > y1``) in pixel units; RoIs are
``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image coordinates, mapped onto the
feature map by ``spatial_scale`` (1/16 for a stride-16 backbone). The semantics, rounding
included, are torchvision's (``torchvision.ops``), so results agree with it number for number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnn_course._checks import positive_pair, require_array, require_float, require_same_backend
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
