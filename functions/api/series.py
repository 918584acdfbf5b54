"""A server's figures over time, for the dashboard's charts.

Two sources answer the same question (``Series.window``):

- ``MemorySeries`` (the embedded stack): the stack scrapes every running
  runtime's ``/metrics`` and its own registry every ``interval`` seconds
  (``sample_forever``) and keeps one point per scrape for an hour, in a
  fixed-size ring per server: memory is bounded by servers x points.
- ``PrometheusSeries`` (Kubernetes, ``MODELSERVE_PROMETHEUS_URL``): the same
  series as PromQL over Prometheus' HTTP API (``/api/v1/query_range``), on the
  ``server_uuid`` label that config/observability/'s PodMonitor puts on every
  runtime series.

Between two scrapes a counter's increase gives a rate and a histogram's bucket
increases give quantiles (as Prometheus' ``histogram_quantile`` computes them);
an interval without observations has no quantile (``None``), not zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)
HOUR = 3600.0
# The charts, in the order the dashboard draws them.
FIELDS = (
    "tokens_per_second",
    "ttft_p50_seconds",
    "ttft_p95_seconds",
    "inter_token_p50_seconds",
    "inter_token_p95_seconds",
    "slots_busy",
    "slots_total",
    "requests_waiting",
    "memory_mb",
    "cpu_percent",
    "gateway_requests_per_second",
)
TTFT = "modelserve_time_to_first_token_seconds"
ITL = "modelserve_inter_token_latency_seconds"


@dataclass
class Window:
    """Points oldest first: ``t`` in Unix seconds, one list per field, ``None`` for gaps."""

    step_seconds: float
    t: list[float] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(
        default_factory=lambda: {name: [] for name in FIELDS}
    )


class Series(Protocol):
    async def window(self, server: uuid.UUID, seconds: float) -> Window: ...


# --- reading a scrape ----------------------------------------------------------------


@dataclass
class Scrape:
    """What one runtime scrape says, reduced to what the charts need."""

    at: float
    generated_tokens: float = 0.0
    ttft: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    itl: dict[float, float] = field(default_factory=dict)
    slots_busy: float | None = None
    slots_total: float | None = None
    waiting: float | None = None
    memory_bytes: float | None = None
    cpu_seconds: float | None = None
    gateway_requests: float = 0.0


def read_runtime(text: str, at: float) -> Scrape:
    """The runtime's figures in one ``/metrics`` answer."""
    scrape = Scrape(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, float(sample.value)
            if name == "modelserve_generated_tokens_total":
                scrape.generated_tokens = value
            elif name == f"{TTFT}_bucket":
                scrape.ttft[float(sample.labels["le"])] = value
            elif name == f"{ITL}_bucket":
                scrape.itl[float(sample.labels["le"])] = value
            elif name == "modelserve_slots_busy":
                scrape.slots_busy = value
            elif name == "modelserve_slots_total":
                scrape.slots_total = value
            elif name == "modelserve_requests_waiting":
                scrape.waiting = value
            elif name == "process_resident_memory_bytes":
                scrape.memory_bytes = value
            elif name == "process_cpu_seconds_total":
                scrape.cpu_seconds = value
    return scrape


def gateway_requests(text: str) -> dict[str, float]:
    """Requests through the gateway so far, per server label, from the stack's registry."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelserve_gateway_requests_total":
                server = sample.labels.get("server_uuid", "")
                totals[server] = totals.get(server, 0.0) + float(sample.value)
    return totals


def quantile(q: float, before: Mapping[float, float], after: Mapping[float, float]) -> float | None:
    """``histogram_quantile(q, increase)`` between two cumulative bucket readings."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the highest finite bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def point(before: Scrape, after: Scrape) -> dict[str, float | None]:
    """The charts' values for the interval between two scrapes of one server."""
    elapsed = max(after.at - before.at, 1e-9)
    generated = after.generated_tokens - before.generated_tokens
    cpu = (
        (after.cpu_seconds - before.cpu_seconds) / elapsed * 100
        if after.cpu_seconds is not None and before.cpu_seconds is not None
        else None
    )
    return {
        # A restarted runtime starts its counters at zero: no rate across the restart.
        "tokens_per_second": generated / elapsed if generated >= 0 else None,
        "ttft_p50_seconds": quantile(0.5, before.ttft, after.ttft),
        "ttft_p95_seconds": quantile(0.95, before.ttft, after.ttft),
        "inter_token_p50_seconds": quantile(0.5, before.itl, after.itl),
        "inter_token_p95_seconds": quantile(0.95, before.itl, after.itl),
        "slots_busy": after.slots_busy,
        "slots_total": after.slots_total,
        "requests_waiting": after.waiting,
        "memory_mb": after.memory_bytes / 2**20 if after.memory_bytes is not None else None,
        "cpu_percent": cpu if cpu is None or cpu >= 0 else None,
        "gateway_requests_per_second": max(after.gateway_requests - before.gateway_requests, 0.0)
        / elapsed,
    }


# --- embedded: an hour in memory ------------------------------------------------------------


class MemorySeries:
    """One ring of points per server; servers that stop being scraped age out."""

    def __init__(self, interval: float = 5.0, keep: float = HOUR) -> None:
        self.interval = interval
        self.size = max(2, round(keep / interval))
        self._points: dict[uuid.UUID, deque[tuple[float, dict[str, float | None]]]] = {}
        self._last: dict[uuid.UUID, Scrape] = {}
        self.keep = keep

    def observe(self, server: uuid.UUID, scrape: Scrape) -> None:
        """Add one scrape; the first of a server only sets the baseline."""
        before = self._last.get(server)
        self._last[server] = scrape
        if before is None or scrape.at <= before.at:
            return
        ring = self._points.setdefault(server, deque(maxlen=self.size))
        ring.append((scrape.at, point(before, scrape)))

    def forget_stale(self, now: float) -> None:
        """Drop servers with no point in the last ``keep`` seconds (deleted ones)."""
        for server in [
            s for s, ring in self._points.items() if ring and ring[-1][0] < now - self.keep
        ]:
            self._points.pop(server, None)
            self._last.pop(server, None)

    def stopped(self, server: uuid.UUID) -> None:
        """The runtime stopped (idle, restarted): its next scrape is a new baseline."""
        self._last.pop(server, None)

    async def window(self, server: uuid.UUID, seconds: float) -> Window:
        since = time.time() - seconds
        out = Window(self.interval)
        for at, values in self._points.get(server, ()):
            if at >= since:
                out.t.append(at)
                for name in FIELDS:
                    out.series[name].append(values.get(name))
        return out


Targets = Callable[[], Mapping[uuid.UUID, str]]


async def sample_once(
    store: MemorySeries,
    targets: Targets,
    http: httpx.AsyncClient,
    registry: CollectorRegistry | None = None,
) -> None:
    """Scrape every running runtime (and the gateway's counts in ``registry``) once."""
    now = time.time()
    own = gateway_requests(generate_latest(registry).decode()) if registry is not None else {}
    running = dict(targets())

    async def one(server: uuid.UUID, url: str) -> None:
        try:
            response = await http.get(f"{url.rstrip('/')}/metrics", timeout=2)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("no metrics from %s at %s: %s", server, url, exc)
            store.stopped(server)
            return
        scrape = read_runtime(response.text, now)
        scrape.gateway_requests = own.get(str(server), 0.0)
        store.observe(server, scrape)

    await asyncio.gather(*(one(s, u) for s, u in running.items()))
    for server in list(store._last):
        if server not in running:
            store.stopped(server)
    store.forget_stale(now)


async def sample_forever(
    store: MemorySeries,
    targets: Targets,
    http: httpx.AsyncClient,
    stop: asyncio.Event,
    registry: CollectorRegistry | None = None,
) -> None:
    """``sample_once`` every ``store.interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await sample_once(store, targets, http, registry)
        except Exception:  # a bad scrape must not end the charts
            log.exception("sampling the runtimes failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), store.interval)


# --- Kubernetes: Prometheus' HTTP API -------------------------------------------------------


def promql(server: uuid.UUID) -> dict[str, str]:
    """The PromQL of each chart for one server (``[1m]`` windows, like the dashboard)."""
    s = f'server_uuid="{server}"'

    def q(quant: float, metric: str) -> str:
        return f"histogram_quantile({quant}, sum by (le) (rate({metric}_bucket{{{s}}}[1m])))"

    return {
        "tokens_per_second": f"sum(rate(modelserve_generated_tokens_total{{{s}}}[1m]))",
        "ttft_p50_seconds": q(0.5, TTFT),
        "ttft_p95_seconds": q(0.95, TTFT),
        "inter_token_p50_seconds": q(0.5, ITL),
        "inter_token_p95_seconds": q(0.95, ITL),
        "slots_busy": f"sum(modelserve_slots_busy{{{s}}})",
        "slots_total": f"sum(modelserve_slots_total{{{s}}})",
        "requests_waiting": f"sum(modelserve_requests_waiting{{{s}}})",
        "memory_mb": f"sum(process_resident_memory_bytes{{{s}}}) / 1048576",
        "cpu_percent": f"sum(rate(process_cpu_seconds_total{{{s}}}[1m])) * 100",
        "gateway_requests_per_second": f"sum(rate(modelserve_gateway_requests_total{{{s}}}[1m]))",
    }


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or refused a query."""


class PrometheusSeries:
    """The charts' series read from Prometheus (one ``query_range`` per chart)."""

    def __init__(self, url: str, http: httpx.AsyncClient, step: float = 15.0) -> None:
        self.url, self.http, self.step = url.rstrip("/"), http, step

    async def _range(self, query: str, start: float, end: float) -> dict[float, float | None]:
        try:
            response = await self.http.get(
                f"{self.url}/api/v1/query_range",
                params={"query": query, "start": start, "end": end, "step": self.step},
                timeout=10,
            )
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus refused {query!r}: {body.get('error')}")
        values: dict[float, float | None] = {}
        for result in body["data"]["result"][:1]:  # every query sums to one series
            for at, text in result["values"]:
                number = float(text)
                values[float(at)] = number if math.isfinite(number) else None
        return values

    async def window(self, server: uuid.UUID, seconds: float) -> Window:
        end = time.time()
        start = end - seconds
        queries = promql(server)
        answers = await asyncio.gather(*(self._range(q, start, end) for q in queries.values()))
        times = sorted({at for answer in answers for at in answer})
        out = Window(self.step, t=times)
        for name, answer in zip(queries, answers, strict=True):
            out.series[name] = [answer.get(at) for at in times]
        return out
