"""The owner's channel now lives in :mod:`._hub.owner`; this name is kept until the imports move."""

from __future__ import annotations

from ._hub import LocalChannel

__all__ = ["LocalChannel"]
