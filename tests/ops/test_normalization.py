"""Normalization layers and feature scaling: hand examples, the PyTorch oracle (batch norm in
both modes over several steps, layer/group/instance norm), scikit-learn for the scalers,
gradient checks, bad input, inputs unchanged (except the running statistics), dtype kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops import normalization as N
from tests.helpers import FIXTURE_OK, LAYOUTS, assert_close, laid_out

# ----------------------------------------------------------------------------- hand examples
# Channel 0 holds [0, 0, 4, 4] (mean 2, biased var 4), channel 1 [0, 4, 8, 12] (mean 6, var
# 20). With eps = 5 the standard deviations are sqrt(9) = 3 and sqrt(25) = 5.
BN_X = [[0.0, 0.0], [0.0, 4.0], [4.0, 8.0], [4.0, 12.0]]  # (N=4, C=2)
BN_XHAT = [[-2 / 3, -6 / 5], [-2 / 3, -2 / 5], [2 / 3, 2 / 5], [2 / 3, 6 / 5]]
BN_Y = [[-1.0, -7.0], [-1.0, -3.0], [3.0, 1.0], [3.0, 5.0]]  # weight [3, 5], bias [1, -1]


def test_batch_norm_training_hand_example(xp):
    x, w, b = xp.asarray(BN_X), xp.asarray([3.0, 5.0]), xp.asarray([1.0, -1.0])
    rm, rv = xp.zeros(2), xp.ones(2)
    y = N.batch_norm(x, rm, rv, w, b, training=True, momentum=0.5, eps=5.0)
    assert_close(y, BN_Y)
    # Unbiased variances 4 * 4/3 and 20 * 4/3: rv = 0.5 * 1 + 0.5 * [16/3, 80/3].
    assert_close(rm, [1.0, 3.0])
    assert_close(rv, [19 / 6, 83 / 6])
    assert_close(N.batch_norm(x, None, None, training=True, eps=5.0), BN_XHAT)


def test_batch_norm_eval_hand_example(xp):
    x, w, b = xp.asarray(BN_X), xp.asarray([3.0, 5.0]), xp.asarray([1.0, -1.0])
    rm, rv = xp.asarray([2.0, 6.0]), xp.asarray([4.0, 20.0])
    assert_close(N.batch_norm(x, rm, rv, w, b, training=False, eps=5.0), BN_Y)
    assert_close(rm, [2.0, 6.0])
    assert_close(rv, [4.0, 20.0])


def test_batch_norm_backward_hand_example(xp):
    # g = 1 at sample 0 of channel 0 only; weight 3, inv_std 1/3: g_hat = [3, 0, 0, 0],
    # mean(g_hat) = 3/4, mean(g_hat * x_hat) = -1/2, so
    # grad_x = (g_hat - 3/4 + x_hat / 2) / 3 = [23, -13, -5, -5] / 36.
    x, w, b = xp.asarray(BN_X), xp.asarray([3.0, 5.0]), xp.asarray([1.0, -1.0])
    rm, rv = xp.asarray([2.0, 6.0]), xp.asarray([4.0, 20.0])
    g = xp.asarray([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    grad_x, grad_w, grad_b = N.batch_norm_backward(g, x, rm, rv, w, b, training=True, eps=5.0)
    assert_close(grad_x, [[23 / 36, 0.0], [-13 / 36, 0.0], [-5 / 36, 0.0], [-5 / 36, 0.0]])
    assert_close(grad_w, [-2 / 3, 0.0])
    assert_close(grad_b, [1.0, 0.0])
    # In evaluation the statistics are constants: grad_x = g * weight / std = g.
    grad_x, grad_w, grad_b = N.batch_norm_backward(g, x, rm, rv, w, None, eps=5.0)
    assert_close(grad_x, to_numpy(g))
    assert grad_b is None
    assert_close(rm, [2.0, 6.0])  # the backward never touches the running statistics
    assert_close(rv, [4.0, 20.0])


def test_layer_group_instance_norm_hand_example(xp):
    # The two channels above as one sample (1, 2, 4): instance norm and group norm with
    # G = C normalize each channel; layer norm over the last axis does the same.
    x = xp.asarray([[[0.0, 0.0, 4.0, 4.0], [0.0, 4.0, 8.0, 12.0]]])
    per_channel = [[[-2 / 3, -2 / 3, 2 / 3, 2 / 3], [-6 / 5, -2 / 5, 2 / 5, 6 / 5]]]
    assert_close(N.instance_norm(x, eps=5.0), per_channel)
    assert_close(N.group_norm(x, 2, eps=5.0), per_channel)
    assert_close(N.layer_norm(x, 4, eps=5.0), per_channel)
    # One group: all 8 values [0, 0, 4, 4, 0, 4, 8, 12], mean 4, biased var 16; with eps = 9
    # the standard deviation is 5.
    one_group = [[[-0.8, -0.8, 0.0, 0.0], [-0.8, 0.0, 0.8, 1.6]]]
    assert_close(N.group_norm(x, 1, eps=9.0), one_group)
    assert_close(N.layer_norm(x, (2, 4), eps=9.0), one_group)
    w, b = xp.asarray([2.0, 10.0]), xp.asarray([1.0, 0.0])
    assert_close(N.group_norm(x, 1, w, b, eps=9.0), [[[-0.6, -0.6, 1.0, 1.0], [-8, 0, 8, 16]]])


def test_instance_norm_running_stats_hand_example(xp):
    # Two samples of one channel: [0, 2] (mean 1, unbiased var 2) and [4, 4] (mean 4, var 0).
    x = xp.asarray([[[0.0, 2.0]], [[4.0, 4.0]]])
    rm, rv = xp.zeros(1), xp.ones(1)
    N.instance_norm(x, rm, rv, momentum=0.5)
    assert_close(rm, [0.5 * (1 + 4) / 2])
    assert_close(rv, [0.5 * 1 + 0.5 * (2 + 0) / 2])
    y = N.instance_norm(x, rm, rv, use_input_stats=False, eps=1.25)  # std sqrt(1 + 1.25)
    assert_close(y, [[[-5 / 6, 0.5]], [[11 / 6, 11 / 6]]])


def test_feature_scaling_hand_example(xp):
    x = xp.asarray([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0], [5.0, 7.0]])
    assert_close(N.min_max_scale(x), [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert_close(N.min_max_scale(x, feature_range=(-1, 1)), [[-1, -1], [0, -1], [1, -1], [1, -1]])
    assert_close(N.min_max_scale(x.T, axis=1), [[0.0, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    # Column 0: mean 3.5, deviations [-2.5, -0.5, 1.5, 1.5], variance 11/4.
    s = np.sqrt(11 / 4)
    expected = [[-2.5 / s, 0.0], [-0.5 / s, 0.0], [1.5 / s, 0.0], [1.5 / s, 0.0]]
    assert_close(N.standardize(x), expected)


def test_standardize_keeps_the_shape_of_the_distribution(rng):
    # Mean 0 and std 1, but a right-skewed feature stays exactly as skewed (skew is
    # invariant under x -> (x - m) / s), so z-scores are not normally distributed.
    x = rng.exponential(size=(20000, 1))
    z = N.standardize(x)
    skew = float(np.mean(z**3))
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std()) - 1) < 1e-12
    assert skew > 1.5  # the exponential distribution has skewness 2; a normal has 0


# ----------------------------------------------------------------------------- oracle
def _affine(rng, xp, draw, channels):
    weight = xp.asarray(rng.normal(size=channels)) if draw(st.booleans()) else None
    bias = xp.asarray(rng.normal(size=channels)) if draw(st.booleans()) else None
    return weight, bias


def _to_torch(torch, a, grad=False):
    return None if a is None else torch.tensor(to_numpy(a), requires_grad=grad)


def _compare_backward(grads, tensors):
    for grad, t in zip(grads, tensors, strict=True):
        if t is None:
            assert grad is None
        else:
            assert_close(grad, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_batch_norm_matches_torch_over_several_steps(xp, torch, data):
    draw = data.draw
    training = draw(st.booleans(), label="training")
    shape = (draw(st.integers(2, 4)), draw(st.integers(1, 4)))
    shape += tuple(draw(st.lists(st.integers(1, 4), max_size=2), label="spatial"))
    momentum = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="momentum")
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]), label="eps")
    layout = draw(LAYOUTS, label="layout")
    rng = np.random.default_rng(draw(st.integers(0, 2**31), label="seed"))
    weight, bias = _affine(rng, xp, draw, shape[1])
    rm, rv = xp.asarray(rng.normal(size=shape[1])), xp.asarray(rng.uniform(0.5, 2, shape[1]))
    t_rm, t_rv = _to_torch(torch, rm), _to_torch(torch, rv)
    for _step in range(3):
        host, g = rng.normal(loc=1.0, scale=2.0, size=shape), rng.normal(size=shape)
        x = laid_out(xp, host, layout)
        args = (x, rm, rv, weight, bias, training, momentum, eps)
        rm_before, rv_before = rm.copy(), rv.copy()
        grads = N.batch_norm_backward(xp.asarray(g), *args)
        assert_close(rm, to_numpy(rm_before), rtol=0, atol=0)  # the backward never updates
        assert_close(rv, to_numpy(rv_before), rtol=0, atol=0)
        t_x, t_w, t_b = (_to_torch(torch, a, True) for a in (host, weight, bias))
        expected = torch.nn.functional.batch_norm(
            t_x, t_rm, t_rv, t_w, t_b, training=training, momentum=momentum, eps=eps
        )
        assert_close(N.batch_norm(*args), expected.detach().numpy(), rtol=1e-10, atol=1e-10)
        assert_close(rm, t_rm.numpy())
        assert_close(rv, t_rv.numpy())
        expected.backward(torch.tensor(g))
        _compare_backward(grads, (t_x, t_w, t_b))


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_layer_norm_matches_torch(xp, torch, data):
    draw = data.draw
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4), label="shape"))
    k = draw(st.integers(1, len(shape)), label="normalized_dims")
    normalized_shape = shape[len(shape) - k :]
    eps = draw(st.sampled_from([1e-5, 0.5]), label="eps")
    rng = np.random.default_rng(draw(st.integers(0, 2**31), label="seed"))
    weight, bias = _affine(rng, xp, draw, normalized_shape)
    host, g = rng.normal(size=shape), rng.normal(size=shape)
    x = laid_out(xp, host, draw(LAYOUTS, label="layout"))
    t_x, t_w, t_b = (_to_torch(torch, a, True) for a in (host, weight, bias))
    expected = torch.nn.functional.layer_norm(t_x, normalized_shape, t_w, t_b, eps)
    expected.backward(torch.tensor(g))
    y = N.layer_norm(x, normalized_shape, weight, bias, eps)
    assert_close(y, expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    grads = N.layer_norm_backward(xp.asarray(g), x, normalized_shape, weight, bias, eps)
    _compare_backward(grads, (t_x, t_w, t_b))


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_group_norm_matches_torch(xp, torch, data):
    draw = data.draw
    groups = draw(st.integers(1, 3), label="num_groups")
    shape = (draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)))
    shape += tuple(draw(st.lists(st.integers(1, 4), max_size=2), label="spatial"))
    # PyTorch refuses N * (values per group) == 1 (a batch-norm check it reuses); a single
    # value per group is well defined (it normalizes to 0) and tested by the gradcheck.
    assume(np.prod(shape) // groups > 1)
    eps = draw(st.sampled_from([1e-5, 0.5]), label="eps")
    rng = np.random.default_rng(draw(st.integers(0, 2**31), label="seed"))
    weight, bias = _affine(rng, xp, draw, shape[1])
    host, g = rng.normal(size=shape), rng.normal(size=shape)
    x = laid_out(xp, host, draw(LAYOUTS, label="layout"))
    t_x, t_w, t_b = (_to_torch(torch, a, True) for a in (host, weight, bias))
    # torch 2.13's group_norm backward fails ("tensor does not have a device") for a bias
    # without a weight; a constant weight of ones is the same function.
    ones = torch.ones(shape[1], dtype=torch.float64) if t_w is None and t_b is not None else None
    expected = torch.nn.functional.group_norm(t_x, groups, t_w if ones is None else ones, t_b, eps)
    expected.backward(torch.tensor(g))
    assert_close(N.group_norm(x, groups, weight, bias, eps), expected.detach().numpy(), 1e-10)
    grads = N.group_norm_backward(xp.asarray(g), x, groups, weight, bias, eps)
    _compare_backward(grads, (t_x, t_w, t_b))


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_instance_norm_matches_torch_over_several_steps(xp, torch, data):
    draw = data.draw
    use_input_stats = draw(st.booleans(), label="use_input_stats")
    running = draw(st.booleans(), label="running") or not use_input_stats
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 4)))
    shape += tuple(draw(st.lists(st.integers(1, 3), max_size=1), label="width"))
    momentum = draw(st.sampled_from([0.1, 0.5]), label="momentum")
    layout = draw(LAYOUTS, label="layout")
    rng = np.random.default_rng(draw(st.integers(0, 2**31), label="seed"))
    weight, bias = _affine(rng, xp, draw, shape[1])
    rm = xp.asarray(rng.normal(size=shape[1])) if running else None
    rv = xp.asarray(rng.uniform(0.5, 2, shape[1])) if running else None
    t_rm, t_rv = _to_torch(torch, rm), _to_torch(torch, rv)
    for _step in range(3):
        host, g = rng.normal(loc=1.0, size=shape), rng.normal(size=shape)
        x = laid_out(xp, host, layout)
        t_x, t_w, t_b = (_to_torch(torch, a, True) for a in (host, weight, bias))
        args = (x, rm, rv, weight, bias, use_input_stats, momentum, 1e-5)
        grads = N.instance_norm_backward(xp.asarray(g), *args)  # before: it must not update
        expected = torch.nn.functional.instance_norm(
            t_x, t_rm, t_rv, t_w, t_b, use_input_stats, momentum, 1e-5
        )
        assert_close(N.instance_norm(*args), expected.detach().numpy(), rtol=1e-10, atol=1e-10)
        if running:
            assert_close(rm, t_rm.numpy())
            assert_close(rv, t_rv.numpy())
        expected.backward(torch.tensor(g))
        _compare_backward(grads, (t_x, t_w, t_b))


@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 4)),
    low=st.floats(-3, 3),
    width=st.floats(0.5, 4),
    seed=st.integers(0, 2**31),
)
def test_scalers_match_scikit_learn(shape, low, width, seed):
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    x = np.random.default_rng(seed).normal(size=shape)
    x[:, 0] = 2.5  # a constant feature
    expected = MinMaxScaler(feature_range=(low, low + width)).fit_transform(x)
    assert_close(N.min_max_scale(x, feature_range=(low, low + width)), expected, 1e-12)
    assert_close(N.standardize(x), StandardScaler().fit_transform(x), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- gradient checks
def _params(rng, xp, affine, shape):
    if not affine:
        return None, None
    return xp.asarray(rng.normal(size=shape)), xp.asarray(rng.normal(size=shape))


def _check(xp, rng, forward, backward, shape, param_shape, affine):
    """Gradient check of ``forward(x, weight, bias)`` against ``backward(g, x, w, b)``."""
    x = xp.asarray(rng.normal(size=shape))
    w, b = _params(rng, xp, affine, param_shape)
    g = xp.asarray(rng.normal(size=shape))
    names = ["x", "weight", "bias"]
    if affine:
        check_gradients(forward, [x, w, b], backward(g, x, w, b), g, names)
    else:
        grads = backward(g, x, None, None)
        assert grads[1] is None and grads[2] is None
        check_gradients(lambda a: forward(a, None, None), [x], grads[:1], g, names[:1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_backward_gradcheck(xp, rng, training, affine, shape):
    rm, rv = xp.asarray(rng.normal(size=3)), xp.asarray(rng.uniform(0.5, 2, size=3))
    rm0, rv0 = rm.copy(), rv.copy()

    def forward(x, w, b):  # copies: the many forward calls must not drift the statistics
        return N.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)

    def backward(g, x, w, b):
        return N.batch_norm_backward(g, x, rm, rv, w, b, training=training)

    _check(xp, rng, forward, backward, shape, 3, affine)
    assert_close(rm, to_numpy(rm0), rtol=0, atol=0)
    assert_close(rv, to_numpy(rv0), rtol=0, atol=0)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("normalized_shape", [(3,), (2, 3)])
def test_layer_norm_backward_gradcheck(xp, rng, affine, normalized_shape):
    def forward(x, w, b):
        return N.layer_norm(x, normalized_shape, w, b)

    def backward(g, x, w, b):
        return N.layer_norm_backward(g, x, normalized_shape, w, b)

    _check(xp, rng, forward, backward, (2, 2, 3), normalized_shape, affine)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("num_groups", [1, 2, 4])
def test_group_norm_backward_gradcheck(xp, rng, affine, num_groups):
    def forward(x, w, b):
        return N.group_norm(x, num_groups, w, b)

    def backward(g, x, w, b):
        return N.group_norm_backward(g, x, num_groups, w, b)

    _check(xp, rng, forward, backward, (2, 4, 3), 4, affine)


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_backward_gradcheck(xp, rng, use_input_stats, affine):
    rm, rv = xp.asarray(rng.normal(size=3)), xp.asarray(rng.uniform(0.5, 2, size=3))

    def forward(x, w, b):
        return N.instance_norm(x, rm.copy(), rv.copy(), w, b, use_input_stats)

    def backward(g, x, w, b):
        return N.instance_norm_backward(g, x, rm, rv, w, b, use_input_stats)

    _check(xp, rng, forward, backward, (2, 3, 2, 2), 3, affine)


# ----------------------------------------------------------------------------- bad input
def test_rejects_bad_input(xp):
    x, c = xp.ones((4, 3, 2, 2)), xp.ones(3)
    with pytest.raises(TypeError, match="batch_norm: x must have a floating-point dtype"):
        N.batch_norm(xp.ones((4, 3), dtype=xp.int32), c, c)
    with pytest.raises(ValueError, match=r"batch_norm: x must have shape \(N, C\)"):
        N.batch_norm(xp.ones(3), c, c)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\)"):
        N.batch_norm(x, xp.ones(2), c)
    with pytest.raises(ValueError, match=r"batch_norm: weight must have shape \(3,\) for x"):
        N.batch_norm(x, c, c, weight=xp.ones(4))
    with pytest.raises(ValueError, match="batch_norm: give both running_mean and running_var"):
        N.batch_norm(x, c, None, training=True)
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var are required"):
        N.batch_norm(x, None, None)
    with pytest.raises(ValueError, match="batch_norm: expected more than 1 value per channel"):
        N.batch_norm(xp.ones((1, 3)), c, c, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: momentum must be in \[0, 1\]"):
        N.batch_norm(x, c, c, momentum=1.5)
    with pytest.raises(ValueError, match="batch_norm: eps must be positive"):
        N.batch_norm(x, c, c, eps=0.0)
    with pytest.raises(TypeError, match="batch_norm: training must be True or False"):
        N.batch_norm(x, c, c, training=1)
    with pytest.raises(TypeError, match="batch_norm: arrays must share one dtype"):
        N.batch_norm(x, c.astype(xp.float32), c.astype(xp.float32))
    with pytest.raises(ValueError, match=r"batch_norm_backward: grad_out has shape \(4, 3\)"):
        N.batch_norm_backward(xp.ones((4, 3)), x, c, c)
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(3,\) must match"):
        N.layer_norm(x, 3)
    with pytest.raises(TypeError, match="layer_norm: normalized_shape must be an int or a tuple"):
        N.layer_norm(x, "2")
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(2, 2\)"):
        N.layer_norm(x, (2, 2), weight=c)
    with pytest.raises(ValueError, match="group_norm: num_groups 2 must be positive and divide"):
        N.group_norm(x, 2)
    with pytest.raises(TypeError, match="group_norm: num_groups must be an int"):
        N.group_norm(x, 1.0)
    with pytest.raises(ValueError, match="instance_norm: x must have shape"):
        N.instance_norm(xp.ones((4, 3)))
    with pytest.raises(ValueError, match="instance_norm: expected more than 1 spatial element"):
        N.instance_norm(xp.ones((4, 3, 1, 1)))
    with pytest.raises(ValueError, match="instance_norm: running_mean and running_var are req"):
        N.instance_norm(x, use_input_stats=False)
    with pytest.raises(ValueError, match="min_max_scale: feature_range must have a < b"):
        N.min_max_scale(x, feature_range=(1, 1))
    with pytest.raises(TypeError, match="min_max_scale: feature_range must be a pair"):
        N.min_max_scale(x, feature_range=1)
    with pytest.raises(ValueError, match="standardize: axis 4 is out of range"):
        N.standardize(x, axis=4)
    with pytest.raises(ValueError, match="standardize: eps must be non-negative"):
        N.standardize(x, eps=-1.0)


# ----------------------------------------------------------------------------- purity, dtype
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, rng, dtype):
    def arr(*shape):
        return xp.asarray(rng.normal(size=shape), dtype=dtype)

    x, g, w, b = arr(3, 4, 2, 2), arr(3, 4, 2, 2), arr(4), arr(4)
    rm, rv = arr(4), xp.abs(arr(4)) + 1
    saved = [a.copy() for a in (x, g, w, b, rm, rv)]
    outputs = [
        N.batch_norm(x, rm, rv, w, b),
        *N.batch_norm_backward(g, x, rm, rv, w, b, training=True),
        *N.batch_norm_backward(g, x, rm, rv, w, b),
        N.layer_norm(x, (2, 2), w[:2, None] * xp.ones((2, 2), dtype=dtype)),
        *N.layer_norm_backward(g, x, 2, w[:2], b[:2]),
        N.group_norm(x, 2, w, b),
        *N.group_norm_backward(g, x, 2, w, b),
        N.instance_norm(x, None, None, w, b),
        *N.instance_norm_backward(g, x, rm, rv, w, b),
        *N.instance_norm_backward(g, x, rm, rv, w, b, use_input_stats=False),
        N.min_max_scale(x),
        N.standardize(x, axis=1),
    ]
    for out in outputs:
        assert out.dtype == x.dtype
    for now, before in zip((x, g, w, b, rm, rv), saved, strict=True):
        assert_close(now, to_numpy(before), rtol=0, atol=0)
    # The documented exception: training mode updates the running statistics in place.
    y = N.batch_norm(x, rm, rv, w, b, training=True)
    assert y.dtype == x.dtype and rm.dtype == x.dtype
    assert not np.array_equal(to_numpy(rm), to_numpy(saved[4]))
    assert_close(x, to_numpy(saved[0]), rtol=0, atol=0)
