"""The NumPy/CuPy backend switch: the only module that imports numpy or cupy.

Operations never choose a library themselves. They ask :func:`array_module` which library
owns their inputs (NumPy in, NumPy out; CuPy in, CuPy out), as ``cupy.get_array_module``
does. The global backend (:func:`set_backend`, :func:`use_backend`, the environment variable
``CNN_COURSE_BACKEND``) only decides where *new* arrays are made: data loading, parameter
initialisation, :func:`asarray`.

``np`` is re-exported for host-side work that is NumPy by definition (reading files,
building test cases, comparing results on the host).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "np",
    "array_module",
    "get_backend",
    "set_backend",
    "use_backend",
    "available_backends",
    "backend_module",
    "asarray",
    "to_numpy",
    "is_cupy_array",
    "cupy_problem",
    "BackendUnavailableError",
]

_NAMES = ("numpy", "cupy")
_current: str | None = None


class BackendUnavailableError(RuntimeError):
    """CuPy was asked for but no working CUDA device and CuPy installation were found."""


def _import_cupy() -> ModuleType | None:
    """Return the cupy module if it is installed, else None (never raises)."""
    try:
        return importlib.import_module("cupy")
    except Exception:  # a broken CUDA install raises more than ImportError
        return None


def cupy_problem() -> str | None:
    """Why CuPy cannot be used here (a sentence a person can act on), or None if it can."""
    cupy = _import_cupy()
    if cupy is None:
        return "CuPy is not installed (pip install 'cnn-course[gpu]' on a machine with CUDA 12)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or unusable
        return f"CuPy is installed but no CUDA driver works ({type(exc).__name__}: {exc})"
    if count == 0:
        return "CuPy is installed but no CUDA device is visible"
    try:
        cupy.zeros(1).sum().item()
    except Exception as exc:  # a device that is visible but cannot run a kernel
        return f"CuPy cannot run a kernel on the GPU ({type(exc).__name__}: {exc})"
    return None


def available_backends() -> list[str]:
    """Names of the backends that work on this machine: always ``"numpy"``, plus ``"cupy"``
    when CuPy is installed and can run a kernel on a CUDA device."""
    return ["numpy"] + ([] if cupy_problem() else ["cupy"])


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in _NAMES:
        raise ValueError(f"backend must be one of {_NAMES}, got {name!r}")
    name = name.lower()
    if name == "cupy":
        problem = cupy_problem()
        if problem:
            raise BackendUnavailableError(
                f"the 'cupy' backend is unavailable: {problem}. Fall back to NumPy with "
                "set_backend('numpy') or unset CNN_COURSE_BACKEND."
            )
    return name


def get_backend() -> str:
    """Name of the backend new arrays are created on (``CNN_COURSE_BACKEND``, default numpy)."""
    global _current
    if _current is None:
        _current = _check_name(os.environ.get("CNN_COURSE_BACKEND", "numpy") or "numpy")
    return _current


def set_backend(name: str) -> None:
    """Choose where new arrays are created: ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        For an unknown name.
    BackendUnavailableError
        For ``"cupy"`` on a machine without a working CUDA device.
    """
    global _current
    _current = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """Context manager: create new arrays on ``name`` inside the block, yielding its module."""
    global _current
    previous = get_backend()
    _current = _check_name(name)
    try:
        yield backend_module()
    finally:
        _current = previous


def backend_module(name: str | None = None) -> ModuleType:
    """The array module of ``name`` (default: the current backend)."""
    name = get_backend() if name is None else _check_name(name)
    return np if name == "numpy" else importlib.import_module("cupy")


def is_cupy_array(a: Any) -> bool:
    """True for a ``cupy.ndarray``, without importing CuPy."""
    kind = type(a)
    # every operation asks this several times per call: answer NumPy arrays at once
    return kind is not np.ndarray and kind.__module__.split(".")[0] == "cupy"


def array_module(*arrays: Any) -> ModuleType:
    """The module (numpy or cupy) that owns ``arrays``, as ``cupy.get_array_module`` does.

    Any CuPy array among them makes it CuPy; otherwise NumPy. Mixing is caught where the
    operation combines them.
    """
    for a in arrays:
        if is_cupy_array(a):
            return importlib.import_module("cupy")
    return np


def asarray(a: Any, dtype: Any = None) -> Any:
    """Convert ``a`` to an array of the current backend (copying across devices if needed)."""
    xp = backend_module()
    if xp is np and is_cupy_array(a):
        a = a.get()
    return xp.asarray(a, dtype=dtype)


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy (or view) of ``a`` on the host, whatever backend it lives on."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)
