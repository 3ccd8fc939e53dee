"""The similarity check: copies are found whatever their names, comments and formatting;
independently written solutions of the same function are not flagged."""

from __future__ import annotations

from cnn_course.grading import similarity as sim
from cnn_course.grading.notebooks import stub_source
from tests.grading.conftest import solution_source

# Written for these tests, independently of the instructor's solution (which uses one einsum
# per kernel offset): four nested loops over the output.
LOOPS = """
import numpy as np

def conv2d(x, weight, bias=None, stride=1, padding=0):
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    padded = np.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=x.dtype)
    padded[:, :, p[0]:p[0] + H, p[1]:p[1] + W] = x
    OH = (H + 2 * p[0] - KH) // s[0] + 1
    OW = (W + 2 * p[1] - KW) // s[1] + 1
    result = np.empty((N, F, OH, OW), dtype=x.dtype)
    for b in range(N):
        for f in range(F):
            for r in range(OH):
                for c in range(OW):
                    patch = padded[b, :, r * s[0]:r * s[0] + KH, c * s[1]:c * s[1] + KW]
                    result[b, f, r, c] = np.sum(patch * weight[f])
            if bias is not None:
                result[b, f] += bias[f]
    return result
"""

# The same algorithm as LOOPS, renamed, commented, reformatted, with a helper split out.
LOOPS_COPY = '''
import numpy as np


def _pair(v):
    # an int or a pair
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(images, kernels, bias=None, stride=1, padding=0):
    """My convolution."""
    st = _pair(stride)
    pd = _pair(padding)
    batch, chans, height, width = images.shape
    nfilt, _, kh, kw = kernels.shape
    buf = np.zeros((batch, chans, height + 2*pd[0], width + 2*pd[1]),
                   dtype=images.dtype)   # zero padding
    buf[:, :, pd[0]:pd[0]+height, pd[1]:pd[1]+width] = images
    out_h = (height + 2*pd[0] - kh)//st[0] + 1
    out_w = (width + 2*pd[1] - kw)//st[1] + 1
    y = np.empty((batch, nfilt, out_h, out_w), dtype=images.dtype)
    for i in range(batch):
        for j in range(nfilt):
            for row in range(out_h):
                for col in range(out_w):
                    window = buf[i, :, row*st[0]:row*st[0]+kh, col*st[1]:col*st[1]+kw]
                    y[i, j, row, col] = np.sum(window * kernels[j])
            if bias is not None:
                y[i, j] += bias[j]
    return y
'''

# A third, vectorised way: sliding windows and one tensordot.
WINDOWS = """
import numpy as np

def conv2d(x, weight, bias=None, stride=1, padding=0):
    if isinstance(stride, int):
        stride = (stride, stride)
    if isinstance(padding, int):
        padding = (padding, padding)
    f, _, kh, kw = weight.shape
    x = np.pad(x, [(0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2])
    oh = (x.shape[2] - kh) // stride[0] + 1
    ow = (x.shape[3] - kw) // stride[1] + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    cols = cols[:, :, ::stride[0], ::stride[1]][:, :, :oh, :ow]
    y = np.tensordot(cols, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    if bias is not None:
        y = y + bias[None, :, None, None]
    return np.ascontiguousarray(y, dtype=x.dtype)
"""


def prints(code: str, function: str = "conv2d") -> frozenset[int]:
    base = sim.base_fingerprints(stub_source(solution_source("conv2d")), "conv2d")
    return sim.fingerprints(sim.extract(code, function), base)


def test_a_renamed_commented_reformatted_copy_is_flagged():
    # Renaming, comments and formatting change nothing; splitting out the helper changes
    # the token stream around its two calls, so a little less than 1.
    score = sim.score(prints(LOOPS), prints(LOOPS_COPY))
    assert sim.THRESHOLD < score < 1.0


def test_the_instructor_solution_renamed_is_found():
    solution = solution_source("conv2d")
    renamed = solution.replace("out", "acc").replace("window", "win").replace("    ", "  ")
    renamed = renamed.replace("\n", "  # note\n", 3)
    assert sim.score(prints(solution), prints(renamed)) == 1.0


def test_independent_correct_solutions_are_not_flagged():
    solution = solution_source("conv2d")
    pairs = [(LOOPS, WINDOWS), (LOOPS, solution), (WINDOWS, solution)]
    for a, b in pairs:
        score = sim.score(prints(a), prints(b))
        assert score is not None and score < sim.THRESHOLD / 2, score


def test_stubs_short_functions_and_broken_code_are_not_compared():
    stub = stub_source(solution_source("conv2d"))
    assert sim.extract(stub, "conv2d") is None
    assert sim.extract("def conv2d(:\n", "conv2d") is None
    short = "def relu(x):\n    return x * (x > 0)\n"
    assert sim.score(prints(short, "relu"), prints(short, "relu")) is None


def test_tokens_ignore_names_literals_and_comments_but_keep_the_api():
    a = sim.tokens("y = np.zeros(3)  # c\n")
    b = sim.tokens("out = xp.zeros(7)\n")
    assert a == b == ["V", "=", "V", ".", "zeros", "(", "N", ")"]
    assert sim.tokens("y = np.ones(3)\n") != a


def test_compare_class_reports_pairs_once_and_the_reference():
    fa, fb = sorted(prints(LOOPS)), sorted(prints(LOOPS_COPY))
    fc = sorted(prints(WINDOWS))
    rows = sim.compare_class(
        {"b": {"conv2d": fb}, "a": {"conv2d": fa}, "c": {"conv2d": fc}},
        {"conv2d": [fc]},
    )
    assert [(r["student"], r["other"], r["exercise"]) for r in rows] == [
        ("a", "b", "conv2d"),  # once, in id order; never a-c or b-c (independent code)
        ("c", "reference", "conv2d"),
    ]
    assert sim.THRESHOLD <= rows[0]["score"] < 1.0 and rows[1]["score"] == 1.0
