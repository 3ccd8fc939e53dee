"""The backend switch: NumPy in, NumPy out; a clear error where CuPy cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course import backend
from cnn_course.backend import (
    BackendUnavailableError,
    array_module,
    asarray,
    available_backends,
    get_backend,
    set_backend,
    to_numpy,
    use_backend,
)


def test_numpy_in_numpy_out():
    assert array_module(np.zeros(3), np.ones(2)) is np
    assert array_module() is np


def test_array_module_follows_the_inputs(xp):
    assert array_module(xp.zeros(3)) is xp


def test_default_backend_is_numpy(monkeypatch):
    monkeypatch.delenv("CNN_COURSE_BACKEND", raising=False)
    monkeypatch.setattr(backend, "_current", None)
    assert get_backend() == "numpy"
    assert isinstance(asarray([1.0, 2.0]), np.ndarray)


def test_environment_variable_chooses_the_backend(monkeypatch):
    monkeypatch.setenv("CNN_COURSE_BACKEND", "NumPy")
    monkeypatch.setattr(backend, "_current", None)
    assert get_backend() == "numpy"


def test_use_backend_restores_the_previous_choice():
    set_backend("numpy")
    with use_backend("numpy") as xp:
        assert xp is np
    assert get_backend() == "numpy"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend("tensorflow")


@pytest.mark.skipif("cupy" in available_backends(), reason="this machine has a working GPU")
def test_cupy_without_gpu_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "_current", "numpy")
    with pytest.raises(BackendUnavailableError, match="Fall back to NumPy"):
        set_backend("cupy")
    assert get_backend() == "numpy"


@pytest.mark.skipif("cupy" in available_backends(), reason="this machine has a working GPU")
def test_bad_environment_variable_gives_the_same_clear_error(monkeypatch):
    monkeypatch.setenv("CNN_COURSE_BACKEND", "cupy")
    monkeypatch.setattr(backend, "_current", None)
    with pytest.raises(BackendUnavailableError, match="cupy"):
        get_backend()


def test_to_numpy_round_trip(xp):
    a = xp.arange(6.0).reshape(2, 3)
    host = to_numpy(a)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [[0, 1, 2], [3, 4, 5]])


def test_numpy_is_only_imported_by_the_backend():
    """The lint rule behind DESIGN section 2, checked here too so a plain pytest run sees it."""
    import ast
    import pathlib

    package = pathlib.Path(backend.__file__).parent
    # bench.py compares with PyTorch; the grader's child runs where cnn_course is blocked
    allowed = {"backend.py", "bench.py", "_child.py"}
    offenders = []
    for path in package.rglob("*.py"):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n.split(".")[0] in {"numpy", "cupy", "torch"} for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []
