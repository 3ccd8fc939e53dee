"""Shared fixtures: the ``xp`` backend fixture, the PyTorch oracle, hypothesis profiles.

- ``xp`` is parametrized over the backends named by ``--backend`` (default: numpy and cupy).
  CuPy cases are skipped, with the reason, where CuPy cannot run (no CUDA device).
- ``torch`` is the oracle. Missing PyTorch skips oracle tests on a laptop, but is an error
  when the environment variable ``CI`` is set: CI must compare against the oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from cnn_course.backend import cupy_problem, use_backend

settings.register_profile(
    "course",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=["numpy", "cupy"],
        help="backend(s) the xp fixture runs on (repeatable; default: numpy and cupy)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xp" in metafunc.fixturenames:
        names = metafunc.config.getoption("--backend") or ["numpy", "cupy"]
        metafunc.parametrize("xp", names, indirect=True)


@pytest.fixture
def xp(request: pytest.FixtureRequest):
    """The array module under test (numpy or cupy)."""
    if request.param == "cupy":
        problem = cupy_problem()
        if problem:
            pytest.skip(f"CuPy backend unavailable: {problem}")
    # New arrays (layer parameters, running statistics) are made on the backend under test.
    with use_backend(request.param) as module:
        yield module


@pytest.fixture(scope="session")
def torch():
    """PyTorch (CPU) as the oracle, in float64 by default comparisons."""
    try:
        import torch as torch_module
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PyTorch oracle: pip install -e '.[oracle]'")
        pytest.skip("PyTorch oracle not installed (pip install -e '.[oracle]')")
    torch_module.set_num_threads(1)
    return torch_module


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test is reproducible."""
    return np.random.default_rng(0)
