"""Sign-ins that cannot stall the API or be guessed at speed.

A password check is argon2id with 64 MiB: tens of milliseconds of CPU. Run on
the event loop, 64 concurrent bad sign-ins stalled every other request of the
process (in ``modelserve up`` the gateway's streams too), and nothing limited
how fast passwords could be guessed. So:

- checks run on a few threads of their own (``settings.login_workers``), never
  on the loop; a sign-in that would wait behind ``4 x workers`` others is
  answered 429 at once rather than queued without bound;
- failed sign-ins are counted per user name and per client address in a
  sliding window (``login_window_seconds``); past ``login_failures_per_user``
  or ``login_failures_per_address`` that name or address is answered 429 with
  Retry-After until its oldest failure leaves the window, before any password
  is checked. Counts live in this replica's memory, bounded in size: each
  replica enforces the limit on its own share of the traffic.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from modelserve.shared.cache import MAX_ENTRIES
from modelserve.shared.settings import Settings

T = TypeVar("T")
QUEUE_PER_WORKER = 4


class Throttled(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailureWindow:
    """Failures per name in the last ``window`` seconds, at most ``limit`` before 429."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}

    def wait(self, name: str) -> float:
        """Seconds until ``name`` may try again (0: now)."""
        times = self._failures.get(name)
        if not times:
            return 0.0
        now = self._clock()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[name]
            return 0.0
        return times[0] + self._window - now if len(times) >= self._limit else 0.0

    def fail(self, name: str) -> None:
        if name not in self._failures and len(self._failures) >= MAX_ENTRIES:
            self._prune()
        times = self._failures.setdefault(name, deque())
        times.append(self._clock())
        while len(times) > self._limit:
            times.popleft()

    def _prune(self) -> None:
        """Drop the names with no failure left in the window; if none, the oldest half."""
        for name in list(self._failures):
            self.wait(name)
        if len(self._failures) >= MAX_ENTRIES:
            oldest = sorted(self._failures, key=lambda n: self._failures[n][-1])
            for name in oldest[: len(oldest) // 2]:
                del self._failures[name]


class LoginGate:
    """The throttle and the password-checking threads of one API replica."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        window = settings.login_window_seconds
        self.users = FailureWindow(settings.login_failures_per_user, window, clock)
        self.addresses = FailureWindow(settings.login_failures_per_address, window, clock)
        self._workers = settings.login_workers
        self._executor = ThreadPoolExecutor(settings.login_workers, "login")
        self._pending = 0

    def check(self, username: str, address: str) -> None:
        """Raise :class:`Throttled` when this name or address failed too often lately."""
        for what, window, key in (
            ("user name", self.users, username),
            ("client address", self.addresses, address),
        ):
            wait = window.wait(key)
            if wait > 0:
                raise Throttled(
                    f"too many failed sign-ins for this {what}; try again later",
                    max(1, math.ceil(wait)),
                )

    def failed(self, username: str, address: str) -> None:
        self.users.fail(username)
        self.addresses.fail(address)

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` (a password check) on a login thread; 429 when too many wait."""
        if self._pending >= QUEUE_PER_WORKER * self._workers:
            raise Throttled("too many sign-ins at once; try again shortly", 1)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
