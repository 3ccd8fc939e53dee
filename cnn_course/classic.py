"""Two classic algorithms interviews contrast: k-means (unsupervised clustering) and
k-nearest neighbours (supervised classification).

k-means *learns* ``k`` centres from unlabeled points (Lloyd's iterations: assign each point
to its nearest centre, move each centre to the mean of its points). kNN learns nothing: it
stores the labeled training set and classifies a query by the majority label of its ``k``
nearest training points. Both rank points by squared Euclidean distance.
"""

from __future__ import annotations

from typing import Any

from cnn_course._checks import require_array, require_float, require_same_backend
from cnn_course.backend import array_module, np

__all__ = ["pairwise_sq_distances", "kmeans", "knn_predict"]


def pairwise_sq_distances(a: Any, b: Any) -> Any:
    """Squared Euclidean distances between the rows of ``a`` (N, D) and ``b`` (M, D), as
    ``|a|^2 - 2 a.b + |b|^2`` (one matrix product), clipped at 0 against rounding.
    Returns (N, M)."""
    xp = array_module(a, b)
    d = (a * a).sum(axis=1)[:, None] - 2 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
    return xp.maximum(d, 0)


def _flatten(x: Any, name: str, op: str) -> Any:
    """(N, ...) float array as (N, D) rows."""
    require_float(x, name, op)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{op}: {name} must have shape (N, ...) with N >= 1 samples, got {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], -1)


def _kmeans_plus_plus(x: Any, k: int, rng: np.random.Generator) -> Any:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre is a uniformly random
    point, each next one a point drawn with probability proportional to its squared distance
    to the nearest centre chosen so far. Returns (k, D)."""
    xp = array_module(x)
    n = x.shape[0]
    centers = [x[int(rng.integers(n))]]
    closest = pairwise_sq_distances(x, centers[0][None, :])[:, 0]
    for _ in range(1, k):
        # inverse-CDF sampling on the device: one uniform number from the host generator
        cdf = xp.cumsum(closest)
        u = rng.random() * cdf[-1]
        index = xp.minimum(xp.searchsorted(cdf, u, side="right"), n - 1)
        centers.append(x[index])
        closest = xp.minimum(closest, pairwise_sq_distances(x, x[index][None, :])[:, 0])
    return xp.stack(centers)


def kmeans(x: Any, k: int, seed: int | None = None, max_iter: int = 100) -> tuple[Any, Any]:
    """k-means clustering with k-means++ initialisation and Lloyd's iterations.

    Parameters
    ----------
    x : (N, ...) float array
        Points (each sample is flattened to a row of D values).
    k : int
        Number of clusters, 1 <= k <= N.
    seed : int, optional
        Seed of the initialisation (the result is deterministic for a seed).
    max_iter : int
        Upper bound on Lloyd's iterations; they stop earlier when no label changes.

    Returns
    -------
    centers : (k, D) array, dtype of ``x``
    labels : (N,) int64 array, the index of each point's centre.

    A centre that loses all its points stays where it was.
    """
    rows = _flatten(x, "x", "kmeans")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= rows.shape[0]:
        raise ValueError(f"kmeans: k must be an int in [1, {rows.shape[0]}], got {k!r}")
    xp = array_module(rows)
    centers = _kmeans_plus_plus(rows, k, np.random.default_rng(seed))
    labels = pairwise_sq_distances(rows, centers).argmin(axis=1)
    for _ in range(max_iter):
        one_hot = (labels[:, None] == xp.arange(k)[None, :]).astype(rows.dtype)  # (N, k)
        counts = one_hot.sum(axis=0)[:, None]
        sums = one_hot.T @ rows
        centers = xp.where(counts > 0, sums / xp.maximum(counts, 1), centers)
        new_labels = pairwise_sq_distances(rows, centers).argmin(axis=1)
        converged = bool((new_labels == labels).all())  # one scalar per iteration
        labels = new_labels
        if converged:
            break
    return centers, labels.astype(xp.int64)


def knn_predict(train_x: Any, train_y: Any, test_x: Any, k: int) -> Any:
    """k-nearest-neighbour classification by majority vote.

    Parameters
    ----------
    train_x : (N, ...) float array
    train_y : (N,) int array of class indices >= 0
    test_x : (M, ...) float array, same sample shape as ``train_x``
    k : int, 1 <= k <= N

    Returns
    -------
    (M,) int64 array: for each test sample the most frequent label among its ``k`` nearest
    training samples (Euclidean distance); a tie goes to the smallest label.
    """
    train = _flatten(train_x, "train_x", "knn_predict")
    test = _flatten(test_x, "test_x", "knn_predict")
    require_array(train_y, "train_y", "knn_predict", ndim=1)
    require_same_backend("knn_predict", train_x=train_x, train_y=train_y, test_x=test_x)
    if train_y.dtype.kind not in "iu" or train_y.shape[0] != train.shape[0]:
        raise ValueError(
            "knn_predict: train_y must be an integer array with one label per training "
            f"sample, got dtype {train_y.dtype} and shape {tuple(train_y.shape)} for "
            f"train_x of shape {tuple(train_x.shape)}"
        )
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"knn_predict: test_x samples have shape {tuple(test_x.shape[1:])} but train_x "
            f"samples have shape {tuple(train_x.shape[1:])}"
        )
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= train.shape[0]:
        raise ValueError(f"knn_predict: k must be an int in [1, {train.shape[0]}], got {k!r}")
    xp = array_module(train, test)
    nearest = xp.argsort(pairwise_sq_distances(test, train), axis=1, kind="stable")[:, :k]
    votes = train_y[nearest]  # (M, k)
    num_classes = int(train_y.max()) + 1
    counts = (votes[:, :, None] == xp.arange(num_classes)[None, None, :]).sum(axis=1)
    return counts.argmax(axis=1).astype(xp.int64)
