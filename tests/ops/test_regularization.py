"""Inverted dropout: hand example, the mask generator, statistics over a large array, the
PyTorch oracle (same mask), gradient check, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops.regularization import dropout, dropout_backward, dropout_mask
from tests.helpers import FIXTURE_OK, assert_close


def test_dropout_hand_example(xp):
    x = xp.asarray([[1.0, 2.0], [3.0, 4.0]])
    mask = xp.asarray([[True, False], [False, True]])
    assert_close(dropout(x, 0.5, True, mask), [[2.0, 0.0], [0.0, 8.0]])  # kept units x 1/(1-p)
    assert_close(dropout(x, 0.75, True, mask), [[4.0, 0.0], [0.0, 16.0]])
    g = xp.asarray([[1.0, 1.0], [1.0, 1.0]])
    assert_close(dropout_backward(g, x, 0.5, True, mask), [[2.0, 0.0], [0.0, 2.0]])
    # Evaluation: the identity, no rescaling (that is what the 1/(1-p) in training buys).
    assert dropout(x, 0.5, training=False) is x
    assert_close(dropout_backward(g, x, 0.5, False), [[1.0, 1.0], [1.0, 1.0]])


def test_dropout_mask_is_seeded(xp):
    a = dropout_mask((4, 5), 0.5, seed=7, xp=xp)
    assert a.dtype == bool and a.shape == (4, 5)
    assert type(a) is type(xp.zeros(1))
    assert_close(a, to_numpy(dropout_mask((4, 5), 0.5, seed=7, xp=xp)), rtol=0, atol=0)
    assert not np.array_equal(to_numpy(a), to_numpy(dropout_mask((4, 5), 0.5, seed=8, xp=xp)))
    assert bool(xp.all(dropout_mask((3, 3), 0.0, seed=1, xp=xp)))  # p = 0 keeps everything
    assert dropout_mask((2,), 0.5, seed=1).shape == (2,)  # default: the current backend


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(xp, p):
    # 200,000 units: the dropped fraction has standard deviation sqrt(p (1 - p) / n) < 0.0012,
    # so 0.006 is five standard deviations; the mean of the output stays that of x (= 1).
    n = 200_000
    x = xp.ones(n)
    mask = dropout_mask(x.shape, p, seed=0, xp=xp)
    y = dropout(x, p, True, mask)
    dropped = float(xp.mean(y == 0))
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert abs(float(xp.mean(y)) - 1.0) < 5 * np.sqrt(p / (1 - p) / n)
    kept = y[y != 0]
    assert_close(kept, np.full(kept.shape, 1 / (1 - p)))
    # Without a mask, a fresh one is drawn with the same statistics.
    y = dropout(x, p, True)
    assert abs(float(xp.mean(y == 0)) - p) < 5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.oracle
@FIXTURE_OK
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    p=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    seed=st.integers(0, 2**31),
)
def test_dropout_matches_torch_given_its_mask(xp, torch, shape, p, seed):
    # Run torch's dropout twice from the same seed: on ones (which reveals its mask) and on x.
    x = np.random.default_rng(seed).normal(size=shape)
    g = np.random.default_rng(seed + 1).normal(size=shape)
    torch.manual_seed(seed)
    mask = (torch.nn.functional.dropout(torch.ones(shape, dtype=torch.float64), p) != 0).numpy()
    torch.manual_seed(seed)
    t_x = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.dropout(t_x, p)
    expected.backward(torch.tensor(g))
    assert_close(dropout(xp.asarray(x), p, True, xp.asarray(mask)), expected.detach().numpy())
    grad = dropout_backward(xp.asarray(g), xp.asarray(x), p, True, xp.asarray(mask))
    assert_close(grad, t_x.grad.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_dropout_backward_gradcheck(xp, rng, training):
    x, g = xp.asarray(rng.normal(size=(3, 4))), xp.asarray(rng.normal(size=(3, 4)))
    mask = dropout_mask(x.shape, 0.3, seed=3, xp=xp)
    analytic = [dropout_backward(g, x, 0.3, training, mask)]
    check_gradients(lambda a: dropout(a, 0.3, training, mask), [x], analytic, g, ["x"])


def test_rejects_bad_input(xp):
    x = xp.ones((2, 3))
    with pytest.raises(ValueError, match=r"dropout: p \(the drop probability\) must be in"):
        dropout(x, 1.0)
    with pytest.raises(ValueError, match=r"dropout_mask: p \(the drop probability\) must be"):
        dropout_mask((2, 3), -0.1, xp=xp)
    with pytest.raises(TypeError, match="dropout: p must be a real number"):
        dropout(x, "0.5")
    with pytest.raises(TypeError, match="dropout: training must be True or False"):
        dropout(x, 0.5, training=None)
    with pytest.raises(ValueError, match=r"dropout: mask must be a bool array of x's shape"):
        dropout(x, 0.5, True, xp.ones((2, 3), dtype=bool)[:, :2])
    with pytest.raises(ValueError, match=r"dropout: mask must be a bool array"):
        dropout(x, 0.5, True, xp.ones((2, 3)))
    with pytest.raises(TypeError, match="dropout: x must have a floating-point dtype"):
        dropout(xp.ones((2, 3), dtype=xp.int64), 0.5)
    with pytest.raises(ValueError, match="dropout_backward: in training, pass the mask"):
        dropout_backward(x, x, 0.5, True)
    with pytest.raises(ValueError, match=r"dropout_backward: grad_out has shape \(3,\) but"):
        dropout_backward(xp.ones(3), x, 0.5, False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, rng, dtype):
    x = xp.asarray(rng.normal(size=(3, 4)), dtype=dtype)
    g = xp.asarray(rng.normal(size=(3, 4)), dtype=dtype)
    mask = dropout_mask(x.shape, 0.5, seed=0, xp=xp)
    saved = [a.copy() for a in (x, g, mask)]
    for out in (dropout(x, 0.5, True, mask), dropout_backward(g, x, 0.5, True, mask), dropout(x)):
        assert out.dtype == x.dtype
    for now, before in zip((x, g, mask), saved, strict=True):
        assert_close(now, to_numpy(before), rtol=0, atol=0)
