"""Helpers shared by the operation tests: input layouts, comparisons, hypothesis settings."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cnn_course.backend import to_numpy

# The ``xp`` fixture is function-scoped but holds no state, so it is safe across examples.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
LAYOUTS = st.sampled_from(["contiguous", "strided", "fortran"])


def examples(n: int) -> settings:
    """Hypothesis settings: ``n`` examples; the ``xp`` fixture is safe to share across them."""
    return settings(max_examples=n, suppress_health_check=[HealthCheck.function_scoped_fixture])


def laid_out(xp, a, layout: str):
    """``a`` (host array) on ``xp`` as a contiguous, strided (``[..., ::2]``) or
    Fortran-ordered (transposed memory) array with the same values."""
    a = xp.asarray(a)
    if layout == "strided":
        big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return xp.asfortranarray(a) if layout == "fortran" else a


def assert_close(actual, expected, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    """``actual`` (either backend) equals ``expected`` (array of either backend, or nested
    lists) within the tolerances."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)
