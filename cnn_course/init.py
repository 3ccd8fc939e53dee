"""Weight initialisation, with the names, arguments and formulas of ``torch.nn.init``.

Each ``*_`` function fills an array (NumPy or CuPy) or a :class:`cnn_course.nn.Parameter` in
place and returns it. The random numbers come from a NumPy ``Generator`` on the host (pass
``generator=`` a ``Generator`` or an int seed; ``None`` draws fresh entropy), so a seed gives
the same weights on every backend; they are then copied into the target array once.

The variance-preserving rules, for a weight of shape ``(fan_out, fan_in)`` or
``(C_out, C_in, kh, kw)`` (``fan_in = C_in kh kw``, ``fan_out = C_out kh kw``):

- Xavier/Glorot: ``Var(w) = gain^2 * 2 / (fan_in + fan_out)``, keeping the activation and the
  gradient variance both roughly constant for a linear or tanh network.
- Kaiming/He: ``Var(w) = gain^2 / fan`` with ``gain = sqrt(2)`` for ReLU, which halves the
  variance (it zeroes half the inputs); ``mode`` picks ``fan_in`` (forward pass) or
  ``fan_out`` (backward pass).

A uniform ``U(-b, b)`` has variance ``b^2 / 3``, hence the bounds ``b = sqrt(3) * std``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cnn_course.backend import array_module, is_cupy_array, np

__all__ = [
    "calculate_gain",
    "calculate_fan_in_and_fan_out",
    "uniform_",
    "normal_",
    "zeros_",
    "ones_",
    "constant_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_std",
    "kaiming_std",
]

Generator = np.random.Generator | int | None

_LINEAR_GAINS = (
    "linear",
    "identity",
    "sigmoid",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    linear, conv and sigmoid: 1; tanh: 5/3; relu: sqrt(2); leaky_relu with slope ``param``
    (default 0.01): sqrt(2 / (1 + slope^2)); selu: 3/4.
    """
    if nonlinearity in _LINEAR_GAINS:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape ``(out, in, *kernel)``: each times the kernel
    area. Needs at least 2 dimensions (a bias has no fan-out)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            f"calculate_fan_in_and_fan_out: need a weight with at least 2 dimensions, "
            f"got shape {shape}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _target(tensor: Any, op: str) -> Any:
    """The array to fill: ``tensor`` itself, or a Parameter's ``.data``."""
    array = tensor if _is_array(tensor) else getattr(tensor, "data", None)
    if not _is_array(array) or array.dtype.kind != "f":
        raise TypeError(
            f"{op}: tensor must be a floating-point array or a Parameter, got "
            f"{type(tensor).__name__}"
        )
    return array


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or is_cupy_array(a)


def _fill(tensor: Any, op: str, draw: Callable[[tuple[int, ...]], Any]) -> Any:
    """Fill ``tensor`` (array or Parameter) in place with the host values ``draw(shape)``
    (copied to the device once); return ``tensor``."""
    array = _target(tensor, op)
    array[...] = array_module(array).asarray(draw(array.shape), dtype=array.dtype)
    return tensor


def _rng(generator: Generator) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def _fan(shape: tuple[int, ...], mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, generator: Generator = None) -> Any:
    """Fill with samples of ``U(a, b)``."""
    return _fill(tensor, "uniform_", lambda shape: _rng(generator).uniform(a, b, size=shape))


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, generator: Generator = None) -> Any:
    """Fill with samples of ``N(mean, std^2)``."""
    return _fill(tensor, "normal_", lambda shape: _rng(generator).normal(mean, std, size=shape))


def _uniform_with_std(tensor: Any, std: float, generator: Generator) -> Any:
    """``U(-b, b)`` with ``b = sqrt(3) * std``: the uniform distribution of that std."""
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def _constant(tensor: Any, val: float, op: str) -> Any:
    _target(tensor, op)[...] = val
    return tensor


def constant_(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    return _constant(tensor, val, "constant_")


def zeros_(tensor: Any) -> Any:
    """Fill with 0."""
    return _constant(tensor, 0.0, "zeros_")


def ones_(tensor: Any) -> Any:
    """Fill with 1."""
    return _constant(tensor, 1.0, "ones_")


def xavier_uniform_(tensor: Any, gain: float = 1.0, generator: Generator = None) -> Any:
    """Glorot uniform: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    std = xavier_std(_target(tensor, "xavier_uniform_").shape, gain)
    return _uniform_with_std(tensor, std, generator)


def xavier_normal_(tensor: Any, gain: float = 1.0, generator: Generator = None) -> Any:
    """Glorot normal: ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    return normal_(
        tensor, 0.0, xavier_std(_target(tensor, "xavier_normal_").shape, gain), generator
    )


def xavier_std(shape: tuple[int, ...], gain: float = 1.0) -> float:
    """Standard deviation of Xavier (Glorot) initialisation of a weight of ``shape``:
    ``gain * sqrt(2 / (fan_in + fan_out))``. The uniform variant draws from ``U(-b, b)`` with
    ``b = sqrt(3) * std`` (the variance of ``U(-b, b)`` is ``b**2 / 3``)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tuple(shape))
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(
    shape: tuple[int, ...], a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> float:
    """Standard deviation of Kaiming (He) initialisation of a weight of ``shape``:
    ``gain / sqrt(fan)``, ``fan`` chosen by ``mode``; ``U(-b, b)`` with ``b = sqrt(3) * std``
    for the uniform variant."""
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tuple(shape), mode))


def kaiming_uniform_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator = None,
) -> Any:
    """He uniform: ``U(-b, b)``, ``b = gain * sqrt(3 / fan)``, ``gain = calculate_gain
    (nonlinearity, a)``. PyTorch's default for Conv2d/Linear weights is ``a = sqrt(5)``,
    which gives ``b = 1 / sqrt(fan_in)``."""
    std = kaiming_std(_target(tensor, "kaiming_uniform_").shape, a, mode, nonlinearity)
    return _uniform_with_std(tensor, std, generator)


def kaiming_normal_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator = None,
) -> Any:
    """He normal: ``N(0, std^2)``, ``std = gain / sqrt(fan)``."""
    std = kaiming_std(_target(tensor, "kaiming_normal_").shape, a, mode, nonlinearity)
    return normal_(tensor, 0.0, std, generator)
