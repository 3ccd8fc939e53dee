"""Convolution: conv2d, im2col/col2im, transposed convolution, conv as a matrix."""

from __future__ import annotations

__all__: list[str] = []
