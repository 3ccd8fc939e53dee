"""Pooling: hand examples, fast path vs the loop definitions, the PyTorch oracle on generated
configurations, gradient checks, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import math
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops import pooling as P
from cnn_course.ops._engine import compiled, threads
from tests.helpers import LAYOUTS, assert_close, examples, laid_out


@pytest.fixture(params=["windows", "numba"])
def max_path(request, monkeypatch):
    """The CPU path of max pooling under test: NumPy's window copies and scatter-add
    ("windows", always tested) or the compiled window maximum and scatter ("numba", where
    numba is installed; skipped with the reason otherwise)."""
    if request.param == "windows":
        monkeypatch.setenv(compiled.ENV, "0")
    else:
        monkeypatch.delenv(compiled.ENV, raising=False)
        if compiled.unavailable():
            pytest.skip(f"compiled scatter unavailable: {compiled.unavailable()}")
    return request.param


def max_paths() -> list[dict[str, str]]:
    """The environments that select each CPU path of max pooling, for the property tests
    (hypothesis runs a test body many times, so they loop over paths instead of taking the
    function-scoped :func:`max_path` fixture): NumPy's, and the compiled one where numba is
    installed."""
    paths = [{compiled.ENV: "0"}]
    if not compiled.unavailable():
        paths.append({compiled.ENV: "1"})
    return paths


# The 4x4 plane of the hand examples.
X = [
    [1.0, 3.0, 2.0, 1.0],
    [4.0, 6.0, 5.0, 0.0],
    [7.0, 2.0, 9.0, 8.0],
    [1.0, 0.0, 3.0, 4.0],
]


def distinct(rng, shape):
    """float64 values 0.01 apart in random order: no ties, so max pooling is differentiable
    at them for a 1e-6 finite-difference step."""
    return rng.permutation(math.prod(shape)).reshape(shape) * 0.01 - 1.0


def sample(rng, shape, ties):
    """Distinct values, or (``ties``) integers 0..3 so most windows hold a tie, to check that
    the maximum chosen is the first one in window order, as in PyTorch."""
    return rng.integers(0, 4, shape).astype(np.float64) if ties else distinct(rng, shape)


def upstream(xp, rng, shape):
    """An upstream gradient for a gradient check, with |g| in [0.5, 1.5] and random signs:
    a near-zero g would make an analytic gradient so small that the finite difference's
    round-off alone exceeds the 1e-6 relative tolerance."""
    return xp.asarray(rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape))


# ----------------------------------------------------------------------------- hand examples
def test_pool_output_size_hand_example():
    # floor((6 - 3) / 2) + 1 = 2; ceil gives 3; Caffe always ceils: 3.
    assert P.pool_output_size(6, 3, 2) == 2
    assert P.pool_output_size(6, 3, 2, ceil_mode=True) == 3
    assert P.caffe_pool_output_size(6, 3, 2) == 3
    # AlexNet: 55 -> 27 (3x3, stride 2); GoogLeNet (from Caffe): 112 -> 56 needs ceil mode.
    assert P.pool_output_size(55, 3, 2) == 27
    assert P.pool_output_size(112, 3, 2) == 55
    assert P.pool_output_size(112, 3, 2, ceil_mode=True) == 56
    # ceil((5 + 2 - 2) / 2) + 1 = 4, but window 4 would start at 6 - 1 = 5, in the right
    # padding: PyTorch and Caffe (which has padding here) drop it.
    assert P.pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    assert P.caffe_pool_output_size(5, 2, 2, padding=1) == 3
    # Without padding Caffe keeps a window starting past the input (at 6 >= 5); PyTorch not.
    assert P.pool_output_size(5, 1, 3, ceil_mode=True) == 2
    assert P.caffe_pool_output_size(5, 1, 3) == 3
    # stride defaults to kernel_size; dilation 2 makes a 3-tap window span 5.
    assert P.pool_output_size(7, 2) == 3
    assert P.pool_output_size(7, 3, 1, dilation=2) == 3


def test_max_pool2d_hand_example(xp):
    x = xp.asarray([[X]])
    out, indices = P.max_pool2d(x, 2, return_indices=True)
    assert_close(out, [[[[6.0, 5.0], [7.0, 9.0]]]])
    np.testing.assert_array_equal(to_numpy(indices), [[[[5, 6], [8, 10]]]])
    # Overlapping 3x3 windows, stride 2, padding 1 (ResNet's stem): window rows/cols
    # {0, 1} and {1, 2, 3}. The 6 at (1, 1) is the maximum of both top windows.
    out, indices = P.max_pool2d(x, 3, 2, padding=1, return_indices=True)
    assert_close(out, [[[[6.0, 6.0], [7.0, 9.0]]]])
    np.testing.assert_array_equal(to_numpy(indices), [[[[5, 5], [8, 10]]]])
    # Ties go to the first maximum in row-major window order (the 5 at (0, 1), not (1, 0)).
    tie = xp.asarray([[[[1.0, 5.0], [5.0, 0.0]]]])
    _, indices = P.max_pool2d(tie, 2, return_indices=True)
    np.testing.assert_array_equal(to_numpy(indices), [[[[1]]]])
    # A window holding NaN has a NaN maximum, found at its last NaN (PyTorch's rule: every
    # NaN replaces the running maximum), also after an infinity.
    nan = xp.asarray([[[[1.0, 9.0, 3.0, math.nan], [math.nan, 2.0, math.nan, 4.0]]]])
    out, indices = P.max_pool2d(nan, 2, return_indices=True)
    assert bool(xp.isnan(out).all())
    np.testing.assert_array_equal(to_numpy(indices), [[[[4, 6]]]])
    grad = P.max_pool2d_backward(xp.asarray([[[[1.0, 2.0]]]]), nan, 2)
    assert_close(grad, [[[[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]]]])
    inf_then_nan = xp.asarray([[[[math.inf, math.nan, 1.0]]]])
    _, indices = P.max_pool2d(inf_then_nan, (1, 3), return_indices=True)
    np.testing.assert_array_equal(to_numpy(indices), [[[[1]]]])
    np.testing.assert_array_equal(
        to_numpy(P.max_pool2d_naive(nan, 2, return_indices=True)[1]), [[[[4, 6]]]]
    )


def test_max_pool2d_backward_hand_example(xp):
    x = xp.asarray([[X]])
    grad = P.max_pool2d_backward(xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]]), x, 3, 2, padding=1)
    # Both top windows chose the 6 at (1, 1): their gradients 1 and 2 add up there.
    expected = [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 3.0, 0.0, 0.0],
        [3.0, 0.0, 4.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    assert_close(grad, [[expected]])
    # The same from the forward's indices [[5, 5], [8, 10]], without recomputing them.
    indices = xp.asarray([[[[5, 5], [8, 10]]]])
    g = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert_close(P.max_pool2d_backward(g, x, 3, 2, padding=1, indices=indices), [[expected]])


def test_avg_pool2d_hand_example(xp):
    x = xp.asarray([[X]])
    assert_close(P.avg_pool2d(x, 2), [[[[3.5, 2.0], [2.5, 6.0]]]])
    # 3x3 stride 2 padding 1: window sums 14, 17, 20, 37. count_include_pad divides by 9;
    # otherwise by the input cells in the window: 2x2, 2x3, 3x2, 3x3.
    assert_close(P.avg_pool2d(x, 3, 2, 1), [[[[14 / 9, 17 / 9], [20 / 9, 37 / 9]]]])
    assert_close(
        P.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [[[[3.5, 17 / 6], [20 / 6, 37 / 9]]]]
    )
    # ceil mode: the last windows (rows/cols 2..4) run past the 4x4 input, so they divide by
    # the 2 rows (columns) that exist: sums 39, 25, 22, 24 over 9, 6, 6, 4 cells.
    assert_close(P.avg_pool2d(x, 3, 2, ceil_mode=True), [[[[39 / 9, 25 / 6], [22 / 6, 6.0]]]])
    # In ceil mode even a kernel larger than the input gives one window (PyTorch allows it):
    # 3x3 over a 2x2 input averages the 4 cells that exist.
    small = xp.asarray([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert_close(P.avg_pool2d(small, 3, 2, ceil_mode=True), [[[[1.5]]]])
    assert_close(P.max_pool2d(small, 3, 2, ceil_mode=True), [[[[3.0]]]])


def test_avg_pool2d_backward_hand_example(xp):
    x = xp.asarray([[X]])
    grad = P.avg_pool2d_backward(xp.asarray([[[[4.0, 8.0], [12.0, 16.0]]]]), x, 2)
    expected = [
        [1.0, 1.0, 2.0, 2.0],
        [1.0, 1.0, 2.0, 2.0],
        [3.0, 3.0, 4.0, 4.0],
        [3.0, 3.0, 4.0, 4.0],
    ]
    assert_close(grad, [[expected]])
    # Overlapping 3x3 stride 2 windows on a 5x5 input: the centre row/column is shared, so
    # the cell (2, 2) receives a ninth of all four upstream gradients.
    grad = P.avg_pool2d_backward(xp.full((1, 1, 2, 2), 9.0), xp.zeros((1, 1, 5, 5)), 3, 2)
    expected = [
        [1.0, 1.0, 2.0, 1.0, 1.0],
        [1.0, 1.0, 2.0, 1.0, 1.0],
        [2.0, 2.0, 4.0, 2.0, 2.0],
        [1.0, 1.0, 2.0, 1.0, 1.0],
        [1.0, 1.0, 2.0, 1.0, 1.0],
    ]
    assert_close(grad, [[expected]])


def test_lp_pool2d_hand_example(xp):
    x = xp.asarray([[[[3.0, 0.0, 1.0, 2.0], [4.0, 0.0, 2.0, 4.0]]]])
    assert_close(P.lp_pool2d(x, 2, 2), [[[[5.0, 5.0]]]])  # sqrt(9 + 16), sqrt(1 + 4 + 4 + 16)
    assert_close(P.lp_pool2d(x, 1, 2), [[[[7.0, 9.0]]]])  # p = 1: the window sum
    assert_close(P.lp_pool2d(x, math.inf, 2), [[[[4.0, 4.0]]]])  # p = inf: max of |x|
    # d sqrt(sum x^2) / dx = x / norm: window 1 gives [3, 0, 4, 0] / 5.
    grad = P.lp_pool2d_backward(xp.asarray([[[[1.0, 10.0]]]]), x, 2, 2)
    assert_close(grad, [[[[0.6, 0.0, 2.0, 4.0], [0.8, 0.0, 4.0, 8.0]]]])


def test_adaptive_pool2d_hand_example(xp):
    x = xp.asarray([[X]])
    # Output (3, 2) from 4x4: row bins [0, 2), [1, 3), [2, 4) overlap; column bins [0, 2), [2, 4).
    assert_close(P.adaptive_avg_pool2d(x, (3, 2)), [[[[3.5, 2.0], [4.75, 5.5], [2.5, 6.0]]]])
    out, indices = P.adaptive_max_pool2d(x, (3, 2), return_indices=True)
    assert_close(out, [[[[6.0, 5.0], [7.0, 9.0], [7.0, 9.0]]]])
    np.testing.assert_array_equal(to_numpy(indices), [[[[5, 6], [8, 10], [8, 10]]]])
    # The 7 and the 9 are the maxima of two bins each: their gradients add.
    grad = P.adaptive_max_pool2d_backward(xp.ones((1, 1, 3, 2)), x, (3, 2))
    expected = [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [2.0, 0.0, 2.0, 0.0], [0.0] * 4]
    assert_close(grad, [[expected]])
    # Average backward: the middle rows belong to two row bins of 2 rows, 2 columns each.
    grad = P.adaptive_avg_pool2d_backward(xp.full((1, 1, 3, 2), 4.0), x, (3, 2))
    assert_close(grad, [[[[1.0] * 4, [2.0] * 4, [2.0] * 4, [1.0] * 4]]])
    # The entries sum to 56: GAP is 56 / 16 = 3.5, global max 9.
    assert_close(P.global_avg_pool2d(x), [[[[3.5]]]])
    assert_close(P.global_max_pool2d(x), [[[[9.0]]]])
    assert_close(P.global_avg_pool2d_backward(xp.full((1, 1, 1, 1), 16.0), x), [[[[1.0] * 4] * 4]])
    expected = [[0.0] * 4, [0.0] * 4, [0.0, 0.0, 5.0, 0.0], [0.0] * 4]
    assert_close(P.global_max_pool2d_backward(xp.full((1, 1, 1, 1), 5.0), x), [[expected]])


def test_max_unpool2d_hand_example(xp):
    # The pooled values and indices of the 2x2 max pooling above, put back in a 4x4 plane.
    x = xp.asarray([[[[6.0, 5.0], [7.0, 9.0]]]])
    indices = xp.asarray([[[[5, 6], [8, 10]]]])
    expected = [[0.0] * 4, [0.0, 6.0, 5.0, 0.0], [7.0, 0.0, 9.0, 0.0], [0.0] * 4]
    assert_close(P.max_unpool2d(x, indices, 2), [[expected]])
    # output_size picks the 5x5 plane that also pools to 2x2 (default would be 4x4).
    out = P.max_unpool2d(x, xp.asarray([[[[0, 4], [20, 24]]]]), 2, output_size=(5, 5))
    assert out.shape == (1, 1, 5, 5)
    assert_close(out[0, 0, ::4, ::4], [[6.0, 5.0], [7.0, 9.0]])
    assert float(abs(out).sum()) == 27.0
    grad = P.max_unpool2d_backward(xp.arange(16.0).reshape(1, 1, 4, 4), x, indices, 2)
    assert_close(grad, [[[[5.0, 6.0], [8.0, 10.0]]]])


# ----------------------------------------------------------------------------- configurations
@st.composite
def windows(draw, dilation=True, padding=True):
    """A pooling configuration and an input size it fits: non-square kernels, asymmetric
    strides (sometimes the default ``None``), padding up to kernel/2, dilation, ceil mode."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    pad = tuple(draw(st.integers(0, k // 2)) if padding else 0 for k in kernel)
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    extent = [d * (k - 1) + 1 - 2 * p for k, p, d in zip(kernel, pad, dil, strict=True)]
    hw = tuple(draw(st.integers(max(1, e), max(1, e) + 6)) for e in extent)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    cfg = {
        "kernel_size": kernel,
        "stride": stride,
        "padding": pad,
        "ceil_mode": draw(st.booleans()),
    }
    if dilation:
        cfg["dilation"] = dil
    return shape, cfg


DTYPES = st.sampled_from([np.float64, np.float32])


def has_padding_only_window(shape, cfg) -> bool:
    """Whether some max-pooling window of ``cfg`` on ``shape`` reads only padding (possible
    with dilation and ceil mode). Written out here, independently of the library, because
    PyTorch 2.13 CPU can corrupt its heap on such inputs, so the oracle test avoids them."""
    stride = cfg["stride"] or cfg["kernel_size"]
    dilation = cfg.get("dilation", (1, 1))
    for size, k, s, p, d in zip(
        shape[2:], cfg["kernel_size"], stride, cfg["padding"], dilation, strict=True
    ):
        span = d * (k - 1) + 1
        rounding = math.ceil if cfg["ceil_mode"] else math.floor
        out = rounding((size + 2 * p - span) / s) + 1
        if cfg["ceil_mode"] and (out - 1) * s >= size + p:
            out -= 1  # PyTorch's rule: the last window must start inside the input or left padding
        for o in range(out):
            taps = [o * s - p + d * j for j in range(k)]
            if all(t < 0 or t >= size for t in taps):
                return True
    return False


def tolerance(dtype):
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}


# ----------------------------------------------------------------------------- naive vs fast
@examples(30)
@given(case=windows(), ties=st.booleans(), seed=st.integers(0, 1000))
def test_max_pool2d_matches_naive(xp, case, ties, seed):
    shape, cfg = case
    x = xp.asarray(sample(np.random.default_rng(seed), shape, ties))
    out, indices = P.max_pool2d(x, **cfg, return_indices=True)
    ref, ref_indices = P.max_pool2d_naive(x, **cfg, return_indices=True)
    assert_close(out, to_numpy(ref), rtol=0, atol=0)
    finite = np.isfinite(to_numpy(ref))  # a window of padding only has no meaningful index
    np.testing.assert_array_equal(to_numpy(indices)[finite], to_numpy(ref_indices)[finite])
    assert_close(P.max_pool2d_vectorized(x, **cfg), to_numpy(ref), rtol=0, atol=0)


@examples(30)
@given(case=windows(dilation=False), include_pad=st.booleans(), seed=st.integers(0, 1000))
def test_avg_pool2d_matches_naive(xp, case, include_pad, seed):
    shape, cfg = case
    x = xp.asarray(np.random.default_rng(seed).standard_normal(shape))
    out = P.avg_pool2d(x, **cfg, count_include_pad=include_pad)
    assert_close(out, to_numpy(P.avg_pool2d_naive(x, **cfg, count_include_pad=include_pad)))


# ----------------------------------------------------------------------------- PyTorch oracle
def torch_grad(torch, fn, x, grad_out):
    """``fn``'s output and the gradient PyTorch's autograd gives for ``x``."""
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    out = fn(tx)
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), tx.grad.numpy()


@pytest.mark.oracle
@examples(100)
@given(case=windows(), layout=LAYOUTS, dtype=DTYPES, ties=st.booleans(), seed=st.integers(0, 1000))
def test_max_pool2d_matches_torch(xp, torch, case, layout, dtype, ties, seed):
    shape, cfg = case
    assume(not has_padding_only_window(shape, cfg))
    rng = np.random.default_rng(seed)
    x = sample(rng, shape, ties).astype(dtype)
    t_out, t_indices = torch.nn.functional.max_pool2d(torch.tensor(x), **cfg, return_indices=True)
    expected = t_out.numpy()
    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    _, grad = torch_grad(torch, lambda t: torch.nn.functional.max_pool2d(t, **cfg), x, grad_out)
    xx = laid_out(xp, x, layout)
    for env in max_paths():
        with mock.patch.dict(os.environ, env):
            out, indices = P.max_pool2d(xx, **cfg, return_indices=True)
            assert out.dtype == dtype
            assert_close(out, expected, rtol=0, atol=0)
            assert_close(P.max_pool2d(xx, **cfg), expected, rtol=0, atol=0)
            finite = np.isfinite(expected)  # PyTorch's index of a padding-only window: any
            np.testing.assert_array_equal(to_numpy(indices)[finite], t_indices.numpy()[finite])
            if finite.all():
                grad_x = P.max_pool2d_backward(xp.asarray(grad_out), xx, **cfg)
                assert_close(grad_x, grad, **tolerance(dtype))
                # From the saved indices (ours and PyTorch's) instead of recomputing them.
                for saved in (indices, xp.asarray(t_indices.numpy())):
                    grad_x = P.max_pool2d_backward(xp.asarray(grad_out), xx, **cfg, indices=saved)
                    assert_close(grad_x, grad, **tolerance(dtype))


def with_nan_and_inf(seed: int, shape) -> np.ndarray:
    """Small integers (ties everywhere) with some NaN and +inf entries."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64)
    special = rng.random(shape)
    x[special < 0.15] = math.nan
    x[special > 0.9] = math.inf
    return x


@pytest.mark.oracle
@examples(40)
@given(case=windows(), seed=st.integers(0, 1000))
def test_max_pool2d_with_nan_and_inf_matches_torch(xp, torch, case, seed):
    shape, cfg = case
    x = with_nan_and_inf(seed, shape)
    t_out, t_indices = torch.nn.functional.max_pool2d(torch.tensor(x), **cfg, return_indices=True)
    for env in max_paths():
        with mock.patch.dict(os.environ, env):
            out, indices = P.max_pool2d(xp.asarray(x), **cfg, return_indices=True)
        np.testing.assert_array_equal(to_numpy(out), t_out.numpy())  # NaN where PyTorch's is
        real = t_out.numpy() != -math.inf  # PyTorch's index of a padding-only window: any
        np.testing.assert_array_equal(to_numpy(indices)[real], t_indices.numpy()[real])


@pytest.mark.oracle
@examples(60)
@given(
    case=windows(dilation=False),
    include_pad=st.booleans(),
    layout=LAYOUTS,
    dtype=DTYPES,
    seed=st.integers(0, 1000),
)
def test_avg_pool2d_matches_torch(xp, torch, case, include_pad, layout, dtype, seed):
    shape, cfg = case
    cfg = {**cfg, "count_include_pad": include_pad}
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    out_shape = torch.nn.functional.avg_pool2d(torch.tensor(x), **cfg).shape
    grad_out = rng.standard_normal(tuple(out_shape)).astype(dtype)
    expected, grad = torch_grad(
        torch, lambda t: torch.nn.functional.avg_pool2d(t, **cfg), x, grad_out
    )
    xx = laid_out(xp, x, layout)
    assert_close(P.avg_pool2d(xx, **cfg), expected, **tolerance(dtype))
    assert_close(P.avg_pool2d_backward(xp.asarray(grad_out), xx, **cfg), grad, **tolerance(dtype))


@pytest.mark.oracle
@examples(40)
@given(
    case=windows(dilation=False, padding=False),
    norm_type=st.sampled_from([1, 2, 3, 1.5, math.inf]),
    layout=LAYOUTS,
    seed=st.integers(0, 1000),
)
def test_lp_pool2d_matches_torch(xp, torch, case, norm_type, layout, seed):
    shape, cfg = case
    cfg = {k: v for k, v in cfg.items() if k != "padding"}
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape) + 2.0  # positive (a fractional power of a negative is NaN)

    def reference(t):
        # p = inf is the max pool; PyTorch's lp_pool2d says so only from 2.13 on (earlier
        # releases evaluate x**inf and return 1).
        if math.isinf(norm_type):
            return torch.nn.functional.max_pool2d(t, **cfg)
        return torch.nn.functional.lp_pool2d(t, norm_type, **cfg)

    out_shape = reference(torch.tensor(x)).shape
    grad_out = rng.standard_normal(tuple(out_shape))
    expected, grad = torch_grad(torch, reference, x, grad_out)
    xx = laid_out(xp, x, layout)
    assert_close(P.lp_pool2d(xx, norm_type, **cfg), expected, rtol=1e-10)
    assert_close(P.lp_pool2d_backward(xp.asarray(grad_out), xx, norm_type, **cfg), grad, rtol=1e-10)


@st.composite
def adaptive_cases(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    size = (draw(st.integers(1, h + 2)), draw(st.integers(1, w + 2)))
    output_size = draw(st.sampled_from([size, size[0], (None, size[1])]))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), output_size


@pytest.mark.oracle
@examples(50)
@given(
    case=adaptive_cases(),
    layout=LAYOUTS,
    dtype=DTYPES,
    ties=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_adaptive_pool2d_matches_torch(xp, torch, case, layout, dtype, ties, seed):
    shape, output_size = case
    rng = np.random.default_rng(seed)
    x = sample(rng, shape, ties).astype(dtype)
    F = torch.nn.functional
    t_out, t_indices = F.adaptive_max_pool2d(torch.tensor(x), output_size, return_indices=True)
    grad_out = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    xx, g = laid_out(xp, x, layout), xp.asarray(grad_out)
    out, indices = P.adaptive_max_pool2d(xx, output_size, return_indices=True)
    assert_close(out, t_out.numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(to_numpy(indices), t_indices.numpy())
    _, grad = torch_grad(torch, lambda t: F.adaptive_max_pool2d(t, output_size), x, grad_out)
    assert_close(P.adaptive_max_pool2d_backward(g, xx, output_size), grad, **tolerance(dtype))
    expected, grad = torch_grad(torch, lambda t: F.adaptive_avg_pool2d(t, output_size), x, grad_out)
    assert_close(P.adaptive_avg_pool2d(xx, output_size), expected, **tolerance(dtype))
    assert_close(P.adaptive_avg_pool2d_backward(g, xx, output_size), grad, **tolerance(dtype))


@pytest.mark.oracle
@examples(30)
@given(case=adaptive_cases(), seed=st.integers(0, 1000))
def test_adaptive_max_pool2d_with_nan_and_inf_matches_torch(xp, torch, case, seed):
    shape, output_size = case
    x = with_nan_and_inf(seed, shape)
    F = torch.nn.functional
    t_out, t_indices = F.adaptive_max_pool2d(torch.tensor(x), output_size, return_indices=True)
    out, indices = P.adaptive_max_pool2d(xp.asarray(x), output_size, return_indices=True)
    np.testing.assert_array_equal(to_numpy(out), t_out.numpy())
    np.testing.assert_array_equal(to_numpy(indices), t_indices.numpy())


@pytest.mark.oracle
@examples(40)
@given(
    case=windows(dilation=False),
    given_size=st.booleans(),
    layout=LAYOUTS,
    seed=st.integers(0, 1000),
)
def test_max_unpool2d_matches_torch(xp, torch, case, given_size, layout, seed):
    shape, cfg = case
    cfg = {**cfg, "ceil_mode": False}
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    pooled, indices = F.max_pool2d(torch.tensor(distinct(rng, shape)), **cfg, return_indices=True)
    cfg = {k: v for k, v in cfg.items() if k != "ceil_mode"}
    # In floor mode the input size is one of the sizes that pool to this output; the default
    # size (H_out - 1) * stride + kernel_size - 2 * padding can be smaller than the input.
    stride = cfg["stride"] or cfg["kernel_size"]
    default = tuple(
        (o - 1) * s + k - 2 * p
        for o, s, k, p in zip(
            pooled.shape[2:], stride, cfg["kernel_size"], cfg["padding"], strict=True
        )
    )
    output_size = shape[2:] if given_size or default != shape[2:] else None
    pooled = pooled.numpy()
    expected = F.max_unpool2d(torch.tensor(pooled), indices, **cfg, output_size=output_size).numpy()
    grad_out = rng.standard_normal(expected.shape)
    grad = (
        torch.tensor(grad_out)
        .reshape(*pooled.shape[:2], -1)
        .gather(2, indices.reshape(*pooled.shape[:2], -1))
    )  # PyTorch's max_unpool2d backward
    xx, ii = laid_out(xp, pooled, layout), xp.asarray(indices.numpy())
    assert_close(P.max_unpool2d(xx, ii, **cfg, output_size=output_size), expected)
    grad_x = P.max_unpool2d_backward(xp.asarray(grad_out), xx, ii, **cfg, output_size=output_size)
    assert_close(grad_x, grad.reshape(pooled.shape).numpy())


# ----------------------------------------------------------------------------- gradient checks
GRAD_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": (3, 2), "stride": (2, 1), "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1), "ceil_mode": True},
]


@pytest.mark.parametrize("cfg", GRAD_CASES)
def test_max_pool2d_backward_gradcheck(xp, rng, cfg, max_path):
    x = xp.asarray(distinct(rng, (2, 2, 5, 6)))
    for kwargs in (cfg, {**cfg, "dilation": (2, 1)}):
        out = P.max_pool2d(x, **kwargs)
        g = upstream(xp, rng, out.shape)
        check_gradients(
            lambda a, kw=kwargs: P.max_pool2d(a, **kw),
            [x],
            [P.max_pool2d_backward(g, x, **kwargs)],
            g,
            ["x"],
        )


@pytest.mark.parametrize("cfg", GRAD_CASES)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool2d_backward_gradcheck(xp, rng, cfg, include_pad):
    x = xp.asarray(rng.standard_normal((2, 2, 5, 6)))
    kwargs = {**cfg, "count_include_pad": include_pad}
    g = upstream(xp, rng, P.avg_pool2d(x, **kwargs).shape)
    check_gradients(
        lambda a: P.avg_pool2d(a, **kwargs), [x], [P.avg_pool2d_backward(g, x, **kwargs)], g, ["x"]
    )


@pytest.mark.parametrize("norm_type", [1, 2, 3, 2.5, math.inf])
def test_lp_pool2d_backward_gradcheck(xp, rng, norm_type):
    x = xp.asarray(distinct(rng, (2, 2, 5, 6)) + 2.0)
    for cfg in ({"kernel_size": 2}, {"kernel_size": (3, 2), "stride": (2, 1), "ceil_mode": True}):
        g = upstream(xp, rng, P.lp_pool2d(x, norm_type, **cfg).shape)
        check_gradients(
            lambda a, c=cfg: P.lp_pool2d(a, norm_type, **c),
            [x],
            [P.lp_pool2d_backward(g, x, norm_type, **cfg)],
            g,
            ["x"],
        )


@pytest.mark.parametrize("output_size", [1, (3, 2), (2, 4), (7, 5)])
def test_adaptive_pool2d_backward_gradcheck(xp, rng, output_size):
    x = xp.asarray(distinct(rng, (2, 2, 5, 6)))
    out = P.adaptive_avg_pool2d(x, output_size)
    g = upstream(xp, rng, out.shape)
    for forward, backward in (
        (P.adaptive_avg_pool2d, P.adaptive_avg_pool2d_backward),
        (P.adaptive_max_pool2d, P.adaptive_max_pool2d_backward),
    ):
        check_gradients(
            lambda a, f=forward: f(a, output_size), [x], [backward(g, x, output_size)], g, ["x"]
        )


def test_global_pool2d_backward_gradcheck(xp, rng):
    x = xp.asarray(distinct(rng, (2, 3, 4, 5)))
    g = upstream(xp, rng, (2, 3, 1, 1))
    check_gradients(P.global_avg_pool2d, [x], [P.global_avg_pool2d_backward(g, x)], g, ["x"])
    check_gradients(P.global_max_pool2d, [x], [P.global_max_pool2d_backward(g, x)], g, ["x"])


def test_max_unpool2d_backward_gradcheck(xp, rng):
    # Non-overlapping windows, so no index repeats (where one does, the value written last
    # wins, and PyTorch's backward, a gather, is not the derivative of the others).
    pooled, indices = P.max_pool2d(xp.asarray(distinct(rng, (2, 2, 6, 7))), 2, return_indices=True)
    x = xp.asarray(rng.standard_normal(pooled.shape))
    kwargs = {"kernel_size": 2, "output_size": (6, 7)}
    g = upstream(xp, rng, (2, 2, 6, 7))
    check_gradients(
        lambda a: P.max_unpool2d(a, indices, **kwargs),
        [x],
        [P.max_unpool2d_backward(g, x, indices, **kwargs)],
        g,
        ["x"],
    )


# ----------------------------------------------------------------------------- bad input
def test_pool_output_size_rejects_bad_input():
    with pytest.raises(ValueError, match="pool_output_size: padding 2 must be at most half"):
        P.pool_output_size(8, 3, 1, padding=2)
    with pytest.raises(ValueError, match="pool_output_size: the output would be empty"):
        P.pool_output_size(2, 3)
    with pytest.raises(ValueError, match="pool_output_size: stride must be at least 1, got 0"):
        P.pool_output_size(8, 3, 0)
    with pytest.raises(TypeError, match="pool_output_size: size must be an int, got 2.5"):
        P.pool_output_size(2.5, 3)
    with pytest.raises(ValueError, match="caffe_pool_output_size: padding 3 must be smaller"):
        P.caffe_pool_output_size(8, 3, 1, padding=3)
    with pytest.raises(ValueError, match="caffe_pool_output_size: kernel_size 5 is larger"):
        P.caffe_pool_output_size(2, 5)


def plane(xp, shape=(1, 2, 4, 4), dtype="float64"):
    return xp.zeros(shape, dtype=dtype)


POOLS = [("max_pool2d", P.max_pool2d), ("avg_pool2d", P.avg_pool2d)]
BAD_WINDOWS = [
    # (pool arguments after x, x shape, x dtype, error, message after the op name)
    ((2,), (2, 4, 4), "float64", ValueError, r"x must have 4 dimensions"),
    ((2,), (1, 1, 4, 4), "int64", TypeError, r"x must have a floating-point dtype, got int64"),
    ((0,), (1, 2, 4, 4), "float64", ValueError, r"kernel_size must be positive, got 0"),
    ((2.0,), (1, 2, 4, 4), "float64", TypeError, r"kernel_size must be an int or a pair"),
    ((2, (1, 0)), (1, 2, 4, 4), "float64", ValueError, r"stride must be positive"),
    ((2, 1, -1), (1, 2, 4, 4), "float64", ValueError, r"padding must be non-negative"),
    ((3, 1, 2), (1, 2, 4, 4), "float64", ValueError, r"padding \(2, 2\) must be at most half"),
    ((5,), (1, 2, 4, 4), "float64", ValueError, r"kernel_size \(5, 5\) .* larger than the"),
    (
        ((2, 7), 1, 1),
        (1, 2, 4, 4),
        "float64",
        ValueError,
        r"kernel_size \(2, 7\) .*: x shape \(1, 2, 4, 4\), padding \(1, 1\)",
    ),
]


@pytest.mark.parametrize("name, pool", POOLS)
@pytest.mark.parametrize("args, shape, dtype, error, message", BAD_WINDOWS)
def test_pooling_rejects_bad_input(xp, name, pool, args, shape, dtype, error, message):
    with pytest.raises(error, match=f"{name}: {message}"):
        pool(plane(xp, shape, dtype), *args)


def test_pooling_rejects_bad_input_specific_to_an_op(xp):
    x = plane(xp)
    with pytest.raises(TypeError, match="max_pool2d: x must be a numpy or cupy ndarray"):
        P.max_pool2d([[[[1.0]]]], 1)
    with pytest.raises(ValueError, match="max_pool2d: dilation must be positive"):
        P.max_pool2d(x, 2, dilation=0)
    with pytest.raises(ValueError, match=r"max_pool2d: .* dilation \(4, 4\) is larger than"):
        P.max_pool2d(x, 2, dilation=4)
    with pytest.raises(ValueError, match="lp_pool2d: norm_type must be positive"):
        P.lp_pool2d(x, 0, 2)
    with pytest.raises(TypeError, match="lp_pool2d: norm_type must be a positive number"):
        P.lp_pool2d(x, "2", 2)
    with pytest.raises(ValueError, match="lp_pool2d: kernel_size .* larger than"):
        P.lp_pool2d(x, 2, 5)


def test_pooling_backward_rejects_bad_input(xp):
    x = xp.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: grad_out has shape \(1, 2, 3, 3\)"):
        P.max_pool2d_backward(xp.zeros((1, 2, 3, 3)), x, 2)
    with pytest.raises(ValueError, match=r"but the forward output has shape \(1, 2, 2, 2\)"):
        P.avg_pool2d_backward(xp.zeros((1, 2, 2, 3)), x, 2)
    with pytest.raises(TypeError, match="lp_pool2d_backward: grad_out must have a floating"):
        P.lp_pool2d_backward(xp.zeros((1, 2, 2, 2), dtype=xp.int32), x, 2, 2)
    with pytest.raises(ValueError, match="adaptive_max_pool2d_backward: grad_out has shape"):
        P.adaptive_max_pool2d_backward(xp.zeros((1, 2, 2, 2)), x, 3)
    with pytest.raises(ValueError, match="global_avg_pool2d_backward: grad_out has shape"):
        P.global_avg_pool2d_backward(xp.zeros((1, 2, 2, 2)), x)
    with pytest.raises(ValueError, match="max_unpool2d_backward: grad_out has shape"):
        P.max_unpool2d_backward(xp.zeros((1, 2, 3, 3)), x, xp.zeros(x.shape, dtype=xp.int64), 2)
    g, idx = xp.zeros((1, 2, 2, 2)), xp.zeros((1, 2, 2, 2), dtype=xp.int64)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must have 4 dim"):
        P.max_pool2d_backward(g, x, 2, indices=idx[..., 0])
    with pytest.raises(ValueError, match=r"indices shape \(1, 2, 2, 1\) must equal the output"):
        P.max_pool2d_backward(g, x, 2, indices=idx[..., :1])
    with pytest.raises(TypeError, match="max_pool2d_backward: indices must have an integer"):
        P.max_pool2d_backward(g, x, 2, indices=g)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must lie in \[0, 16\)"):
        P.max_pool2d_backward(g, x, 2, indices=idx + 16)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64"])
def test_max_pool2d_backward_range_check_for_every_index_width(xp, dtype):
    # 16x16 planes: 256 positions, more than int8 can address, so a negative int8 index must
    # be caught even though, read as unsigned, it is below the plane size.
    x = xp.zeros((1, 1, 16, 16))
    g = xp.zeros((1, 1, 8, 8))
    good = xp.zeros((1, 1, 8, 8), dtype=dtype)
    assert float(P.max_pool2d_backward(g, x, 2, indices=good).sum()) == 0.0
    if xp.dtype(dtype).kind == "i":
        bad = good.copy()
        bad[0, 0, 3, 5] = -1
        with pytest.raises(ValueError, match=r"must lie in \[0, 256\) .* from -1 to 0"):
            P.max_pool2d_backward(g, x, 2, indices=bad)
    if xp.iinfo(dtype).max >= 256:
        bad = good.copy()
        bad[0, 0, 7, 7] = 256
        with pytest.raises(ValueError, match=r"must lie in \[0, 256\) .* from 0 to 256"):
            P.max_pool2d_backward(g, x, 2, indices=bad)


def test_adaptive_pooling_rejects_bad_input(xp):
    x = xp.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be at least 1"):
        P.adaptive_avg_pool2d(x, 0)
    with pytest.raises(TypeError, match="adaptive_max_pool2d: output_size must be an int or a"):
        P.adaptive_max_pool2d(x, (1, 2, 3))
    with pytest.raises(TypeError, match="adaptive_max_pool2d: output_size must be an int, got"):
        P.adaptive_max_pool2d(x, 1.5)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: x must have a non-empty H x W"):
        P.adaptive_avg_pool2d(xp.zeros((1, 2, 0, 4)), 1)
    with pytest.raises(ValueError, match="global_max_pool2d: x must have 4 dimensions"):
        P.global_max_pool2d(xp.zeros((2, 4, 4)))
    with pytest.raises(TypeError, match="global_avg_pool2d: x must have a floating-point"):
        P.global_avg_pool2d(xp.zeros((1, 1, 2, 2), dtype=xp.int64))


def test_max_unpool2d_rejects_bad_input(xp):
    x = xp.ones((1, 1, 2, 2))
    indices = xp.asarray([[[[0, 3], [8, 15]]]])
    with pytest.raises(ValueError, match=r"max_unpool2d: indices shape \(1, 1, 2, 1\) must equal"):
        P.max_unpool2d(x, indices[..., :1], 2)
    with pytest.raises(TypeError, match="max_unpool2d: indices must have an integer dtype"):
        P.max_unpool2d(x, indices.astype(xp.float64), 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 16\)"):
        P.max_unpool2d(x, indices + 1, 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in .* from -1"):
        P.max_unpool2d(x, indices - 1, 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: output_size \(6, 4\) is not one"):
        P.max_unpool2d(x, indices, 2, output_size=(6, 4))
    with pytest.raises(ValueError, match="max_unpool2d: output_size must have 2 .* or 4"):
        P.max_unpool2d(x, indices, 2, output_size=(1, 4, 4))
    with pytest.raises(ValueError, match="max_unpool2d: the output would be empty"):
        P.max_unpool2d(x, indices, 1, padding=1)
    with pytest.raises(ValueError, match="max_unpool2d: x must have 4 dimensions"):
        P.max_unpool2d(x[0], indices[0], 2)


# ----------------------------------------------------------------------------- contracts
def every_call(xp, x):
    """Every forward and backward of the module on ``x`` (1, 2, 5, 6), grad_out in x's dtype."""

    def g(shape):
        return xp.ones(shape, dtype=x.dtype)

    pooled, indices = P.max_pool2d(x, 2, return_indices=True)
    win = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    return {
        "max_pool2d": P.max_pool2d(x, dilation=(1, 2), **win),
        "max_pool2d_naive": P.max_pool2d_naive(x, **win),
        "max_pool2d_backward": P.max_pool2d_backward(g((1, 2, 3, 4)), x, **win),
        "max_pool2d_backward_indices": P.max_pool2d_backward(
            g((1, 2, 2, 3)), x, 2, indices=indices
        ),
        "avg_pool2d": P.avg_pool2d(x, count_include_pad=False, **win),
        "avg_pool2d_naive": P.avg_pool2d_naive(x, **win),
        "avg_pool2d_backward": P.avg_pool2d_backward(g((1, 2, 3, 4)), x, **win),
        "lp_pool2d": P.lp_pool2d(x, 2, 2),
        "lp_pool2d_inf": P.lp_pool2d(x, math.inf, 2),
        "lp_pool2d_backward": P.lp_pool2d_backward(g((1, 2, 2, 3)), x, 2, 2),
        "adaptive_avg_pool2d": P.adaptive_avg_pool2d(x, (2, 4)),
        "adaptive_avg_pool2d_backward": P.adaptive_avg_pool2d_backward(g((1, 2, 2, 4)), x, (2, 4)),
        "adaptive_max_pool2d": P.adaptive_max_pool2d(x, (2, 4)),
        "adaptive_max_pool2d_backward": P.adaptive_max_pool2d_backward(g((1, 2, 2, 4)), x, (2, 4)),
        "global_avg_pool2d": P.global_avg_pool2d(x),
        "global_avg_pool2d_backward": P.global_avg_pool2d_backward(g((1, 2, 1, 1)), x),
        "global_max_pool2d": P.global_max_pool2d(x),
        "global_max_pool2d_backward": P.global_max_pool2d_backward(g((1, 2, 1, 1)), x),
        "max_unpool2d": P.max_unpool2d(pooled, indices, 2, output_size=(5, 6)),
        "max_unpool2d_backward": P.max_unpool2d_backward(
            g((1, 2, 5, 6)), pooled, indices, 2, output_size=(5, 6)
        ),
    }


def test_pooling_leaves_inputs_unchanged(xp, rng):
    x = laid_out(xp, distinct(rng, (1, 2, 5, 6)) + 2.0, "strided")
    before = to_numpy(x).copy()
    every_call(xp, x)
    np.testing.assert_array_equal(to_numpy(x), before)
    pooled, indices = P.max_pool2d(x, 2, return_indices=True)
    kept = to_numpy(pooled).copy(), to_numpy(indices).copy()
    P.max_unpool2d(pooled, indices, 2)
    g = xp.ones((1, 2, 2, 3))
    P.max_pool2d_backward(g, x, 2)
    np.testing.assert_array_equal(to_numpy(pooled), kept[0])
    np.testing.assert_array_equal(to_numpy(indices), kept[1])
    np.testing.assert_array_equal(to_numpy(g), 1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pooling_keeps_the_dtype(xp, rng, dtype):
    x = xp.asarray(distinct(rng, (1, 2, 5, 6)) + 2.0, dtype=dtype)
    for name, out in every_call(xp, x).items():
        assert out.dtype == dtype, name
    _, indices = P.max_pool2d(x, 2, return_indices=True)
    assert indices.dtype == xp.int64
    _, indices = P.adaptive_max_pool2d(x, 3, return_indices=True)
    assert indices.dtype == xp.int64


@pytest.mark.parametrize(
    "kernel, stride, padding, ceil_mode", [(2, 2, 0, False), (3, 2, 1, True), ((3, 2), 1, 1, False)]
)
def test_work_split_over_threads_gives_the_same_result(
    monkeypatch, max_path, kernel, stride, padding, ceil_mode
):
    """Every pass, however small, split over 3 threads: the same arrays as on one thread."""
    x = np.random.default_rng(0).standard_normal((5, 3, 9, 8))
    args = (kernel, stride, padding)
    out, indices = P.max_pool2d(x, *args, ceil_mode=ceil_mode, return_indices=True)
    grad_out = np.random.default_rng(1).standard_normal(out.shape)

    def run():
        return (
            *P.max_pool2d(x, *args, ceil_mode=ceil_mode, return_indices=True),
            P.max_pool2d(x, *args, ceil_mode=ceil_mode),
            P.max_pool2d_backward(grad_out, x, *args, ceil_mode=ceil_mode),
            P.max_pool2d_backward(grad_out, x, *args, ceil_mode=ceil_mode, indices=indices),
            P.avg_pool2d(x, *args, ceil_mode=ceil_mode),
            P.avg_pool2d_backward(grad_out, x, *args, ceil_mode=ceil_mode),
        )

    with threads.limit(1):
        serial = run()
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 0)
    with threads.limit(3):
        split = run()
    for a, b in zip(serial, split, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_close(split[0], P.max_pool2d_naive(x, *args, ceil_mode=ceil_mode))


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg", GRAD_CASES)
def test_compiled_scatter_matches_numpys_and_torch(torch, rng, monkeypatch, dtype, cfg):
    """Max pooling's backward through the compiled scatter against NumPy's scatter-add and
    PyTorch's, from ``x`` and from the saved indices (overlapping windows share arg-maxes:
    they add up), on a strided ``grad_out``; the spy shows the compiled scatter ran."""
    monkeypatch.delenv(compiled.ENV, raising=False)
    if compiled.unavailable():
        pytest.skip(f"compiled scatter unavailable: {compiled.unavailable()}")
    x = rng.integers(-2, 3, (2, 3, 7, 6)).astype(dtype)  # ties: shared arg-maxes
    out, indices = P.max_pool2d(x, **cfg, return_indices=True)
    grad_out = laid_out(np, rng.standard_normal(out.shape).astype(dtype), "strided")
    calls = []
    real = compiled.scatter_add

    def spy(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(compiled, "scatter_add", spy)
    fast = [P.max_pool2d_backward(grad_out, x, **cfg, indices=indices)]
    fast.append(P.max_pool2d_backward(grad_out, x, **cfg))
    assert len(calls) == 2
    monkeypatch.setenv(compiled.ENV, "0")
    slow = [P.max_pool2d_backward(grad_out, x, **cfg, indices=indices)]
    slow.append(P.max_pool2d_backward(grad_out, x, **cfg))
    assert len(calls) == 2
    _, expected = torch_grad(
        torch, lambda t: torch.nn.functional.max_pool2d(t, **cfg), x, np.array(grad_out)
    )
    for got, want in zip(fast, slow, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, rtol=1e-6, atol=1e-6)
        assert_close(got, expected, **tolerance(np.dtype(dtype)))


def test_the_plan_chooses_the_compiled_max_pooling_only_on_a_cpu(monkeypatch):
    from cnn_course.ops._engine.plan import plan
    from cnn_course.ops._engine.windows import Window

    win = Window((2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (2, 2))

    def algorithm(op, itemsize=8, cupy=False):
        return plan(op, (1, 1, 4, 4), win, 1, itemsize, cupy).algorithm

    assert algorithm("max_pool2d_backward", cupy=True) == "kernel"
    assert algorithm("max_pool2d", cupy=True) == "kernel"
    monkeypatch.setenv(compiled.ENV, "0")
    assert algorithm("max_pool2d_backward") == "windows"
    assert algorithm("max_pool2d") == "windows"
    monkeypatch.delenv(compiled.ENV)
    assert algorithm("max_pool2d_backward", itemsize=2) == "windows"  # float16
    assert algorithm("max_pool2d", itemsize=2) == "windows"
    assert algorithm("avg_pool2d") == "windows"
    if compiled.unavailable():
        pytest.skip(f"compiled scatter unavailable: {compiled.unavailable()}")
    assert algorithm("max_pool2d_backward") == "scatter-numba"
    assert algorithm("max_pool2d") == "direct-numba"


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(kernel_size=2, stride=2),
        dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, ceil_mode=True),
    ],
)
def test_compiled_max_pool_windows_match_torch_at_the_border(torch, monkeypatch, dtype, cfg):
    """The compiled windows (2x2/2 and 3x3/2) against PyTorch with padding, ceil_mode, ties,
    NaN and +inf on odd-sized planes, where the border windows take the checked loop; the
    plan says the compiled path ran."""
    monkeypatch.delenv(compiled.ENV, raising=False)
    if compiled.unavailable():
        pytest.skip(f"compiled max pooling unavailable: {compiled.unavailable()}")
    x = with_nan_and_inf(3, (2, 3, 9, 7)).astype(dtype)
    win = P._window("max_pool2d", x, cfg["kernel_size"], cfg["stride"], cfg.get("padding", 0),
                    1, cfg.get("ceil_mode", False))  # fmt: skip
    assert P._plan("max_pool2d", x, win).algorithm == "direct-numba"
    t_out, t_indices = torch.nn.functional.max_pool2d(torch.tensor(x), **cfg, return_indices=True)
    out, indices = P.max_pool2d(x, **cfg, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())
