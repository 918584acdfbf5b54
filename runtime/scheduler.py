"""Slots and a bounded first-come queue in front of the batched engine.

The engine decodes up to ``slots`` requests together; the rest wait in order.
When the slots and the queue are both full a new request is turned away at once
with a hint of when to retry, rather than piling up without bound.

The bound is slots plus queue, but a free slot lends its place only while the
engine can fill it: when the engine holds the head back until the KV cache has
room (``hold``), free slots lend nothing and at most ``max_waiting`` wait. A
refusal counts requests about to take a free slot as running, so its message
never says more are waiting than the queue holds. The retry hint says when a
queue place is likely free, which is when the soonest running request ends: a
queue place frees only when slots plus queue hold one request fewer, and only a
finish (or a client leaving) does that. Its time left is the mean time in a slot
(a moving average of measured ones) less the oldest running request's age. A
fresh server has no measured time: a request seen running for a while is taken
to be about halfway, so the hint is the oldest one's age, never a guessed
constant. Requests are
offered from the event loop and started by the engine thread, so every method
takes one lock; the scheduler knows nothing about llama.cpp (the engine decides
whether the head of the queue fits the KV cache before it starts it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(RuntimeError):
    """Too many requests are waiting; ``retry_after`` is a hint in whole seconds (>= 1)."""

    def __init__(self, running: int, waiting: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the server is busy: {running} requests are running and {waiting} are waiting "
            f"(the queue holds {limit})"
        )
        self.retry_after = retry_after


class ShuttingDown(QueueFull):
    """The server is stopping: nothing more is queued; retry (elsewhere, or once it is back)."""

    RETRY_SECONDS = 5  # a restarted runtime answers again within seconds

    def __init__(self, reason: str) -> None:
        RuntimeError.__init__(self, reason)
        self.retry_after = self.RETRY_SECONDS


class Scheduler(Generic[T]):
    """FIFO admission to ``slots``; at most ``max_waiting`` more wait behind them."""

    def __init__(
        self, slots: int, max_waiting: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.running = 0
        self._queue: deque[tuple[T, float, int]] = deque()  # item, queued at, slots it needs
        self._started: dict[int, tuple[float, int]] = {}
        self._on_change = on_change or (lambda running, waiting: None)
        self._lock = threading.Lock()
        self._mean_seconds: float | None = None  # moving average of a request's time in a slot
        self._held = False  # the engine keeps the head waiting for KV cells
        self._closed: str | None = None  # why nothing more is admitted (shutting down)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def retry_after(self) -> int:
        """Whole seconds (at least 1) until a queue place is likely free."""
        with self._lock:
            return self._retry_after(time.monotonic())

    def _retry_after(self, now: float) -> int:
        """Until the soonest running request ends, which frees a place (see the module).

        Not the time to drain the queue: the client asks for one place, and the one
        that frees first is as good as any. The oldest running request ends first
        when all take about the mean; one already past the mean may end any moment
        (the minimum hint, 1 s: a wrong guess costs the client one cheap 503).
        """
        oldest = max((now - t for t, _ in self._started.values()), default=0.0)
        mean = self._mean_seconds
        if mean is None:  # nothing finished yet: the oldest is taken to be halfway
            mean = 2 * oldest
        return max(1, math.floor(mean - oldest + 0.5))  # the nearest whole second

    def offer(self, item: T, cost: int = 1) -> None:
        """Queue ``item`` needing ``cost`` slots; QueueFull when slots and queue are all taken."""
        if cost > self.slots:
            raise ValueError(f"{cost} slots asked of {self.slots}")
        with self._lock:
            if self._closed is not None:
                raise ShuttingDown(self._closed)
            free = 0 if self._held else max(0, self.slots - self.running)
            if self.waiting >= free + self.max_waiting:
                lent = min(self.waiting, free)  # about to start: count them as running
                raise QueueFull(
                    self.running + lent,
                    self.waiting - lent,
                    self.max_waiting,
                    self._retry_after(time.monotonic()),
                )
            self._queue.append((item, time.monotonic(), cost))
            self._changed()

    def peek(self) -> T | None:
        """The next request to start, if a slot is free for it."""
        with self._lock:
            if not self._queue or self.running + self._queue[0][2] > self.slots:
                return None
            return self._queue[0][0]

    def close(self, reason: str) -> list[T]:
        """Admit nothing more; returns what was waiting (their clients are told ``reason``)."""
        with self._lock:
            self._closed = reason
            waiting = [item for item, _, _ in self._queue]
            self._queue.clear()
            self._changed()
            return waiting

    def hold(self) -> None:
        """The engine keeps the head waiting (no KV room): free slots lend no places."""
        with self._lock:
            self._held = True

    def start(self, item: T) -> bool:
        """``item`` (the head) takes a slot; False if it left the queue meanwhile."""
        with self._lock:
            if not self._queue or self._queue[0][0] is not item:
                return False
            cost = self._queue[0][2]
            if self.running + cost > self.slots:
                return False
            self._queue.popleft()
            self.running += cost
            self._held = False
            self._started[id(item)] = (time.monotonic(), cost)
            self._changed()
            return True

    def withdraw(self, item: T) -> bool:
        """Take a waiting ``item`` out of the queue (its client left); False if not queued."""
        with self._lock:
            for index, (queued, _, _) in enumerate(self._queue):
                if queued is item:
                    del self._queue[index]
                    self._changed()
                    return True
            return False

    def finish(self, item: T) -> None:
        """``item`` gave its slot back."""
        with self._lock:
            record = self._started.pop(id(item), None)
            if record is None:
                return
            started, cost = record
            self.running -= cost
            self._held = False
            elapsed = time.monotonic() - started
            mean = self._mean_seconds
            self._mean_seconds = elapsed if mean is None else 0.8 * mean + 0.2 * elapsed
            self._changed()

    def _changed(self) -> None:
        self._on_change(self.running, self.waiting)
