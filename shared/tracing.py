"""OpenTelemetry traces: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, free when not.

Each entry point calls ``configure`` once with ``TraceSettings`` read at that
edge. Unconfigured, OpenTelemetry's API hands out non-recording spans: starting
one costs a function call and exports nothing, so code can always trace.

A span's context travels in the W3C ``traceparent`` of the CloudEvents: the
producer's current span becomes the event's parent (``current_traceparent``,
used by ``events.make_event``), and each step continues it (``continued``), so
one serve is one connected trace across the API and every step. The apply step
writes it into the ModelServe (an annotation), the local backend continues it and
hands it to the runtime it starts in ``TRACEPARENT`` (OpenTelemetry's carrier for
a process's environment), and the runtime's load span hangs off that. An
inference request carries it in the ``traceparent`` HTTP header from the gateway
to the runtime, whose queue, prefill and decode spans are recorded after the
fact from the engine's timestamps (``record``): the engine thread holds no context.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = "modelserve"
TRACEPARENT_ENV = "TRACEPARENT"  # OpenTelemetry's name for the carrier in a process's env
_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("modelserve")


class TraceSettings(BaseSettings):
    """OpenTelemetry's own variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and
    ``OTEL_SERVICE_NAME``), read by the OTLP exporter as its documentation says."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    exporter_otlp_endpoint: str | None = None
    service_name: str = SERVICE_NAME
    traces_file: Path | None = Field(default=None, validation_alias="MODELSERVE_TRACES_FILE")
    """Tests only: also append every finished span to this file as a JSON line, so a
    test can read the spans of processes it did not start itself (the runtimes)."""
    traceparent: str | None = Field(default=None, validation_alias=TRACEPARENT_ENV)
    """The span this process was started under (the local backend sets it for a runtime)."""


def configure(settings: TraceSettings | None = None) -> bool:
    """Export spans over OTLP (HTTP) when an endpoint is set, and to ``traces_file``
    when that is set; True when either is on."""
    settings = settings or TraceSettings()
    if not settings.exporter_otlp_endpoint and settings.traces_file is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if settings.traces_file is not None:
        from modelserve.shared.trace_file import JsonLinesExporter

        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(settings.traces_file)))
    trace.set_tracer_provider(provider)
    return True


def traceparent_of(span: Span) -> str | None:
    """``span`` as a ``traceparent``; None when it records nothing (tracing off)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The current span as a ``traceparent``; None when no span records (tracing off)."""
    return traceparent_of(trace.get_current_span())


def headers(span: Span) -> dict[str, str]:
    """The HTTP headers that make the receiver's spans children of ``span`` ({} when off)."""
    traceparent = traceparent_of(span)
    return {"traceparent": traceparent} if traceparent else {}


def start(
    name: str, traceparent: str | None, kind: SpanKind = SpanKind.INTERNAL, **attributes: str
) -> Span:
    """A span that is not made current, for work that outlives the code that starts it
    (a streamed answer); the caller ends it. Its parent is the current span, which
    is FastAPI's own for the request when FastAPI traces (it reads the request's
    ``traceparent`` itself), else the span in ``traceparent``."""
    current = trace.get_current_span().get_span_context().is_valid
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    return tracer.start_span(
        name, context=None if current else parent, kind=kind, attributes=attributes
    )


def record(name: str, parent: Span, start_ns: int, end_ns: int, **attributes: str | int) -> None:
    """A finished child of ``parent`` from ``start_ns`` to ``end_ns`` (epoch nanoseconds)."""
    span = tracer.start_span(
        name,
        context=trace.set_span_in_context(parent),
        kind=SpanKind.INTERNAL,
        start_time=start_ns,
        attributes=attributes,
    )
    span.end(end_time=end_ns)


def epoch_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` reading as epoch nanoseconds (what spans are stamped in)."""
    return time.time_ns() - time.monotonic_ns() + int(monotonic * 1e9)


@contextmanager
def continued(
    name: str, traceparent: str | None, kind: SpanKind = SpanKind.CONSUMER, **attributes: str
) -> Iterator[Span]:
    """A current span named ``name``, the child of the span in ``traceparent``."""
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        yield span
