"""Token budgets at the gateway: past a key's or a user's tokens per UTC day, 429.

Exact within one request's prompt under concurrency: on each replica, metered
requests of a budgeted key or user pass one at a time (a lock per budget), and
each is admitted only while the day's figure is below the limit, and only if
its worst case fits in what is left (``Ticket.left``: the gateway refuses a
request whose ``n`` x prompts x ``max_tokens`` exceeds it, and gives one that
names no limit ``max_tokens`` = what is left / choices). So a request's answer
cannot take a budget past its limit; only its prompt (bounded by the body
limit) is counted after it ran. The runtime runs one generation at a time
anyway, so this costs no throughput; what it buys is that no two requests can
both start on the last remaining tokens.

The day's figure is the database's sum (read again every ``ttl`` seconds, while
the recorder is not writing) plus what this replica recorded and has not
written yet, plus what it recorded since that read. Other replicas' last
unwritten batch (at most the recorder's interval) is seen at their next write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.usage import UsageRecorder
from modelserve.shared.auth.guard import Budget
from modelserve.shared.db import repo

WAIT_SECONDS = 120.0


class OverBudget(Exception):
    def __init__(self, budget: Budget, spent: int, retry_after: int) -> None:
        super().__init__(
            f"the {budget.scope} {budget.name!r} used {spent} of its "
            f"{budget.tokens_per_day} tokens for today (UTC)"
        )
        self.budget, self.spent, self.retry_after = budget, spent, retry_after


@dataclass
class _Figure:
    day: dt.datetime
    tokens: int
    read_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_midnight() -> int:
    return max(1, int((_today() + dt.timedelta(days=1) - dt.datetime.now(dt.UTC)).total_seconds()))


class Ticket:
    """Held while an admitted request runs; ``done`` adds its tokens and lets the next in."""

    def __init__(self, figures: list[_Figure], left: int) -> None:
        self._figures = figures
        # Tokens this request may still spend: the gateway holds its worst case
        # (choices x max_tokens) within this, so no request runs far past a budget.
        self.left = left

    def done(self, tokens: int) -> None:
        for figure in self._figures:
            figure.tokens += tokens
            figure.lock.release()
        self._figures = []


class BudgetGate:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        recorder: UsageRecorder,
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions, self._recorder, self._ttl, self._clock = sessions, recorder, ttl, clock
        self._figures: dict[tuple[str, str], _Figure] = {}

    async def admit(self, budgets: tuple[Budget, ...]) -> Ticket:
        """Wait for this budget's turn; raises :class:`OverBudget` when none is left."""
        held: list[_Figure] = []
        left: int | None = None
        try:
            for budget in sorted(budgets, key=lambda b: (b.scope, b.name)):  # one lock order
                figure = self._figures.setdefault(
                    (budget.scope, budget.name), _Figure(_today(), 0, float("-inf"))
                )
                await asyncio.wait_for(figure.lock.acquire(), WAIT_SECONDS)
                held.append(figure)
                await self._refresh(budget, figure)
                if figure.tokens >= budget.tokens_per_day:
                    raise OverBudget(budget, figure.tokens, seconds_to_midnight())
                remaining = budget.tokens_per_day - figure.tokens
                left = remaining if left is None else min(left, remaining)
        except BaseException:
            for figure in held:
                figure.lock.release()
            raise
        return Ticket(held, left or 0)

    async def _refresh(self, budget: Budget, figure: _Figure) -> None:
        today = _today()
        if figure.day == today and self._clock() < figure.read_at + self._ttl:
            return
        which = {"key_id": budget.name} if budget.scope == "key" else {"username": budget.name}
        async with self._recorder.writing:
            async with self._sessions() as session:
                written = await repo.tokens_since(session, today, **which)
            local = self._recorder.unflushed(
                today, key_id=which.get("key_id"), user=which.get("username")
            )
        figure.day, figure.tokens, figure.read_at = today, written + local, self._clock()
