"""One generation at a time, the rest wait in a bounded first-come queue.

llama.cpp's context serves one request at a time. llama-cpp-python's own server
answers by cutting a running stream short when a new request arrives; here a new
request waits its turn instead, and when too many already wait it is turned away
at once with a hint of when to retry, rather than piling up without bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class QueueFull(RuntimeError):
    """Too many requests are waiting; ``retry_after`` is a hint in seconds."""

    def __init__(self, waiting: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the server is busy: one request is running and {waiting} are waiting "
            f"(the queue holds {limit})"
        )
        self.retry_after = retry_after


class Scheduler:
    """A FIFO lock with a bounded number of waiters (asyncio.Lock wakes in order)."""

    def __init__(
        self, max_waiting: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0
        self.running = 0
        self._on_change = on_change or (lambda running, waiting: None)
        self._lock = asyncio.Lock()
        self._mean_seconds = 5.0  # moving average of a request's time holding the model

    def retry_after(self) -> int:
        return max(1, math.ceil((self.waiting + 1) * self._mean_seconds))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the model for one request; raise QueueFull when the queue is full."""
        if self._lock.locked() and self.waiting >= self.max_waiting:
            raise QueueFull(self.waiting, self.max_waiting, self.retry_after())
        self._set(waiting=self.waiting + 1)
        try:
            await self._lock.acquire()
        finally:
            self._set(waiting=self.waiting - 1)
        self._set(running=self.running + 1)
        started = time.monotonic()
        try:
            yield
        finally:
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)
            self._lock.release()
            self._set(running=self.running - 1)

    def _set(self, *, running: int | None = None, waiting: int | None = None) -> None:
        if running is not None:
            self.running = running
        if waiting is not None:
            self.waiting = waiting
        self._on_change(self.running, self.waiting)
