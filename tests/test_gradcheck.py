"""The gradient checker must catch a wrong gradient and accept a right one."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course.gradcheck import GradientCheckError, check_gradients, numerical_gradient, rel_error


def test_numerical_gradient_of_a_square_by_hand():
    # L = sum(x**2 * g) with g = 1 has dL/dx = 2x: at x = [1, -2, 3] that is [2, -4, 6].
    x = np.array([1.0, -2.0, 3.0])
    grad = numerical_gradient(lambda a: a**2, [x], np.ones(3), 0)
    np.testing.assert_allclose(grad, [2.0, -4.0, 6.0], rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])  # the input is untouched


def test_rel_error_by_hand():
    assert rel_error(np.array([1.0]), np.array([1.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)


def test_check_gradients_rejects_a_wrong_gradient():
    x = np.array([[0.5, -1.5]])
    g = np.array([[1.0, 2.0]])
    with pytest.raises(GradientCheckError, match=r"gradient of x: .* at index \(0, 1\)"):
        check_gradients(lambda a: a**3, [x], [3 * x**2 * g + np.array([[0.0, 1e-3]])], g, ["x"])
    errors = check_gradients(lambda a: a**3, [x], [3 * x**2 * g], g, ["x"])
    assert errors["x"] < 1e-8
