"""Initialisation: hand-computed gains and fans, sample statistics against the formulas on
large tensors, bounds against torch.nn.init, seeding, Parameters, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn_course import init, nn
from cnn_course.backend import to_numpy
from cnn_course.init import kaiming_std, xavier_std


def test_gain_and_fan_hand_example():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("conv2d") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(1.6666666666666667)
    assert init.calculate_gain("relu") == pytest.approx(1.4142135623730951)
    # leaky_relu, slope 0.01: sqrt(2 / 1.0001); slope sqrt(5): sqrt(2 / 6) = 0.57735...
    assert init.calculate_gain("leaky_relu") == pytest.approx(1.4141428569978354)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(0.5773502691896258)
    assert init.calculate_gain("selu") == 0.75
    # (C_out, C_in, kh, kw) = (8, 3, 5, 5): fan_in 3*25 = 75, fan_out 8*25 = 200
    assert init.calculate_fan_in_and_fan_out((8, 3, 5, 5)) == (75, 200)
    assert init.calculate_fan_in_and_fan_out((10, 4)) == (4, 10)


@pytest.mark.parametrize(
    ("fill", "kwargs", "dist", "std"),
    [
        # shape (200, 100, 3, 3): fan_in 900, fan_out 1800
        (init.xavier_uniform_, {}, "uniform", math.sqrt(2 / 2700)),
        (init.xavier_normal_, {"gain": 2.0}, "normal", 2 * math.sqrt(2 / 2700)),
        (init.kaiming_uniform_, {"nonlinearity": "relu"}, "uniform", math.sqrt(2 / 900)),
        (
            init.kaiming_normal_,
            {"mode": "fan_out", "nonlinearity": "relu"},
            "normal",
            math.sqrt(2 / 1800),
        ),
        (init.kaiming_uniform_, {"a": math.sqrt(5)}, "uniform", 1 / math.sqrt(3 * 900)),
    ],
)
def test_sample_statistics_match_formula(xp, fill, kwargs, dist, std):
    w = xp.empty((200, 100, 3, 3), dtype=xp.float64)
    assert fill(w, generator=0, **kwargs) is w
    w = to_numpy(w)
    # 180,000 samples: the sample std is within 1% of the formula with overwhelming odds
    assert w.std() == pytest.approx(std, rel=0.01)
    assert abs(w.mean()) < 0.01 * std
    if dist == "uniform":
        bound = math.sqrt(3) * std
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.999 * bound  # the samples fill the interval


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("xavier_uniform_", {"gain": 1.5}),
        ("kaiming_uniform_", {"a": math.sqrt(5)}),
        ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
        ("kaiming_uniform_", {"a": 0.2, "nonlinearity": "leaky_relu"}),
    ],
)
def test_uniform_bounds_match_torch(torch, name, kwargs):
    shape = (64, 16, 5, 3)
    ours = getattr(init, name)(np.empty(shape), generator=1, **kwargs)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape, dtype=torch.float64), **kwargs)
    # the extreme samples of 15,360 uniforms approach the bound from inside, in both
    assert np.abs(ours).max() == pytest.approx(theirs.abs().max().item(), rel=2e-3)
    assert ours.std() == pytest.approx(theirs.std().item(), rel=0.03)


@pytest.mark.oracle
def test_gain_matches_torch(torch):
    for nonlinearity, param in [
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
    ]:
        assert init.calculate_gain(nonlinearity, param) == pytest.approx(
            torch.nn.init.calculate_gain(nonlinearity, param)
        )


def test_seed_reproducible_and_dtype_kept(xp):
    a = init.kaiming_normal_(xp.empty((4, 3), dtype=xp.float32), generator=7)
    b = init.kaiming_normal_(xp.empty((4, 3), dtype=xp.float32), generator=np.random.default_rng(7))
    c = init.kaiming_normal_(xp.empty((4, 3), dtype=xp.float32), generator=8)
    assert a.dtype == xp.float32
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert not np.array_equal(to_numpy(a), to_numpy(c))


def test_constant_fills_and_parameters():
    p = nn.Parameter((2, 3))
    assert init.ones_(p) is p
    np.testing.assert_array_equal(p.data, np.ones((2, 3), dtype=np.float32))
    init.zeros_(p)
    np.testing.assert_array_equal(p.data, np.zeros((2, 3)))
    init.xavier_uniform_(p, generator=0)
    # bound sqrt(6 / (3 + 2)) = 1.0954...
    assert p.data.dtype == np.float32 and np.abs(p.data).max() <= 1.0954452
    assert np.abs(p.data).max() > 0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 dimensions, got shape \\(5,\\)"):
        init.xavier_uniform_(np.empty(5))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan")
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(TypeError, match="kaiming_uniform_: tensor must be a floating-point"):
        init.kaiming_uniform_(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="ones_: tensor must be a floating-point array or a Param"):
        init.ones_([1.0, 2.0])


def test_std_helpers_by_hand():
    # A (fan_out=30, fan_in=20) weight: Xavier std = sqrt(2 / 50) = 0.2; Kaiming (ReLU,
    # fan_in) std = sqrt(2) / sqrt(20) = sqrt(0.1).
    assert xavier_std((30, 20)) == pytest.approx(0.2)
    assert kaiming_std((30, 20), nonlinearity="relu") == pytest.approx(0.1**0.5)
    # A conv weight (8, 4, 3, 3): fan_in = 4 * 9 = 36, fan_out = 8 * 9 = 72.
    assert kaiming_std((8, 4, 3, 3), mode="fan_out", nonlinearity="relu") == pytest.approx(
        (2 / 72) ** 0.5
    )
