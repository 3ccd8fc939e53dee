"""Animations of convolution arithmetic (cnn_course.animate): the windows recorded from the
operations match windows worked out by hand, the frames are counted, and the check against
the operation fails when the configuration is wrong."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import cnn_course.functional as F
from cnn_course import animate


def pairs(rec, step):
    """The window of one step as {((row, col) of the input, (row, col) of the tap)}, or for a
    transposed convolution {((row, col) of the output, tap)}."""
    found = set()
    for p, t, o, _ in rec.window(step):
        cell = rec.output_cell(o) if rec.scatter else rec.input_cell(p)
        found.add((cell[1:], rec.tap(t)[2:]))
    return found


def test_conv2d_valid_windows_by_hand():
    rec = animate.record_conv2d(np.arange(9.0).reshape(1, 1, 3, 3), np.ones((1, 1, 2, 2)))
    assert rec.out_shape == (1, 2, 2)
    # output (0, 0) reads the top-left 2x2 block, tap (i, j) on input (i, j)
    assert pairs(rec, 0) == {((0, 0), (0, 0)), ((0, 1), (0, 1)), ((1, 0), (1, 0)), ((1, 1), (1, 1))}
    # output (1, 1) (flat 3) reads the bottom-right block
    assert pairs(rec, 3) == {((1, 1), (0, 0)), ((1, 2), (0, 1)), ((2, 1), (1, 0)), ((2, 2), (1, 1))}


def test_conv2d_stride_padding_windows_and_padding_cells_by_hand():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    rec = animate.record_conv2d(x, np.ones((1, 1, 3, 3)), stride=2, padding=1)
    assert rec.out_shape == (1, 2, 2)
    # output (0, 0): the window starts at padded (-1, -1); only taps (1..2, 1..2) meet inputs
    assert pairs(rec, 0) == {((0, 0), (1, 1)), ((0, 1), (1, 2)), ((1, 0), (2, 1)), ((1, 1), (2, 2))}
    # output (1, 1): the window starts at (1, 1); taps (0..1, 0..1) meet inputs
    assert pairs(rec, 3) == {((1, 1), (0, 0)), ((1, 2), (0, 1)), ((2, 1), (1, 0)), ((2, 2), (1, 1))}
    anim = animate.Animation(rec)
    # the five taps of output (0, 0) that fall on padding, placed from the recorded offsets
    assert anim.frames[1].border == {(0, -1, -1), (0, -1, 0), (0, -1, 1), (0, 0, -1), (0, 1, -1)}
    assert anim.panels_in[0].border == (1, 1, 1, 1)


def test_conv2d_same_padding_keeps_the_size_and_marks_one_padding_ring():
    rec = animate.record_conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding="same")
    assert rec.out_shape == (1, 4, 4)
    assert animate.Animation(rec).panels_in[0].border == (1, 1, 1, 1)


def test_conv2d_dilation_windows_by_hand():
    rec = animate.record_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), dilation=2)
    assert rec.out_shape == (1, 1, 1)
    expected = {((2 * i, 2 * j), (i, j)) for i in range(3) for j in range(3)}
    assert pairs(rec, 0) == expected


def test_grouped_and_depthwise_channels_by_hand():
    # 4 input channels, 2 groups, 2 filters of a 1x1 kernel on a 1x1 input
    rec = animate.record_conv2d(np.ones((1, 4, 1, 1)), np.ones((2, 2, 1, 1)), groups=2)
    chans = [
        {(rec.input_cell(p)[0], rec.tap(t)[:2]) for p, t, _, _ in rec.window(o)} for o in (0, 1)
    ]
    assert chans[0] == {(0, (0, 0)), (1, (0, 1))}  # filter 0 reads channels 0 and 1
    assert chans[1] == {(2, (1, 0)), (3, (1, 1))}  # filter 1 reads channels 2 and 3
    dw = animate.record_conv2d(np.ones((1, 3, 2, 2)), np.ones((3, 1, 2, 2)), groups=3)
    for f in range(3):
        assert {dw.input_cell(p)[0] for p, _, _, _ in dw.window(f)} == {f}


def test_conv_transpose2d_windows_by_hand():
    rec = animate.record_conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)
    assert rec.out_shape == (1, 4, 4)
    # input (0, 1) (flat 1) spreads into the 2x2 block at rows 0..1, columns 2..3
    assert pairs(rec, 1) == {((0, 2), (0, 0)), ((0, 3), (0, 1)), ((1, 2), (1, 0)), ((1, 3), (1, 1))}


def test_conv_transpose2d_output_padding_crops_only_top_and_left():
    # k=3, s=2, p=1 on 2x2: the full result has 5 rows (-1..3); padding crops row -1 and
    # row 3, and output_padding=1 puts row 3 back: output 4 x 4, cropped border top/left only.
    w = np.ones((1, 1, 3, 3))
    rec = animate.record_conv_transpose2d(
        np.ones((1, 1, 2, 2)), w, stride=2, padding=1, output_padding=1
    )
    assert rec.out_shape == (1, 4, 4)
    assert pairs(rec, 0) == {((0, 0), (1, 1)), ((0, 1), (1, 2)), ((1, 0), (2, 1)), ((1, 1), (2, 2))}
    assert animate.Animation(rec).panels_out[0].border == (1, 1, 0, 0)
    plain = animate.record_conv_transpose2d(np.ones((1, 1, 2, 2)), w, stride=2, padding=1)
    assert plain.out_shape == (1, 3, 3)
    assert animate.Animation(plain).panels_out[0].border == (1, 1, 1, 1)


def test_max_pool2d_overlapping_windows_by_hand():
    x = np.array([[[[1.0, 5, 2, 0], [3, 4, 9, 1], [0, 2, 6, 8], [7, 1, 3, 2]]]])
    rec = animate.record_max_pool2d(x, kernel_size=3, stride=1)
    assert rec.out_shape == (1, 2, 2)
    cells = {rec.input_cell(p)[1:] for p, _, _, _ in rec.window(1)}  # output (0, 1)
    assert cells == {(r, c) for r in range(3) for c in range(1, 4)}
    np.testing.assert_array_equal(rec.output, [[[[9.0, 9.0], [9.0, 9.0]]]])


def test_bilinear_weights_by_hand():
    rec = animate.record_interpolate(np.ones((1, 1, 2, 2)), scale_factor=2, mode="bilinear")
    # output (0, 1): source column (1 + 0.5) / 2 - 0.5 = 0.25, source row -0.25 -> clamped 0
    weights = {rec.input_cell(p)[1:]: c for p, _, _, c in rec.window(1)}
    assert weights == pytest.approx({(0, 0): 0.75, (0, 1): 0.25})
    # output (1, 1) (flat 5): row 0.25, column 0.25
    weights = {rec.input_cell(p)[1:]: c for p, _, _, c in rec.window(5)}
    expected = {(0, 0): 0.5625, (0, 1): 0.1875, (1, 0): 0.1875, (1, 1): 0.0625}
    assert weights == pytest.approx(expected)


@pytest.mark.parametrize(
    ("make", "steps"),
    [
        (lambda: animate.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))), 4),
        (lambda: animate.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))), 4),
        (lambda: animate.max_pool2d(np.ones((1, 1, 5, 5)), kernel_size=3, stride=2), 4),
        (lambda: animate.interpolate(np.ones((1, 1, 2, 2)), scale_factor=2, mode="bilinear"), 16),
    ],
)
def test_frame_count_is_start_plus_one_per_step_plus_end(make, steps):
    assert len(make()) == steps + 2


def test_animated_result_equals_each_operation():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (1, 4, 5, 5)).astype(float)
    w = rng.integers(-2, 3, (4, 2, 3, 3)).astype(float)
    anim = animate.conv2d(x, w, stride=2, padding=1, groups=2)
    np.testing.assert_allclose(anim.rec.output, F.conv2d(x, w, stride=2, padding=1, groups=2))
    wt = rng.integers(-2, 3, (4, 1, 3, 3)).astype(float)
    t = animate.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1, groups=4)
    expected = F.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1, groups=4)
    np.testing.assert_allclose(t.rec.output, expected)


def test_check_fails_on_a_wrong_configuration():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 5, (1, 1, 5, 5)).astype(float)  # no zeros: every link counts
    w = np.array([[[[1.0, 2, 0], [0, 3, 1], [2, 0, 0]]]])  # not symmetric under flipping
    rec = animate.record_conv2d(x, w, padding=1)
    rec.check()  # the right configuration passes
    with pytest.raises(AssertionError, match="shape"):
        rec.check(F.conv2d(x, w, padding=0))
    with pytest.raises(AssertionError, match="differs"):  # convolution, not cross-correlation
        rec.check(F.conv2d(x, w[..., ::-1, ::-1].copy(), padding=1))
    wrong = animate.record_conv_transpose2d(x, w, stride=2)
    with pytest.raises(AssertionError, match="shape"):
        wrong.check(F.conv_transpose2d(x, w, stride=2, output_padding=1))
    # a window with one link missing no longer reproduces the operation
    rec.links[12, 4, 12] = 0
    with pytest.raises(AssertionError, match="differs"):
        rec.check()


def test_jshtml_plays_offline_and_stays_small():
    anim = animate.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding="valid")
    html = anim.to_jshtml()
    assert not re.search(r"https?://", html), "the player must not fetch anything"
    assert html.count("data:image/png;base64,") == len(anim)
    assert len(html) < 1_500_000


def test_animate_does_not_import_torch():
    code = "import sys, cnn_course.animate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
