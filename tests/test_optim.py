"""Optimizers and schedules: hand-computed first steps, torch.optim step by step, a quadratic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn_course.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    LinearLR,
    RMSprop,
    StepLR,
    WarmupCosineLR,
)


class Param:
    """The smallest parameter: an array and its gradient."""

    def __init__(self, data, grad=None):
        self.data = data
        self.grad = grad


def _two_steps(xp, opt_cls, **kwargs):
    """Values of a scalar parameter starting at 1.0 after two steps with gradient 0.5."""
    p = Param(xp.asarray([1.0]), xp.asarray([0.5]))
    opt = opt_cls([p], **kwargs)
    values = []
    for _ in range(2):
        opt.step()
        values.append(float(p.data[0]))
    return values


# --- hand-computed first steps (p0 = 1.0, g = 0.5 at every step) -------------------------


def test_sgd_momentum_hand_example(xp):
    # step 1: b = g = 0.5, p = 1 - 0.1 * 0.5 = 0.95
    # step 2: b = 0.9 * 0.5 + 0.5 = 0.95, p = 0.95 - 0.1 * 0.95 = 0.855
    assert _two_steps(xp, SGD, lr=0.1, momentum=0.9) == pytest.approx([0.95, 0.855], abs=1e-15)


def test_sgd_nesterov_hand_example(xp):
    # step 1: b = 0.5, direction = g + 0.9 b = 0.95, p = 1 - 0.095 = 0.905
    # step 2: b = 0.95, direction = 0.5 + 0.855 = 1.355, p = 0.905 - 0.1355 = 0.7695
    got = _two_steps(xp, SGD, lr=0.1, momentum=0.9, nesterov=True)
    assert got == pytest.approx([0.905, 0.7695], abs=1e-15)


def test_sgd_weight_decay_hand_example(xp):
    # direction = g + wd * p = 0.5 + 0.1 * 1 = 0.6, p = 1 - 0.1 * 0.6 = 0.94
    assert _two_steps(xp, SGD, lr=0.1, weight_decay=0.1)[0] == pytest.approx(0.94, abs=1e-15)


def test_adagrad_hand_example(xp):
    # s = 0.25, p = 1 - 0.1 * 0.5 / (0.5 + 1e-10) = 0.9 + 2e-11 (to 1e-20)
    # step 2: s = 0.5, p = 0.90000000002 - 0.1 * 0.5 / (sqrt(0.5) + 1e-10)
    #   = 0.90000000002 - (0.0707106781186548 - 1.0e-11) = 0.829289321911345
    got = _two_steps(xp, Adagrad, lr=0.1)
    assert got == pytest.approx([0.90000000002, 0.829289321911345], abs=1e-14)


def test_rmsprop_hand_example(xp):
    # v = 0.01 * 0.25 = 0.0025, sqrt(v) = 0.05, p = 1 - 0.01 * 0.5 / (0.05 + 1e-8)
    #   = 1 - 0.1 / (1 + 2e-7) = 0.90000002 (to 1e-14)
    assert _two_steps(xp, RMSprop, lr=0.01)[0] == pytest.approx(0.90000002, abs=1e-13)


def test_adam_hand_example(xp):
    # m = 0.05, v = 0.00025; bias-corrected m_hat = 0.5, v_hat = 0.25:
    # the first Adam step is lr * g / |g| = 0.1 (less 2e-9 from eps): p = 0.900000002.
    # Step 2: m_hat = 0.5, v_hat = 0.25 again (constant gradient): p = 0.800000004.
    got = _two_steps(xp, Adam, lr=0.1)
    assert got == pytest.approx([0.900000002, 0.800000004], abs=1e-15)


def test_adamw_hand_example(xp):
    # decoupled decay first: p = 1 * (1 - 0.1 * 0.1) = 0.99, then the Adam step 0.1(1 - 2e-8)
    assert _two_steps(xp, AdamW, lr=0.1, weight_decay=0.1)[0] == pytest.approx(
        0.890000002, abs=1e-15
    )


# --- against torch.optim, step by step ------------------------------------------------------

CONFIGS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01)),
    (Adagrad, "Adagrad", dict(lr=0.1, initial_accumulator_value=0.3, eps=1e-6)),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9)),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.95, momentum=0.7, centered=True, weight_decay=0.1)),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05)),
    (Adam, "Adam", dict(lr=0.01, amsgrad=True, eps=1e-6)),
    (AdamW, "AdamW", dict(lr=0.01)),
    (AdamW, "AdamW", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.oracle
@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CONFIGS)
def test_optimizer_matches_torch(torch, rng, ours, theirs, kwargs):
    shapes = [(3, 4), (5,), (2, 1, 3)]
    init = [rng.standard_normal(s) for s in shapes]
    params = [Param(a.copy()) for a in init]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt = ours(params, **kwargs)
    topt = getattr(torch.optim, theirs)(tparams, **kwargs)
    for step in range(12):
        for i, (p, tp) in enumerate(zip(params, tparams, strict=True)):
            # the third parameter has no gradient on odd steps: both optimizers skip it
            g = None if (i == 2 and step % 2) else rng.standard_normal(p.data.shape)
            p.grad = g
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(params, tparams, strict=True):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("ours", "_name", "kwargs"), CONFIGS)
def test_optimizer_keeps_float32_and_updates_in_place(xp, ours, _name, kwargs):
    data = xp.ones((2, 3), dtype=xp.float32)
    grad = xp.full((2, 3), 0.5, dtype=xp.float32)
    p = Param(data, grad)
    ours([p], **kwargs).step()
    assert p.data is data and data.dtype == xp.float32
    assert float(data[0, 0]) < 1.0
    assert bool((grad == 0.5).all())  # the stored gradient is not modified


@pytest.mark.parametrize(
    ("ours", "kwargs", "steps"),
    [
        (SGD, dict(lr=0.05), 300),
        (SGD, dict(lr=0.05, momentum=0.9), 300),
        (SGD, dict(lr=0.05, momentum=0.9, nesterov=True), 300),
        (Adagrad, dict(lr=0.5), 300),
        (RMSprop, dict(lr=0.02), 500),
        (RMSprop, dict(lr=0.01, momentum=0.5, centered=True), 500),
        (Adam, dict(lr=0.05), 500),
        (AdamW, dict(lr=0.05, weight_decay=0.01), 500),
    ],
)
def test_optimizers_minimise_a_quadratic(xp, ours, kwargs, steps):
    # f(x, y) = (x^2 + 10 y^2) / 2: an ill-conditioned bowl with its minimum at the origin
    scale = xp.asarray([1.0, 10.0])
    p = Param(xp.asarray([3.0, -2.0]))
    opt = ours([p], **kwargs)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        p.grad = scale * p.data
        opt.step()
    assert float(xp.abs(p.data).max()) < 1e-3


def test_zero_grad(xp):
    grad = xp.ones(3)
    p = Param(xp.zeros(3), grad)
    opt = SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and float(xp.abs(grad).sum()) == 0.0
    opt.zero_grad()
    assert p.grad is None


def test_optimizers_reject_bad_input(xp):
    p = Param(xp.zeros(3), xp.zeros(3))
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD: parameter 0 \(ndarray\) has no .data and .grad"):
        SGD([xp.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="SGD: lr must be a non-negative number, got -1"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="SGD: nesterov momentum requires momentum > 0"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"Adam: betas\[1\] must be in \[0, 1\), got 1.0"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"AdamW: betas must be a pair"):
        AdamW([p], betas=0.9)
    with pytest.raises(ValueError, match=r"RMSprop: alpha must be in \[0, 1\)"):
        RMSprop([p], alpha=1.5)
    with pytest.raises(ValueError, match="Adagrad: eps must be a non-negative number"):
        Adagrad([p], eps=-1e-3)
    p.grad = xp.zeros(4)
    with pytest.raises(ValueError, match=r"SGD: grad shape \(4,\) does not match .* \(3,\)"):
        SGD([p], lr=0.1).step()


# --- schedules ---------------------------------------------------------------------------------


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.step()
    return out


def test_schedules_hand_example():
    p = Param(np.zeros(1))
    # warmup from 0.25 * 0.4 over 3 steps: 0.1, 0.2, 0.3, then 0.4 flat
    assert _lrs(LinearLR(SGD([p], lr=0.4), 0.25, 1.0, 3), 5) == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.4], abs=1e-15
    )
    # step decay: halve every 2 steps
    assert _lrs(StepLR(SGD([p], lr=1.0), 2, 0.5), 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    # cosine over 4 steps: (1 + cos(pi t / 4)) / 2 = 1, 0.853553, 0.5, 0.146447, 0
    assert _lrs(CosineAnnealingLR(SGD([p], lr=1.0), 4), 6) == pytest.approx(
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0, 0.0], abs=1e-15
    )
    # warmup 2 steps from 0.5 then cosine over 2 steps: 0.5, 0.75, 1, 0.5, 0
    assert _lrs(WarmupCosineLR(SGD([p], lr=1.0), 2, 4, start_factor=0.5), 5) == pytest.approx(
        [0.5, 0.75, 1.0, 0.5, 0.0], abs=1e-15
    )


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("make_ours", "make_theirs", "steps"),
    [
        (
            lambda o: LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=7),
            lambda s, o: s.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=7),
            15,
        ),
        (
            lambda o: StepLR(o, step_size=3, gamma=0.7),
            lambda s, o: s.StepLR(o, step_size=3, gamma=0.7),
            15,
        ),
        (
            lambda o: CosineAnnealingLR(o, T_max=11, eta_min=0.01),
            lambda s, o: s.CosineAnnealingLR(o, T_max=11, eta_min=0.01),
            12,  # up to T_max: torch's recursive form rises again after it, ours stays flat
        ),
        (
            lambda o: WarmupCosineLR(o, warmup_iters=4, total_iters=13, start_factor=0.2),
            lambda s, o: s.SequentialLR(
                o,
                [s.LinearLR(o, start_factor=0.2, total_iters=4), s.CosineAnnealingLR(o, 9)],
                milestones=[4],
            ),
            14,
        ),
    ],
)
def test_schedules_match_torch(torch, make_ours, make_theirs, steps):
    ours = make_ours(SGD([Param(np.zeros(1))], lr=0.3))
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    theirs = make_theirs(torch.optim.lr_scheduler, topt)
    expected = []
    for _ in range(steps):
        expected.append(theirs.get_last_lr()[0])
        topt.step()
        theirs.step()
    np.testing.assert_allclose(_lrs(ours, steps), expected, rtol=1e-12, atol=1e-15)


def test_schedule_sets_optimizer_lr():
    opt = SGD([Param(np.zeros(1))], lr=0.2)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.lr == 0.1
    assert math.isclose(sched.get_last_lr()[0], 0.1)


def test_schedules_reject_bad_input():
    opt = SGD([Param(np.zeros(1))], lr=0.2)
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive int, got 0"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor must be in \(0, 1\]"):
        LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be a positive int"):
        CosineAnnealingLR(opt, T_max=-3)
    with pytest.raises(ValueError, match="WarmupCosineLR: need 0 < warmup_iters < total_iters"):
        WarmupCosineLR(opt, warmup_iters=5, total_iters=5)
