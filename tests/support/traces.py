"""Spans for trace tests: this process's, in memory; other processes', from a file.

OpenTelemetry lets a process set its tracer provider once, so every test shares
the in-memory one and clears the exporter first. The embedded stack and its
runtimes append theirs to ``MODELSERVE_TRACES_FILE`` (``spans_in`` reads it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@cache
def memory_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@dataclass(frozen=True)
class FileSpan:
    """One line of the stack's spans file (``MODELSERVE_TRACES_FILE``)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]


def spans_in(path: Path) -> list[FileSpan]:
    """The finished spans every process wrote so far (ReadableSpan.to_json lines)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        span = json.loads(line)
        found.append(
            FileSpan(
                span["name"],
                span["context"]["trace_id"],
                span["context"]["span_id"],
                span["parent_id"],
                span["attributes"],
            )
        )
    return found


def trace_of(spans: list[FileSpan], member: FileSpan) -> dict[str, FileSpan]:
    """The spans of ``member``'s trace by span id."""
    return {s.span_id: s for s in spans if s.trace_id == member.trace_id}


def ancestry(trace: dict[str, FileSpan], span: FileSpan) -> list[str]:
    """The names from ``span`` up to its root; a parent missing from the trace ends
    the list with "?", so a broken chain shows in the assertion."""
    names = [span.name]
    while span.parent_id is not None:
        parent = trace.get(span.parent_id)
        if parent is None:
            return [*names, "?"]
        names.append(parent.name)
        span = parent
    return names
