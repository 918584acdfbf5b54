"""Prometheus metrics of the runtime, served by KServe's /metrics handler."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RuntimeMetrics:
    """Token counters, latency histograms, queue, slot and KV-cache gauges."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.prompt_tokens = Counter(
            "modelserve_prompt_tokens", "Prompt tokens processed.", registry=registry
        )
        self.prompt_tokens_cached = Counter(
            "modelserve_prompt_tokens_cached",
            "Prompt tokens whose KV was reused from a kept sequence (not prefilled again).",
            registry=registry,
        )
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


_default: RuntimeMetrics | None = None


def default_metrics() -> RuntimeMetrics:
    """The process-wide metrics in the default registry (registered once)."""
    global _default
    if _default is None:
        _default = RuntimeMetrics()
    return _default
