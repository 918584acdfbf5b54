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


def test_retry_hint_grows_with_the_queue_and_shrinks_with_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("modelserve.runtime.scheduler.time.monotonic", lambda: clock[0])
    one: Scheduler[int] = Scheduler(1, 10)
    four: Scheduler[int] = Scheduler(4, 10)
    for n in range(8):
        one.offer(n)
        four.offer(n)
    for scheduler in (one, four):
        while (head := scheduler.peek()) is not None:
            scheduler.start(head)
    clock[0] += 2.0
    assert one.retry_after() > four.retry_after() >= 1


def test_a_refusal_never_reports_more_waiting_than_the_queue_holds() -> None:
    """Slots freed at the end of a wave lend their places to the requests about to take
    them; the refusal counts those as running (503 bodies once said 23 of 16 waited)."""
    scheduler: Scheduler[Req] = Scheduler(8, 16)
    jobs = [Req(str(n)) for n in range(24)]
    for job in jobs:
        scheduler.offer(job)
    for job in jobs[:8]:
        assert scheduler.start(job)
    for job in jobs[:6]:  # a wave ends; the engine has not refilled the slots yet
        scheduler.finish(job)
    for n in range(6):
        scheduler.offer(Req(f"late{n}"))
    with pytest.raises(QueueFull, match="8 requests are running and 16 are waiting"):
        scheduler.offer(d)


def test_a_held_head_leaves_no_place_to_free_slots() -> None:
    """While the engine holds the head back for KV room, only ``max_waiting`` wait."""
    scheduler: Scheduler[Req] = Scheduler(4, 2)
    scheduler.offer(a)
    assert scheduler.start(a)
    scheduler.hold()
    scheduler.offer(b)
    scheduler.offer(c)
    with pytest.raises(QueueFull, match="1 requests are running and 2 are waiting"):
        scheduler.offer(d)
    assert scheduler.start(b)  # the engine found room: slots lend places again
    scheduler.offer(d)


def test_the_retry_hint_follows_measured_slot_times_from_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh server does not guess 5 s a request: before any request finished it uses
    the oldest running one's age, afterwards the measured times."""
    clock = [100.0]
    monkeypatch.setattr("modelserve.runtime.scheduler.time.monotonic", lambda: clock[0])
    scheduler: Scheduler[Req] = Scheduler(2, 16)
    for job in (a, b, c, d):
        scheduler.offer(job)
    assert scheduler.start(a) and scheduler.start(b)
    clock[0] += 0.2
    assert scheduler.retry_after() == 1  # 3 x 0.2 s / 2 slots, at least a second
    clock[0] += 0.3
    scheduler.finish(a)
    scheduler.finish(b)
    assert scheduler.start(c) and scheduler.start(d)
    for n in range(12):
        scheduler.offer(Req(str(n)))
    assert scheduler.retry_after() == 4  # (12 waiting + this one) x 0.5 s / 2 slots


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
