"""The runtime's admission: slots, a bounded first-come queue, a retry hint."""

from __future__ import annotations

import pytest

from modelserve.runtime.scheduler import QueueFull, Scheduler
from support.reliability import retry_hint_within_twice


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


class Clock:
    """The scheduler's clock, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr("modelserve.runtime.scheduler.time.monotonic", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_before_anything_finished_the_hint_is_the_oldest_requests_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh server does not guess 5 s a request (nor multiply it by the queue): a
    request seen running for a while is taken to be about halfway through."""
    clock = Clock(monkeypatch)
    scheduler: Scheduler[Req] = Scheduler(2, 16)
    for job in (a, b, c, d):
        scheduler.offer(job)
    assert scheduler.start(a)
    clock.advance(0.2)
    assert scheduler.start(b)
    assert scheduler.retry_after() == 1  # 0.2 s so far: the minimum, 1 s
    clock.advance(2.8)
    assert scheduler.retry_after() == 3  # the oldest has run 3 s: about 3 s more
    for n in range(12):
        scheduler.offer(Req(str(n)))
    assert scheduler.retry_after() == 3  # the queue's length does not matter


def test_the_hint_is_the_time_left_to_the_soonest_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """After requests finished, the measured time in a slot less the oldest running one's
    age: when it ends its slot frees and so does a queue place (not the whole queue's
    drain, which a fresh 2-slot server once put at 13 x 5 s / 2 = 33 s)."""
    clock = Clock(monkeypatch)
    scheduler: Scheduler[Req] = Scheduler(2, 16)
    for job in (a, b, c, d):
        scheduler.offer(job)
    assert scheduler.start(a) and scheduler.start(b)
    clock.advance(6.0)
    scheduler.finish(a)  # both took 6 s: the mean is 6 s
    scheduler.finish(b)
    assert scheduler.start(c)
    clock.advance(2.0)
    assert scheduler.start(d)
    for n in range(16):
        scheduler.offer(Req(str(n)))
    with pytest.raises(QueueFull) as refused:
        scheduler.offer(Req("late"))
    assert refused.value.retry_after == 4  # c has run 2 of about 6 s
    assert scheduler.retry_after() == 4
    clock.advance(3.4)
    assert scheduler.retry_after() == 1  # 0.6 s left: the nearest whole second, at least 1
    clock.advance(5.0)
    assert scheduler.retry_after() == 1  # c is past the mean: it may end any moment


def test_the_measured_time_in_a_slot_is_a_moving_average(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slow requests once do not keep the hint long: the average follows what requests
    take now (recent ones weigh most)."""
    clock = Clock(monkeypatch)
    scheduler: Scheduler[Req] = Scheduler(1, 4)

    def run(job: Req, seconds: float) -> None:
        scheduler.offer(job)
        assert scheduler.start(job)
        clock.advance(seconds)
        scheduler.finish(job)

    run(a, 20.0)
    scheduler.offer(b)
    assert scheduler.start(b)
    assert scheduler.retry_after() == 20
    scheduler.finish(b)
    for n in range(20):
        run(Req(str(n)), 2.0)
    scheduler.offer(c)
    assert scheduler.start(c)
    assert scheduler.retry_after() == 2


def test_under_steady_load_every_hint_is_within_twice_the_real_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A simulated crowd keeps 4 slots and a 16-deep queue full for a minute; requests
    take 1.5 to 3.5 s. Each refusal's real wait is the time until a queue place frees:
    the next finish (nothing else frees one). Once one request has finished, every hint
    is within 2x by support.reliability's rule (a wait under 1 s counts as 1 s, the
    shortest hint the header can say)."""
    clock = Clock(monkeypatch)
    scheduler: Scheduler[Req] = Scheduler(4, 16)
    durations = [1.5, 2.0, 3.5, 2.5, 3.0]  # a fixed cycle: no randomness
    ends: dict[Req, float] = {}
    refusals: list[tuple[float, int]] = []
    finishes: list[float] = []
    started = 0
    for tick in range(600):  # 0.1 s steps
        for job, end in list(ends.items()):
            if end <= clock.now:
                scheduler.finish(job)
                finishes.append(clock.now)
                del ends[job]
        while (head := scheduler.peek()) is not None:
            assert scheduler.start(head)
            started += 1
            ends[head] = clock.now + durations[started % len(durations)]
        with pytest.raises(QueueFull) as refused:
            for n in range(30):  # more than fit: the crowd
                scheduler.offer(Req(f"{tick}.{n}"))
        refusals.append((clock.now, refused.value.retry_after))
        clock.advance(0.1)
    judged = [
        (hint, min(f for f in finishes if f > when) - when)
        for when, hint in refusals
        if finishes[0] <= when < finishes[-1]
    ]
    assert len(judged) > 500
    assert all(retry_hint_within_twice(hint, real) for hint, real in judged), [
        j for j in judged if not retry_hint_within_twice(*j)
    ][:5]


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
