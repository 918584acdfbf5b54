"""The runtime's admission: slots, a bounded first-come queue, a retry hint."""

from __future__ import annotations

import pytest

from modelserve.runtime.scheduler import QueueFull, Scheduler


class Req:
    """A request stand-in: the scheduler tells requests apart by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


a, b, c, d = Req("a"), Req("b"), Req("c"), Req("d")


def test_requests_start_in_arrival_order_up_to_the_slots() -> None:
    changes: list[tuple[int, int]] = []
    scheduler: Scheduler[Req] = Scheduler(2, 5, on_change=lambda r, w: changes.append((r, w)))
    for name in (a, b, c, d):
        scheduler.offer(name)
    started = []
    while (head := scheduler.peek()) is not None:
        assert scheduler.start(head)
        started.append(head)
    assert started == [a, b]  # two slots
    assert (scheduler.running, scheduler.waiting) == (2, 2)
    scheduler.finish(a)
    assert scheduler.peek() == c
    assert scheduler.start(c)
    assert changes[-1] == (2, 1)
    assert max(w for _, w in changes) == 4


def test_full_slots_and_queue_are_refused_at_once_with_a_retry_hint() -> None:
    scheduler: Scheduler[Req] = Scheduler(2, 1)
    for name in (a, b, c):
        scheduler.offer(name)
    for name in (a, b):
        assert scheduler.start(name)
    with pytest.raises(QueueFull, match="2 requests are running and 1 are waiting") as refused:
        scheduler.offer(d)
    assert "the queue holds 1" in str(refused.value)
    assert refused.value.retry_after >= 1
    scheduler.finish(a)
    assert scheduler.start(c)
    scheduler.offer(d)  # room again
    assert scheduler.waiting == 1


def test_no_queue_still_admits_while_a_slot_is_free() -> None:
    scheduler: Scheduler[Req] = Scheduler(2, 0)
    scheduler.offer(a)
    scheduler.offer(b)  # the second slot is free: it waits only for the engine thread
    with pytest.raises(QueueFull, match="the queue holds 0"):
        scheduler.offer(c)


def test_a_withdrawn_request_gives_its_place_up_and_cannot_start() -> None:
    scheduler: Scheduler[Req] = Scheduler(1, 2)
    scheduler.offer(a)
    scheduler.offer(b)
    assert scheduler.withdraw(a)
    assert not scheduler.withdraw(a)
    assert not scheduler.start(a)  # it left between peek and start
    assert scheduler.peek() == b
    assert scheduler.start(b)
    assert (scheduler.running, scheduler.waiting) == (1, 0)


def test_only_the_head_starts_and_finishing_twice_counts_once() -> None:
    scheduler: Scheduler[Req] = Scheduler(2, 2)
    scheduler.offer(a)
    scheduler.offer(b)
    assert not scheduler.start(b)
    assert scheduler.start(a)
    scheduler.finish(a)
    scheduler.finish(a)
    assert scheduler.running == 0


def test_retry_hint_grows_with_the_queue_and_shrinks_with_slots() -> None:
    one: Scheduler[int] = Scheduler(1, 10)
    four: Scheduler[int] = Scheduler(4, 10)
    for n in range(8):
        one.offer(n)
        four.offer(n)
    assert one.retry_after() > four.retry_after() >= 1


def test_a_request_for_several_choices_takes_as_many_slots() -> None:
    scheduler: Scheduler[Req] = Scheduler(4, 5)
    scheduler.offer(a)
    scheduler.offer(b, cost=3)
    assert scheduler.start(a)
    assert scheduler.peek() is b and scheduler.start(b)
    assert scheduler.running == 4
    scheduler.offer(c, cost=2)
    assert scheduler.peek() is None  # all four slots are busy
    scheduler.finish(a)
    assert scheduler.peek() is None  # one free slot is not enough for two choices
    scheduler.finish(b)
    assert scheduler.peek() is c and scheduler.start(c)
    assert scheduler.running == 2
    with pytest.raises(ValueError):
        scheduler.offer(d, cost=5)
