"""Losses and penalties: hand examples, the PyTorch oracle (cross-entropy with and without
weight and with huge logits, multi-margin, MSE, focal loss against its formula under
autograd, penalties), gradient checks, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops import losses as L
from tests.helpers import FIXTURE_OK, LAYOUTS, assert_close, laid_out

LN2 = math.log(2)


# ----------------------------------------------------------------------------- hand examples
# Sample 0: exp(logits) = [1, 3, 4], softmax [1/8, 3/8, 1/2], target 2: loss -ln(1/2) = ln 2.
# Sample 1: exp(logits) = [1, 1, 2], softmax [1/4, 1/4, 1/2], target 0: loss ln 4 = 2 ln 2.
CE_LOGITS = [[0.0, math.log(3), math.log(4)], [0.0, 0.0, LN2]]
CE_TARGET = [2, 0]


def test_cross_entropy_hand_example(xp):
    logits, target = xp.asarray(CE_LOGITS), xp.asarray(CE_TARGET)
    assert_close(L.cross_entropy(logits, target), 1.5 * LN2)
    # softmax - one_hot, over N = 2.
    grad = L.cross_entropy_backward(1.0, logits, target)
    assert_close(grad, [[0.0625, 0.1875, -0.25], [-0.375, 0.125, 0.25]])
    # Weights [3, 1, 1]: (1 * ln 2 + 3 * 2 ln 2) / (1 + 3).
    weight = xp.asarray([3.0, 1.0, 1.0])
    assert_close(L.cross_entropy(logits, target, weight), 1.75 * LN2)
    grad = L.cross_entropy_backward(2.0, logits, target, weight)  # grad_out * w / 4
    assert_close(grad, [[0.0625, 0.1875, -0.25], [-1.125, 0.375, 0.75]])


def test_cross_entropy_label_smoothing_hand_example(xp):
    logits, target = xp.asarray(CE_LOGITS), xp.asarray(CE_TARGET)
    # Sample 0 alone, eps = 0.3, C = 3: smoothed target 0.7 * [0, 0, 1] + 0.1 = [0.1, 0.1, 0.8];
    # loss -(0.1 ln 1/8 + 0.1 ln 3/8 + 0.8 ln 1/2) = 1.4 ln 2 - 0.1 ln 3; gradient p - target.
    assert_close(
        L.cross_entropy(logits[:1], target[:1], label_smoothing=0.3), 1.4 * LN2 - 0.1 * math.log(3)
    )
    grad = L.cross_entropy_backward(1.0, logits[:1], target[:1], label_smoothing=0.3)
    assert_close(grad, [[0.025, 0.275, -0.3]])
    # Weights [3, 1, 1]: 0.7 * 1.75 ln 2 + (0.3 / 3) * sum_i sum_c w_c (-ln p_ic) / (1 + 3),
    # with sum_c w_c (-ln p_ic) = 13 ln 2 - ln 3 (sample 0) and 9 ln 2 (sample 1).
    weight = xp.asarray([3.0, 1.0, 1.0])
    assert_close(
        L.cross_entropy(logits, target, weight, label_smoothing=0.3),
        1.775 * LN2 - 0.025 * math.log(3),
    )
    # Rows ((1 - eps) w_t (p - y) + (eps / C) (sum(w) p - w)) / 4.
    grad = L.cross_entropy_backward(1.0, logits, target, weight, label_smoothing=0.3)
    assert_close(grad, [[-0.0375, 0.0875, -0.05], [-0.4375, 0.1375, 0.3]])
    # label_smoothing = 0 is plain cross-entropy, 1 a uniform target.
    assert_close(L.cross_entropy(logits, target, label_smoothing=0.0), 1.5 * LN2)
    uniform = (3 * LN2 + 3 * LN2 - math.log(3) + LN2 + 2 * LN2 + 2 * LN2 + LN2) / 6
    assert_close(L.cross_entropy(logits, target, label_smoothing=1.0), uniform)


def test_cross_entropy_stable_for_huge_logits(xp):
    logits = xp.asarray([[1e4, 0.0], [1e4, 0.0]])
    target = xp.asarray([0, 1])
    assert_close(L.cross_entropy(logits, target), 5e3)  # (0 + 1e4) / 2
    assert_close(L.cross_entropy_backward(1.0, logits, target), [[0, 0], [0.5, -0.5]])
    assert float(L.cross_entropy(logits.astype(xp.float32), target)) == 5e3


def test_cross_entropy_spatial_hand_example(xp):
    # (N=1, C=3, L=2): position 0 is sample 0 above, position 1 is sample 1.
    logits = xp.asarray(CE_LOGITS).T[None]
    target = xp.asarray([CE_TARGET])
    assert_close(L.cross_entropy(logits, target), 1.5 * LN2)
    grad = L.cross_entropy_backward(1.0, logits, target)
    assert_close(grad, [[[0.0625, -0.375], [0.1875, 0.125], [-0.25, 0.25]]])


def test_mse_hand_example(xp):
    x, target = xp.asarray([[1.0, 2.0, 3.0]]), xp.asarray([[1.0, 0.0, 0.0]])
    assert_close(L.mse_loss(x, target), 13 / 3)  # (0 + 4 + 9) / 3
    assert_close(L.mse_loss_backward(1.0, x, target), [[0.0, 4 / 3, 2.0]])  # 2 (x - t) / 3


def test_hinge_hand_example(xp):
    # Sample 0 (target 0): margins 1 - 1 + 2 = 2 and 1 - 1 + 0.5 = 0.5 -> 2.5 / 3.
    # Sample 1 (target 0): 1 - 3 + 0 < 0 and 1 - 3 + 2.5 = 0.5 -> 0.5 / 3. Mean 0.5.
    logits = xp.asarray([[1.0, 2.0, 0.5], [3.0, 0.0, 2.5]])
    target = xp.asarray([0, 0])
    assert_close(L.hinge_loss(logits, target), 0.5)
    grad = L.hinge_loss_backward(1.0, logits, target)
    assert_close(grad, [[-2 / 6, 1 / 6, 1 / 6], [-1 / 6, 0.0, 1 / 6]])
    # A margin of exactly 0 is not a violation: no loss, no gradient.
    logits, target = xp.asarray([[2.0, 1.0]]), xp.asarray([0])
    assert_close(L.hinge_loss(logits, target), 0.0)
    assert_close(L.hinge_loss_backward(1.0, logits, target), [[0.0, 0.0]])


def test_focal_loss_hand_example(xp):
    # p_t = 1/2: loss = -(1 - 1/2)**2 * ln(1/2) = ln 2 / 4; alpha_t = 0.5 halves it.
    logits, target = xp.asarray([CE_LOGITS[0]]), xp.asarray([2])
    assert_close(L.focal_loss(logits, target), LN2 / 4)
    assert_close(L.focal_loss(logits, target, alpha=xp.asarray([1.0, 1.0, 0.5])), LN2 / 8)
    # dloss/dz = q**2 (1 - 2 p_t ln(p_t) / q) (softmax - one_hot) = (1 + 2 ln 2) / 4 (...).
    scale = (1 + 2 * LN2) / 4
    grad = L.focal_loss_backward(1.0, logits, target)
    assert_close(grad, [[0.125 * scale, 0.375 * scale, -0.5 * scale]])
    # A sample classified with certainty (p_t = 1) contributes nothing, for any gamma.
    sure = xp.asarray([[50.0, 0.0]])
    for gamma in (0.5, 2.0):
        assert_close(L.focal_loss_backward(1.0, sure, xp.asarray([0]), gamma), [[0.0, 0.0]])


def test_penalties_hand_example(xp):
    w = xp.asarray([[-2.0, 0.0, 3.0]])
    assert_close(L.l1_penalty(w), 5.0)
    assert_close(L.l1_penalty_backward(2.0, w), [[-2.0, 0.0, 2.0]])  # subgradient 0 at 0
    assert_close(L.l2_penalty(w), 6.5)  # (4 + 0 + 9) / 2
    assert_close(L.l2_penalty_backward(2.0, w), [[-4.0, 0.0, 6.0]])


# ----------------------------------------------------------------------------- oracle
def _classification_case(draw, min_classes=1, spatial=True):
    """(host logits, host target, layout) with logits scaled up to 1e4."""
    shape = (draw(st.integers(1, 5)), draw(st.integers(min_classes, 6)))
    if spatial:
        shape += tuple(draw(st.lists(st.integers(1, 3), max_size=2), label="spatial"))
    scale = draw(st.sampled_from([1.0, 100.0, 1e4]), label="scale")
    rng = np.random.default_rng(draw(st.integers(0, 2**31), label="seed"))
    logits = rng.normal(scale=scale, size=shape)
    target = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    return rng, logits, target, draw(LAYOUTS, label="layout")


def _torch_loss_and_grad(torch, fn, logits, g):
    t = torch.tensor(logits, requires_grad=True)
    loss = fn(t)
    loss.backward(torch.tensor(g, dtype=torch.float64))
    return loss.detach().numpy(), t.grad.numpy()


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_cross_entropy_matches_torch(xp, torch, data):
    rng, logits, target, layout = _classification_case(data.draw)
    weighted = data.draw(st.booleans(), label="weighted")
    weight = rng.uniform(0.1, 3.0, size=logits.shape[1]) if weighted else None
    eps = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="label_smoothing")
    g = float(rng.normal())
    t_weight = None if weight is None else torch.tensor(weight)
    expected, expected_grad = _torch_loss_and_grad(
        torch,
        lambda t: torch.nn.functional.cross_entropy(
            t, torch.tensor(target), weight=t_weight, label_smoothing=eps
        ),
        logits,
        g,
    )
    x, y = laid_out(xp, logits, layout), xp.asarray(target)
    w = None if weight is None else xp.asarray(weight)
    assert_close(L.cross_entropy(x, y, w, eps), expected, rtol=1e-12, atol=1e-9)
    grad = L.cross_entropy_backward(g, x, y, w, label_smoothing=eps)
    assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_hinge_loss_matches_torch_multi_margin(xp, torch, data):
    rng, logits, target, layout = _classification_case(data.draw, spatial=False)
    margin = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]), label="margin")
    logits = logits / 1e3 if abs(logits).max() > 1e3 else logits  # keep the sum exact-ish
    g = float(rng.normal())
    expected, expected_grad = _torch_loss_and_grad(
        torch,
        lambda t: torch.nn.functional.multi_margin_loss(t, torch.tensor(target), margin=margin),
        logits,
        g,
    )
    x, y = laid_out(xp, logits, layout), xp.asarray(target)
    assert_close(L.hinge_loss(x, y, margin), expected, rtol=1e-12, atol=1e-12)
    assert_close(L.hinge_loss_backward(g, x, y, margin), expected_grad)


@pytest.mark.oracle
@FIXTURE_OK
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    layout=LAYOUTS,
    seed=st.integers(0, 2**31),
)
def test_mse_loss_matches_torch(xp, torch, shape, layout, seed):
    rng = np.random.default_rng(seed)
    x, target, g = rng.normal(size=shape), rng.normal(size=shape), float(rng.normal())
    expected, expected_grad = _torch_loss_and_grad(
        torch, lambda t: torch.nn.functional.mse_loss(t, torch.tensor(target)), x, g
    )
    x_xp, t_xp = laid_out(xp, x, layout), laid_out(xp, target, layout)
    assert_close(L.mse_loss(x_xp, t_xp), expected)
    assert_close(L.mse_loss_backward(g, x_xp, t_xp), expected_grad)


@pytest.mark.oracle
@FIXTURE_OK
@given(data=st.data())
def test_focal_loss_matches_its_formula_under_torch_autograd(xp, torch, data):
    rng, logits, target, layout = _classification_case(data.draw)
    gamma = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), label="gamma")
    alpha = rng.uniform(0.1, 1.0, size=logits.shape[1]) if data.draw(st.booleans()) else None
    g = float(rng.normal())

    def formula(t):  # Lin et al. 2017, eq. 5, with softmax probabilities
        log_pt = torch.log_softmax(t, dim=1).gather(1, torch.tensor(target)[:, None])[:, 0]
        alpha_t = 1.0 if alpha is None else torch.tensor(alpha)[torch.tensor(target)]
        return (-alpha_t * (-torch.expm1(log_pt)) ** gamma * log_pt).mean()

    expected, expected_grad = _torch_loss_and_grad(torch, formula, logits, g)
    # Autograd of the formula gives 0 * inf = NaN where p_t == 1 and gamma < 1 (the limit is
    # 0, which the hand example checks); such configurations say nothing here.
    assume(not np.isnan(expected_grad).any())
    x, y = laid_out(xp, logits, layout), xp.asarray(target)
    a = None if alpha is None else xp.asarray(alpha)
    assert_close(L.focal_loss(x, y, gamma, a), expected, rtol=1e-10, atol=1e-12)
    assert_close(L.focal_loss_backward(g, x, y, gamma, a), expected_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["l1_penalty", "l2_penalty"])
@FIXTURE_OK
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    layout=LAYOUTS,
    seed=st.integers(0, 2**31),
)
def test_penalties_match_torch(xp, torch, name, shape, layout, seed):
    rng = np.random.default_rng(seed)
    w, g = rng.normal(size=shape), float(rng.normal())
    w[tuple(0 for _ in shape)] = 0.0  # the subgradient at 0

    def formula(t):
        return t.abs().sum() if name == "l1_penalty" else 0.5 * (t * t).sum()

    expected, expected_grad = _torch_loss_and_grad(torch, formula, w, g)
    w_xp = laid_out(xp, w, layout)
    assert_close(getattr(L, name)(w_xp), expected)
    assert_close(getattr(L, name + "_backward")(g, w_xp), expected_grad)


@FIXTURE_OK
@given(data=st.data())
def test_focal_loss_with_gamma_0_is_cross_entropy(xp, data):
    rng, logits, target, layout = _classification_case(data.draw)
    x, y = laid_out(xp, logits, layout), xp.asarray(target)
    assert_close(L.focal_loss(x, y, gamma=0.0), float(L.cross_entropy(x, y)), atol=1e-9)
    assert_close(
        L.focal_loss_backward(0.7, x, y, gamma=0.0),
        to_numpy(L.cross_entropy_backward(0.7, x, y)),
    )


# ----------------------------------------------------------------------------- gradient checks
def _scalar_check(xp, f, backward, inputs, name):
    g = xp.asarray(1.7)
    check_gradients(f, inputs, [backward(g, *inputs)], g, [name])


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
def test_cross_entropy_backward_gradcheck(xp, rng, weighted, shape, eps):
    x = xp.asarray(rng.normal(size=shape))
    y = xp.asarray(rng.integers(0, 3, size=(shape[0],) + shape[2:]))
    w = xp.asarray(rng.uniform(0.5, 2, size=3)) if weighted else None
    g = xp.asarray(1.7)
    analytic = [L.cross_entropy_backward(g, x, y, w, label_smoothing=eps)]
    check_gradients(lambda a: L.cross_entropy(a, y, w, eps), [x], analytic, g, ["logits"])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, [0.25, 0.5, 1.0]])
def test_focal_loss_backward_gradcheck(xp, rng, gamma, alpha):
    x = xp.asarray(rng.normal(scale=2.0, size=(4, 3)))
    y = xp.asarray(rng.integers(0, 3, size=4))
    a = None if alpha is None else xp.asarray(alpha)
    g = xp.asarray(1.7)
    analytic = [L.focal_loss_backward(g, x, y, gamma, a)]
    check_gradients(lambda z: L.focal_loss(z, y, gamma, a), [x], analytic, g, ["logits"])


def test_hinge_and_mse_backward_gradcheck(xp, rng):
    x = xp.asarray(rng.normal(size=(5, 4)))
    y = xp.asarray(rng.integers(0, 4, size=5))
    g = xp.asarray(1.7)
    analytic = [L.hinge_loss_backward(g, x, y, 0.8)]
    check_gradients(lambda a: L.hinge_loss(a, y, 0.8), [x], analytic, g, ["logits"])
    target = xp.asarray(rng.normal(size=(5, 4)))
    analytic = [L.mse_loss_backward(g, x, target)]
    check_gradients(lambda a: L.mse_loss(a, target), [x], analytic, g, ["input"])


@pytest.mark.parametrize("name", ["l1_penalty", "l2_penalty"])
def test_penalty_backward_gradcheck(xp, rng, name):
    w = xp.asarray(rng.normal(size=(3, 4)))
    g = xp.asarray(1.7)
    analytic = [getattr(L, name + "_backward")(g, w)]
    check_gradients(getattr(L, name), [w], analytic, g, ["weight"])


def test_l1_drives_weights_to_zero_and_l2_only_shrinks(xp):
    # Gradient descent on the penalty alone (lr 0.01). L1 moves every weight by 0.01 towards
    # 0 whatever its size, so all reach 0 and then hover within one step of it (plain
    # subgradient descent; soft-thresholding would land exactly on 0). L2 multiplies each
    # weight by 0.99 per step: after 100 steps every one keeps 0.99**100 = 37% of its value.
    w1 = w2 = xp.asarray([0.5, -0.3, 0.05])
    for _ in range(100):
        w1 = w1 - 0.01 * L.l1_penalty_backward(1.0, w1)
        w2 = w2 - 0.01 * L.l2_penalty_backward(1.0, w2)
    assert float(xp.max(xp.abs(w1))) <= 0.01 + 1e-12
    assert_close(w2, [0.5 * 0.99**100, -0.3 * 0.99**100, 0.05 * 0.99**100])


# ----------------------------------------------------------------------------- bad input
def test_rejects_bad_input(xp):
    x, y = xp.ones((4, 3)), xp.asarray([0, 1, 2, 0])
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer class"):
        L.cross_entropy(x, y.astype(xp.float64))
    with pytest.raises(ValueError, match=r"cross_entropy: target values must be class indices"):
        L.cross_entropy(x, xp.asarray([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"cross_entropy: target must have shape \(4,\)"):
        L.cross_entropy(x, y[:3])
    with pytest.raises(ValueError, match=r"cross_entropy: logits must have shape \(N, C, \*\)"):
        L.cross_entropy(xp.ones(3), y)
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have one entry per class"):
        L.cross_entropy(x, y, xp.ones(4))
    with pytest.raises(TypeError, match="cross_entropy: arrays must share one dtype"):
        L.cross_entropy(x, y, xp.ones(3, dtype=xp.float32))
    with pytest.raises(TypeError, match="cross_entropy: logits must have a floating-point"):
        L.cross_entropy(y[:, None], y)
    with pytest.raises(ValueError, match=r"cross_entropy_backward: grad_out must be a scalar"):
        L.cross_entropy_backward(xp.ones(1), x, y)
    with pytest.raises(TypeError, match="cross_entropy_backward: grad_out must be a real"):
        L.cross_entropy_backward(None, x, y)
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\]"):
        L.cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(TypeError, match="cross_entropy_backward: label_smoothing must be a real"):
        L.cross_entropy_backward(1.0, x, y, label_smoothing="0.1")
    with pytest.raises(TypeError, match="mse_loss_backward: grad_out must be a float"):
        L.mse_loss_backward(xp.asarray(1), x, x)
    with pytest.raises(ValueError, match="focal_loss: gamma must be non-negative"):
        L.focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match=r"focal_loss: alpha must have one entry per class"):
        L.focal_loss(x, y, alpha=xp.ones(2))
    with pytest.raises(ValueError, match="hinge_loss: logits must have 2 dimensions"):
        L.hinge_loss(xp.ones((4, 3, 2)), y)
    with pytest.raises(TypeError, match="hinge_loss: margin must be a real number"):
        L.hinge_loss(x, y, margin="1")
    with pytest.raises(ValueError, match=r"mse_loss: input and target must have the same shape"):
        L.mse_loss(x, xp.ones((3, 4)))
    with pytest.raises(TypeError, match="l2_penalty: weight must have a floating-point dtype"):
        L.l2_penalty(y)


# ----------------------------------------------------------------------------- purity, dtype
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, rng, dtype):
    x = xp.asarray(rng.normal(size=(4, 3)), dtype=dtype)
    t = xp.asarray(rng.normal(size=(4, 3)), dtype=dtype)
    w = xp.asarray([0.5, 1.0, 2.0], dtype=dtype)
    y = xp.asarray([0, 2, 1, 2])
    g = xp.asarray(1.5)  # a float64 upstream gradient must not promote a float32 result
    assert L.l2_penalty_backward(np.float64(2.0), x).dtype == x.dtype  # a NumPy scalar too
    saved = [a.copy() for a in (x, t, w, y)]
    outputs = [
        L.cross_entropy(x, y, w),
        L.cross_entropy_backward(g, x, y, w),
        L.cross_entropy_backward(1.0, x, y),
        L.cross_entropy(x, y, w, label_smoothing=0.1),
        L.cross_entropy_backward(g, x, y, w, label_smoothing=0.1),
        L.cross_entropy_backward(g, x, y, label_smoothing=0.1),
        L.focal_loss(x, y, 2.0, w),
        L.focal_loss_backward(g, x, y, 2.0, w),
        L.hinge_loss(x, y),
        L.hinge_loss_backward(g, x, y),
        L.mse_loss(x, t),
        L.mse_loss_backward(g, x, t),
        L.l1_penalty(x),
        L.l1_penalty_backward(g, x),
        L.l2_penalty(x),
        L.l2_penalty_backward(g, x),
    ]
    for out in outputs:
        assert out.dtype == x.dtype
    for now, before in zip((x, t, w, y), saved, strict=True):
        assert_close(now, to_numpy(before), rtol=0, atol=0)
