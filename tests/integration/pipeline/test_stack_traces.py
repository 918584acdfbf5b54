"""Across processes, on the embedded stack: one serve is one connected trace from the
API to the runtime's load, and one chat completion is gateway -> runtime -> queue,
prefill and decode under one trace id.

The stack and each runtime it starts are separate processes; both append their
finished spans to one file (``MODELSERVE_TRACES_FILE``, a test-only setting of
``TraceSettings``), which is what this test reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from modelserve.shared.net import free_port
from support.stack import serve_and_wait, stack
from support.traces import FileSpan, ancestry, spans_in, trace_of

pytestmark = pytest.mark.e2e


def wait_for_span(
    path: Path, found: Callable[[FileSpan], bool], within: float = 30
) -> tuple[FileSpan, list[FileSpan]]:
    """The first span ``found`` accepts, and every span written by then."""
    deadline = time.monotonic() + within
    while True:
        spans = spans_in(path)
        if match := next((s for s in spans if found(s)), None):
            return match, spans
        assert time.monotonic() < deadline, sorted({s.name for s in spans})
        time.sleep(0.2)


def test_a_serve_and_a_chat_are_each_one_connected_trace(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    with stack(
        tmp_path / "data", free_port(), env={"MODELSERVE_TRACES_FILE": str(spans_file)}
    ) as up:
        record = serve_and_wait(up)
        assert record["status"] == "ready", record["status_message"]
        server = record["server_uuid"]

        # The runtime's load: in the runtime process, the child of the local backend's
        # start, which continues the apply step's span from the ModelServe's annotation.
        load, spans = wait_for_span(spans_file, lambda s: s.name == "load")
        wait_for_span(spans_file, lambda s: s.name == "runtime start")  # ends once ready
        spans = spans_in(spans_file)
        serve_trace = trace_of(spans, load)
        chain = ancestry(serve_trace, load)
        assert chain[:4] == ["load", "runtime start", "step apply", "step contract"], chain
        (root,) = [s for s in serve_trace.values() if s.parent_id is None]
        assert chain[-1] == root.name == "POST /serve", chain  # FastAPI's span of the request
        (serve,) = [s for s in serve_trace.values() if s.name == "serve"]
        assert serve.attributes["server_uuid"] == server
        for span in serve_trace.values():  # nothing orphaned: every parent is in the trace
            assert ancestry(serve_trace, span)[-1] == root.name, ancestry(serve_trace, span)
        names = {s.name for s in serve_trace.values()}
        assert {"step availability", "step signed-url", "step mirror"} <= names

        client = openai.OpenAI(base_url=f"{up.url}/{server}/v1", api_key=up.token, max_retries=0)
        pieces = list(
            client.chat.completions.create(
                model="demo",
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
                max_tokens=8,
            )
        )
        assert pieces

        runtime, spans = wait_for_span(spans_file, lambda s: s.name == "runtime chat")
        # The gateway's span ends after the body's last byte, so it may be written later.
        _, spans = wait_for_span(
            spans_file, lambda s: s.name == "gateway" and s.trace_id == runtime.trace_id
        )
        chat_trace = trace_of(spans, runtime)
        assert runtime.trace_id != root.trace_id
        chain = ancestry(chat_trace, runtime)
        assert "gateway" in chain and chain[-1] != "?", chain
        (gateway,) = [s for s in chat_trace.values() if s.name == "gateway"]
        assert gateway.attributes["server_uuid"] == server
        phases = {s.name: s for s in chat_trace.values() if s.parent_id == runtime.span_id}
        assert set(phases) == {"queue", "prefill", "decode"}
        assert phases["prefill"].attributes["prompt_tokens"] > 0
        assert phases["decode"].attributes["completion_tokens"] > 0
