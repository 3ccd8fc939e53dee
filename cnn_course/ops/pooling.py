"""Pooling: max, average, Lp, adaptive, global pooling, unpooling."""

from __future__ import annotations

__all__: list[str] = []
