"""The runtime's queue: first come first served, bounded, counted."""

from __future__ import annotations

import asyncio

import pytest

from modelserve.runtime.scheduler import QueueFull, Scheduler


async def test_requests_run_one_at_a_time_in_arrival_order() -> None:
    changes: list[tuple[int, int]] = []
    scheduler = Scheduler(max_waiting=5, on_change=lambda r, w: changes.append((r, w)))
    order: list[int] = []
    gate = asyncio.Event()

    async def request(n: int) -> None:
        async with scheduler.slot():
            order.append(n)
            assert scheduler.running == 1
            await gate.wait()

    tasks = [asyncio.create_task(request(n)) for n in range(4)]
    await asyncio.sleep(0.01)
    assert (scheduler.running, scheduler.waiting) == (1, 3)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert (scheduler.running, scheduler.waiting) == (0, 0)
    assert changes[-1] == (0, 0)
    assert max(w for _, w in changes) == 3


async def test_full_queue_is_refused_at_once_with_a_retry_hint() -> None:
    scheduler = Scheduler(max_waiting=1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with scheduler.slot():
            await hold.wait()

    first = asyncio.create_task(holder())
    second = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull, match="1 are waiting") as refused:
        async with scheduler.slot():
            pass
    assert refused.value.retry_after >= 1
    hold.set()
    await asyncio.gather(first, second)
    async with scheduler.slot():  # free again
        assert scheduler.running == 1


async def test_a_cancelled_waiter_gives_its_place_up() -> None:
    scheduler = Scheduler(max_waiting=1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with scheduler.slot():
            await hold.wait()

    first = asyncio.create_task(holder())
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert scheduler.waiting == 0
    hold.set()
    await first
