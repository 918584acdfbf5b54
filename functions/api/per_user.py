"""A bound on how many of one kind of request each user may have open at once.

``/events`` streams live as long as their client wants and each holds a queue
of snapshots; ``/series`` may ask Prometheus for an hour of several series. One
user (or one stolen token) opening hundreds of either must not take the API's
memory or Prometheus down for everyone: past ``limit`` open ones, 429 with
Retry-After. Counted per replica, in memory.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

from fastapi import HTTPException

RETRY_SECONDS = "5"


class PerUserLimit:
    def __init__(self, what: str, limit: int) -> None:
        self._what, self._limit = what, limit
        self._open: Counter[str] = Counter()

    def open(self, user: str) -> Slot:
        """Take one of ``user``'s places, or raise 429 when they hold them all."""
        if self._open[user] >= self._limit:
            raise HTTPException(
                429,
                f"{user!r} already has {self._limit} {self._what} open; close one first",
                headers={"Retry-After": RETRY_SECONDS},
            )
        self._open[user] += 1
        return Slot(self, user)

    def _close(self, user: str) -> None:
        self._open[user] -= 1
        if self._open[user] <= 0:
            del self._open[user]


class Slot:
    """One open place; ``close`` (or the collection of ``owner_of``) gives it back once."""

    def __init__(self, limit: PerUserLimit, user: str) -> None:
        self._limit, self._user, self._closed = limit, user, False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._limit._close(self._user)

    def held_by(self, owner: Any) -> None:
        """Give the place back when ``owner`` (a stream never iterated) is collected."""
        weakref.finalize(owner, self.close)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
