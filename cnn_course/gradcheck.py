"""Numerical gradients by centred differences (float64), to check every ``*_backward``.

The check used throughout the course: pick a random upstream gradient ``g``, define the
scalar ``L = sum(f(inputs) * g)``, and compare the analytic ``dL/dinput`` returned by the
backward pass with ``(L(x + eps) - L(x - eps)) / (2 eps)`` for every element of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cnn_course.backend import array_module, np, to_numpy

__all__ = ["numerical_gradient", "rel_error", "check_gradients", "GradientCheckError"]


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def numerical_gradient(
    f: Callable[..., Any], inputs: Sequence[Any], grad_out: Any, index: int, eps: float = 1e-6
) -> Any:
    """Centred-difference gradient of ``sum(f(*inputs) * grad_out)`` w.r.t. ``inputs[index]``.

    Parameters
    ----------
    f : callable
        Function of the arrays in ``inputs`` returning one array (same shape as ``grad_out``).
    inputs : sequence of arrays
        float64 arrays; the one at ``index`` is perturbed in a private copy, the caller's
        arrays are never modified.
    grad_out : array
        The upstream gradient, shape of ``f``'s output.
    index : int
        Which input to differentiate.
    eps : float
        Step size; 1e-6 suits float64.

    Returns
    -------
    array, shape of ``inputs[index]``.
    """
    xp = array_module(*inputs)
    args = list(inputs)
    x = args[index].copy()
    args[index] = x
    grad = xp.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i].item()
        flat_x[i] = old + eps
        plus = float(xp.sum(f(*args) * grad_out))
        flat_x[i] = old - eps
        minus = float(xp.sum(f(*args) * grad_out))
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(a: Any, b: Any) -> float:
    """Largest elementwise relative error ``|a - b| / max(|a| + |b|, 1e-8)`` (CS231n's)."""
    a64, b64 = to_numpy(a).astype("float64"), to_numpy(b).astype("float64")
    if a64.shape != b64.shape:
        raise ValueError(f"rel_error: shapes differ, {a64.shape} vs {b64.shape}")
    if a64.size == 0:
        return 0.0
    denom = abs(a64) + abs(b64)
    denom[denom < 1e-8] = 1e-8
    return float((abs(a64 - b64) / denom).max())


def check_gradients(
    f: Callable[..., Any],
    inputs: Sequence[Any],
    analytic: Sequence[Any],
    grad_out: Any,
    names: Sequence[str],
    tol: float = 1e-6,
    eps: float = 1e-6,
) -> dict[str, float]:
    """Compare each analytic gradient with the numerical one; raise on the first mismatch.

    ``analytic[i]`` is the backward pass's gradient for ``inputs[i]`` (``None`` skips it).
    The error names the argument, the worst index and both values. Returns the relative
    error per argument.
    """
    errors = {}
    for i, (name, grad) in enumerate(zip(names, analytic, strict=True)):
        if grad is None:
            continue
        numeric = numerical_gradient(f, inputs, grad_out, i, eps)
        if tuple(grad.shape) != tuple(numeric.shape):
            raise GradientCheckError(
                f"gradient of {name}: analytic shape {tuple(grad.shape)} != input shape "
                f"{tuple(numeric.shape)}"
            )
        err = rel_error(grad, numeric)
        errors[name] = err
        if not err < tol:
            a, n = to_numpy(grad), to_numpy(numeric)
            denom = abs(a) + abs(n)
            denom[denom < 1e-8] = 1e-8
            worst = tuple(
                int(k) for k in np.unravel_index(int((abs(a - n) / denom).argmax()), a.shape)
            )
            raise GradientCheckError(
                f"gradient of {name}: relative error {err:.3g} >= {tol:g} at index {worst}: "
                f"analytic {a[worst]:.10g}, numerical {n[worst]:.10g}"
            )
    return errors
