"""The syntax-tree policy, the comparison and the case generators, without any process."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course.grading.cases import GENERATORS, make_case
from cnn_course.grading.compare import CaseFailed, check_inputs_unchanged, compare
from cnn_course.grading.manifest import DEFAULT_TOLERANCE, load_manifest
from cnn_course.grading.policy import check_source

REFUSED = {
    "import cnn_course": "banned import",
    "from cnn_course.functional import conv2d": "banned import",
    "import torch.nn.functional as F": "banned import",
    "from scipy.signal import correlate2d": "banned import",
    "import importlib": "banned import",
    "import sys": "banned import",
    "from . import sibling": "banned import",
    "__import__('os')": "banned import",
    "exec('1')": "banned import",
    "eval('1')": "banned import",
    "compile('1', 'f', 'exec')": "banned import",
    "x = globals()": "banned import",
    "x = np.__builtins__": "banned import",
    "x = f.__globals__": "banned import",
    "x = ().__class__.__subclasses__()": "banned import",
    "path = '/work/cnn_course/ops/conv.py'": "banned import",
    "name = 'cnn-course'": "banned import",
    "def f(x):\n    return 1 +": "crashed",
}


@pytest.mark.parametrize("source", list(REFUSED))
def test_refused_constructs(source):
    violations = check_source(source)
    assert violations and violations[0].kind == REFUSED[source]


ALLOWED = [
    "import numpy as np\nfrom math import prod\nimport itertools, os\n",
    "def f(x):\n    '''Doc.'''\n    return np.einsum('nchw,fc->nfhw', x, x)\n",
    "class A:\n    def __init__(self):\n        self.__doc__ = 'fine'\n",
    "name = 'course'\nfrom numpy.lib.stride_tricks import sliding_window_view\n",
]


@pytest.mark.parametrize("source", ALLOWED)
def test_ordinary_code_passes(source):
    assert check_source(source) == []


def test_banned_calls_are_per_exercise():
    source = "import numpy as np\ny = np.convolve(a, b)\nz = getattr(np, 'correlate')\n"
    assert check_source(source) == []
    kinds = [v.kind for v in check_source(source, frozenset({"convolve", "correlate"}))]
    assert kinds == ["banned call", "banned call"]


def test_violation_names_the_line():
    (violation,) = check_source("x = 1\nimport torch\n")
    assert str(violation) == "line 2: import of torch"


TOL = DEFAULT_TOLERANCE


def _array(key="out"):
    return {"kind": "ndarray", "key": key}


def test_compare_hand_examples():
    expected = np.array([[1.0, 2.0]], dtype=np.float32)
    compare(expected, _array(), {"out": np.array([[1.0, 2.00001]], dtype=np.float32)}, TOL)
    cases = [
        ({"out": np.array([[1.0, 2.0]])}, "dtype"),
        ({"out": np.array([1.0, 2.0], dtype=np.float32)}, "shape"),
        ({"out": np.array([[1.0, np.nan]], dtype=np.float32)}, "not finite"),
        ({"out": np.array([[1.0, 2.1]], dtype=np.float32)}, "values"),
        ({}, "type"),
    ]
    for arrays, check in cases:
        with pytest.raises(CaseFailed) as failure:
            compare(expected, _array(), arrays, TOL)
        assert failure.value.check == check
        assert "2.0" not in failure.value.message  # expected values are never shown


def test_compare_structures_and_scalars():
    grads = (np.zeros(2), None)
    compare(grads, {"kind": "tuple", "items": [_array("a"), {"kind": "none"}]},
            {"a": np.zeros(2)}, TOL)  # fmt: skip
    failures = [
        (grads, {"kind": "ndarray", "key": "a"}, "type"),
        (grads, {"kind": "tuple", "items": [_array("a")]}, "type"),
        (grads, {"kind": "tuple", "items": [_array("a"), _array("a")]}, "type"),
        (3, {"kind": "float", "value": 3.0}, "type"),
        (3, {"kind": "int", "value": 4}, "values"),
        (0.5, {"kind": "float", "value": float("nan")}, "not finite"),
        (np.zeros(1), {"kind": "other", "type": "Anything"}, "type"),
    ]
    for expected, got, check in failures:
        with pytest.raises(CaseFailed) as failure:
            compare(expected, got, {"a": np.zeros(2)}, TOL)
        assert failure.value.check == check
    compare(0.5, {"kind": "int", "value": 0}, {}, {"float64": (0, 0.6)})  # an int is a number


def test_inputs_unchanged():
    sent = {"arg0": np.arange(3.0)}
    check_inputs_unchanged(sent, {"arg0": np.arange(3.0)})
    for after in ({"arg0": np.arange(3.0) + 1}, {}, None, {"arg0": np.arange(3)}):
        with pytest.raises(CaseFailed, match="modified its input array arg0"):
            check_inputs_unchanged(sent, after)


def test_every_manifest_generator_exists_and_is_reproducible():
    for exercise in load_manifest():
        assert exercise.generator in GENERATORS
        for index in range(exercise.cases):
            a = make_case(exercise.generator, 5, exercise.id, index)
            b = make_case(exercise.generator, 5, exercise.id, index)
            assert a.describe() == b.describe()
            for x, y in zip(a.args, b.args, strict=True):
                assert not isinstance(x, np.ndarray) or np.array_equal(x, y)


def test_the_runtime_guard_blocks_every_package_the_syntax_check_bans():
    """The sandboxed child cannot import the package, so it keeps its own list of blocked
    packages; every library the syntax check bans must be blocked at run time too. The
    standard modules it bans (routes such as importlib or sys) are the guard's to watch, not
    blocked by name: the two sets must not be confused."""
    import ast
    import sys
    from pathlib import Path

    from cnn_course.grading import policy

    source = (Path(policy.__file__).parent / "_child.py").read_text()
    assigned = next(
        node.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "BLOCKED"
    )
    blocked = set(ast.literal_eval(assigned))
    assert policy.BANNED_LIBRARIES <= blocked, sorted(policy.BANNED_LIBRARIES - blocked)
    assert policy.BANNED_MODULES == policy.BANNED_LIBRARIES | policy.BANNED_ROUTES
    assert not policy.BANNED_LIBRARIES & sys.stdlib_module_names
    removed_from_the_stdlib = {"imp"}  # gone since Python 3.12
    assert policy.BANNED_ROUTES - sys.stdlib_module_names <= removed_from_the_stdlib
