"""interpolate (nearest, bilinear): hand examples, the PyTorch oracle on generated
configurations, gradient checks, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops.sampling import interpolate, interpolate_backward
from tests.helpers import LAYOUTS, assert_close, examples, laid_out


# ----------------------------------------------------------------------------- hand examples
def test_nearest_hand_example(xp):
    x = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    up = [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0], [3.0, 3.0, 4.0, 4.0]]
    assert_close(interpolate(x, scale_factor=2), [[up]])
    assert_close(interpolate(x, size=(4, 4)), [[up]])
    # Downsampling keeps input floor(i * 4/2): rows and columns 0 and 2.
    assert_close(interpolate(xp.asarray([[up]]), size=2), [[[[1.0, 2.0], [3.0, 4.0]]]])
    # A scale factor is used as given: 4 * 1.7 -> 6 outputs reading floor(i / 1.7), which is
    # not floor(i * 4/6), what size=6 reads.
    row = xp.asarray([[[[0.0, 1.0, 2.0, 3.0]]]])
    assert_close(interpolate(row, scale_factor=(1, 1.7)), [[[[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]]]])
    assert_close(interpolate(row, size=(1, 6)), [[[[0.0, 0.0, 1.0, 2.0, 2.0, 3.0]]]])


def test_nearest_reads_what_pytorch_reads_in_float32(xp):
    # Width 2 -> 82: output 41 reads floor(41 * 2/82) = floor(1.0) = input 1 in exact
    # arithmetic, but PyTorch computes 41 * float32(2/82) = 0.99999994 and reads input 0, so
    # outputs 0..41 copy input 0 and 42..81 input 1.
    out = to_numpy(interpolate(xp.asarray([[[[0.0, 1.0]]]]), size=(1, 82)))[0, 0, 0]
    np.testing.assert_array_equal(out, [0.0] * 42 + [1.0] * 40)


def test_bilinear_hand_example(xp):
    # align_corners=True: outputs at 0, 1/3, 2/3, 1 of the way from the first input to the last.
    assert_close(
        interpolate(xp.asarray([[[[0.0, 3.0]]]]), size=(1, 4), mode="bilinear", align_corners=True),
        [[[[0.0, 1.0, 2.0, 3.0]]]],
    )
    # align_corners=False: output i reads (i + 0.5) / 2 - 0.5 = -0.25 (-> 0), 0.25, 0.75, 1.25
    # (-> the last input).
    x = xp.asarray([[[[0.0, 4.0], [8.0, 12.0]]]])
    expected = [
        [0.0, 1.0, 3.0, 4.0],
        [2.0, 3.0, 5.0, 6.0],
        [6.0, 7.0, 9.0, 10.0],
        [8.0, 9.0, 11.0, 12.0],
    ]
    assert_close(interpolate(x, scale_factor=2, mode="bilinear"), [[expected]])
    assert_close(interpolate(x, size=4, mode="bilinear", align_corners=False), [[expected]])


def test_interpolate_backward_hand_example(xp):
    # Every input of a 2x nearest upsampling was copied to 4 outputs.
    x = xp.zeros((1, 1, 2, 2))
    assert_close(
        interpolate_backward(xp.ones((1, 1, 4, 4)), x, scale_factor=2), [[[[4.0] * 2] * 2]]
    )
    # Bilinear 2 -> 4 (align_corners=False): outputs read input 0 with weights 1, 3/4, 1/4, 0.
    grad = interpolate_backward(
        xp.asarray([[[[1.0, 2.0, 3.0, 4.0]]]]), xp.zeros((1, 1, 1, 2)), size=(1, 4), mode="bilinear"
    )
    assert_close(grad, [[[[1 + 1.5 + 0.75, 0.5 + 2.25 + 4.0]]]])


# ----------------------------------------------------------------------------- PyTorch oracle
@st.composite
def resizes(draw):
    """An input shape and interpolate arguments: size or scale factor (down- and up-sampling,
    per-axis), both modes, every align_corners setting."""
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        *draw(st.tuples(*[st.integers(1, 8)] * 2)),
    )
    mode, align = draw(
        st.sampled_from(
            [("nearest", None), ("bilinear", None), ("bilinear", True), ("bilinear", False)]
        )
    )
    factors = st.sampled_from([0.5, 0.7, 1.0, 1.3, 1.5, 1.7, 2.0, 2.5, 3.0])
    if draw(st.booleans()):
        sizes = st.integers(1, 12) | st.integers(13, 90)
        size = draw(sizes | st.tuples(sizes, sizes))
        kwargs = {"size": size}
    else:
        scale = draw(factors | st.tuples(factors, factors))
        pair = scale if isinstance(scale, tuple) else (scale, scale)
        assume(all(int(n * s) >= 1 for n, s in zip(shape[2:], pair, strict=True)))
        kwargs = {"scale_factor": scale}
    return shape, {**kwargs, "mode": mode, "align_corners": align}


@pytest.mark.oracle
@examples(100)
@given(
    case=resizes(),
    layout=LAYOUTS,
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 1000),
)
def test_interpolate_matches_torch(xp, torch, case, layout, dtype, seed):
    shape, kwargs = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.functional.interpolate(tx, **kwargs)
    grad_out = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    t_out.backward(torch.tensor(grad_out))
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}
    xx = laid_out(xp, x, layout)
    out = interpolate(xx, **kwargs)
    assert out.dtype == dtype
    if kwargs["mode"] == "nearest":
        assert_close(out, t_out.detach().numpy(), rtol=0, atol=0)  # the same input read
    else:
        assert_close(out, t_out.detach().numpy(), **tol)
    assert_close(interpolate_backward(xp.asarray(grad_out), xx, **kwargs), tx.grad.numpy(), **tol)


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2},
        {"size": (3, 7)},
        {"scale_factor": (1.5, 0.7)},
        {"size": (6, 4), "mode": "bilinear"},
        {"scale_factor": 1.7, "mode": "bilinear"},
        {"size": (2, 9), "mode": "bilinear", "align_corners": True},
        {"scale_factor": (0.5, 2.5), "mode": "bilinear", "align_corners": True},
    ],
)
def test_interpolate_backward_gradcheck(xp, rng, kwargs):
    x = xp.asarray(rng.standard_normal((2, 2, 4, 5)))
    out = interpolate(x, **kwargs)
    g = xp.asarray(rng.uniform(0.5, 1.5, out.shape) * rng.choice([-1.0, 1.0], out.shape))
    check_gradients(
        lambda a: interpolate(a, **kwargs), [x], [interpolate_backward(g, x, **kwargs)], g, ["x"]
    )


# ----------------------------------------------------------------------------- bad input
BAD = [
    ({"size": 2, "mode": "bicubic"}, ValueError, r"mode must be one of \('nearest', 'bilinear'\)"),
    ({"size": 2, "scale_factor": 2}, ValueError, "give exactly one of size and scale_factor"),
    ({}, ValueError, "give exactly one of size and scale_factor, got size=None"),
    ({"size": 2, "align_corners": True}, ValueError, "align_corners can only be set with mode="),
    ({"size": 2, "mode": "bilinear", "align_corners": 1}, TypeError, "align_corners must be"),
    ({"size": 0}, ValueError, "size must be a positive int or a pair of them, got 0"),
    ({"size": (2, 2, 2)}, ValueError, r"size must be a positive int .* got \(2, 2, 2\)"),
    ({"size": 2.5}, ValueError, "size must be a positive int"),
    ({"scale_factor": -2}, ValueError, "scale_factor must be a positive number"),
    ({"scale_factor": float("nan")}, ValueError, "scale_factor must be a positive number"),
    ({"scale_factor": 0.1}, ValueError, r"scale_factor 0.1 makes the output .* empty"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD)
def test_interpolate_rejects_bad_input(xp, kwargs, error, message):
    with pytest.raises(error, match=f"interpolate: {message}"):
        interpolate(xp.zeros((1, 1, 4, 4)), **kwargs)
    with pytest.raises(error, match=f"interpolate_backward: {message}"):
        interpolate_backward(xp.zeros((1, 1, 2, 2)), xp.zeros((1, 1, 4, 4)), **kwargs)


def test_interpolate_rejects_bad_arrays(xp):
    with pytest.raises(ValueError, match="interpolate: x must have 4 dimensions"):
        interpolate(xp.zeros((1, 4, 4)), size=2)
    with pytest.raises(TypeError, match="interpolate: x must have a floating-point dtype"):
        interpolate(xp.zeros((1, 1, 4, 4), dtype=xp.int64), size=2)
    with pytest.raises(
        ValueError, match=r"interpolate_backward: grad_out has shape \(1, 1, 2, 3\)"
    ):
        interpolate_backward(xp.zeros((1, 1, 2, 3)), xp.zeros((1, 1, 4, 4)), size=2)


# ----------------------------------------------------------------------------- contracts
ALL_MODES = [
    {"size": (3, 7)},
    {"scale_factor": 1.5, "mode": "bilinear"},
    {"size": 5, "mode": "bilinear", "align_corners": True},
]


@pytest.mark.parametrize("kwargs", ALL_MODES)
def test_interpolate_leaves_inputs_unchanged(xp, rng, kwargs):
    x = laid_out(xp, rng.standard_normal((1, 2, 4, 5)), "strided")
    g = xp.asarray(rng.standard_normal(interpolate(x, **kwargs).shape))
    before = to_numpy(x).copy(), to_numpy(g).copy()
    interpolate(x, **kwargs)
    interpolate_backward(g, x, **kwargs)
    np.testing.assert_array_equal(to_numpy(x), before[0])
    np.testing.assert_array_equal(to_numpy(g), before[1])


@pytest.mark.parametrize("kwargs", ALL_MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_interpolate_keeps_the_dtype(xp, kwargs, dtype):
    x = xp.ones((1, 2, 4, 5), dtype=dtype)
    out = interpolate(x, **kwargs)
    assert out.dtype == dtype
    assert interpolate_backward(xp.ones(out.shape, dtype=dtype), x, **kwargs).dtype == dtype
