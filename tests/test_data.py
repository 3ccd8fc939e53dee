"""Digits loading, batching, augmentation and imbalance tools: shapes, dtypes, stratification,
determinism, augmentation properties, resampling counts."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course import functional as F
from cnn_course.backend import to_numpy
from cnn_course.data import (
    DATASETS,
    batches,
    class_counts,
    class_weights,
    gaussian_noise,
    load_digits,
    mixup,
    one_hot,
    oversample,
    random_crop,
    random_flip,
    smote,
    stratified_split,
    undersample,
)


def test_stratified_split_hand_example():
    y = np.asarray([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    train, test = stratified_split(y, 0.5, seed=3)
    # round(0.5 * 4) = 2, round(0.5 * 8) = 4, round(0.5 * 2) = 1
    assert np.bincount(y[test]).tolist() == [2, 4, 1]
    assert sorted(train.tolist() + test.tolist()) == list(range(14))


@pytest.fixture(scope="module")
def mnist():
    return load_digits("mnist5k", test_size=0.2, seed=0)


def test_load_mnist5k_shapes_dtypes_and_range(mnist):
    assert mnist.name == "mnist5k"
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert float(mnist.x_train.min()) == 0.0 and float(mnist.x_train.max()) == 1.0
    # stratified: 500 images per digit -> 400 train and 100 test of each
    assert class_counts(mnist.y_train).tolist() == [400] * 10
    assert class_counts(mnist.y_test).tolist() == [100] * 10


def test_load_digits_is_deterministic_and_disjoint(mnist):
    again = load_digits("mnist5k", seed=0)
    np.testing.assert_array_equal(to_numpy(again.x_test), to_numpy(mnist.x_test))
    other = load_digits("mnist5k", seed=1)
    assert not np.array_equal(to_numpy(other.x_test), to_numpy(mnist.x_test))
    # no test image is also a training image
    train = {row.tobytes() for row in to_numpy(mnist.x_train)}
    assert not any(row.tobytes() in train for row in to_numpy(mnist.x_test))


def test_load_digits_shuffles_within_the_stratified_split(mnist):
    # the source file is ordered by label: the parts must not be, so that unshuffled
    # batches hold many classes; yet they are exactly the seeded stratified split
    images, labels = DATASETS["mnist5k"]()
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    for x, y, idx in (
        (mnist.x_train, mnist.y_train, train_idx),
        (mnist.x_test, mnist.y_test, test_idx),
    ):
        x, y = to_numpy(x), to_numpy(y)
        assert {row.tobytes() for row in x} == {row.tobytes() for row in images[idx]}
        assert sorted(y.tolist()) == sorted(labels[idx].tolist())
        assert all(len(np.unique(y[i : i + 64])) >= 6 for i in range(0, y.size, 64))


def test_load_digits8x8():
    d = load_digits("digits8x8", test_size=0.25)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == np.float32
    assert d.x_train.shape[0] + d.x_test.shape[0] == 1797
    assert float(d.x_train.max()) == 1.0


def test_batches_cover_the_epoch(xp):
    x = xp.arange(10.0)[:, None]
    y = xp.arange(10)
    got = list(batches(x, y, 4, seed=0))
    assert [b[0].shape[0] for b in got] == [4, 4, 2]
    seen = sorted(int(v) for _, yb in got for v in yb.tolist())
    assert seen == list(range(10))
    assert all(bool((xb[:, 0] == yb).all()) for xb, yb in got)  # pairs stay together
    ordered = list(batches(x, y, 4, shuffle=False, drop_last=True))
    assert [yb.tolist() for _, yb in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    again = [yb.tolist() for _, yb in batches(x, y, 4, seed=0)]
    assert again == [yb.tolist() for _, yb in got]


def test_random_flip_hand_example(xp):
    x = xp.arange(6.0).reshape(2, 1, 1, 3)
    assert random_flip(x, p=1.0).tolist() == [[[[2.0, 1.0, 0.0]]], [[[5.0, 4.0, 3.0]]]]
    assert random_flip(x, p=0.0).tolist() == x.tolist()
    flipped = random_flip(xp.ones((1000, 1, 1, 2)) * xp.asarray([0.0, 1.0]), seed=0)
    fraction = float((flipped[:, 0, 0, 0] == 1).mean())
    assert 0.45 < fraction < 0.55


def test_random_crop_is_a_shift_with_zero_fill(xp):
    x = xp.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    assert random_crop(x, 0, seed=0).tolist() == x.tolist()
    out = random_crop(xp.tile(x, (50, 2, 1, 1)), 1, seed=0)
    assert out.shape == (50, 2, 3, 3)
    padded = np.pad(to_numpy(x)[0, 0], 1)
    windows = {padded[r : r + 3, c : c + 3].tobytes() for r in range(3) for c in range(3)}
    for image in to_numpy(out):
        assert image[0].tobytes() in windows  # one of the 9 shifted copies
        np.testing.assert_array_equal(image[0], image[1])  # channels move together
    assert len({img[0].tobytes() for img in to_numpy(out)}) > 5  # several different shifts


def test_gaussian_noise_statistics(xp):
    x = xp.full((20, 1, 28, 28), 0.5, dtype=xp.float32)
    out = gaussian_noise(x, 0.1, seed=0)
    assert out.dtype == xp.float32
    assert abs(float(out.mean()) - 0.5) < 0.01 and abs(float(out.std()) - 0.1) < 0.01
    assert float(gaussian_noise(x, 5.0, seed=0).max()) == 1.0  # clipped to [0, 1]
    np.testing.assert_array_equal(to_numpy(gaussian_noise(x, 0.1, seed=0)), to_numpy(out))


def test_mixup_blends_images_and_labels_with_one_weight(xp):
    x = xp.asarray(np.random.default_rng(0).random((8, 1, 4, 4)), dtype=xp.float32)
    y = xp.arange(8)  # distinct labels: each soft label shows lam and the partner's index
    x_mixed, y_soft = mixup(x, y, 8, alpha=0.4, seed=0)
    assert x_mixed.shape == x.shape and x_mixed.dtype == xp.float32
    assert y_soft.shape == (8, 8)
    np.testing.assert_allclose(to_numpy(y_soft.sum(axis=1)), 1.0, rtol=1e-6)
    xs, ys = to_numpy(x), to_numpy(y_soft)
    for i in range(8):
        lam = ys[i, i]
        others = ys[i].copy()
        others[i] = -1
        partner = int(others.argmax()) if lam < 1 else i
        np.testing.assert_allclose(
            to_numpy(x_mixed[i]), lam * xs[i] + (1 - lam) * xs[partner], rtol=1e-5, atol=1e-6
        )
    assert 0 < float(y_soft.max()) <= 1 and len(set(np.round(ys.max(axis=1), 6))) > 1
    assert one_hot(xp.asarray([2, 0]), 3).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_resampling_counts(xp):
    y = xp.asarray([0] * 10 + [1] * 3 + [2] * 5)
    x = xp.arange(18.0)[:, None] * 10 + y[:, None]  # x encodes its label in the last digit
    xu, yu = undersample(x, y, seed=0)
    assert class_counts(yu).tolist() == [3, 3, 3]
    xo, yo = oversample(x, y, seed=0)
    assert class_counts(yo).tolist() == [10, 10, 10]
    for xs, ys in ((xu, yu), (xo, yo)):
        assert bool(((xs[:, 0] % 10) == ys).all())  # rows keep their labels
    # oversampling keeps every original sample; undersampling never repeats one
    assert set(to_numpy(x[:, 0]).tolist()) <= set(to_numpy(xo[:, 0]).tolist())
    assert len(set(to_numpy(xu[:, 0]).tolist())) == 9
    np.testing.assert_array_equal(to_numpy(undersample(x, y, seed=0)[1]), to_numpy(yu))


def test_smote_interpolates_within_a_class(xp):
    # class 1 has two far-apart pairs; with k=1 each point's neighbour is its pair-mate, so
    # every synthetic point lies on segment (0,0)-(1,0) or segment (100,100)-(101,100)
    x = xp.asarray([[5.0, 5.0]] * 6 + [[0.0, 0.0], [1.0, 0.0], [100.0, 100.0], [101.0, 100.0]])
    y = xp.asarray([0] * 6 + [1] * 4)
    before = x.copy()
    xs, ys = smote(x, y, k=1, seed=0)
    assert class_counts(ys).tolist() == [6, 6]
    assert ys[10:].tolist() == [1, 1]
    np.testing.assert_array_equal(to_numpy(xs[:10]), to_numpy(x))  # originals first
    originals = {tuple(p) for p in to_numpy(x).tolist()}
    for px, py in to_numpy(xs[10:]).tolist():
        assert (py == 0.0 and 0.0 <= px <= 1.0) or (py == 100.0 and 100.0 <= px <= 101.0)
        assert (px, py) not in originals  # a new point, not a copy
    np.testing.assert_array_equal(to_numpy(smote(x, y, k=1, seed=0)[0]), to_numpy(xs))
    assert bool((x == before).all())


def test_class_weights_hand_example(xp):
    y = xp.asarray([0] * 6 + [1] * 3 + [2] * 1)
    # inverse frequency N / (K n_c) = 10 / 18, 10 / 9, 10 / 3
    np.testing.assert_allclose(
        to_numpy(class_weights(y)), [0.5555556, 1.1111111, 3.3333333], rtol=1e-6
    )
    # effective number with beta = 0.5: (1 - b) / (1 - b^n) = 0.5/0.984375, 0.5/0.875, 1
    # = 32/63, 36/63, 63/63; rescaled to sum to 3: 96/131, 108/131, 189/131
    np.testing.assert_allclose(
        to_numpy(class_weights(y, beta=0.5)), [0.7328244, 0.8244275, 1.4427481], rtol=1e-6
    )
    assert class_weights(y, beta=0.0).tolist() == [1.0, 1.0, 1.0]


def test_class_weights_dtype_matches_the_logits(xp):
    y = xp.asarray([0, 0, 0, 1])
    assert class_weights(y).dtype == xp.float32  # the default
    weight = class_weights(y, dtype=xp.float64)
    assert weight.dtype == xp.float64
    logits = xp.zeros((4, 2), dtype=xp.float64)
    # weights 4/6 and 4/2; every loss is log 2, and a weighted mean of equal values is log 2
    loss = F.cross_entropy(logits, y, weight=weight)
    assert loss.dtype == xp.float64
    np.testing.assert_allclose(float(loss), 0.6931471805599453, rtol=1e-15)


def test_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.random.default_rng(0).integers(0, 4, 50) ** 2 % 5  # skewed labels 0, 1, 4
    y = np.searchsorted(np.unique(y), y)
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(class_weights(y), expected, rtol=1e-6)


def test_data_rejects_bad_input(xp):
    with pytest.raises(ValueError, match="load_digits: name must be one of"):
        load_digits("cifar10")
    with pytest.raises(ValueError, match=r"stratified_split: test_size must be in \(0, 1\)"):
        stratified_split(np.zeros(4, dtype=np.int64), 1.5)
    with pytest.raises(ValueError, match="batches: x has 3 samples but y has 2"):
        next(batches(xp.zeros((3, 1)), xp.zeros(2), 2))
    with pytest.raises(ValueError, match="batches: batch_size must be a positive int"):
        next(batches(xp.zeros((3, 1)), xp.zeros(3), 0))
    with pytest.raises(ValueError, match="random_crop: padding must be a non-negative int"):
        random_crop(xp.zeros((1, 1, 2, 2)), -1)
    with pytest.raises(ValueError, match="mixup: alpha must be positive"):
        mixup(xp.zeros((1, 1, 2, 2)), xp.zeros(1, dtype=xp.int64), 2, alpha=0.0)
    with pytest.raises(TypeError, match="smote: x must have a floating-point dtype"):
        smote(xp.zeros((3, 2), dtype=xp.int64), xp.asarray([0, 0, 1]))
    with pytest.raises(ValueError, match="smote: class 1 has 1 sample"):
        smote(xp.zeros((3, 2)), xp.asarray([0, 0, 1]))
    with pytest.raises(ValueError, match="smote: k must be a positive int, got 0"):
        smote(xp.zeros((3, 2)), xp.asarray([0, 0, 1]), k=0)
    with pytest.raises(ValueError, match=r"class_weights: classes \[1\] have no samples"):
        class_weights(xp.asarray([0, 2]))
    with pytest.raises(ValueError, match=r"class_weights: beta must be in \[0, 1\)"):
        class_weights(xp.asarray([0, 1]), beta=1.0)
    with pytest.raises(TypeError, match="class_weights: dtype must be a floating-point dtype"):
        class_weights(xp.asarray([0, 1]), dtype="int64")


def test_augmentations_leave_inputs_unchanged(xp):
    x = xp.asarray(np.random.default_rng(1).random((4, 1, 5, 5)), dtype=xp.float32)
    y = xp.arange(4)
    before = x.copy()
    random_flip(x, seed=0)
    random_crop(x, 2, seed=0)
    gaussian_noise(x, 0.3, seed=0)
    mixup(x, y, 4, seed=0)
    assert bool((x == before).all())
