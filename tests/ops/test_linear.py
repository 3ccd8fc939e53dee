"""The linear layer: hand example, loop definition, PyTorch oracle, gradient check, bad
input, inputs unchanged, dtype kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops.linear import linear, linear_backward
from tests.helpers import FIXTURE_OK, LAYOUTS, assert_close, laid_out


def test_linear_hand_example(xp):
    x = xp.asarray([[1.0, 2.0]])
    weight = xp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (out=3, in=2)
    bias = xp.asarray([0.5, -0.5, 0.0])
    assert_close(linear(x, weight, bias), [[1.5, 1.5, 3.0]])
    assert_close(linear(x, weight), [[1.0, 2.0, 3.0]])
    grad_x, grad_w, grad_b = linear_backward(xp.asarray([[1.0, 2.0, 3.0]]), x, weight, bias)
    assert_close(grad_x, [[4.0, 5.0]])  # g @ W = [1 + 3, 2 + 3]
    assert_close(grad_w, [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # g^T x
    assert_close(grad_b, [1.0, 2.0, 3.0])
    assert linear_backward(xp.asarray([[1.0, 2.0, 3.0]]), x, weight)[2] is None


@FIXTURE_OK
@given(
    n=st.integers(1, 4), fin=st.integers(1, 5), fout=st.integers(1, 5), seed=st.integers(0, 2**31)
)
def test_linear_matches_loop_definition(xp, n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.normal(size=(n, fin)), rng.normal(size=(fout, fin)), rng.normal(size=fout)
    expected = np.empty((n, fout))
    for i in range(n):  # y[i, o] = b[o] + sum_k w[o, k] x[i, k]: every output sees every input
        for o in range(fout):
            expected[i, o] = b[o] + sum(w[o, k] * x[i, k] for k in range(fin))
    assert_close(linear(xp.asarray(x), xp.asarray(w), xp.asarray(b)), expected)


@pytest.mark.oracle
@FIXTURE_OK
@given(
    lead=st.lists(st.integers(1, 4), max_size=2),
    fin=st.integers(1, 5),
    fout=st.integers(1, 5),
    has_bias=st.booleans(),
    x_layout=LAYOUTS,
    transposed_weight=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_linear_matches_torch(
    xp, torch, lead, fin, fout, has_bias, x_layout, transposed_weight, seed
):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(*lead, fin)), rng.normal(size=(fout, fin))
    b = rng.normal(size=fout) if has_bias else None
    g = rng.normal(size=(*lead, fout))
    t_x, t_w = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    t_b = torch.tensor(b, requires_grad=True) if has_bias else None
    expected = torch.nn.functional.linear(t_x, t_w, t_b)
    expected.backward(torch.tensor(g))
    x_xp = laid_out(xp, x, x_layout)
    w_xp = xp.asarray(w.T.copy()).T if transposed_weight else xp.asarray(w)  # a transposed view
    b_xp = None if b is None else xp.asarray(b)
    assert_close(linear(x_xp, w_xp, b_xp), expected.detach().numpy())
    grad_x, grad_w, grad_b = linear_backward(xp.asarray(g), x_xp, w_xp, b_xp)
    assert_close(grad_x, t_x.grad.numpy())
    assert_close(grad_w, t_w.grad.numpy())
    if has_bias:
        assert_close(grad_b, t_b.grad.numpy())
    else:
        assert grad_b is None


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4), (4,)])
def test_linear_backward_gradcheck(xp, rng, has_bias, x_shape):
    x, w = xp.asarray(rng.normal(size=x_shape)), xp.asarray(rng.normal(size=(5, 4)))
    g = xp.asarray(rng.normal(size=x_shape[:-1] + (5,)))
    if has_bias:
        b = xp.asarray(rng.normal(size=5))
        check_gradients(linear, [x, w, b], linear_backward(g, x, w, b), g, ["x", "weight", "bias"])
    else:
        grads = linear_backward(g, x, w)
        check_gradients(linear, [x, w], grads[:2], g, ["x", "weight"])


def test_rejects_bad_input(xp):
    x, w, b = xp.ones((2, 3)), xp.ones((4, 3)), xp.ones(4)
    with pytest.raises(ValueError, match=r"linear: x has 2 input features \(shape \(3, 2\)\)"):
        linear(xp.ones((3, 2)), w)
    with pytest.raises(ValueError, match="linear: bias has 3 entries but weight has 4 output"):
        linear(x, w, xp.ones(3))
    with pytest.raises(ValueError, match="linear: weight must have 2 dimensions"):
        linear(x, xp.ones(3))
    with pytest.raises(TypeError, match="linear: x must have a floating-point dtype"):
        linear(xp.ones((2, 3), dtype=xp.int64), w)
    with pytest.raises(TypeError, match="linear: arrays must share one dtype"):
        linear(x, w.astype(xp.float32), b)
    with pytest.raises(ValueError, match=r"linear_backward: grad_out has shape \(2, 3\) but"):
        linear_backward(xp.ones((2, 3)), x, w, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, rng, dtype):
    x, w, b, g = (xp.asarray(rng.normal(size=s), dtype=dtype) for s in [(2, 3), (4, 3), 4, (2, 4)])
    saved = [a.copy() for a in (x, w, b, g)]
    for out in (linear(x, w, b), *linear_backward(g, x, w, b)):
        assert out.dtype == x.dtype
    for now, before in zip((x, w, b, g), saved, strict=True):
        assert_close(now, to_numpy(before), rtol=0, atol=0)
