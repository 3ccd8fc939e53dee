"""Up- and down-sampling: interpolate (nearest, bilinear)."""

from __future__ import annotations

__all__: list[str] = []
