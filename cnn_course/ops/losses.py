"""Loss functions and weight penalties, with backward passes."""

from __future__ import annotations

__all__: list[str] = []
