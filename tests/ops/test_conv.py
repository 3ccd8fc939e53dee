"""Convolution: hand examples, naive vs fast, the PyTorch oracle, gradient checks, conv as a
matrix, batch chunking, bad input, inputs unchanged, dtype kept."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnn_course._checks import pair
from cnn_course.backend import to_numpy
from cnn_course.gradcheck import check_gradients
from cnn_course.ops import conv as C
from cnn_course.ops._engine import compiled, threads
from cnn_course.ops._engine import conv as conv_engine
from cnn_course.ops._engine import plan as plans
from tests.helpers import FIXTURE_OK, LAYOUTS, assert_close, laid_out

X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]  # the 3x3 input of the hand examples
W2 = [[1.0, 2.0], [3.0, 4.0]]  # the 2x2 kernel of the hand examples


def as4d(xp, rows):
    """A single-sample, single-channel (1, 1, H, W) array."""
    return xp.asarray([[rows]], dtype=xp.float64)


# ----------------------------------------------------------------------------- hand examples
def test_output_size_formulas_by_hand():
    assert C.conv_output_size(32, 5) == 28  # LeNet's first layer
    assert C.conv_output_size(224, 7, stride=2, padding=3) == 112  # ResNet's stem
    assert C.conv_output_size(7, 3, stride=2, padding=1, dilation=2) == 3  # floor(4/2) + 1
    assert C.conv_output_size(6, 3, stride=2) == 2  # floor((6 - 3)/2) + 1: the floor matters
    assert C.conv_transpose_output_size(3, 3, stride=2, padding=1, output_padding=1) == 6
    assert C.conv_transpose_output_size(2, 2, stride=2) == 4
    assert C.conv_transpose_output_size(4, 3, dilation=2) == 8  # 3 + 4 + 1
    with pytest.raises(ValueError, match=r"kernel extent 5 .* larger than the padded input 2"):
        C.conv_output_size(2, 5)
    with pytest.raises(ValueError, match=r"output_padding \(2\) must be smaller"):
        C.conv_transpose_output_size(3, 3, stride=2, output_padding=2)


def test_im2col_col2im_hand_example(xp):
    # 2x2 windows of the 3x3 input: one row per kernel offset, one column per window.
    cols = C.im2col(as4d(xp, X3), 2)
    assert cols.shape == (1, 4, 4)
    expected = [
        [1.0, 2.0, 4.0, 5.0],  # offset (0, 0) of windows (0,0), (0,1), (1,0), (1,1)
        [2.0, 3.0, 5.0, 6.0],  # offset (0, 1)
        [4.0, 5.0, 7.0, 8.0],  # offset (1, 0)
        [5.0, 6.0, 8.0, 9.0],  # offset (1, 1)
    ]
    assert_close(cols[0], expected)
    # Folding columns of ones counts how many windows cover each pixel.
    counts = C.col2im(xp.ones((1, 4, 4)), (3, 3), 2)
    assert_close(counts[0, 0], [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    # Padding 1, stride 2: the four corner windows of the zero-padded 5x5 input.
    cols = C.im2col(as4d(xp, X3), 3, stride=2, padding=1)
    assert_close(cols[0, :, 0], [0, 0, 0, 0, 1, 2, 0, 4, 5])
    assert_close(cols[0, :, 3], [5, 6, 0, 8, 9, 0, 0, 0, 0])


@pytest.mark.parametrize("conv", [C.conv2d, C.conv2d_naive, C.conv2d_vectorized])
def test_conv2d_hand_example(xp, conv):
    x = as4d(xp, X3)
    # Cross-correlation: out[0,0] = 1*1 + 2*2 + 3*4 + 4*5 = 37, plus bias 1.
    out = conv(x, as4d(xp, W2), xp.asarray([1.0]))
    assert_close(out[0, 0], [[38.0, 48.0], [68.0, 78.0]])
    # A 3x3 kernel of ones with padding 1 sums each pixel's neighbourhood.
    ones = xp.ones((1, 1, 3, 3))
    assert_close(conv(x, ones, padding=1)[0, 0], [[12, 21, 16], [27, 45, 33], [24, 39, 28]])
    assert_close(conv(x, ones, padding=1, stride=2)[0, 0], [[12, 16], [24, 28]])
    assert_close(conv(x, ones, padding="same")[0, 0], [[12, 21, 16], [27, 45, 33], [24, 39, 28]])
    # Dilation 2 spreads the 2x2 kernel over the corners: 1*1 + 2*3 + 3*7 + 4*9 = 64.
    assert_close(conv(x, as4d(xp, W2), dilation=2)[0, 0], [[64.0]])
    # "same" with an even kernel pads the extra row and column at the bottom/right.
    assert_close(
        conv(x, as4d(xp, W2), padding="same")[0, 0], [[37, 47, 21], [67, 77, 33], [23, 26, 9]]
    )
    # Two groups: each output channel sees only its own input channel.
    x2 = xp.concatenate([x, 10 * x], axis=1)
    out = conv(x2, xp.ones((2, 1, 3, 3)), groups=2)
    assert_close(out[0, :, 0, 0], [45.0, 450.0])


def test_convolve2d_hand_example(xp):
    # True convolution flips the kernel: [[4, 3], [2, 1]] slides over the input,
    # out[0,0] = 4*1 + 3*2 + 2*4 + 1*5 = 23.
    out = C.convolve2d(as4d(xp, X3), as4d(xp, W2))
    assert_close(out[0, 0], [[23.0, 33.0], [53.0, 63.0]])


def test_conv2d_backward_hand_example(xp):
    grad_x, grad_w, grad_b = C.conv2d_backward(xp.ones((1, 1, 2, 2)), as4d(xp, X3), as4d(xp, W2))
    # Each weight's gradient is the sum of the inputs it touched: 1+2+4+5 = 12 for w[0,0].
    assert_close(grad_w[0, 0], [[12.0, 16.0], [24.0, 28.0]])
    # Each input's gradient is the sum of the weights that touched it.
    assert_close(grad_x[0, 0], [[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]])
    assert_close(grad_b, [4.0])


def test_conv_transpose2d_hand_example(xp):
    x = as4d(xp, [[1.0, 2.0], [3.0, 4.0]])
    ones = xp.ones((1, 1, 2, 2))
    # Stride 2: each input value paints its own 2x2 block (no overlap).
    out = C.conv_transpose2d(x, ones, stride=2)
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert_close(out[0, 0], expected)
    # Stride 1: the blocks overlap and add up (the input gradient of the 2x2 conv above).
    out = C.conv_transpose2d(x, ones, xp.asarray([0.5]))
    assert_close(out[0, 0], [[1.5, 3.5, 2.5], [4.5, 10.5, 6.5], [3.5, 7.5, 4.5]])
    # output_padding adds a last row and column that no input reaches (bias only).
    out = C.conv_transpose2d(x, ones, xp.asarray([0.5]), stride=2, output_padding=1)
    assert out.shape == (1, 1, 5, 5)
    assert_close(out[0, 0, 4], [0.5] * 5)


def test_conv_transpose2d_backward_hand_example(xp):
    x = as4d(xp, [[1.0, 2.0], [3.0, 4.0]])
    grad_x, grad_w, grad_b = C.conv_transpose2d_backward(as4d(xp, X3), x, xp.ones((1, 1, 2, 2)))
    # grad_x: the 2x2 window sums of grad_out (a plain convolution of it).
    assert_close(grad_x[0, 0], [[12.0, 16.0], [24.0, 28.0]])
    # grad_w[i, j] = sum x[h, w] * grad_out[h+i, w+j]: 1*1 + 2*2 + 3*4 + 4*5 = 37 at (0, 0).
    assert_close(grad_w[0, 0], [[37.0, 47.0], [67.0, 77.0]])
    assert_close(grad_b, [45.0])


def test_conv2d_matrix_hand_example(xp):
    a = C.conv2d_matrix(as4d(xp, W2), 3)
    # One row per output pixel, one column per input pixel: the kernel, shifted.
    expected = [
        [1, 2, 0, 3, 4, 0, 0, 0, 0],
        [0, 1, 2, 0, 3, 4, 0, 0, 0],
        [0, 0, 0, 1, 2, 0, 3, 4, 0],
        [0, 0, 0, 0, 1, 2, 0, 3, 4],
    ]
    assert_close(a, expected)
    assert_close(a @ xp.asarray(X3).ravel(), [37.0, 47.0, 67.0, 77.0])


def test_conv2d_workspace_bytes_by_hand():
    # (2, 3, 5, 5) input, 3x3 kernel: 3*3*3 = 27 rows, 3*3 = 9 windows, 2 samples, 4 bytes.
    sizes = C.conv2d_workspace_bytes((2, 3, 5, 5), (4, 3, 3, 3))
    assert sizes["columns"] == 27 * 9 * 2 * 4
    assert 0 < sizes["peak"] <= 2 * sizes["columns"]
    # A 64x3x3 layer on a 64-image 224x224 batch would need 7.4 GB of columns at once.
    sizes = C.conv2d_workspace_bytes((64, 64, 224, 224), (64, 64, 3, 3), padding=1)
    assert sizes["columns"] == 64 * 576 * 224 * 224 * 4
    assert 0 < sizes["peak"] <= C.COLUMN_BUDGET_BYTES
    assert C.conv2d_workspace_bytes((8, 256, 56, 56), (64, 256, 1, 1))["peak"] == 0


# ----------------------------------------------------------------------------- naive vs fast
NAIVE_CASES = [
    # (N, C, H, W, F, kernel, stride, padding, dilation, groups)
    (2, 3, 7, 6, 4, (3, 3), 1, 0, 1, 1),
    (2, 4, 9, 8, 6, (3, 2), (2, 1), (1, 2), (2, 1), 2),
    (1, 6, 6, 7, 6, (3, 3), 2, 1, 1, 6),  # depthwise, strided: the im2col forward
    (2, 4, 7, 6, 4, (3, 2), 1, 1, (2, 1), 4),  # depthwise, stride 1: the direct forward
    (2, 2, 5, 6, 3, (2, 4), 1, "same", (1, 2), 1),
    (3, 3, 5, 5, 2, (1, 1), 1, 0, 1, 1),
    (2, 2, 5, 5, 40, (3, 3), 1, 1, 1, 1),  # more filters than positions: batched GEMM path
]


@pytest.mark.parametrize("case", NAIVE_CASES)
def test_conv2d_matches_naive(xp, rng, case):
    n, c, h, w, f, k, s, p, d, g = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    weight = xp.asarray(rng.standard_normal((f, c // g, *k)))
    bias = xp.asarray(rng.standard_normal(f))
    assert_close(C.conv2d(x, weight, bias, s, p, d, g), C.conv2d_naive(x, weight, bias, s, p, d, g))
    vectorized = C.conv2d_vectorized(x, weight, bias, s, p, d, g)
    assert_close(vectorized, C.conv2d_naive(x, weight, bias, s, p, d, g))


@pytest.mark.parametrize(
    "budget, size, tiles",
    [
        ("COLUMN_BUDGET_BYTES", 1, 5),  # one sample per chunk
        ("COLUMN_BUDGET_BYTES", 2, 3),  # two samples per chunk (the last one is short)
        ("CACHE_TILE_BYTES", 1, 5),  # one chunk, tiles of one sample
        ("CACHE_TILE_BYTES", 2.5, 3),  # one chunk, tiles of two samples
        ("CACHE_TILE_BYTES", 0.4, 15),  # one chunk, tiles of 2 output rows of one sample
    ],
)
@pytest.mark.parametrize("f", [3, 60])  # per-sample GEMMs (L >= F) and one batched GEMM
def test_chunks_and_tiles_give_the_same_result(xp, rng, monkeypatch, budget, size, tiles, f):
    x = xp.asarray(rng.standard_normal((5, 3, 9, 8)))
    weight = xp.asarray(rng.standard_normal((f, 3, 3, 3)))
    args = dict(stride=(2, 1), padding=1)  # output 5x8: L = 40 positions
    grad_out = xp.asarray(rng.standard_normal((5, f, 5, 8)))
    whole = (C.conv2d(x, weight, **args), *C.conv2d_backward(grad_out, x, weight, **args))
    # Shrink a budget so the batch is cut in chunks, and chunks in tiles.
    sample_bytes = 27 * 40 * 8
    monkeypatch.setattr(plans, budget, int(size * sample_bytes))
    how = C.conv2d_plan(x.shape, weight.shape, **args, itemsize=8)["forward"]
    assert how.column_bytes == sample_bytes
    if how.layout == "per-sample":  # the plan's tiles are the GEMMs' tiles
        chunks = how.chunks(5)
        assert sum(len(how.tiles(c.stop - c.start, 5)) for c in chunks) == tiles
    chunked = (C.conv2d(x, weight, **args), *C.conv2d_backward(grad_out, x, weight, **args))
    for a, b in zip(whole, chunked, strict=True):
        assert_close(a, b)
    assert_close(chunked[0], C.conv2d_naive(x, weight, **args))


def test_im2col_col2im_are_adjoint(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 7, 6)))
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    cols = xp.asarray(rng.standard_normal(C.im2col(x, **args).shape))
    lhs = float(xp.sum(C.im2col(x, **args) * cols))
    rhs = float(xp.sum(x * C.col2im(cols, (7, 6), **args)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


# ----------------------------------------------------------------------------- conv as a matrix
@pytest.mark.parametrize(
    "kernel, stride, padding, dilation",
    [((3, 3), 1, 0, 1), ((3, 2), (2, 1), (1, 2), (1, 2)), ((2, 2), 1, "same", 1)],
)
def test_conv2d_matrix_is_the_convolution(xp, rng, kernel, stride, padding, dilation):
    x = xp.asarray(rng.standard_normal((2, 3, 6, 7)))
    weight = xp.asarray(rng.standard_normal((4, 3, *kernel)))
    a = C.conv2d_matrix(weight, (6, 7), stride, padding, dilation)
    out = C.conv2d(x, weight, None, stride, padding, dilation)
    assert a.shape == (out[0].size, x[0].size)
    for n in range(2):
        assert_close(a @ x[n].ravel(), out[n].ravel(), rtol=1e-10, atol=1e-12)
    # Sparse and weight-tied: each row holds at most kh*kw*C of the weights.
    assert int(xp.max(xp.sum(a != 0, axis=1))) <= weight[0].size


@pytest.mark.parametrize(
    "size, kernel, stride, padding, output_padding, dilation",
    [((4, 5), (3, 3), 1, 0, 0, 1), ((3, 4), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1))],
)
def test_conv_transpose2d_is_the_transposed_matrix(
    xp, rng, size, kernel, stride, padding, output_padding, dilation
):
    y = xp.asarray(rng.standard_normal((2, 4, *size)))
    weight = xp.asarray(rng.standard_normal((4, 3, *kernel)))
    out = C.conv_transpose2d(y, weight, None, stride, padding, output_padding, 1, dilation)
    a = C.conv2d_matrix(weight, out.shape[2:], stride, padding, dilation)
    for n in range(2):
        assert_close(a.T @ y[n].ravel(), out[n].ravel(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- PyTorch oracle
def pad_strategy(draw):
    kind = draw(st.sampled_from(["int", "pair", "valid", "same"]))
    if kind == "int":
        return draw(st.integers(0, 2))
    if kind == "pair":
        return (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    return kind


@st.composite
def conv_configs(draw, transposed=False):
    """A random convolution: odd sizes, non-square kernels, asymmetric strides, dilation,
    groups (depthwise included), every padding form, a non-contiguous input layout."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if transposed:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        out_pad = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
        )
    else:
        padding = pad_strategy(draw)
        out_pad = None
        if padding == "same":
            stride = (1, 1)
    pads = (0, 0) if isinstance(padding, str) else pair(padding, "padding", "test")
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    if transposed:  # the output must be at least 1 pixel
        hw = [
            max(1, -(-(2 * p + 1 - e) // s) + 1) + draw(st.integers(0, 3))
            for e, s, p in zip(extent, stride, pads, strict=True)
        ]
    else:
        hw = [
            max(1, e - 2 * p) + draw(st.integers(0, 4)) for e, p in zip(extent, pads, strict=True)
        ]
    return dict(
        n=draw(st.integers(1, 2)),
        c_in=c_in,
        c_out=c_out,
        hw=tuple(hw),
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        output_padding=out_pad,
        layout=draw(LAYOUTS),
        bias=draw(st.booleans()),
    )


def torch_grads(torch, fn, arrays, grad_out_seed):
    """Run ``fn`` on float64 torch copies of ``arrays``; return output and input grads."""
    leaves = [None if a is None else torch.tensor(to_numpy(a), requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "same" with even kernels: a copy
        out = fn(*leaves)
    grad_out = np.random.default_rng(grad_out_seed).standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(grad_out))
    return out.detach().numpy(), grad_out, [None if t is None else t.grad.numpy() for t in leaves]


@pytest.mark.oracle
@settings(FIXTURE_OK, max_examples=100)
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_conv2d_and_backward_match_torch(xp, torch, cfg, seed):
    rng = np.random.default_rng(seed)
    x = laid_out(xp, rng.standard_normal((cfg["n"], cfg["c_in"], *cfg["hw"])), cfg["layout"])
    weight = laid_out(
        xp,
        rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"])),
        "strided" if cfg["layout"] == "fortran" else "contiguous",
    )
    bias = xp.asarray(rng.standard_normal(cfg["c_out"])) if cfg["bias"] else None
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    expected, grad_out, grads = torch_grads(
        torch, lambda a, b, c: torch.nn.functional.conv2d(a, b, c, *args), [x, weight, bias], seed
    )
    assert_close(C.conv2d(x, weight, bias, *args), expected, rtol=1e-10, atol=1e-10)
    mine = C.conv2d_backward(laid_out(xp, grad_out, cfg["layout"]), x, weight, *args)
    for got, want in zip(mine, grads, strict=True):
        if want is not None:
            assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.oracle
@settings(FIXTURE_OK, max_examples=100)
@given(cfg=conv_configs(transposed=True), seed=st.integers(0, 2**16))
def test_conv_transpose2d_and_backward_match_torch(xp, torch, cfg, seed):
    rng = np.random.default_rng(seed)
    x = laid_out(xp, rng.standard_normal((cfg["n"], cfg["c_in"], *cfg["hw"])), cfg["layout"])
    weight = xp.asarray(
        rng.standard_normal((cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"]))
    )
    bias = xp.asarray(rng.standard_normal(cfg["c_out"])) if cfg["bias"] else None
    args = (cfg["stride"], cfg["padding"], cfg["output_padding"], cfg["groups"], cfg["dilation"])
    expected, grad_out, grads = torch_grads(
        torch,
        lambda a, b, c: torch.nn.functional.conv_transpose2d(a, b, c, *args),
        [x, weight, bias],
        seed,
    )
    assert_close(C.conv_transpose2d(x, weight, bias, *args), expected, rtol=1e-10, atol=1e-10)
    mine = C.conv_transpose2d_backward(laid_out(xp, grad_out, cfg["layout"]), x, weight, *args)
    for got, want in zip(mine, grads, strict=True):
        if want is not None:
            assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.oracle
@settings(FIXTURE_OK, max_examples=60)
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_im2col_col2im_match_torch_unfold_fold(xp, torch, cfg, seed):
    if isinstance(cfg["padding"], str):
        cfg["padding"] = 0  # unfold takes numbers only
    rng = np.random.default_rng(seed)
    x = laid_out(xp, rng.standard_normal((cfg["n"], cfg["c_in"], *cfg["hw"])), cfg["layout"])
    args = dict(
        kernel_size=cfg["kernel"],
        stride=cfg["stride"],
        padding=cfg["padding"],
        dilation=cfg["dilation"],
    )
    cols = C.im2col(x, **args)
    assert_close(cols, torch.nn.functional.unfold(torch.tensor(to_numpy(x)), **args).numpy())
    folded = C.col2im(cols, cfg["hw"], **args)
    expected = torch.nn.functional.fold(torch.tensor(to_numpy(cols)), cfg["hw"], **args)
    assert_close(folded, expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.oracle
@pytest.mark.parametrize("case", NAIVE_CASES)
def test_float32_matches_torch(xp, torch, rng, case):
    n, c, h, w, f, k, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((f, c // g, *k)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(weight), None, s, p, d, g
        )
    out = C.conv2d(xp.asarray(x), xp.asarray(weight), None, s, p, d, g)
    assert out.dtype == np.float32
    assert_close(out, expected.numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- gradient checks
GRAD_CASES = [
    # (N, C, H, W, F, kernel, stride, padding, dilation, groups)
    (2, 2, 5, 4, 3, (3, 2), 1, 0, 1, 1),
    (1, 4, 7, 6, 4, (3, 3), (2, 3), (1, 2), (2, 1), 2),
    (2, 3, 5, 5, 3, (2, 2), 1, "same", (1, 2), 3),
    (1, 2, 6, 5, 30, (1, 3), (3, 1), 1, 1, 1),  # F > L: batched GEMM path
    (2, 4, 3, 3, 2, (1, 1), 1, 0, 1, 2),  # pointwise: the columns are the input itself
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_conv2d_backward_gradcheck(xp, rng, case):
    n, c, h, w, f, k, s, p, d, g = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    weight = xp.asarray(rng.standard_normal((f, c // g, *k)))
    bias = xp.asarray(rng.standard_normal(f))
    out = C.conv2d(x, weight, bias, s, p, d, g)
    grad_out = xp.asarray(rng.standard_normal(out.shape))
    analytic = C.conv2d_backward(grad_out, x, weight, s, p, d, g)
    errors = check_gradients(
        lambda a, b, c_: C.conv2d(a, b, c_, s, p, d, g),
        [x, weight, bias],
        analytic,
        grad_out,
        ["x", "weight", "bias"],
    )
    assert max(errors.values()) < 1e-6


@pytest.mark.parametrize(
    "case",
    [
        # (N, C_in, H, W, C_out, kernel, stride, padding, output_padding, dilation, groups)
        (2, 2, 3, 4, 3, (3, 2), 1, 0, 0, 1, 1),
        (1, 4, 3, 3, 2, (3, 3), (2, 3), (1, 0), (1, 2), (1, 1), 2),
        (1, 2, 3, 2, 2, (2, 2), 1, 1, 1, 2, 1),
    ],
)
def test_conv_transpose2d_backward_gradcheck(xp, rng, case):
    n, c, h, w, f, k, s, p, op, d, g = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    weight = xp.asarray(rng.standard_normal((c, f // g, *k)))
    bias = xp.asarray(rng.standard_normal(f))
    out = C.conv_transpose2d(x, weight, bias, s, p, op, g, d)
    grad_out = xp.asarray(rng.standard_normal(out.shape))
    analytic = C.conv_transpose2d_backward(grad_out, x, weight, s, p, op, g, d)
    errors = check_gradients(
        lambda a, b, c_: C.conv_transpose2d(a, b, c_, s, p, op, g, d),
        [x, weight, bias],
        analytic,
        grad_out,
        ["x", "weight", "bias"],
    )
    assert max(errors.values()) < 1e-6


# ----------------------------------------------------------------------------- depthwise
# (N, C, H, W, kernel, stride, padding, dilation): groups == C_in == C_out
DEPTHWISE_CASES = [
    (2, 3, 7, 6, (3, 3), 1, 1, 1),
    (1, 4, 9, 8, (3, 2), (2, 1), (1, 0), (2, 1)),
    (2, 2, 6, 7, (2, 3), 1, "same", (1, 2)),
    (1, 3, 8, 9, (3, 3), (2, 3), 2, 1),
    (3, 2, 5, 5, (1, 1), 1, 0, 1),
]


def block_diagonal(xp, weight):
    """The dense (C, C, kh, kw) weight of a depthwise one: channel c's kernel at [c, c]."""
    c = weight.shape[0]
    dense = xp.zeros((c, c, *weight.shape[2:]), dtype=weight.dtype)
    dense[xp.arange(c), xp.arange(c)] = weight[:, 0]
    return dense


@pytest.fixture(params=["direct", "direct-numba"])
def depthwise_path(request, monkeypatch):
    """The CPU path of depthwise layers under test: NumPy's ("direct", always tested) or the
    compiled one ("direct-numba", where numba is installed; skipped with the reason otherwise).
    """
    if request.param == "direct":
        monkeypatch.setenv(compiled.ENV, "0")
    else:
        monkeypatch.delenv(compiled.ENV, raising=False)
        if compiled.unavailable():
            pytest.skip(f"compiled depthwise path unavailable: {compiled.unavailable()}")
    return request.param


DIRECT_KERNELS = {
    "direct": ("_depthwise_forward", "_depthwise_input_grad", "_depthwise_weight_grad"),
    "direct-numba": ("forward", "input_grad", "weight_grad"),
}


def spy_on_direct_path(monkeypatch, path="direct"):
    """Count the calls of the three depthwise kernels of ``path`` (to show that path ran)."""
    calls = []
    module = conv_engine if path == "direct" else compiled
    for name in DIRECT_KERNELS[path]:
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_direct_path_matches_the_im2col_path_and_the_definition(
    xp, rng, monkeypatch, case, depthwise_path
):
    n, c, h, w, k, s, p, d = case
    x = laid_out(xp, rng.standard_normal((n, c, h, w)), "strided")
    weight = xp.asarray(rng.standard_normal((c, 1, *k)))
    calls = spy_on_direct_path(monkeypatch, depthwise_path)
    out = C.conv2d(x, weight, None, s, p, d, c)
    grad_out = xp.asarray(rng.standard_normal(out.shape))
    grad_x, grad_w, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, c)
    forward, input_grad, weight_grad = DIRECT_KERNELS[depthwise_path]
    expected = {weight_grad, input_grad}
    if pair(s, "", "") == (1, 1) or depthwise_path == "direct-numba":
        expected.add(forward)  # NumPy's taps take a strided forward to im2col; numba does not
    # on a GPU depthwise layers take the im2col kernels, never the direct path
    assert set(calls) == (set() if xp is not np else expected)
    # the plan says so, and the engine followed it
    backend = "numpy" if xp is np else "cupy"
    plans_ = C.conv2d_plan(x.shape, weight.shape, s, p, d, c, x.itemsize, backend)
    keys = ("forward", "input_grad", "weight_grad")
    names = dict(zip(keys, DIRECT_KERNELS[depthwise_path], strict=True))
    direct = {names[key] for key, how in plans_.items() if how.algorithm == depthwise_path}
    assert direct == set(calls)
    # groups=1 with a block-diagonal weight is the same convolution, by im2col + GEMM
    dense = block_diagonal(xp, weight)
    assert_close(out, C.conv2d(x, dense, None, s, p, d))
    assert_close(out, C.conv2d_naive(x, weight, None, s, p, d, c))
    dense_x, dense_w, _ = C.conv2d_backward(grad_out, x, dense, s, p, d)
    assert_close(grad_x, dense_x)
    assert_close(grad_w[:, 0], dense_w[xp.arange(c), xp.arange(c)])


def test_depthwise_planes_in_small_steps_give_the_same_result(xp, rng, monkeypatch):
    monkeypatch.setenv(compiled.ENV, "0")  # the NumPy path's steps
    x = xp.asarray(rng.standard_normal((3, 5, 7, 6)))
    weight = xp.asarray(rng.standard_normal((5, 1, 3, 2)))
    grad_out = xp.asarray(rng.standard_normal((3, 5, 7, 7)))
    whole = (
        C.conv2d(x, weight, None, 1, 1, 1, 5),
        *C.conv2d_backward(grad_out, x, weight, 1, 1, 1, 5),
    )
    monkeypatch.setattr(plans, "DEPTHWISE_STEP_BYTES", 2 * 55 * 8)  # two planes per step
    steps = (
        C.conv2d(x, weight, None, 1, 1, 1, 5),
        *C.conv2d_backward(grad_out, x, weight, 1, 1, 1, 5),
    )
    for a, b in zip(whole, steps, strict=True):
        assert_close(a, b)


@st.composite
def depthwise_configs(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    hw = [max(1, e - 2 * p) + draw(st.integers(0, 5)) for e, p in zip(extent, padding, strict=True)]
    return dict(
        n=draw(st.integers(1, 2)),
        c=draw(st.integers(2, 4)),
        hw=tuple(hw),
        kernel=kernel,
        args=(stride, padding, dilation),
        layout=draw(LAYOUTS),
    )


@pytest.mark.oracle
@settings(FIXTURE_OK, max_examples=60)
@given(cfg=depthwise_configs(), seed=st.integers(0, 2**16))
def test_depthwise_conv2d_and_transpose_match_torch(xp, torch, depthwise_path, cfg, seed):
    rng = np.random.default_rng(seed)
    c = cfg["c"]
    x = laid_out(xp, rng.standard_normal((cfg["n"], c, *cfg["hw"])), cfg["layout"])
    weight = xp.asarray(rng.standard_normal((c, 1, *cfg["kernel"])))
    args = (*cfg["args"], c)
    expected, grad_out, grads = torch_grads(
        torch, lambda a, b: torch.nn.functional.conv2d(a, b, None, *args), [x, weight], seed
    )
    assert_close(C.conv2d(x, weight, None, *args), expected, rtol=1e-10, atol=1e-10)
    mine = C.conv2d_backward(laid_out(xp, grad_out, cfg["layout"]), x, weight, *args)
    for got, want in zip(mine[:2], grads, strict=True):
        assert_close(got, want, rtol=1e-10, atol=1e-10)
    # The transposed convolution of a depthwise geometry runs the same direct kernels; it
    # takes the convolution's output shape back to (about) the input's.
    stride, padding, dilation = cfg["args"]
    y = xp.asarray(rng.standard_normal(expected.shape))
    sizes = [
        (o - 1) * s - 2 * p + d * (k - 1) + 1
        for o, s, p, d, k in zip(y.shape[2:], stride, padding, dilation, cfg["kernel"], strict=True)
    ]
    assume(min(sizes) >= 1)
    targs = (stride, padding, 0, c, dilation)
    expected, grad_out, grads = torch_grads(
        torch,
        lambda a, b: torch.nn.functional.conv_transpose2d(a, b, None, *targs),
        [y, weight],
        seed,
    )
    assert_close(C.conv_transpose2d(y, weight, None, *targs), expected, rtol=1e-10, atol=1e-10)
    mine = C.conv_transpose2d_backward(xp.asarray(grad_out), y, weight, *targs)
    for got, want in zip(mine[:2], grads, strict=True):
        assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_backward_gradcheck(xp, rng, case, depthwise_path):
    n, c, h, w, k, s, p, d = case
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    weight = xp.asarray(rng.standard_normal((c, 1, *k)))
    bias = xp.asarray(rng.standard_normal(c))
    grad_out = xp.asarray(rng.standard_normal(C.conv2d(x, weight, bias, s, p, d, c).shape))
    errors = check_gradients(
        lambda a, b, c_: C.conv2d(a, b, c_, s, p, d, c),
        [x, weight, bias],
        C.conv2d_backward(grad_out, x, weight, s, p, d, c),
        grad_out,
        ["x", "weight", "bias"],
    )
    assert max(errors.values()) < 1e-6


# ----------------------------------------------------------------------------- bad input
def bad_calls(xp):
    x = xp.zeros((2, 3, 5, 5))
    w = xp.zeros((4, 3, 3, 3))
    return [
        (lambda: C.conv2d(x[0], w), ValueError, r"conv2d: x must have 4 dimensions .* \(3, 5, 5\)"),
        (lambda: C.conv2d(x, w[0]), ValueError, r"conv2d: weight must have 4 dimensions"),
        (
            lambda: C.conv2d(x, xp.zeros((2, 4, 3, 3))),
            ValueError,
            r"conv2d: input has 3 channels but weight expects 4 \(weight shape \(2, 4, 3, 3\)\)",
        ),
        (
            lambda: C.conv2d(xp.zeros((2, 4, 5, 5)), xp.zeros((3, 2, 3, 3)), groups=2),
            ValueError,
            r"conv2d: groups=2 must divide .* \(3\)",
        ),
        (lambda: C.conv2d(x, w, groups=0), ValueError, r"conv2d: groups must be a positive int"),
        (
            lambda: C.conv2d(x, xp.zeros((4, 3, 6, 3))),
            ValueError,
            r"conv2d: kernel \(6, 3\) .* larger than the padded input \(5, 5\)",
        ),
        (lambda: C.conv2d(x, w, stride=0), ValueError, r"conv2d: stride must be positive, got 0"),
        (lambda: C.conv2d(x, w, dilation=(1, 0)), ValueError, r"conv2d: dilation must be positive"),
        (lambda: C.conv2d(x, w, padding=-1), ValueError, r"conv2d: padding must be non-negative"),
        (lambda: C.conv2d(x, w, padding="full"), ValueError, r"conv2d: padding must be .*'full'"),
        (lambda: C.conv2d(x, w, stride=2, padding="same"), ValueError, r"'same' needs stride 1"),
        (lambda: C.conv2d(x, w, stride=1.5), TypeError, r"conv2d: stride must be an int"),
        (
            lambda: C.conv2d(xp.zeros((2, 3, 5, 5), dtype=xp.int64), w),
            TypeError,
            r"conv2d: x must have a floating-point dtype, got int64",
        ),
        (
            lambda: C.conv2d(x.astype(xp.float32), w),
            TypeError,
            r"conv2d: x is float32 but weight is float64",
        ),
        (lambda: C.conv2d(x, w, xp.zeros(3)), ValueError, r"conv2d: bias must have shape \(4,\)"),
        (lambda: C.conv2d([[1.0]], w), TypeError, r"conv2d: x must be a numpy or cupy ndarray"),
        (
            lambda: C.conv2d_backward(xp.zeros((2, 4, 4, 4)), x, w),
            ValueError,
            r"conv2d_backward: grad_out must have the forward output's shape \(2, 4, 3, 3\)",
        ),
        (
            lambda: C.conv_transpose2d(x, xp.zeros((4, 2, 3, 3))),
            ValueError,
            r"conv_transpose2d: input has 3 channels but weight expects 4",
        ),
        (
            lambda: C.conv_transpose2d(x, xp.zeros((3, 2, 3, 3)), stride=2, output_padding=2),
            ValueError,
            r"conv_transpose2d: output_padding \(2, 2\) must be smaller than either stride",
        ),
        (
            lambda: C.conv_transpose2d(x, xp.zeros((3, 2, 3, 3)), xp.zeros(3)),
            ValueError,
            r"conv_transpose2d: bias must have shape \(2,\)",
        ),
        (
            lambda: C.conv_transpose2d(x, xp.zeros((3, 2, 3, 3)), padding=5),
            ValueError,
            r"conv_transpose2d: input shape \(2, 3, 5, 5\) is too small",
        ),
        (
            lambda: C.conv_transpose2d_backward(xp.zeros((2, 2, 5, 5)), x, xp.zeros((3, 2, 3, 3))),
            ValueError,
            r"conv_transpose2d_backward: grad_out must have .* \(2, 2, 7, 7\)",
        ),
        (
            lambda: C.im2col(x, 6),
            ValueError,
            r"im2col: kernel \(6, 6\) .* larger than the padded input",
        ),
        (lambda: C.im2col(x, 0), ValueError, r"im2col: kernel_size must be positive"),
        (
            lambda: C.col2im(xp.zeros((2, 27, 8)), (5, 5), 3),
            ValueError,
            r"col2im: cols shape \(2, 27, 8\) does not match .* 9 windows",
        ),
        (
            lambda: C.conv2d_matrix(w, 2),
            ValueError,
            r"conv2d_matrix: kernel \(3, 3\) .* larger than the padded input \(2, 2\)",
        ),
        (lambda: C.conv_output_size(5, 3, stride=0), ValueError, r"conv_output_size: need"),
    ]


def test_bad_input_is_rejected_with_a_message(xp):
    for call, error, message in bad_calls(xp):
        with pytest.raises(error, match=message):
            call()


# ----------------------------------------------------------------------------- inputs, dtypes
def all_calls(xp, dtype):
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((2, 4, 6, 5)), dtype=dtype)
    w = xp.asarray(rng.standard_normal((6, 2, 3, 2)), dtype=dtype)
    wt = xp.asarray(rng.standard_normal((4, 3, 3, 2)), dtype=dtype)
    b = xp.asarray(rng.standard_normal(6), dtype=dtype)
    g = xp.asarray(rng.standard_normal((2, 6, 3, 5)), dtype=dtype)
    gt = xp.asarray(rng.standard_normal((2, 6, 12, 11)), dtype=dtype)
    cols = xp.asarray(rng.standard_normal((2, 24, 16)), dtype=dtype)
    args = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    targs = dict(stride=2, padding=(1, 0), output_padding=1, groups=2, dilation=1)
    # depthwise (groups == C_in == C_out, stride 1): the direct path, forward and backward
    wd = xp.asarray(rng.standard_normal((4, 1, 3, 2)), dtype=dtype)
    gd = xp.asarray(rng.standard_normal((2, 4, 6, 5)), dtype=dtype)
    dargs = dict(stride=1, padding=1, dilation=(1, 2), groups=4)
    return [
        (C.convolve2d, (x, wd, b[:4]), dargs),
        (C.conv2d_backward, (gd, x, wd), dargs),
        (C.im2col, (x, (3, 2)), dict(stride=1, padding=0)),
        (C.col2im, (cols, (6, 5), (3, 2)), {}),
        (C.conv2d, (x, w, b), args),
        (C.conv2d_naive, (x, w, b), args),
        (C.convolve2d, (x, w, b), args),
        (C.conv2d_backward, (g, x, w), args),
        (C.conv2d_matrix, (w[:, :1], (6, 5)), dict(stride=2)),
        (C.conv_transpose2d, (x, wt, b), targs),
        (C.conv_transpose2d_backward, (gt, x, wt), targs),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_unchanged_and_dtype_kept(xp, dtype):
    for fn, arrays, kwargs in all_calls(xp, dtype):
        before = [a.copy() for a in arrays if hasattr(a, "copy")]
        results = fn(*arrays, **kwargs)
        for a, b in zip([a for a in arrays if hasattr(a, "copy")], before, strict=True):
            assert (a == b).all(), fn.__name__
        for r in results if isinstance(results, tuple) else (results,):
            assert r.dtype == dtype, fn.__name__
        # writing to a result never reaches an input (no result is a view of an input)
        for r in results if isinstance(results, tuple) else (results,):
            r[...] = 7
        for a, b in zip([a for a in arrays if hasattr(a, "copy")], before, strict=True):
            assert (a == b).all(), fn.__name__


def test_conv_transpose_shapes_in_all_calls_are_consistent(xp):
    # The gradients used above must have the forward output's shapes.
    for fn, arrays, kwargs in all_calls(xp, "float64"):
        if fn is C.conv_transpose2d:
            assert fn(*arrays, **kwargs).shape == (2, 6, 12, 11)
        if fn is C.conv2d:
            assert fn(*arrays, **kwargs).shape == (2, 6, 3, 5)


# ----------------------------------------------------------------------------- threads
THREAD_CASES = [
    # (N, C, H, W, F, kernel, stride, padding, dilation, groups): one per plan
    (5, 3, 9, 8, 4, (3, 3), 1, 1, 1, 1),  # im2col, per-sample tiles
    (5, 6, 4, 5, 40, (3, 2), (2, 1), 1, 1, 2),  # im2col, batch-last
    (5, 8, 6, 7, 4, (1, 1), 1, 0, 1, 1),  # gemm: a pointwise layer copies nothing
    (5, 6, 9, 8, 6, (3, 3), 1, 1, (2, 1), 6),  # depthwise, direct
    (5, 6, 9, 8, 6, (3, 3), 2, 1, 1, 6),  # depthwise, strided: im2col forward
]


@pytest.mark.parametrize("case", THREAD_CASES)
def test_work_split_over_threads_gives_the_same_result(rng, monkeypatch, case, depthwise_path):
    """Every piece of work, however small, split over 3 threads: the same arrays as on one
    thread (the parts write disjoint outputs), and the definition's."""
    n, c, h, w, f, k, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c // g, *k))
    out = C.conv2d_naive(x, weight, None, s, p, d, g)
    grad_out = rng.standard_normal(out.shape)

    def run():
        return (
            C.conv2d(x, weight, None, s, p, d, g),
            *C.conv2d_backward(grad_out, x, weight, s, p, d, g),
            C.conv_transpose2d(grad_out, weight, None, s, p, 0, g, d),
            C.im2col(x, k, s, p, d),
        )

    monkeypatch.setattr(plans, "CACHE_TILE_BYTES", 3000)  # several tiles and chunks
    with threads.limit(1):
        serial = run()
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(threads, "MIN_PARALLEL_MACS", 0)
    with threads.limit(3):
        how = C.conv2d_plan(x.shape, weight.shape, s, p, d, g, 8)
        assert {plan.threads for plan in how.values()} == {3}
        # per-sample GEMMs with a tile for every thread: whole tiles side by side
        if how["forward"].layout == "per-sample":
            assert how["forward"].split == "tiles"
        split = run()
    for a, b in zip(serial, split, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_close(split[0], out)


def test_gemm_regions_run_blas_on_one_thread_and_give_its_threads_back(monkeypatch):
    """Whole tiles side by side run each GEMM on one BLAS thread (BLAS's own threads would
    spin beside the engine's); the count comes back when the last region ends, also after
    an error and with two regions overlapping in two threads."""
    lib = threads._blas_controller()
    if not lib:
        pytest.skip("threadpoolctl does not know this BLAS: the engine cannot set its threads")
    before = lib.get_num_threads()
    lib.set_num_threads(2)
    try:
        seen = []

        def tile(s: slice) -> None:
            seen.append((lib.get_num_threads(), threads.num_threads()))

        with threads.limit(2):
            threads.parallel(tile, 2, gemms=True)
            assert threads.num_threads() == 2  # inside a region, BLAS's count to come back
        assert seen == [(1, 1), (1, 1)]
        assert lib.get_num_threads() == 2

        def fail(s: slice) -> None:
            raise RuntimeError("a tile failed")

        with threads.limit(2), pytest.raises(RuntimeError, match="a tile failed"):
            threads.parallel(fail, 2, gemms=True)
        assert lib.get_num_threads() == 2

        def region() -> None:
            with threads.limit(2):
                threads.parallel(tile, 2, gemms=True)

        seen.clear()
        with threads._blas_single_threaded():  # a region open in this thread...
            other = threading.Thread(target=region)
            other.start()  # ...while another opens and closes one
            other.join(timeout=10)
            assert seen == [(1, 1), (1, 1)]
            assert lib.get_num_threads() == 1  # the first region is still open
        assert lib.get_num_threads() == 2
    finally:
        lib.set_num_threads(before)


def test_small_gemms_run_on_one_blas_thread(rng, monkeypatch):
    """GEMMs below MIN_PARALLEL_MACS (a linear layer's, a small convolution's one after
    another) run on one BLAS thread, so that BLAS's threads do not spin on a core for 0.1 s
    after each; larger ones, and the engine's own thread count, are left alone."""
    import contextlib

    from cnn_course.ops import linear as L

    lib = threads._blas_controller()
    if not lib:
        pytest.skip("threadpoolctl does not know this BLAS: the engine cannot set its threads")
    real = threads._blas_single_threaded
    seen = []

    @contextlib.contextmanager
    def spy():
        with real():
            seen.append((lib.get_num_threads(), threads.num_threads()))
            yield

    monkeypatch.setattr(threads, "_blas_single_threaded", spy)
    monkeypatch.setattr(threads, "_default", 2)  # whatever the environment (test workers: 1)
    before = lib.get_num_threads()
    lib.set_num_threads(2)
    try:
        x, weight = rng.standard_normal((64, 400)), rng.standard_normal((120, 400))
        y = L.linear(x, weight)
        L.linear_backward(np.ones_like(y), x, weight)
        assert seen == [(1, 2), (1, 2)] and lib.get_num_threads() == 2
        seen.clear()
        monkeypatch.setattr(threads, "MIN_PARALLEL_MACS", 64 * 400 * 120)
        L.linear(x, weight)  # large enough: BLAS's threads
        assert seen == []
        monkeypatch.setattr(threads, "MIN_PARALLEL_MACS", 64 * 2**20)
        xs = rng.standard_normal((2, 3, 8, 8))  # a small im2col layer
        C.conv2d(xs, rng.standard_normal((4, 3, 3, 3)), None, 1, 1)
        assert seen == [(1, 2)] and lib.get_num_threads() == 2
        with threads.blas_for(threads.MIN_PARALLEL_MACS), threads.blas_for(1, gpu=True):
            assert lib.get_num_threads() == 2  # a large GEMM; a GPU's (CPU BLAS unused)
        assert seen == [(1, 2)]
    finally:
        lib.set_num_threads(before)


def test_thread_count_follows_the_environment(monkeypatch):
    for name, value, expected in [
        ("CNN_COURSE_NUM_THREADS", "3", 3),
        ("OMP_NUM_THREADS", "1", 1),
        ("OPENBLAS_NUM_THREADS", "2", 2),
    ]:
        for other in ("CNN_COURSE_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        assert threads._from_environment() == expected
    assert threads.split(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert threads.split(2, 4) == [slice(0, 1), slice(1, 2)]


def test_the_plan_decides_each_path_by_hand(monkeypatch):
    """The plan, from shapes alone (no GPU needed to read a GPU plan)."""

    def plans(x_shape, w_shape, stride=1, padding=0, groups=1, backend="numpy"):
        how = C.conv2d_plan(x_shape, w_shape, stride, padding, 1, groups, 4, backend)
        return {k: (p.algorithm, p.layout) for k, p in how.items()}

    monkeypatch.setenv(compiled.ENV, "0")  # the NumPy-only plans (the compiled one: below)

    # 56x56 = 3136 positions >= 64 filters: per-sample GEMMs writing NCHW
    assert plans((8, 64, 56, 56), (64, 64, 3, 3), padding=1)["forward"] == ("im2col", "per-sample")
    # 7x7 = 49 positions < 512 filters: one GEMM over the batch widens the narrow side
    assert plans((8, 512, 7, 7), (512, 512, 3, 3), padding=1)["forward"][1] == "batch-last"
    # LeNet's C3: 100 positions < 150 rows and a small layer, so its weight gradient sums
    # over the whole batch in one GEMM; C1 (784 positions > 25 rows) keeps per-sample GEMMs
    c3 = plans((64, 6, 14, 14), (16, 6, 5, 5))
    assert (c3["forward"], c3["weight_grad"]) == (
        ("im2col", "per-sample"),
        ("im2col", "batch-last"),
    )
    assert plans((64, 1, 32, 32), (6, 1, 5, 5))["weight_grad"] == ("im2col", "per-sample")
    # a 1x1 layer is a pure GEMM (no copy); with stride 2 it needs its columns
    assert set(plans((8, 256, 56, 56), (64, 256, 1, 1)).values()) == {("gemm", "per-sample")}
    assert plans((8, 256, 56, 56), (64, 256, 1, 1), stride=2)["forward"][0] == "im2col"
    # depthwise: direct on a CPU (forward only at stride 1), one kernel on a GPU
    dw = plans((8, 128, 56, 56), (128, 1, 3, 3), padding=1, groups=128)
    assert {k: a for k, (a, _) in dw.items()} == dict.fromkeys(dw, "direct")
    dw2 = plans((8, 128, 56, 56), (128, 1, 3, 3), stride=2, padding=1, groups=128)
    assert [dw2[k][0] for k in ("forward", "input_grad", "weight_grad")] == [
        "im2col",
        "direct",
        "direct",
    ]
    gpu = plans((8, 128, 56, 56), (128, 1, 3, 3), padding=1, groups=128, backend="cupy")
    assert [gpu[k][0] for k in ("forward", "input_grad", "weight_grad")] == [
        "kernel",
        "kernel",
        "im2col",
    ]
    # a GPU always takes one GEMM per chunk, on one host thread
    gpu = C.conv2d_plan((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, backend="cupy")["forward"]
    assert (gpu.layout, gpu.threads) == ("batch-last", 1)
    # chunks keep the columns within the budget: 64 samples of 64*9*224*224*4 bytes
    how = C.conv2d_plan((64, 64, 224, 224), (64, 64, 3, 3), 1, 1)["forward"]
    assert (
        how.chunk * how.column_bytes <= C.COLUMN_BUDGET_BYTES < (how.chunk + 1) * how.column_bytes
    )


# ----------------------------------------------------------------------------- compiled path
def needs_numba(monkeypatch):
    monkeypatch.delenv(compiled.ENV, raising=False)
    if compiled.unavailable():
        pytest.skip(f"compiled depthwise path unavailable: {compiled.unavailable()}")


def test_the_plan_chooses_the_compiled_path_only_where_it_applies(monkeypatch):
    needs_numba(monkeypatch)
    dw = ((8, 128, 56, 56), (128, 1, 3, 3))

    def algorithms(x_shape, w_shape, stride=1, groups=128, itemsize=4, backend="numpy"):
        how = C.conv2d_plan(x_shape, w_shape, stride, 1, 1, groups, itemsize, backend)
        return {how[k].algorithm for k in ("forward", "input_grad", "weight_grad")}

    # every depthwise pass on a CPU in float32/float64, strided forward included
    for itemsize in (4, 8):
        assert algorithms(*dw, itemsize=itemsize) == {"direct-numba"}
    assert algorithms(*dw, stride=2) == {"direct-numba"}
    assert "direct-numba" not in algorithms(*dw, itemsize=2)  # float16: NumPy's path
    assert "direct-numba" not in algorithms(*dw, backend="cupy")  # CuPy arrays never
    # dense: the per-sample input gradient folds its columns with the compiled col2im (the
    # forward is the register-blocked kernels' where the CPU has AVX-512, below)
    dense = C.conv2d_plan((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, itemsize=8)
    assert {k: p.algorithm for k, p in dense.items()} == {
        "forward": "im2col",
        "input_grad": "im2col-numba",
        "weight_grad": "im2col",
    }
    late = C.conv2d_plan((8, 512, 7, 7), (512, 512, 3, 3), 1, 1)  # batch-last: NumPy's fold
    assert {p.algorithm for p in late.values()} == {"im2col"}
    half = C.conv2d_plan((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, itemsize=2)
    assert half["input_grad"].algorithm == "im2col"
    monkeypatch.setenv(compiled.ENV, "0")
    assert algorithms(*dw) == {"direct"}
    assert C.conv2d_plan((8, 64, 56, 56), (64, 64, 3, 3), 1, 1)["input_grad"].algorithm == "im2col"


# ----------------------------------------------------------------- register-blocked forward
def blocked_cpu(monkeypatch, has_avx512=True):
    """The compiled path on, the CPU taken to have AVX-512 (or not): the plan's rules, and
    the kernels' results, do not depend on this machine's CPU (only their speed does)."""
    needs_numba(monkeypatch)
    monkeypatch.setattr(compiled, "_cpu_has", lambda feature: has_avx512)


def test_the_plan_chooses_the_blocked_forward_only_where_it_applies(monkeypatch):
    blocked_cpu(monkeypatch)

    def forward(x_shape, w_shape, stride=1, padding=1, groups=1, itemsize=4, backend="numpy"):
        how = C.conv2d_plan(x_shape, w_shape, stride, padding, 1, groups, itemsize, backend)
        return how["forward"].algorithm

    resnet = ((8, 64, 56, 56), (64, 64, 3, 3))  # 576 rows
    assert forward(*resnet) == "blocked-numba"
    assert forward((8, 64, 56, 56), (128, 64, 3, 3), stride=2) == "blocked-numba"
    assert forward((8, 3, 224, 224), (64, 3, 7, 7), 2, 3) == "blocked-numba"  # 147 rows
    assert forward((64, 6, 14, 14), (16, 6, 5, 5), padding=0) == "blocked-numba"  # C3: 150
    assert forward((8, 256, 14, 14), (256, 256, 3, 3)) == "blocked-numba"  # 2304 rows
    # fewer than BLOCKED_MIN_ROWS rows (LeNet's C1: 25): blocks along the rows, at a stride
    # of 1 along them and for at most ROW_MAX_FILTERS filters, 16 positions wide
    c1 = C.conv2d_plan((64, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1, 1, 4)["forward"]
    assert (c1.algorithm, c1.block) == ("blocked-numba", "g8r16")
    assert C.conv2d_plan(*resnet, 1, 1, 1, 1, 4)["forward"].block == "g32p8"
    assert forward((8, 3, 32, 32), (8, 3, 3, 3), stride=(2, 1)) == "blocked-numba"
    assert forward((8, 3, 32, 32), (8, 3, 3, 3), stride=(1, 2)) == "im2col"
    assert plans.ROW_MAX_FILTERS == 8
    assert forward((8, 3, 32, 32), (9, 3, 3, 3)) == "im2col"
    assert forward((8, 3, 15, 15), (8, 3, 3, 3)) == "im2col"  # 15 < 16 positions
    # more than BLOCKED_MAX_ROWS
    assert forward((8, 512, 14, 14), (512, 512, 3, 3)) == "im2col"  # 4608 rows
    # output rows narrower than a block (7 positions; 32 filters take blocks of 8)
    assert forward((8, 256, 7, 7), (256, 256, 3, 3)) == "im2col"
    assert forward((8, 8, 16, 16), (8, 8, 3, 3), padding=0) == "blocked-numba"  # 14 positions
    assert forward((8, 8, 15, 15), (8, 8, 3, 3), padding=0) == "im2col"  # 13 < 14
    assert forward((8, 8, 32, 32), (8, 8, 3, 3), 2) == "blocked-numba"  # stride 2: 16 >= 14
    # not float32, a GPU, groups, a pointwise layer
    assert forward(*resnet, itemsize=8) == "im2col"
    assert forward(*resnet, backend="cupy") == "im2col"
    assert forward((8, 64, 56, 56), (64, 32, 3, 3), groups=2) == "im2col"
    assert forward((8, 64, 56, 56), (64, 64, 1, 1), padding=0) == "gemm"
    # a small layer stays on one thread; from BLOCKED_MIN_PARALLEL_MACS it takes the engine's
    # (LeNet's C3: 240,000 per sample)
    with threads.limit(2):
        small = C.conv2d_plan((1, 8, 16, 16), (8, 8, 3, 3), 1, 1)["forward"]
        large = C.conv2d_plan(*resnet, 1, 1)["forward"]
        c3 = {n: C.conv2d_plan((n, 6, 14, 14), (16, 6, 5, 5), 1, 0)["forward"] for n in (17, 18)}
        available = threads.num_threads()
    assert small.algorithm == large.algorithm == c3[17].algorithm == "blocked-numba"
    assert 17 * 240_000 < plans.BLOCKED_MIN_PARALLEL_MACS <= 18 * 240_000
    assert small.threads == c3[17].threads == 1
    assert large.threads == c3[18].threads == available == 2
    # no columns: a padded sample per thread, and the weights in blocks of 32 with offsets
    with threads.limit(1):
        peak = C.conv2d_workspace_bytes(*resnet, 1, 1)["peak"]
    assert peak == 64 * 58 * 58 * 4 + 64 * 576 * 4 + 576 * 8
    blocked_cpu(monkeypatch, has_avx512=False)
    assert forward(*resnet) == "im2col"
    monkeypatch.setattr(compiled, "_cpu_has", lambda feature: True)
    monkeypatch.setenv(compiled.ENV, "0")
    assert forward(*resnet) == "im2col"


# (N, C, H, W), (F, kh, kw), stride, padding, dilation: every block width (F of 5, 12, 16,
# 40: a last block filled with zeros), strides 1 and 2, asymmetric and "same" padding,
# dilation, rows whose last block overlaps the one before
BLOCKED_CASES = [
    # blocks along the rows (fewer than 64 rows): LeNet's C1 padded, row strides, dilation,
    # 1 to 8 filters, rows whose last block overlaps
    ((2, 1, 28, 28), (6, 5, 5), 1, 2, 1),
    ((2, 3, 11, 19), (8, 3, 3), (2, 1), 1, 1),
    ((3, 2, 9, 21), (3, 3, 3), 1, (1, 2), 2),
    ((1, 1, 8, 16), (1, 3, 3), 1, "same", 1),
    ((2, 8, 12, 16), (5, 3, 3), 1, 1, 1),
    ((2, 8, 12, 30), (7, 3, 3), 2, 1, 1),
    ((3, 4, 11, 24), (12, 4, 4), 2, (1, 2), 1),
    ((2, 6, 14, 14), (16, 5, 5), 1, 0, 1),
    ((2, 8, 13, 20), (40, 3, 3), 1, 2, 2),
    ((1, 4, 10, 21), (33, 4, 4), 1, "same", 1),
    ((2, 3, 30, 31), (64, 7, 7), 2, 3, 1),
]


@pytest.mark.parametrize(("grad", "block"), [("weight_grad", "wg16t10"), ("input_grad", "ig8r16")])
def test_the_plan_chooses_the_blocked_gradients_only_where_they_apply(monkeypatch, grad, block):
    blocked_cpu(monkeypatch)

    def plan(x_shape, w_shape, stride=1, padding=1, groups=1, itemsize=4, cupy=False):
        backend = "cupy" if cupy else "numpy"
        return C.conv2d_plan(x_shape, w_shape, stride, padding, 1, groups, itemsize, backend)[grad]

    resnet = ((8, 64, 56, 56), (64, 64, 3, 3))  # 576 rows
    strided = (  # the weight gradient at any stride, the input gradient at stride 1 only
        ((8, 64, 56, 56), (128, 64, 3, 3), 2),  # 784 positions
        ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3),  # 147 rows
        ((8, 64, 56, 56), (64, 64, 3, 3), (1, 2)),
    )
    for case in (
        resnet,
        ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0),  # C3: 150 rows, 100 positions
        ((8, 256, 14, 14), (256, 256, 3, 3)),  # 2304 rows
        *(strided if grad == "weight_grad" else ()),
    ):
        how = plan(*case)
        assert (how.algorithm, how.block) == ("blocked-numba", block)
    assert plans.BLOCKED_GRAD_MIN_POSITIONS == 100
    assert plans.BLOCKED_MIN_ROWS == 64 and plans.BLOCKED_MAX_ROWS == 2304
    c1 = plan((64, 1, 28, 28), (6, 1, 5, 5), 1, 2)  # 25 rows: along the rows, as the forward
    assert (c1.algorithm, c1.block) == (
        ("blocked-numba", "wr6t3") if grad == "weight_grad" else ("im2col-numba", "")
    )
    for case in (  # not along the rows: 9 filters, stride 2 along them, rows of 15 < 16
        ((64, 1, 28, 28), (9, 1, 5, 5), 1, 2),
        ((64, 1, 28, 28), (6, 1, 5, 5), (1, 2), 2),
        ((64, 1, 15, 15), (6, 1, 5, 5), 1, 2),
    ):
        assert plan(*case).algorithm != "blocked-numba", case
    assert plan((64, 1, 28, 28), (6, 1, 5, 5), (2, 1), 2).block == (
        "wr6t3" if grad == "weight_grad" else ""
    )
    for case in (
        ((8, 7, 12, 12), (8, 70, 3, 3), 1, 1),  # 63 rows, more than 8 filters
        ((8, 256, 9, 9), (256, 256, 3, 3), 1, 0),  # 49 positions
        ((8, 64, 11, 9), (64, 64, 3, 3), 1, 0),  # 99 positions
        ((8, 512, 14, 14), (512, 512, 3, 3)),  # 4608 rows > BLOCKED_MAX_ROWS
        ((8, 64, 56, 56), (64, 32, 3, 3), 1, 1, 2),  # groups
        ((8, 64, 56, 56), (64, 64, 1, 1), 1, 0),  # pointwise
        *(strided if grad == "input_grad" else ()),
    ):
        assert plan(*case).algorithm != "blocked-numba", case
    assert plan((8, 64, 12, 12), (64, 64, 3, 3), 1, 0).algorithm == "blocked-numba"
    assert plan(*resnet, itemsize=8).algorithm != "blocked-numba"
    assert plan(*resnet, cupy=True).algorithm == "im2col"
    with threads.limit(2):  # shared from BLOCKED_MIN_PARALLEL_MACS, as the forward
        c3 = {n: plan((n, 6, 14, 14), (16, 6, 5, 5), 1, 0) for n in (17, 18)}
    assert (c3[17].threads, c3[18].threads) == (1, 2)
    blocked_cpu(monkeypatch, has_avx512=False)
    assert plan(*resnet).algorithm != "blocked-numba"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("case", BLOCKED_CASES)
def test_blocked_weight_grad_matches_torch_and_im2col(rng, torch, monkeypatch, case, layout):
    """The register-blocked weight gradient against PyTorch's autograd (in float64) and
    against im2col on the same float32 inputs, which it leaves unchanged: every case, the
    kernel called directly (the plan takes it from 64 rows and 100 positions), then through
    ``conv2d_backward`` with the plan's thresholds lowered to take it."""
    blocked_cpu(monkeypatch)
    x_shape, (f, kh, kw), s, p, d = case
    x = laid_out(np, rng.standard_normal(x_shape), layout).astype(np.float32)
    weight = rng.standard_normal((f, x_shape[1], kh, kw)).astype(np.float32)
    win = C._conv_setup("conv2d", x, weight, None, s, p, d, 1)
    grad_out = laid_out(np, rng.standard_normal((x_shape[0], f, *win.out)), layout)
    grad_out = grad_out.astype(np.float32)
    before = [a.copy() for a in (x, weight, grad_out)]
    got = compiled.blocked_weight_grad(grad_out, x, win, weight.shape, 1, "wg16t10")
    expected = torch_conv_grads(torch, x, weight, grad_out, s, p, d)[1]
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = np.abs(expected).max()
    # float32 sums of one sample's positions (at most 841), then over the samples
    assert_close(got, expected, rtol=0, atol=1e-5 * scale)
    monkeypatch.setattr(plans, "BLOCKED_MIN_ROWS", 1)
    monkeypatch.setattr(plans, "BLOCKED_GRAD_MIN_POSITIONS", 1)
    how = C.conv2d_plan(x.shape, weight.shape, s, p, d, 1, 4)["weight_grad"]
    assert how.algorithm == "blocked-numba"
    _, through_api, grad_b = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    np.testing.assert_array_equal(through_api, got)
    assert_close(grad_b, grad_out.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    for a, b in zip((x, weight, grad_out), before, strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv(compiled.ENV, "0")
    _, im2col, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    assert_close(got, im2col, rtol=0, atol=1e-5 * scale)


ROW_CASES = [c for c in BLOCKED_CASES if pair(c[2], "", "")[1] == 1 and c[1][0] <= 8]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note
@pytest.mark.parametrize("case", ROW_CASES)
def test_blocked_row_weight_grad_matches_torch_and_im2col(rng, torch, monkeypatch, case):
    """The weight gradient along a row (few filters, stride 1 along the rows) against
    PyTorch's autograd in float64 and im2col, for each filter count's block; through
    ``conv2d_backward`` where the plan takes it (fewer than 64 rows), with 1 and 2 threads
    giving the same bits (the batch is summed in fixed chunks); NaN and infinity propagate."""
    blocked_cpu(monkeypatch)
    x_shape, (f, kh, kw), s, p, d = case
    x_shape = (35, *x_shape[1:])  # three chunks of 16 samples, the last one short
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal((f, x_shape[1], kh, kw)).astype(np.float32)
    win = C._conv_setup("conv2d", x, weight, None, s, p, d, 1)
    grad_out = rng.standard_normal((x_shape[0], f, *win.out)).astype(np.float32)
    block = compiled.blocked_block(f, along_row=True, weight_grad=True).name
    assert block == ("wr4t5" if f <= 4 else "wr6t3" if f <= 6 else "wr8t2")  # the narrowest
    before = [a.copy() for a in (x, grad_out)]
    got = compiled.blocked_weight_grad(grad_out, x, win, weight.shape, 1, block)
    for a, b in zip((x, grad_out), before, strict=True):
        np.testing.assert_array_equal(a, b)
    expected = torch_conv_grads(torch, x, weight, grad_out, s, p, d)[1]
    scale = np.abs(expected).max()
    assert_close(got, expected, rtol=0, atol=1e-5 * scale)
    monkeypatch.setattr(plans, "BLOCKED_MIN_ROWS", 10**6)  # every case along the rows
    monkeypatch.setattr(plans, "BLOCKED_MIN_PARALLEL_MACS", 0)
    how = C.conv2d_plan(x.shape, weight.shape, s, p, d, 1, 4)["weight_grad"]
    assert (how.algorithm, how.block) == ("blocked-numba", block)
    with threads.limit(1):
        _, one, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    with threads.limit(2):
        _, two, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    np.testing.assert_array_equal(one, got)
    np.testing.assert_array_equal(two, got)
    x[0, 0, 1, 2], x[1, -1, -1, -1] = np.nan, np.inf
    _, special, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    monkeypatch.setenv(compiled.ENV, "0")
    _, im2col, _ = C.conv2d_backward(grad_out, x, weight, s, p, d, input_grad=False)
    np.testing.assert_array_equal(np.isnan(special), np.isnan(im2col))
    np.testing.assert_array_equal(np.isinf(special), np.isinf(im2col))
    finite = np.isfinite(im2col)
    assert_close(special[finite], im2col[finite], rtol=0, atol=1e-5 * scale)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("case", [c for c in BLOCKED_CASES if pair(c[2], "", "") == (1, 1)])
def test_blocked_input_grad_matches_torch_and_im2col(rng, torch, monkeypatch, case, layout):
    """The register-blocked input gradient (stride 1) against PyTorch's autograd (in
    float64) and against im2col on the same float32 inputs, which it leaves unchanged: the
    kernel called directly, then through ``conv2d_backward`` and ``conv_transpose2d`` (whose
    forward is this gradient) with the plan's thresholds lowered to take it."""
    blocked_cpu(monkeypatch)
    x_shape, (f, kh, kw), s, p, d = case
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal((f, x_shape[1], kh, kw)).astype(np.float32)
    weight = laid_out(np, weight, layout)
    win = C._conv_setup("conv2d", x, weight, None, s, p, d, 1)
    grad_out = laid_out(np, rng.standard_normal((x_shape[0], f, *win.out)), layout)
    grad_out = grad_out.astype(np.float32)
    before = [a.copy() for a in (x, weight, grad_out)]
    got = compiled.blocked_input_grad(grad_out, weight, win, x.shape, 1, "ig8r16")
    expected = torch_conv_grads(torch, x, weight, grad_out, s, p, d)[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = np.abs(expected).max()
    assert_close(got, expected, rtol=0, atol=2e-6 * scale)  # float32 sums of <= 200 terms
    monkeypatch.setattr(plans, "BLOCKED_MIN_ROWS", 1)
    monkeypatch.setattr(plans, "BLOCKED_GRAD_MIN_POSITIONS", 1)
    how = C.conv2d_plan(x.shape, weight.shape, s, p, d, 1, 4)["input_grad"]
    assert (how.algorithm, how.block) == ("blocked-numba", "ig8r16")
    through_api, _, _ = C.conv2d_backward(grad_out, x, weight, s, p, d)
    np.testing.assert_array_equal(through_api, got)
    if not isinstance(p, str):  # the transposed convolution of grad_out is the same sum
        transposed = C.conv_transpose2d(grad_out, weight, None, s, p, 0, 1, d)
        np.testing.assert_array_equal(transposed, got)
    for a, b in zip((x, weight, grad_out), before, strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv(compiled.ENV, "0")
    im2col, _, _ = C.conv2d_backward(grad_out, x, weight, s, p, d)
    assert_close(got, im2col, rtol=0, atol=2e-6 * scale)


def test_blocked_input_grad_refuses_strides_and_groups_and_propagates_specials(rng, monkeypatch):
    """The kernel runs at stride 1 with one group (the plan sends others to im2col); the
    samples are shared between threads, 1 and 2 give the same bits; NaN and infinity in the
    output gradient propagate as in the definition."""
    blocked_cpu(monkeypatch)
    x = rng.standard_normal((5, 16, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((40, 16, 3, 3)).astype(np.float32)
    for stride, groups in ((2, 1), (1, 2)):
        w = weight[:, : 16 // groups]
        win = C._conv_setup("conv2d", x, w, None, stride, 1, 1, groups)
        g = np.ones((5, 40, *win.out), np.float32)
        with pytest.raises(ValueError, match="stride 1 and one group only"):
            compiled.blocked_input_grad(g, w, win, x.shape, 1, "ig8r16")
    grad_out = rng.standard_normal((5, 40, 10, 10)).astype(np.float32)
    monkeypatch.setattr(plans, "BLOCKED_MIN_PARALLEL_MACS", 0)
    with threads.limit(1):
        one, _, _ = C.conv2d_backward(grad_out, x, weight, 1, 0)
    with threads.limit(2):
        two, _, _ = C.conv2d_backward(grad_out, x, weight, 1, 0)
        assert C.conv2d_plan(x.shape, weight.shape, 1, 0)["input_grad"].threads == 2
    np.testing.assert_array_equal(one, two)
    grad_out[0, 1, 2, 3], grad_out[1, 4, 0, 0] = np.nan, np.inf
    got, _, _ = C.conv2d_backward(grad_out, x, weight, 1, 0)
    g64, w64 = grad_out.astype(np.float64), weight.astype(np.float64)
    want, _, _ = C.conv2d_backward(g64, x.astype(np.float64), w64, 1, 0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert np.isnan(want).any() and finite.any()
    assert_close(got[finite], want[finite], rtol=0, atol=1e-5 * np.abs(want[finite]).max())


def test_blocked_weight_grad_does_not_depend_on_the_thread_count_and_propagates_specials(
    rng, monkeypatch
):
    """The threads share the blocks of taps times filters, each summed over the samples in
    one order: 1 and 2 threads give the same bits. NaN and infinity in the input propagate
    as in the definition (the taps that fill the last block are read and dropped)."""
    blocked_cpu(monkeypatch)
    x = rng.standard_normal((5, 16, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((40, 16, 3, 3)).astype(np.float32)  # 3 blocks of 16
    grad_out = rng.standard_normal((5, 40, 10, 10)).astype(np.float32)
    kernels = compiled._kernels_blocked()
    C.conv2d_backward(grad_out, x, weight, 1, 0, input_grad=False)  # compiled before the spy
    seen = []
    real = kernels.wg16t10

    def spy(*args):
        seen.append(args[-4:-2])  # the units of this share
        return real(*args)

    monkeypatch.setattr(kernels, "wg16t10", spy)
    monkeypatch.setattr(plans, "BLOCKED_MIN_PARALLEL_MACS", 0)
    with threads.limit(1):
        _, one, _ = C.conv2d_backward(grad_out, x, weight, 1, 0, input_grad=False)
    assert seen == [(0, 3 * 15)]  # 144 taps: 15 blocks of 10 (6 read and dropped)
    seen.clear()
    with threads.limit(2):
        _, two, _ = C.conv2d_backward(grad_out, x, weight, 1, 0, input_grad=False)
    assert sorted(seen) == [(0, 22), (22, 45)]
    np.testing.assert_array_equal(one, two)
    x[0, 1, 2, 3], x[1, 4, 0, 0] = np.nan, np.inf
    _, got, _ = C.conv2d_backward(grad_out, x, weight, 1, 0, input_grad=False)
    x64, g64 = x.astype(np.float64), grad_out.astype(np.float64)
    _, want, _ = C.conv2d_backward(g64, x64, weight.astype(np.float64), 1, 0, input_grad=False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert np.isnan(want).any() and finite.any()
    assert_close(got[finite], want[finite], rtol=0, atol=1e-5 * np.abs(want[finite]).max())


def torch_conv_grads(torch, x, weight, grad_out, stride, padding, dilation):
    """PyTorch's autograd in float64: the gradients of ``conv2d`` for ``x`` and ``weight``."""
    tp = padding if isinstance(padding, str) else pair(padding, "", "")
    xt, wt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, weight))
    torch.nn.functional.conv2d(xt, wt, None, stride, tp, dilation).backward(
        torch.from_numpy(grad_out.astype(np.float64))
    )
    return xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("narrow", [True, False])
def test_batch_last_weight_grad_in_either_gemm_orientation(rng, torch, monkeypatch, narrow):
    """The batch-last weight gradient, ``grads @ cols^T`` or ``(cols @ grads^T)^T`` (chosen
    by the filters per group), against PyTorch's autograd in float64, with groups."""
    monkeypatch.setattr(plans, "WEIGHT_GRAD_SWAP_MAX_FILTERS", 10**6 if narrow else 0)
    x = rng.standard_normal((3, 4, 5, 4))
    weight = rng.standard_normal((10, 2, 3, 2))
    how = C.conv2d_plan(x.shape, weight.shape, 1, 0, 1, 2, 8)["weight_grad"]
    assert (how.algorithm, how.layout) == ("im2col", "batch-last")  # 9 positions < 10 filters
    grad_out = rng.standard_normal(C.conv2d(x, weight, None, 1, 0, 1, 2).shape)
    _, grad_w, _ = C.conv2d_backward(grad_out, x, weight, 1, 0, 1, 2, input_grad=False)
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, weight))
    torch.nn.functional.conv2d(xt, wt, None, 1, 0, 1, 2).backward(torch.from_numpy(grad_out))
    assert_close(grad_w, wt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note
@pytest.mark.parametrize("layout", ["contiguous", "strided", "fortran"])
@pytest.mark.parametrize("case", BLOCKED_CASES)
def test_blocked_forward_matches_torch_and_im2col(rng, torch, monkeypatch, case, layout):
    """The register-blocked forward against PyTorch (in float64) and against im2col on the
    same float32 inputs, which it leaves unchanged; bias added as usual."""
    blocked_cpu(monkeypatch)
    x_shape, (f, kh, kw), s, p, d = case
    x = laid_out(np, rng.standard_normal(x_shape), layout).astype(np.float32)
    weight = rng.standard_normal((f, x_shape[1], kh, kw)).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    plan = C.conv2d_plan(x.shape, weight.shape, s, p, d, 1, 4)["forward"]
    assert plan.algorithm == "blocked-numba"
    before = [a.copy() for a in (x, weight, bias)]
    got = C.conv2d(x, weight, bias, s, p, d)
    for a, b in zip((x, weight, bias), before, strict=True):
        np.testing.assert_array_equal(a, b)
    tp = p if isinstance(p, str) else pair(p, "", "")
    expected = torch.nn.functional.conv2d(
        *(torch.from_numpy(a.astype(np.float64)) for a in (x, weight, bias)), s, tp, d
    ).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = np.abs(expected).max()
    assert_close(got, expected, rtol=0, atol=2e-6 * scale)  # float32 sums of <= 200 terms
    monkeypatch.setenv(compiled.ENV, "0")
    im2col = C.conv2d(x, weight, bias, s, p, d)
    assert_close(got, im2col, rtol=0, atol=2e-6 * scale)


def test_blocked_forward_refuses_rows_narrower_than_a_block_and_propagates_specials(
    rng, monkeypatch
):
    """The kernels take rows at least a block wide (the plan sends others to im2col): asked
    for fewer, they say so; NaN and infinity propagate as in the definition."""
    blocked_cpu(monkeypatch)
    x = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    weight = rng.standard_normal((20, 5, 3, 3)).astype(np.float32)
    win = C._conv_setup("conv2d", x, weight, None, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="output rows of 7 < 8 positions"):  # blocks of 32x8
        compiled.blocked_forward(x, weight, win, 1, "g32p8")
    win = C._conv_setup("conv2d", x, weight, None, (1, 2), 1, 1, 1)
    with pytest.raises(ValueError, match="g8r16 runs along rows at stride 1"):
        compiled.blocked_forward(x, weight, win, 1, "g8r16")
    x = rng.standard_normal((2, 8, 6, 16)).astype(np.float32)
    weight = rng.standard_normal((20, 8, 3, 3)).astype(np.float32)
    x[0, 1, 2, 3], x[1, 4, 0, 0] = np.nan, np.inf
    assert C.conv2d_plan(x.shape, weight.shape, 1, 1, itemsize=4)["forward"].algorithm == (
        "blocked-numba"
    )
    got = C.conv2d(x, weight, None, 1, 1)
    want = C.conv2d_naive(x.astype(np.float64), weight.astype(np.float64), None, 1, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert np.isnan(want).any() and finite.any()
    assert_close(got[finite], want[finite], rtol=0, atol=1e-5 * np.abs(want[finite]).max())


def test_blocked_forward_does_not_depend_on_the_thread_count(rng, monkeypatch):
    """Each sample is summed by one thread in one order: 1 and 2 threads give the same
    bits, the batch cut in parts on the engine's threads (numba's pool never starts)."""
    blocked_cpu(monkeypatch)
    x = rng.standard_normal((6, 16, 20, 20)).astype(np.float32)
    weight = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    kernels = compiled._kernels_blocked()
    name = compiled.blocked_block(24).name
    C.conv2d(x, weight, None, 1, 1)  # compiled before the spy goes in
    seen = []
    real = getattr(kernels, name)

    def spy(x_part, *args):
        seen.append(len(x_part))
        return real(x_part, *args)

    monkeypatch.setattr(kernels, name, spy)
    monkeypatch.setattr(plans, "BLOCKED_MIN_PARALLEL_MACS", 0)
    with threads.limit(1):
        one = C.conv2d(x, weight, None, 1, 1)
    assert seen == [6]
    seen.clear()
    with threads.limit(2):
        two = C.conv2d(x, weight, None, 1, 1)
    # two parts, one on this thread, the other on a worker or here if it was not started
    assert sorted(seen) == [3, 3]
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="not initialized"):
        compiled._kernels().numba.threading_layer()


def test_blocked_kernels_are_generated_from_the_committed_generator():
    """``_numba_blocked.py`` is what ``tools/gen_blocked_kernels.py`` writes."""
    import runpy

    gen = runpy.run_path(str(Path(__file__).parents[2] / "tools" / "gen_blocked_kernels.py"))
    assert gen["TARGET"].read_text(encoding="utf-8") == gen["source"]()


@pytest.mark.parametrize("name", ["g8p14", "g8r16", "wg16t10", "ig8r16", "wr4t5"])
def test_blocked_kernels_compile_to_vector_instructions(monkeypatch, name):
    """numba compiles the blocked kernels with LLVM's SLP vectoriser only where asked
    (:func:`compiled.compile_vectorised`): then the accumulators are packed into vector
    registers (``vfmadd...ps``); compiled the default way they stay scalar (``...ss``).
    Fresh copies of the smallest block of each kind (along the filters, along a row, the
    weight gradient's both ways, the input gradient's), without the disk cache (cached code
    cannot be inspected)."""
    needs_numba(monkeypatch)
    numba = compiled._kernels().numba
    zeros = np.zeros((72, 16), np.float32)
    if name == "g8p14":
        tile = compiled._kernels_blocked()._tile_g8p14_s1
        args = (np.float32(0), zeros.ravel(), 0, np.arange(72), zeros[:, :8], zeros[:14, :8])
    elif name == "g8r16":
        tile = compiled._kernels_blocked()._tile_g8r16
        args = (np.float32(0), zeros.ravel(), 0, np.arange(72), zeros[:, :8], zeros, 0, 8, 0)
    elif name == "wg16t10":
        tile = compiled._kernels_blocked()._wtile_wg16t10
        args = (np.float32(0), zeros.ravel(), np.arange(72), zeros, np.arange(10), zeros[:10])
    elif name == "wr4t5":
        tile = compiled._kernels_blocked()._wrtile_wr4t5
        index = np.arange(5)
        acc = np.zeros((5, 4, 16), np.float32)
        args = (np.float32(0), *(zeros.ravel(),) * 2, index, index, index, 16, acc)
    else:
        tile = compiled._kernels_blocked()._itile_ig8r16
        args = (
            np.float32(0),
            zeros.ravel(),
            0,
            np.arange(4),
            zeros[:, :8],
            zeros.ravel(),
            np.arange(8),
        )
    options = {k: v for k, v in tile.targetoptions.items() if k not in ("nopython", "inline")}
    options["cache"] = False

    def fmas(dispatcher):
        asm = dispatcher.inspect_asm(dispatcher.signatures[0])
        return len(re.findall(r"vfmadd\w*ps", asm)), len(re.findall(r"vfmadd\w*ss", asm))

    fast = numba.njit(**options)(tile.py_func)
    compiled.compile_vectorised(fast, args)
    plain = numba.njit(**options)(tile.py_func)
    plain.compile(tuple(numba.typeof(a) for a in args))
    assert fmas(fast)[0] > 0
    packed, scalar = fmas(plain)
    assert packed == 0 and scalar > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "fortran"])
@pytest.mark.parametrize(
    "geometry",
    [(1, 1, 1), ((2, 1), (1, 2), (1, 2)), (2, 0, 1), (1, "same", (2, 2)), (3, 2, 1)],
)
def test_compiled_depthwise_path_matches_the_numpy_path(rng, monkeypatch, dtype, layout, geometry):
    """The compiled kernels against NumPy's taps (and, for strided forwards, im2col) on the
    same inputs: conv2d, its backward, the transposed convolution and its backward; inputs
    of any layout are left unchanged."""
    needs_numba(monkeypatch)
    s, p, d = geometry
    n, c, k = 2, 5, (3, 2)
    x = laid_out(np, rng.standard_normal((n, c, 11, 9)), layout).astype(dtype, copy=False)
    weight = rng.standard_normal((c, 1, *k)).astype(dtype)
    grad_out = rng.standard_normal(C.conv2d(x, weight, None, s, p, d, c).shape).astype(dtype)
    grad_out = laid_out(np, grad_out, layout)
    targs = (s, 0 if p == "same" else p, 0, c, d)

    def run():
        return (
            C.conv2d(x, weight, None, s, p, d, c),
            *C.conv2d_backward(grad_out, x, weight, s, p, d, c)[:2],
            C.conv_transpose2d(grad_out, weight, None, *targs),
        )

    before = [a.copy() for a in (x, weight, grad_out)]
    calls = spy_on_direct_path(monkeypatch, "direct-numba")
    fast = run()
    assert set(calls) == {"forward", "input_grad", "weight_grad"}
    for a, b in zip((x, weight, grad_out), before, strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv(compiled.ENV, "0")
    slow = run()
    tol = 1e-5 if dtype == "float32" else 1e-12
    for got, want in zip(fast, slow, strict=True):
        assert got.dtype == dtype and got.flags.c_contiguous
        assert_close(got, want, rtol=tol, atol=tol)


def test_compiled_path_uses_the_engine_thread_count(rng, monkeypatch):
    """The compiled kernels run on the engine's threads, each on a part of the batch: one
    call of each kernel, on this thread, with one thread; two calls (on the pool's threads,
    or here where a worker is busy) with two; never numba's own thread pool. Both give the
    same arrays."""
    needs_numba(monkeypatch)
    kernels = compiled._kernels()
    seen = []
    for name in ("forward", "input_grad"):
        real = getattr(kernels, name)

        def spy(*args, _real=real, _name=name):
            seen.append((_name, len(args[0]), threading.current_thread().name))
            return _real(*args)

        monkeypatch.setattr(kernels, name, spy)
    x = rng.standard_normal((3, 4, 9, 8))
    weight = rng.standard_normal((4, 1, 3, 3))
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 0)
    with threads.limit(1):
        serial = (
            C.conv2d(x, weight, None, 1, 1, 1, 4),
            C.conv_transpose2d(x, weight, None, 1, 1, 0, 4),
        )
    main = threading.current_thread().name
    assert seen == [("forward", 3, main), ("input_grad", 3, main)]
    seen.clear()
    with threads.limit(2):
        split = (
            C.conv2d(x, weight, None, 1, 1, 1, 4),
            C.conv_transpose2d(x, weight, None, 1, 1, 0, 4),
        )
    assert sorted((name, size) for name, size, _ in seen) == [
        ("forward", 1),
        ("forward", 2),
        ("input_grad", 1),
        ("input_grad", 2),
    ]
    with pytest.raises(ValueError, match="not initialized"):
        kernels.numba.threading_layer()  # numba's own thread pool never started
    for a, b in zip(serial, split, strict=True):
        np.testing.assert_array_equal(a, b)


def test_compiled_kernels_compile_without_a_disk_cache_where_none_is_writable(monkeypatch):
    """numba raises at ``cache=True`` where no cache directory is writable: the kernels
    then compile without one, and nothing warns."""
    needs_numba(monkeypatch)
    kernels = compiled._kernels()
    caching = pytest.importorskip("numba.core.caching")
    assert kernels._cache_usable() is True  # this checkout's __pycache__ is writable

    def read_only(self):
        raise PermissionError(f"read-only: {self.get_cache_path()}")

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", read_only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels._cache_usable() is False


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_compiled_path_works_in_a_forked_child(rng, monkeypatch):
    """A child forked after the compiled kernels ran on the engine's threads runs them too
    (multiprocessing's default on Linux)."""
    import os

    needs_numba(monkeypatch)
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 0)
    x = rng.standard_normal((2, 4, 9, 8))
    weight = rng.standard_normal((4, 1, 3, 3))
    with threads.limit(2):
        expected = C.conv2d(x, weight, None, 1, 1, 1, 4)  # the kernels ran on the pool
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status
            ok = np.array_equal(C.conv2d(x, weight, None, 1, 1, 1, 4), expected)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_thread_pool_works_in_a_forked_child(monkeypatch):
    """A child forked after the pool started (multiprocessing's default on Linux) has none
    of its threads: the engine starts a new pool there instead of waiting forever."""
    import os

    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 0)
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    with threads.limit(2):
        C.im2col(x, 1)  # the pool is running
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status
            ok = np.array_equal(C.im2col(x, 1), x.reshape(2, 3, 4))
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_backward_without_the_input_gradient(rng, name):
    """``input_grad=False`` returns None for grad_x and the same weight and bias gradients,
    bit for bit; the arrays are the ones a full backward gives."""
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((4, 2, 3, 3))
    forward, backward = getattr(C, name), getattr(C, f"{name}_backward")
    args = dict(stride=2, padding=1, groups=2)
    grad_out = rng.standard_normal(forward(x, weight, None, **args).shape)
    full = backward(grad_out, x, weight, **args)
    grad_x, grad_w, grad_b = backward(grad_out, x, weight, **args, input_grad=False)
    assert grad_x is None and full[0] is not None
    np.testing.assert_array_equal(grad_w, full[1])
    np.testing.assert_array_equal(grad_b, full[2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "geometry",
    [
        (1, 0, 1, 1),
        (1, 2, 1, 1),
        (2, 1, 1, 1),
        ((2, 1), (1, 2), (1, 2), 1),
        (3, 2, 2, 2),
        (1, "same", (2, 2), 1),
        (2, 3, 1, 2),  # padding beyond the window's reach: rows and columns no window meets
    ],
)
def test_compiled_fold_matches_the_numpy_fold_and_torch(torch, rng, monkeypatch, dtype, geometry):
    """A dense layer's input gradient with the compiled col2im ("im2col-numba") against
    NumPy's two-step fold on the same inputs (the same bits: the compiled loop adds in
    NumPy's order), and against PyTorch; the plan says which ran."""
    needs_numba(monkeypatch)
    s, p, d, g = geometry
    x = rng.standard_normal((3, 4, 11, 9)).astype(dtype)
    weight = rng.standard_normal((6, 4 // g, 3, 2)).astype(dtype)
    grad_out = rng.standard_normal(C.conv2d(x, weight, None, s, p, d, g).shape).astype(dtype)
    plan = C.conv2d_plan(x.shape, weight.shape, s, p, d, g, x.itemsize)["input_grad"]
    assert plan.algorithm == "im2col-numba"
    fast = C.conv2d_backward(grad_out, x, weight, s, p, d, g)[0]
    monkeypatch.setenv(compiled.ENV, "0")
    slow = C.conv2d_backward(grad_out, x, weight, s, p, d, g)[0]
    assert fast.dtype == dtype and fast.shape == x.shape
    np.testing.assert_array_equal(fast, slow)
    tx = torch.tensor(x, requires_grad=True)
    padding = p if isinstance(p, str) else pair(p, "padding", "test")
    stride, dilation = pair(s, "stride", "test"), pair(d, "dilation", "test")
    torch.nn.functional.conv2d(
        tx, torch.tensor(weight), None, stride, padding, dilation, g
    ).backward(torch.tensor(grad_out))
    oracle_tol = 1e-4 if dtype == "float32" else 1e-10
    assert_close(fast, tx.grad.numpy(), rtol=oracle_tol, atol=oracle_tol)


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_backward_rejects_an_input_grad_that_is_not_a_bool(rng, name):
    x = rng.standard_normal((1, 2, 5, 5))
    weight = rng.standard_normal((2, 2, 3, 3))
    grad_out = rng.standard_normal(getattr(C, name)(x, weight).shape)
    with pytest.raises(TypeError, match="input_grad must be True or False, got 'no'"):
        getattr(C, f"{name}_backward")(grad_out, x, weight, input_grad="no")
