"""The receptive field of a stack of window layers (Araujo, Norris and Sim, Distill 2019).

:class:`ReceptiveField` is public through :mod:`cnn_course.analysis`; it lives here so that
the layers (:mod:`cnn_course.nn`) can trace it without importing the analysis module, which
reads the layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnn_course._checks import nonnegative_pair, positive_pair

__all__ = ["ReceptiveField"]

Pair = tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the units of one feature map, per axis ``(rows, cols)``.

    Attributes
    ----------
    size : (int, int)
        ``r``: how many input pixels one unit sees.
    stride : (int, int)
        Effective stride ``j`` ("jump"): input distance between neighbouring units.
    padding : (int, int)
        Effective padding ``P``: unit ``u`` sees input indices ``u j - P .. u j - P + r - 1``.
    """

    size: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)

    def then(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
    ) -> ReceptiveField:
        """The receptive field after one more window layer (convolution or pooling)."""
        k = positive_pair(kernel_size, "kernel_size", "receptive_field")
        s = positive_pair(stride, "stride", "receptive_field")
        p = nonnegative_pair(padding, "padding", "receptive_field")
        d = positive_pair(dilation, "dilation", "receptive_field")
        return ReceptiveField(
            size=tuple(
                r + (ki - 1) * di * j
                for r, ki, di, j in zip(self.size, k, d, self.stride, strict=True)
            ),
            stride=tuple(j * si for j, si in zip(self.stride, s, strict=True)),
            padding=tuple(
                pp + pi * j for pp, pi, j in zip(self.padding, p, self.stride, strict=True)
            ),
        )

    def union(self, *others: ReceptiveField) -> ReceptiveField:
        """The receptive field of a sum or concatenation of branches: the union of their
        regions (all branches must have the same effective stride to be aligned)."""
        fields = (self, *others)
        if len({f.stride for f in fields}) > 1:
            raise ValueError(
                "receptive_field: branches have different effective strides "
                f"{[f.stride for f in fields]}, their units are not aligned"
            )
        left = tuple(max(f.padding[a] for f in fields) for a in range(2))
        right = tuple(max(f.size[a] - f.padding[a] for f in fields) for a in range(2))
        return ReceptiveField(
            size=(left[0] + right[0], left[1] + right[1]), stride=self.stride, padding=left
        )

    def region(self, unit: Pair) -> tuple[Pair, Pair]:
        """``((first_row, last_row), (first_col, last_col))`` of the input seen by ``unit``."""
        return tuple(
            (u * j - p, u * j - p + r - 1)
            for u, j, p, r in zip(unit, self.stride, self.padding, self.size, strict=True)
        )
