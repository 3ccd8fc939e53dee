"""Type names shared by the package: declared once here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Array", "IntPair"]

#: A NumPy or CuPy ndarray (the backend decides which; see :mod:`cnn_course.backend`).
Array = Any
#: An int, or an (h, w) pair of ints.
IntPair = int | Sequence[int]
