"""k-means and kNN: hand examples, well-separated clusters, scikit-learn as the oracle for
kNN, accuracy on real digits, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_course.backend import use_backend
from cnn_course.classic import kmeans, knn_predict, pairwise_sq_distances
from cnn_course.data import load_digits


def test_pairwise_sq_distances_hand_example(xp):
    a = xp.asarray([[0.0, 0.0], [1.0, 2.0]])
    b = xp.asarray([[3.0, 4.0], [1.0, 2.0]])
    # |(0,0)-(3,4)|^2 = 25, |(0,0)-(1,2)|^2 = 5, |(1,2)-(3,4)|^2 = 8, itself 0
    assert pairwise_sq_distances(a, b).tolist() == [[25.0, 5.0], [8.0, 0.0]]


def test_kmeans_hand_example(xp):
    # two pairs of points: centres are the pair means (0, 0.5) and (10, 10.5)
    x = xp.asarray([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    centers, labels = kmeans(x, 2, seed=0)
    labels = labels.tolist()
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert centers[labels[0]].tolist() == [0.0, 0.5]
    assert centers[labels[2]].tolist() == [10.0, 10.5]
    assert labels == kmeans(x, 2, seed=0)[1].tolist()  # deterministic for a seed


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), k=st.integers(2, 6), dim=st.integers(1, 5))
def test_kmeans_recovers_well_separated_clusters(seed, k, dim):
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.arange(k) * 100.0)[:, None] * np.ones(dim)  # 100 apart
    y = rng.integers(0, k, 60)
    y[:k] = np.arange(k)  # every cluster has a point
    x = truth[y] + rng.standard_normal((60, dim))  # spread 1
    centers, labels = kmeans(x, k, seed=seed)
    # the same partition up to renaming, and each centre within 1 of its cluster's mean
    pairs = set(zip(labels.tolist(), y.tolist(), strict=True))
    assert len(pairs) == k
    for got, true in pairs:
        np.testing.assert_allclose(centers[got], x[y == true].mean(axis=0), atol=1e-9)


def test_kmeans_keeps_dtype_and_inputs(xp, rng):
    x = xp.asarray(rng.standard_normal((20, 3)), dtype=xp.float32)
    before = x.copy()
    centers, labels = kmeans(x, 3, seed=1)
    assert centers.dtype == xp.float32 and centers.shape == (3, 3)
    assert labels.dtype == xp.int64 and labels.shape == (20,)
    assert bool((x == before).all())


def test_knn_hand_example(xp):
    train_x = xp.asarray([[0.0], [1.0], [2.0], [10.0], [11.0]])
    train_y = xp.asarray([0, 0, 1, 1, 1])
    test_x = xp.asarray([[0.4], [1.6], [9.0]])
    # k=1: nearest 0.0 -> 0, 2.0 -> 1, 10.0 -> 1
    assert knn_predict(train_x, train_y, test_x, 1).tolist() == [0, 1, 1]
    # k=3: {0,1,2} -> labels 0,0,1 -> 0 ; {1,2,0} -> 0 ; {10,11,2} -> 1
    assert knn_predict(train_x, train_y, test_x, 3).tolist() == [0, 0, 1]
    # k=2 at 1.5 ties 1 (label 0) and 2 (label 1): the tie goes to the smaller label
    assert knn_predict(train_x, train_y, xp.asarray([[1.5]]), 2).tolist() == [0]


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), k=st.sampled_from([1, 3, 5, 7]))
def test_knn_matches_sklearn(seed, k):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    train_x = rng.standard_normal((40, 2, 3))  # samples are flattened
    train_y = rng.integers(0, 3, 40)
    test_x = rng.standard_normal((15, 2, 3))
    # odd k and 3 classes can still tie (e.g. 1-1-1 with k=3); compare where sklearn's
    # vote is strict
    ref = KNeighborsClassifier(n_neighbors=k).fit(train_x.reshape(40, -1), train_y)
    proba = ref.predict_proba(test_x.reshape(15, -1))
    strict = (np.sort(proba, axis=1)[:, -1] > np.sort(proba, axis=1)[:, -2]) if k > 1 else True
    got = knn_predict(train_x, train_y, test_x, k)
    np.testing.assert_array_equal(got[strict], proba.argmax(axis=1)[strict])


def test_knn_on_real_digits():
    with use_backend("numpy"):
        d = load_digits("mnist5k")
    accuracy = float((knn_predict(d.x_train, d.y_train, d.x_test, 3) == d.y_test).mean())
    # 3-NN with 4,000 raw-pixel MNIST references reaches about 94% (full 60k MNIST: ~97%)
    assert accuracy > 0.92, accuracy


def test_classic_rejects_bad_input(xp):
    x = xp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"kmeans: k must be an int in \[1, 4\], got 5"):
        kmeans(x, 5)
    with pytest.raises(TypeError, match="kmeans: x must have a floating-point dtype"):
        kmeans(xp.zeros((4, 2), dtype=xp.int64), 2)
    with pytest.raises(ValueError, match=r"kmeans: x must have shape \(N, ...\)"):
        kmeans(xp.zeros(4), 2)
    y = xp.asarray([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"knn_predict: test_x samples have shape \(3,\)"):
        knn_predict(x, y, xp.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="knn_predict: train_y must be an integer array"):
        knn_predict(x, xp.zeros(4), x, 1)
    with pytest.raises(ValueError, match=r"knn_predict: k must be an int in \[1, 4\], got 0"):
        knn_predict(x, y, x, 0)
