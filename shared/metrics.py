"""Every Prometheus metric of the platform, declared once.

One class per component; each takes the ``CollectorRegistry`` it registers into,
so the edge (the embedded stack, an entry point, a test) decides what is served
where and no code deep inside reaches for a global registry. The README's list of
names is rendered from these classes (``python -m modelserve.shared.metrics``)
and a test keeps the two equal.

Style: ``modelserve_`` prefix, the unit in the name (``_seconds``, ``_bytes``),
counters end in ``_total`` when exposed, labels have few values;
``server_uuid`` appears only where the number of servers bounds it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The gateway's own share of a request is small; a wake-up (local mode) is long.
ADDED_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1,
    5,
    30,
    120,
)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)

# What a pipeline step did with one event.
STEP_OUTCOMES = ("ok", "acked", "failed", "retry", "refused", "duplicate")
UNMATCHED_ROUTE = "(unmatched)"
PREFIX_OUTCOMES = ("hit", "miss", "stale")  # a prompt's lookup among kept sequences
UNKNOWN_SERVER = ""


class RuntimeMetrics:
    """The runtime's: token counters, latency histograms, queue, slot and KV-cache gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.prompt_tokens = Counter(
            "modelserve_prompt_tokens", "Prompt tokens processed.", registry=registry
        )
        self.prompt_tokens_cached = Counter(
            "modelserve_prompt_tokens_cached",
            "Prompt tokens whose KV was reused from a kept sequence (not prefilled again).",
            registry=registry,
        )
        self.prefix_cache_lookups = Counter(
            "modelserve_prefix_cache_lookups",
            "Prompts looked up among kept and running sequences, by outcome: hit, miss, "
            "or stale (a match whose memory could not be reused: a sliding window moved on).",
            ["outcome"],
            registry=registry,
        )
        for outcome in PREFIX_OUTCOMES:  # every outcome scrapes as 0 from the start
            self.prefix_cache_lookups.labels(outcome)
        self.generated_tokens = Counter(
            "modelserve_generated_tokens", "Tokens generated.", registry=registry
        )
        self.requests = Counter(
            "modelserve_requests",
            "Requests answered, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "modelserve_time_to_first_token_seconds",
            "From arrival (queueing included) to the first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "modelserve_inter_token_latency_seconds",
            "Time between consecutive tokens.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "modelserve_requests_running", "Requests holding the model.", registry=registry
        )
        self.waiting = Gauge(
            "modelserve_requests_waiting", "Requests queued for the model.", registry=registry
        )
        self.slots_busy = Gauge(
            "modelserve_slots_busy", "Slots decoding a request.", registry=registry
        )
        self.slots_total = Gauge(
            "modelserve_slots_total",
            "Slots (n_parallel): requests decoded together.",
            registry=registry,
        )
        self.kv_cells_used = Gauge(
            "modelserve_kv_cache_used_cells",
            "KV-cache cells holding tokens (running and kept sequences).",
            registry=registry,
        )
        self.kv_cells_total = Gauge(
            "modelserve_kv_cache_cells",
            "KV-cache cells (n_ctx, shared by all slots).",
            registry=registry,
        )

    def observe_queue(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.slots_busy.set(running)
        self.waiting.set(waiting)


class ApiMetrics:
    """The public API's requests, by route template (never the raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "modelserve_api_requests",
            "API requests answered, by route template, method and status code.",
            ["route", "method", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "modelserve_api_request_duration_seconds",
            "From arrival to the end of the answer (a stream's whole life).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class ApiInstrumentation:
    """ASGI middleware counting each API request under its route's template.

    The template (``/servers/{server_uuid}``) is known only once the router has
    matched, so it is read from the scope after the app answered; a path no route
    matched (the dashboard's files, a 404) counts as ``(unmatched)``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(route, method, str(code)).inc()
            self.metrics.duration.labels(route, method).observe(time.perf_counter() - started)


class GatewayMetrics:
    """Per server: requests, status codes, the gateway's added latency, bytes, streams.

    A request refused before its server is known (not a UUID, a refused
    credential, an unknown server) counts under ``server_uuid=""``, so a caller
    cannot grow the label set with made-up UUIDs.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "modelserve_gateway_requests",
            "Requests through the gateway, by server and status code.",
            ["server_uuid", "code"],
            registry=registry,
        )
        self.added_latency = Histogram(
            "modelserve_gateway_added_latency_seconds",
            "From a request's arrival until the gateway sends it upstream (auth, "
            "lookup, budget, wake-up).",
            ["server_uuid"],
            buckets=ADDED_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Counter(
            "modelserve_gateway_request_bytes",
            "Request body bytes sent upstream.",
            ["server_uuid"],
            registry=registry,
        )
        self.response_bytes = Counter(
            "modelserve_gateway_response_bytes",
            "Response body bytes relayed to clients.",
            ["server_uuid"],
            registry=registry,
        )
        self.streams = Gauge(
            "modelserve_gateway_streams_active",
            "Event streams (text/event-stream answers) being relayed now.",
            ["server_uuid"],
            registry=registry,
        )


class UsageMetrics:
    """Tokens metered at the gateway, per server, user and key (the usage ledger's figures)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["server", "user", "key"]
        self.prompt = Counter(
            "modelserve_gateway_prompt_tokens",
            "Prompt tokens through the gateway.",
            labels,
            registry=registry,
        )
        self.completion = Counter(
            "modelserve_gateway_completion_tokens",
            "Completion tokens through the gateway.",
            labels,
            registry=registry,
        )
        self.requests = Counter(
            "modelserve_gateway_metered_requests",
            "Metered requests through the gateway.",
            labels,
            registry=registry,
        )


class StepMetrics:
    """Each pipeline step: events handled by outcome, and how long handling took.

    Outcomes: ``ok`` (replied with the next event), ``acked`` (the chain ends
    here, or the server moved on), ``failed`` (replied ``serve.failed``),
    ``retry`` (503: redeliver later), ``refused`` (a bad event or token, never
    retried), ``duplicate`` (handled before; answered as then).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry  # what the functions' /metrics serves
        self.events = Counter(
            "modelserve_step_events",
            "Events a pipeline step handled, by step and outcome.",
            ["step", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "modelserve_step_duration_seconds",
            "Time a step took on one event (verification and dedupe included).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )


class OperatorMetrics:
    """The operator's reconciles, by handler and outcome, and those running now.

    Outcomes: ``ok``, ``retry`` (a temporary error: kopf tries again later),
    ``error`` (anything else).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry  # what --metrics-port serves
        self.reconciles = Counter(
            "modelserve_operator_reconciles",
            "Handler runs, by handler and outcome.",
            ["handler", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "modelserve_operator_reconcile_duration_seconds",
            "Time one handler run took.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "modelserve_operator_reconciles_in_flight",
            "Handler runs in progress.",
            ["handler"],
            registry=registry,
        )
        self.servers_failed = Counter(
            "modelserve_operator_servers_failed",
            "Servers the operator moved to failed (their InferenceService failed).",
            registry=registry,
        )

    @contextmanager
    def track(self, handler: str, temporary: type[BaseException]) -> Iterator[None]:
        """Count one run of ``handler``; ``temporary`` is the error kopf retries."""
        started = time.perf_counter()
        gauge = self.in_flight.labels(handler)
        gauge.inc()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except temporary:
            outcome = "retry"
            raise
        finally:
            gauge.dec()
            self.reconciles.labels(handler, outcome).inc()
            self.duration.labels(handler).observe(time.perf_counter() - started)


class BackendMetrics:
    """The local backend's runtime processes: starts, exits by reason, running now.

    Exit reasons: ``crashed`` (exited by itself), ``idle`` (stopped after its
    idle timeout), ``deleted`` (its ModelServe went away), ``timeout`` (not
    ready in time), ``shutdown`` (the stack stopped).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.starts = Counter(
            "modelserve_local_runtime_starts",
            "Runtime processes started.",
            registry=registry,
        )
        self.exits = Counter(
            "modelserve_local_runtime_exits",
            "Runtime processes that ended, by reason.",
            ["reason"],
            registry=registry,
        )
        self.running = Gauge(
            "modelserve_local_runtimes_running",
            "Runtime processes alive now.",
            registry=registry,
        )


# component -> (class, who serves it): the README's list is rendered from this.
COMPONENTS: dict[str, tuple[type, str]] = {
    "runtime": (RuntimeMetrics, "each runtime, `/metrics` on its port"),
    "api": (ApiMetrics, "the API, `/metrics`"),
    "gateway": (GatewayMetrics, "the gateway, `/metrics`"),
    "usage": (UsageMetrics, "the gateway, `/metrics`"),
    "steps": (StepMetrics, "the functions, `/metrics` on the function's port"),
    "operator": (OperatorMetrics, "the operator, `--metrics-port`"),
    "backend": (BackendMetrics, "the embedded stack, `/metrics`"),
}


@dataclass(frozen=True)
class Declared:
    """One metric as Prometheus shows it (a counter's name with ``_total``)."""

    component: str
    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


def declared(component: str | None = None) -> list[Declared]:
    """The metrics each component class declares, read from a scratch registry."""
    found: list[Declared] = []
    for name, (cls, _) in COMPONENTS.items():
        if component is not None and name != component:
            continue
        instance = cls(CollectorRegistry())
        for metric in vars(instance).values():
            if not isinstance(metric, Counter | Gauge | Histogram):
                continue
            kind = type(metric).__name__.lower()
            exposed = metric._name + ("_total" if kind == "counter" else "")
            found.append(
                Declared(name, exposed, kind, tuple(metric._labelnames), metric._documentation)
            )
    return found


def documented_names(component: str | None = None) -> set[str]:
    return {d.name for d in declared(component)}


def exposed_names(text: str) -> set[str]:
    """The ``modelserve_*`` families in a scrape, named as ``declared`` names them."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    names = set()
    for name, kind in families.items():
        # The text format shows a counter's or histogram's creation time as a
        # family of its own, ``<name>_created``: part of that metric, not another.
        if name.endswith("_created") and name.removesuffix("_created") in families:
            continue
        if name.startswith("modelserve_"):
            names.add(name + ("_total" if kind == "counter" else ""))
    return names


def readme_table() -> str:
    """The README's metric list (between its ``metrics`` markers)."""
    rows = ["| metric | type | labels | served by | meaning |", "| --- | --- | --- | --- | --- |"]
    for d in declared():
        labels = ", ".join(f"`{label}`" for label in d.labels)
        served = COMPONENTS[d.component][1]
        rows.append(f"| `{d.name}` | {d.kind} | {labels} | {served} | {d.help} |")
    return "\n".join(rows)


def readme_section(readme: str) -> str:
    """The table the README holds between ``<!-- metrics:begin -->`` and ``end``."""
    match = re.search(r"<!-- metrics:begin -->\n(.*?)\n<!-- metrics:end -->", readme, re.S)
    return match.group(1) if match else ""


def update_readme(readme: str) -> str:
    """``readme`` with its metric list replaced by the declarations' one."""
    old = readme_section(readme)
    if not old:
        raise ValueError("no <!-- metrics:begin --> ... <!-- metrics:end --> section")
    return readme.replace(old, readme_table(), 1)


if __name__ == "__main__":  # python -m modelserve.shared.metrics [README.md to rewrite]
    import sys
    from pathlib import Path

    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.write_text(update_readme(target.read_text()))
    else:
        print(readme_table())
