"""Scaled dot-product attention: hand example, naive loops, PyTorch oracle (boolean, float
and causal masks), float64 gradient checks, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnn_course.functional as F
from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from tests.helpers import assert_close


def test_attention_hand_example(xp):
    # one query, two keys: scores (q.k) / sqrt(2) = [1/sqrt2 * 2, 0] -> weights softmax
    q = xp.asarray([[[1.0, 1.0]]])
    k = xp.asarray([[[1.0, 1.0], [0.0, 0.0]]])
    v = xp.asarray([[[10.0], [0.0]]])
    w0 = math.exp(2 / math.sqrt(2)) / (math.exp(2 / math.sqrt(2)) + 1)
    assert_close(F.scaled_dot_product_attention(q, k, v), [[[10 * w0]]])
    # causal: the first query sees only the first key
    q2 = xp.asarray([[[1.0], [1.0]]])
    k2 = xp.asarray([[[0.0], [5.0]]])
    v2 = xp.asarray([[[3.0], [7.0]]])
    out = F.scaled_dot_product_attention(q2, k2, v2, is_causal=True)
    e = math.exp(5.0)
    assert_close(out, [[[3.0], [(3 + 7 * e) / (1 + e)]]])


MASKS = ["none", "bool", "float", "causal", "scale", "dead_row"]


def _case(rng, kind):
    q = rng.standard_normal((2, 3, 4, 5))
    k = rng.standard_normal((2, 3, 6, 5))
    v = rng.standard_normal((2, 3, 6, 7))
    kwargs = {}
    if kind in ("bool", "dead_row"):
        mask = rng.random((4, 6)) > 0.4
        mask[:, 0] = True
        if kind == "dead_row":
            mask[1] = False  # a query that may attend to nothing: output 0
        kwargs["attn_mask"] = mask
    elif kind == "float":
        kwargs["attn_mask"] = rng.standard_normal((3, 1, 6))
    elif kind == "causal":
        kwargs["is_causal"] = True
    elif kind == "scale":
        kwargs["scale"] = 0.3
    return q, k, v, kwargs


@pytest.mark.parametrize("kind", MASKS)
def test_attention_matches_naive(xp, rng, kind):
    q, k, v, kwargs = _case(rng, kind)
    kwargs = {n: xp.asarray(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
    q, k, v = (xp.asarray(a) for a in (q, k, v))
    assert_close(
        F.scaled_dot_product_attention(q, k, v, **kwargs),
        F.scaled_dot_product_attention_naive(q, k, v, **kwargs),
    )


@pytest.mark.oracle
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_attention_matches_torch(torch, rng, kind, dtype):
    q, k, v, kwargs = _case(rng, kind)
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    if kind == "float":
        kwargs["attn_mask"] = kwargs["attn_mask"].astype(dtype)
    grad = rng.standard_normal((2, 3, 4, 7)).astype(dtype)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tkw = {n: torch.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
    expected = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **tkw)
    expected.backward(torch.tensor(grad))
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    got = F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert got.dtype == q.dtype
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=tol, atol=tol)
    grads = F.scaled_dot_product_attention_backward(grad, q, k, v, **kwargs)
    for mine, ref in zip(grads, (tq, tk, tv), strict=True):
        assert mine.dtype == q.dtype
        np.testing.assert_allclose(mine, ref.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", MASKS)
def test_attention_backward_gradcheck(rng, kind):
    q, k, v, kwargs = _case(rng, kind)
    q, k, v = q[:1, :2], k[:1, :2], v[:1, :2]
    if kind == "float":
        kwargs["attn_mask"] = kwargs["attn_mask"][:2]
    grad = rng.standard_normal((1, 2, 4, 7))
    analytic = F.scaled_dot_product_attention_backward(grad, q, k, v, **kwargs)
    check_gradients(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kwargs),
        [q, k, v],
        analytic,
        grad,
        ["q", "k", "v"],
    )


def test_attention_rejects_bad_input():
    q, k, v = np.zeros((2, 4, 5)), np.zeros((2, 6, 5)), np.zeros((2, 6, 3))
    with pytest.raises(ValueError, match="embedding size"):
        F.scaled_dot_product_attention(q, np.zeros((2, 6, 4)), v)
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 6), bool), is_causal=True)
    with pytest.raises(ValueError, match=r"does not broadcast.*\(2, 4, 6\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), bool))
    with pytest.raises(TypeError, match="q must have a floating-point dtype"):
        F.scaled_dot_product_attention(q.astype(int), k, v)
    with pytest.raises(ValueError, match="grad_out"):
        F.scaled_dot_product_attention_backward(np.zeros((2, 4, 5)), q, k, v)
    before = q.copy()
    F.scaled_dot_product_attention_backward(np.ones((2, 4, 3)), q, k, v)
    assert (to_numpy(q) == before).all()


def test_patch_embedding_is_a_strided_convolution(rng):
    """ViT's patch embedding: a P x P convolution with stride P equals cutting the image into
    patches, flattening each and applying one linear layer."""
    x = rng.standard_normal((2, 3, 8, 12))
    weight = rng.standard_normal((5, 3, 4, 4))
    bias = rng.standard_normal(5)
    conv = F.conv2d(x, weight, bias, stride=4)  # (2, 5, 2, 3)
    patches = x.reshape(2, 3, 2, 4, 3, 4).transpose(0, 2, 4, 1, 3, 5).reshape(2, 6, 48)
    linear = F.linear(patches, weight.reshape(5, 48), bias)  # (2, 6, 5)
    np.testing.assert_allclose(conv.reshape(2, 5, 6).transpose(0, 2, 1), linear, rtol=1e-12)


def test_attention_macs_counts_the_matrix_products():
    from cnn_course.analysis import attention_macs

    # 2 x 2 tokens of size 3, global: projections 4 * 4 tokens * 3 * 3 = 144; Q K^T is
    # (4 x 3) @ (3 x 4) = 48 MACs; weights @ V the same: 240 in all
    assert attention_macs(2, 2, 3) == 144 + 48 + 48
    # windows of 1 token: each token attends to itself only, 3 + 3 MACs per token
    assert attention_macs(2, 2, 3, window_size=1) == 144 + 4 * 6
    # Swin-T stage 1 (56 x 56 tokens, C = 96, M = 7): the paper's equations 1 and 2
    h = w = 56
    assert attention_macs(h, w, 96) == 4 * h * w * 96**2 + 2 * (h * w) ** 2 * 96
    assert attention_macs(h, w, 96, 7) == 4 * h * w * 96**2 + 2 * 49 * h * w * 96
    with pytest.raises(ValueError, match="divide"):
        attention_macs(10, 10, 4, window_size=3)
