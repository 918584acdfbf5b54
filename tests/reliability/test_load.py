"""Load: 100 and 300 concurrent streaming clients through the gateway, 200 open ``/events``.

``modelserve up`` serves the demo model (4 slots, a 16-deep queue); 100 (then 300) clients
stream chat completions through its gateway for ``--load-seconds`` (``LOAD_S``),
each honouring ``Retry-After`` when told the server is busy. Meanwhile 200
``/events`` streams stay open and ``GET /servers`` is timed.

Checked: no request that should have succeeded failed (a busy answer is a 503
with ``Retry-After``, counted apart); every /events stream stayed open; and
afterwards the up process and the runtime hold no more file descriptors, threads
or memory than before (beyond a small allowance). p50/p99 go into the table,
with how many Retry-After hints were within 2x of the real wait and their median
ratio (support.reliability's rule: a wait under 1 s counts as 1 s).

The real wait of a busy answer is the time from its arrival until the server
would next admit a request. The queue has room exactly when slots plus queue hold
fewer than their bound, and only a request ending lowers that (these clients
never leave early), so it is the time to the first stream that ends after the
503: every stream is one of these clients', and each sees its end a few ms after
its slot freed. Sampling the runtime's running/waiting gauges would miss most of
those moments: under this crowd a freed place is taken again within
milliseconds, far inside any sampling interval, and the samples would add load
to the 2 cores being measured.

The 2x rule is reported, not asserted: timings on a loaded shared machine are no
test (the project's rule); the estimator is held to it with a clock in
tests/unit/test_scheduler.py. Asserted here is what does not depend on timing.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from modelserve.shared.net import free_port
from support.reliability import Recorder, retry_hint_ratio, retry_hint_within_twice
from support.stack import stack

pytestmark = pytest.mark.reliability("load")
EVENT_STREAMS = 200
WAITING = re.compile(r"(\d+) are waiting \(the queue holds (\d+)\)")


@dataclass
class Tally:
    ok: list[tuple[float, float, float]] = field(default_factory=list)  # sent, ttfb, total
    busy: list[tuple[float, int]] = field(default_factory=list)  # answered at, Retry-After
    waiting: list[tuple[int, int]] = field(default_factory=list)  # (said waiting, queue)
    failures: list[str] = field(default_factory=list)


def snapshot(process: psutil.Process) -> dict[str, float]:
    with process.oneshot():
        return {
            "fds": process.num_fds(),
            "threads": process.num_threads(),
            "rss_mb": process.memory_info().rss / 2**20,
        }


GROWTH_ALLOWED = {"fds": 20, "threads": 8, "rss_mb": 100}


def within_allowance(before: dict[str, float], after: dict[str, float]) -> bool:
    """No more file descriptors, threads or memory than before, beyond a small slack."""
    return all(after[k] - before[k] <= allowed for k, allowed in GROWTH_ALLOWED.items())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def real_waits(tally: Tally) -> list[tuple[int, float]]:
    """(Retry-After, real wait) per busy answer: until the first stream ended after it."""
    ends = sorted(sent + total for sent, _, total in tally.ok)
    waits = []
    for answered, hint in tally.busy:
        later = bisect.bisect_right(ends, answered)
        if later < len(ends):  # the last ones, after every stream ended, have none
            waits.append((hint, ends[later] - answered))
    return waits


async def client(http: httpx.AsyncClient, url: str, until: float, tally: Tally) -> None:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
        "stream": True,
    }
    while time.monotonic() < until:
        sent = time.monotonic()
        try:
            async with http.stream("POST", url, json=body) as answer:
                if answer.status_code == 503:
                    retry = int(answer.headers["Retry-After"])
                    tally.busy.append((time.monotonic(), retry))
                    said = WAITING.search((await answer.aread()).decode(errors="replace"))
                    if said:
                        tally.waiting.append((int(said[1]), int(said[2])))
                    await asyncio.sleep(retry)
                    continue
                if answer.status_code != 200:
                    tally.failures.append(f"{answer.status_code}: {(await answer.aread())[:200]!r}")
                    continue
                ttfb, last = None, ""
                async for line in answer.aiter_lines():
                    if line:
                        ttfb = ttfb or time.monotonic() - sent
                        last = line
                if last != "data: [DONE]":
                    tally.failures.append(f"stream ended with {last[:200]!r}")
                    continue
                tally.ok.append((sent, ttfb or 0.0, time.monotonic() - sent))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            tally.failures.append(f"{type(exc).__name__}: {exc}")


async def event_stream(http: httpx.AsyncClient, url: str, stop: asyncio.Event) -> str | None:
    """Hold ``/events`` open until ``stop``; the error, if it broke."""

    async def drain(answer: httpx.Response) -> None:
        async for _ in answer.aiter_bytes():
            pass

    try:
        async with http.stream("GET", url) as answer:
            if answer.status_code != 200:
                return f"/events answered {answer.status_code}"
            reading = asyncio.create_task(drain(answer))
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                stopped.cancel()
                return f"/events ended early: {reading.exception()!r}"
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    except httpx.HTTPError as exc:
        return f"/events broke: {type(exc).__name__}: {exc}"
    return None


async def timed_listing(http: httpx.AsyncClient, url: str, stop: asyncio.Event) -> list[float]:
    timings = []
    while not stop.is_set():
        started = time.monotonic()
        answer = await http.get(url)
        assert answer.status_code == 200
        timings.append(time.monotonic() - started)
        await asyncio.sleep(0.2)
    return timings


@pytest.mark.parametrize("clients", [100, 300])
async def test_load_through_the_gateway(
    tmp_path: Path, reliability: Recorder, request: pytest.FixtureRequest, clients: int
) -> None:
    seconds: float = request.config.getoption("load_seconds", default=20.0)
    for name, checked in (
        ("streams", f"{clients} clients for {seconds:g} s: no failure that should have worked"),
        (
            "busy answers",
            "every 503 carries Retry-After and never says more wait than the queue holds",
        ),
        ("/events", f"{EVENT_STREAMS} streams stay open; GET /servers answers throughout"),
        ("no growth", "fds, threads and RSS of the stack and the runtime back to before"),
    ):
        reliability.case(
            f"load ({clients} clients): {name}",
            injected="load through the gateway",
            checked=checked,
            outcome="survived",
        )
    # The crowd is one user: lift the per-user bound on /events streams above it.
    crowd = {"MODELSERVE_EVENTS_STREAMS_PER_USER": str(EVENT_STREAMS + 10)}
    with stack(tmp_path / "data", free_port(), env=crowd) as up:
        auth = {"Authorization": f"Bearer {up.token}"}
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=up.url, headers=auth, timeout=120, limits=limits
        ) as http:
            params = {"n_ctx": 2048, "n_parallel": 4, "max_queue": 16}
            accepted = await http.post("/serve", json={"model": "demo", "runtime_params": params})
            assert accepted.status_code == 202, accepted.text
            server = accepted.json()["server_uuid"]
            deadline = time.monotonic() + 120
            while (await http.get(f"/servers/{server}")).json()["status"] != "ready":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)
            url = f"/{server}/v1/chat/completions"
            warm = Tally()
            await asyncio.gather(*(client(http, url, time.monotonic() + 2, warm) for _ in range(8)))
            assert not warm.failures, warm.failures[:3]
            stack_process = psutil.Process(up.process.pid)
            runtime = next(
                c
                for c in stack_process.children(recursive=True)
                if "runtime" in " ".join(c.cmdline())
            )
            before = {"stack": snapshot(stack_process), "runtime": snapshot(runtime)}

            stop = asyncio.Event()
            streams = [
                asyncio.create_task(event_stream(http, "/events", stop))
                for _ in range(EVENT_STREAMS)
            ]
            listing = asyncio.create_task(timed_listing(http, "/servers", stop))
            tally = Tally()
            until = time.monotonic() + seconds
            await asyncio.gather(*(client(http, url, until, tally) for _ in range(clients)))
            stop.set()
            broken = [e for e in await asyncio.gather(*streams) if e]
            listed = await listing
        # Connections close at the servers' keep-alive timeouts and the runtime's slots
        # go quiet: give them up to 30 s. The gateway's pool drops its expired idle
        # connections when it is next used, so each round sends one small request
        # through it first. A leak never comes back within the allowance.
        settle = time.monotonic() + 30
        while True:
            await asyncio.sleep(1)
            models = await asyncio.to_thread(
                httpx.get, f"{up.url}/{server}/v1/models", headers=auth, timeout=30
            )
            assert models.status_code == 200, models.text
            after = {"stack": snapshot(stack_process), "runtime": snapshot(runtime)}
            if all(within_allowance(before[n], after[n]) for n in before):
                break
            if time.monotonic() > settle:
                break

    ttfb = [t for _, t, _ in tally.ok]
    totals = [t for _, _, t in tally.ok]
    waits = real_waits(tally)
    ratios = [retry_hint_ratio(hint, real) for hint, real in waits]
    real = [wait for _, wait in waits] or [0.0]
    off = [
        (hint, round(wait, 2)) for hint, wait in waits if not retry_hint_within_twice(hint, wait)
    ]
    reliability.note(
        f"{clients} clients: {len(tally.ok)} streams ok, "
        f"{len(tally.busy)} busy (503 + Retry-After), {len(tally.failures)} failed; "
        f"first byte p50 {percentile(ttfb, 50):.2f} s "
        f"p99 {percentile(ttfb, 99):.2f} s; whole stream p50 {percentile(totals, 50):.2f} s "
        f"p99 {percentile(totals, 99):.2f} s; GET /servers under load p50 "
        f"{percentile(listed, 50) * 1000:.0f} ms p99 {percentile(listed, 99) * 1000:.0f} ms; "
        f"Retry-After within 2x of the real wait: {len(ratios) - len(off)} of {len(ratios)} "
        f"(median ratio {statistics.median(ratios) if ratios else 0:.2f}, real wait "
        f"p50 {percentile(real, 50):.2f} s)"
    )
    reliability.figure(
        f"load-{clients}",
        {
            "seconds": seconds,
            "clients": clients,
            "ok": len(tally.ok),
            "busy": len(tally.busy),
            "failures": tally.failures[:20],
            "ttfb_p50": percentile(ttfb, 50),
            "ttfb_p99": percentile(ttfb, 99),
            "total_p50": percentile(totals, 50),
            "total_p99": percentile(totals, 99),
            "servers_p50": percentile(listed, 50),
            "servers_p99": percentile(listed, 99),
            "retry_after_within_2x": len(ratios) - len(off),
            "retry_after_judged": len(ratios),
            "retry_after_median_ratio": statistics.median(ratios) if ratios else None,
            "real_wait_p50": percentile(real, 50),
            "real_wait_p99": percentile(real, 99),
            "retry_after_off": off[:20],  # (hint, real wait)
            "before": before,
            "after": after,
        },
    )
    assert tally.failures == [], tally.failures[:5]
    assert tally.ok, "nothing was served"
    # How close Retry-After comes to the real wait is reported above, not asserted
    # (see the module's docstring); what does not depend on timing is.
    assert all(retry >= 1 for _, retry in tally.busy)
    # The queue holds what it says (503 bodies once said 23 waited in a 16-deep queue).
    assert len(tally.waiting) == len(tally.busy)
    assert all(said <= queue for said, queue in tally.waiting), max(tally.waiting)
    assert broken == [], broken[:5]
    for name in ("stack", "runtime"):
        assert within_allowance(before[name], after[name]), (name, before[name], after[name])
