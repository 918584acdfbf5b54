"""OpenTelemetry traces: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, free when not.

Each entry point calls ``configure`` once with ``TraceSettings`` read at that
edge. Unconfigured, OpenTelemetry's API hands out non-recording spans: starting
one costs a function call and exports nothing, so code can always trace.

A span's context travels in the W3C ``traceparent`` of the CloudEvents: the
producer's current span becomes the event's parent (``current_traceparent``,
used by ``events.make_event``), and each step continues it (``continued``), so
one serve is one connected trace across the API and every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = "modelserve"
_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("modelserve")


class TraceSettings(BaseSettings):
    """OpenTelemetry's own variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and
    ``OTEL_SERVICE_NAME``), read by the OTLP exporter as its documentation says."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    exporter_otlp_endpoint: str | None = None
    service_name: str = SERVICE_NAME


def configure(settings: TraceSettings | None = None) -> bool:
    """Export spans over OTLP (HTTP) when an endpoint is set; True when it is on."""
    settings = settings or TraceSettings()
    if not settings.exporter_otlp_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    # The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def current_traceparent() -> str | None:
    """The current span as a ``traceparent``; None when no span records (tracing off)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


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
