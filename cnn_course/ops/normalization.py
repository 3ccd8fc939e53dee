"""Normalization layers (batch, layer, group, instance) and feature scaling."""

from __future__ import annotations

__all__: list[str] = []
