"""Activations: hand examples, maxout vs its loop definition, the PyTorch oracle, gradient
checks, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops import activations as A
from tests.helpers import FIXTURE_OK, LAYOUTS, assert_close, laid_out


# ----------------------------------------------------------------------------- hand examples
def test_sigmoid_tanh_hand_example(xp):
    # sigmoid(ln 3) = 3 / (3 + 1) = 0.75; s (1 - s) = 0.1875. tanh(ln 2) = (2 - 1/2) / (2 + 1/2).
    x = xp.asarray([-math.log(3), 0.0, math.log(3)])
    assert_close(A.sigmoid(x), [0.25, 0.5, 0.75])
    assert_close(A.sigmoid_backward(xp.ones(3), x), [0.1875, 0.25, 0.1875])
    x = xp.asarray([-math.log(2), 0.0, math.log(2)])
    assert_close(A.tanh(x), [-0.6, 0.0, 0.6])
    assert_close(A.tanh_backward(xp.asarray([1.0, 2.0, 1.0]), x), [0.64, 2.0, 0.64])


def test_relu_family_hand_example(xp):
    x = xp.asarray([-2.0, 0.0, 3.0])
    g = xp.asarray([1.0, 1.0, 1.0])
    assert_close(A.relu(x), [0.0, 0.0, 3.0])
    assert_close(A.relu_backward(g, x), [0.0, 0.0, 1.0])  # subgradient 0 at x = 0
    assert_close(A.leaky_relu(x, 0.1), [-0.2, 0.0, 3.0])
    assert_close(A.leaky_relu_backward(g, x, 0.1), [0.1, 0.1, 1.0])
    # elu(-ln 2) = exp(-ln 2) - 1 = -0.5, derivative exp(-ln 2) = 0.5; at 0 it is alpha.
    x = xp.asarray([-math.log(2), 0.0, 2.0])
    assert_close(A.elu(x), [-0.5, 0.0, 2.0])
    assert_close(A.elu_backward(g, x, alpha=2.0), [1.0, 2.0, 1.0])


def test_gelu_silu_hand_example(xp):
    # GELU(x) = x Phi(x); from a normal table Phi(1) = 0.8413447460685429, Phi(-1) = 1 - Phi(1),
    # phi(1) = exp(-1/2) / sqrt(2 pi) = 0.24197072451914337. GELU'(x) = Phi(x) + x phi(x).
    x = xp.asarray([-1.0, 0.0, 1.0])
    g = xp.ones(3)
    assert_close(A.gelu(x), [-0.15865525393145707, 0.0, 0.8413447460685429], rtol=1e-15)
    assert_close(
        A.gelu_backward(g, x),
        [0.15865525393145707 - 0.24197072451914337, 0.5, 0.8413447460685429 + 0.24197072451914337],
        rtol=1e-15,
    )
    # The tanh form: exact at 0 (value 0, slope 1/2), within 1e-3 of the exact GELU at +-1.
    assert_close(A.gelu(x, approximate="tanh")[1], 0.0)
    assert_close(A.gelu_backward(g, x, approximate="tanh")[1], 0.5)
    assert_close(A.gelu(x, approximate="tanh"), to_numpy(A.gelu(x)), rtol=0, atol=1e-3)
    # SiLU(ln 3) = ln 3 * 3/4; SiLU'(x) = s (1 + x (1 - s)) = 3/4 (1 + ln 3 / 4); SiLU'(0) = 1/2.
    x = xp.asarray([0.0, math.log(3)])
    assert_close(A.silu(x), [0.0, 0.75 * math.log(3)])
    assert_close(A.silu_backward(xp.ones(2), x), [0.5, 0.75 * (1 + math.log(3) / 4)])


def test_erf_matches_math_erf(xp):
    # Cody's approximation against the C library's erf: every interval (breaks at 0.46875 and
    # 4), tiny and huge arguments, both signs; relative error within a few float64 ulp.
    pieces = [np.linspace(-8, 8, 4001), np.geomspace(1e-300, 30, 601), [0.46875, 4.0, 27.0]]
    host = np.concatenate([np.concatenate(pieces), -np.concatenate(pieces)])
    expected = np.array([math.erf(v) for v in host])
    assert_close(A.erf(xp.asarray(host)), expected, rtol=1e-15, atol=0)
    assert_close(A.erf(xp.asarray([np.inf, -np.inf, 0.0])), [1.0, -1.0, 0.0], rtol=0, atol=0)
    assert np.isnan(to_numpy(A.erf(xp.asarray([np.nan])))[0])
    x32 = xp.asarray(host, dtype=xp.float32)
    assert A.erf(x32).dtype == xp.float32
    expected32 = np.array([math.erf(v) for v in to_numpy(x32).astype(np.float64)])
    assert_close(A.erf(x32), expected32, rtol=0, atol=5e-7)


def test_prelu_hand_example(xp):
    # Channel 0 slope 0.25, channel 1 slope 0.5, x of shape (N=1, C=2, L=2).
    x = xp.asarray([[[-4.0, 2.0], [-2.0, 6.0]]])
    weight = xp.asarray([0.25, 0.5])
    assert_close(A.prelu(x, weight), [[[-1.0, 2.0], [-1.0, 6.0]]])
    grad_x, grad_w = A.prelu_backward(xp.ones((1, 2, 2)), x, weight)
    assert_close(grad_x, [[[0.25, 1.0], [0.5, 1.0]]])
    assert_close(grad_w, [-4.0, -2.0])
    grad_x, grad_w = A.prelu_backward(xp.ones((1, 2, 2)), x, xp.asarray([0.1]))
    assert_close(grad_x, [[[0.1, 1.0], [0.1, 1.0]]])
    assert_close(grad_w, [-6.0])


def test_softmax_hand_example(xp):
    # exp of [0, ln 3, ln 4] is [1, 3, 4], total 8.
    x = xp.asarray([[0.0, math.log(3), math.log(4)]])
    assert_close(A.softmax(x), [[0.125, 0.375, 0.5]])
    assert_close(A.log_softmax(x), [[math.log(0.125), math.log(0.375), math.log(0.5)]])
    assert_close(A.softmax(x.T, dim=0), [[0.125], [0.375], [0.5]])
    # grad_out = e_2: s * (e_2 - s_2) = [-0.0625, -0.1875, 0.25].
    assert_close(A.softmax_backward(xp.asarray([[0.0, 0.0, 1.0]]), x), [[-0.0625, -0.1875, 0.25]])
    assert_close(A.log_softmax_backward(xp.asarray([[0.0, 0.0, 1.0]]), x), [[-0.125, -0.375, 0.5]])


def test_softmax_and_sigmoid_stable_for_huge_inputs(xp):
    x = xp.asarray([[1e4, 0.0, -1e4]])
    assert_close(A.softmax(x), [[1.0, 0.0, 0.0]])
    assert_close(A.log_softmax(x), [[0.0, -1e4, -2e4]])
    assert_close(A.sigmoid(x), [[1.0, 0.5, 0.0]])
    assert_close(A.elu(x), [[1e4, 0.0, -1.0]])
    assert_close(A.softmax(x.astype(xp.float32)), [[1.0, 0.0, 0.0]])


def test_maxout_hand_example(xp):
    # x: (N=1, C=4, L=2), pool_size 2: output channel 0 = max(ch 0, ch 1), 1 = max(ch 2, ch 3).
    x = xp.asarray([[[1.0, 5.0], [3.0, 2.0], [0.0, -1.0], [-2.0, -3.0]]])
    assert_close(A.maxout(x, 2), [[[3.0, 5.0], [0.0, -1.0]]])
    grad = A.maxout_backward(xp.asarray([[[10.0, 20.0], [30.0, 40.0]]]), x, 2)
    assert_close(grad, [[[0.0, 20.0], [10.0, 0.0], [30.0, 40.0], [0.0, 0.0]]])
    assert_close(A.maxout(x, 4), [[[3.0, 5.0]]])
    assert_close(A.maxout(x, 1), to_numpy(x))


def test_maxout_ties_go_to_the_first_channel(xp):
    x = xp.asarray([[[2.0], [2.0]]])
    assert_close(A.maxout_backward(xp.asarray([[[1.0]]]), x, 2), [[[1.0], [0.0]]])


# ----------------------------------------------------------------------------- naive vs fast
@FIXTURE_OK
@given(
    n=st.integers(1, 3),
    groups=st.integers(1, 3),
    pool=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 4), max_size=2),
    layout=LAYOUTS,
    seed=st.integers(0, 2**31),
)
def test_maxout_matches_naive(xp, n, groups, pool, spatial, layout, seed):
    shape = (n, groups * pool, *spatial)
    x = laid_out(xp, np.random.default_rng(seed).normal(size=shape), layout)
    assert_close(A.maxout(x, pool), to_numpy(A.maxout_naive(x, pool)), rtol=0, atol=0)


# ----------------------------------------------------------------------------- oracle
ELEMENTWISE = [
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "softmax",
    "log_softmax",
    "prelu",
]


def _torch_call(torch, name, t, kwargs, weight):
    functional = torch.nn.functional
    if name == "prelu":
        return functional.prelu(t, weight)
    return getattr(functional, name)(t, **kwargs)


@pytest.mark.oracle
@pytest.mark.parametrize("name", ELEMENTWISE)
@FIXTURE_OK
@given(data=st.data())
def test_activation_matches_torch(xp, torch, name, data):
    ndim = data.draw(st.integers(1 if name != "prelu" else 2, 4), label="ndim")
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    layout = data.draw(LAYOUTS, label="layout")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    host = rng.normal(scale=3.0, size=shape)
    g = rng.normal(size=shape)
    kwargs = {}
    if name in ("softmax", "log_softmax"):
        kwargs["dim"] = data.draw(st.integers(-ndim, ndim - 1), label="dim")
    if name == "leaky_relu":
        kwargs["negative_slope"] = data.draw(st.floats(0.0, 0.5), label="slope")
    if name == "elu":
        kwargs["alpha"] = data.draw(st.floats(0.1, 2.0), label="alpha")
    if name == "gelu":
        kwargs["approximate"] = data.draw(st.sampled_from(["none", "tanh"]), label="approximate")
    channels = data.draw(st.sampled_from([1, shape[1]]), label="slopes") if ndim > 1 else 1
    w_host = rng.uniform(-0.5, 0.5, size=channels)

    t = torch.tensor(host, requires_grad=True)
    tw = torch.tensor(w_host, requires_grad=True)
    expected = _torch_call(torch, name, t, kwargs, tw)
    expected.backward(torch.tensor(g))

    x, gx = laid_out(xp, host, layout), xp.asarray(g)
    if name == "prelu":
        w = xp.asarray(w_host)
        assert_close(A.prelu(x, w), expected.detach().numpy())
        grad_x, grad_w = A.prelu_backward(gx, x, w)
        assert_close(grad_w, tw.grad.numpy())
    else:
        forward, backward = getattr(A, name), getattr(A, name + "_backward")
        assert_close(forward(x, **kwargs), expected.detach().numpy())
        grad_x = backward(gx, x, **kwargs)
    assert_close(grad_x, t.grad.numpy())


# ----------------------------------------------------------------------------- gradient checks
def _away_from_kinks(rng, shape):
    """Random values with |x| >= 0.1, so the centred difference never straddles 0."""
    x = rng.normal(size=shape)
    return np.where(x >= 0, x + 0.1, x - 0.1)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("sigmoid", {}),
        ("tanh", {}),
        ("relu", {}),
        ("leaky_relu", {"negative_slope": 0.2}),
        ("elu", {"alpha": 1.5}),
        ("gelu", {}),
        ("gelu", {"approximate": "tanh"}),
        ("silu", {}),
        ("softmax", {"dim": 0}),
        ("softmax", {"dim": -1}),
        ("log_softmax", {"dim": 1}),
    ],
)
def test_backward_gradcheck(xp, rng, name, kwargs):
    x = xp.asarray(_away_from_kinks(rng, (2, 3, 4)))
    g = xp.asarray(rng.normal(size=(2, 3, 4)))
    forward, backward = getattr(A, name), getattr(A, name + "_backward")
    check_gradients(lambda a: forward(a, **kwargs), [x], [backward(g, x, **kwargs)], g, ["x"])


@pytest.mark.parametrize("slopes", [1, 3])
def test_prelu_backward_gradcheck(xp, rng, slopes):
    x = xp.asarray(_away_from_kinks(rng, (2, 3, 2, 2)))
    w = xp.asarray(rng.uniform(0.0, 0.5, size=slopes))
    g = xp.asarray(rng.normal(size=(2, 3, 2, 2)))
    check_gradients(A.prelu, [x, w], A.prelu_backward(g, x, w), g, ["x", "weight"])


def test_maxout_backward_gradcheck(xp, rng):
    x = xp.asarray(rng.permutation(48).reshape(2, 6, 2, 2) / 8.0)  # distinct: no ties
    g = xp.asarray(rng.normal(size=(2, 2, 2, 2)))
    check_gradients(lambda a: A.maxout(a, 3), [x], [A.maxout_backward(g, x, 3)], g, ["x"])


# ----------------------------------------------------------------------------- bad input
def test_rejects_bad_input(xp):
    x = xp.ones((2, 3))
    with pytest.raises(TypeError, match="relu: x must have a floating-point dtype"):
        A.relu(xp.ones((2, 3), dtype=xp.int64))
    with pytest.raises(TypeError, match="sigmoid: x must be a numpy or cupy ndarray"):
        A.sigmoid([1.0, 2.0])
    with pytest.raises(ValueError, match=r"tanh_backward: grad_out has shape \(3,\) but"):
        A.tanh_backward(xp.ones(3), x)
    with pytest.raises(ValueError, match="softmax: dim 2 is out of range"):
        A.softmax(x, dim=2)
    with pytest.raises(TypeError, match="log_softmax: dim must be an int"):
        A.log_softmax(x, dim=1.0)
    with pytest.raises(TypeError, match="leaky_relu: negative_slope must be a real number"):
        A.leaky_relu(x, negative_slope="0.1")
    with pytest.raises(TypeError, match="elu: alpha must be a real number"):
        A.elu(x, alpha=None)
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh', got 'fast'"):
        A.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match=r"gelu_backward: grad_out has shape \(3,\) but"):
        A.gelu_backward(xp.ones(3), x)
    with pytest.raises(TypeError, match="silu: x must have a floating-point dtype"):
        A.silu(xp.ones((2, 3), dtype=xp.int64))
    with pytest.raises(TypeError, match="silu_backward: x must be a numpy or cupy ndarray"):
        A.silu_backward(x, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"prelu: weight has 2 slopes but x \(shape \(2, 3\)\)"):
        A.prelu(x, xp.ones(2))
    with pytest.raises(ValueError, match="prelu: weight must have 1 dimensions"):
        A.prelu(x, xp.ones((3, 1)))
    with pytest.raises(TypeError, match="prelu: arrays must share one dtype"):
        A.prelu(x, xp.ones(3, dtype=xp.float32))
    with pytest.raises(ValueError, match=r"maxout: pool_size 2 does not divide the 3 channels"):
        A.maxout(x, 2)
    with pytest.raises(ValueError, match="maxout: pool_size must be positive"):
        A.maxout(x, 0)
    with pytest.raises(ValueError, match=r"maxout: x must have shape \(N, C, \*\)"):
        A.maxout(xp.ones(4), 2)
    with pytest.raises(ValueError, match=r"maxout_backward: grad_out has shape \(2, 3\) but"):
        A.maxout_backward(x, x, 3)


# ----------------------------------------------------------------------------- purity, dtype
def _all_calls(xp, x, g):
    """Every forward and backward on ``x`` (N=2, C=4, 3), ``g`` of x's shape."""
    w = xp.asarray([0.1, 0.2, 0.3, 0.4], dtype=x.dtype)
    g_half = g[:, :2]
    yield A.maxout(x, 2)
    yield A.maxout_backward(g_half, x, 2)
    yield A.prelu(x, w)
    yield from A.prelu_backward(g, x, w)
    for name in [
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "elu",
        "gelu",
        "silu",
        "softmax",
        "log_softmax",
    ]:
        yield getattr(A, name)(x)
        yield getattr(A, name + "_backward")(g, x)
    yield A.gelu(x, approximate="tanh")
    yield A.gelu_backward(g, x, approximate="tanh")
    yield A.erf(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, rng, dtype):
    x = xp.asarray(rng.normal(size=(2, 4, 3)), dtype=dtype)
    g = xp.asarray(rng.normal(size=(2, 4, 3)), dtype=dtype)
    x0, g0 = x.copy(), g.copy()
    for out in _all_calls(xp, x, g):
        assert out.dtype == x.dtype
    assert_close(x, to_numpy(x0), rtol=0, atol=0)
    assert_close(g, to_numpy(g0), rtol=0, atol=0)
