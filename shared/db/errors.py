"""What repository and lifecycle calls raise: their own types, not SQLAlchemy's."""

from __future__ import annotations


class NotFound(LookupError):
    """No row with that key."""


class Conflict(ValueError):
    """A unique value is already taken by another row."""
