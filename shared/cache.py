"""A small async TTL cache: what a replica read from the database, kept ``ttl`` seconds.

Used for credentials (``auth.guard``) and server records (the gateway). One load
at a time per key (single flight): concurrent misses share it, and a failed
load is never kept. An invalidation during a load wins: that load's value goes
to its waiters but is not kept, so a reader can never store a row it read just
before the change it was told of. Bounded: past ``MAX_ENTRIES`` it starts
afresh, so made-up keys cannot grow memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
MAX_ENTRIES = 10_000


class TtlCache(Generic[K, V]):
    """Values kept for ``ttl`` seconds; one load at a time per key (single flight)."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl, self._clock = ttl, clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._invalidations = 0  # any invalidation: loads begun before it keep nothing

    async def get(self, key: K, load: Callable[[K], Awaitable[V]]) -> V:
        hit = self._values.get(key)
        if hit is not None and self._clock() < hit[0]:
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        began = self._invalidations
        try:
            value = await load(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            if began == self._invalidations:
                if len(self._values) >= MAX_ENTRIES:
                    self._values.clear()  # crude but bounded
                self._values[key] = (self._clock() + self._ttl, value)
            future.set_result(value)
            return value
        finally:
            del self._loading[key]

    def invalidate(self, key: K) -> None:
        """Forget ``key``; safe from another thread (a dict pop and a counter)."""
        self._invalidations += 1
        self._values.pop(key, None)

    def invalidate_where(self, predicate: Callable[[V], bool]) -> None:
        self._invalidations += 1
        for key in [k for k, (_, v) in list(self._values.items()) if predicate(v)]:
            self._values.pop(key, None)
