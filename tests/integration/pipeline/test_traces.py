"""One serve is one connected trace: the API's span, then a span per step, each the
child of the one that made its event (OpenTelemetry's in-memory exporter)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelserve.shared import events as ev
from modelserve.shared import tracing
from support.traces import memory_exporter

pytestmark = [pytest.mark.postgres, pytest.mark.minio]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = memory_exporter()
    exporter.clear()
    return exporter


async def test_a_serve_is_one_connected_trace(
    pipeline_factory: Any, tiny_gguf: bytes, spans: InMemorySpanExporter
) -> None:
    pipe = await pipeline_factory()
    pipe.upload_upstream("demo", tiny_gguf)
    broker = pipe.broker()
    with tracing.continued("serve", None, trace.SpanKind.PRODUCER):  # what POST /serve opens
        event = await pipe.request_event("demo", runtime_params={"n_ctx": 512})
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()

    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == "serve"]
    assert root.context is not None and root.parent is None
    trace_id = root.context.trace_id
    assert {s.context.trace_id for s in finished if s.context} == {trace_id}
    by_id = {s.context.span_id: s for s in finished if s.context}
    steps = [s for s in finished if s.name.startswith("step ")]
    assert {s.name for s in steps} >= {
        "step availability",
        "step signed-url",
        "step mirror",
        "step contract",
        "step apply",
    }
    for span in steps:  # every step hangs off a recorded span: nothing is orphaned
        assert span.parent is not None and span.parent.span_id in by_id, span.name
    # The events on the wire carry the trace too.
    assert {ev.TRACEPARENT_ATTRIBUTE in e for e in broker.seen} == {True}
    assert {e[ev.TRACEPARENT_ATTRIBUTE].split("-")[1] for e in broker.seen} == {f"{trace_id:032x}"}
