"""Log lines carry the server, event and trace they were written for."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from modelserve.shared import logs

log = logging.getLogger("modelserve.tests.logs")
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def restored() -> Iterator[None]:
    """``configure`` replaces the root logger's handlers: put pytest's back after."""
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def lines(err: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_the_bound_fields_and_only_inside(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(logs.LogSettings(format="json", level="INFO"))
    server = uuid.uuid4()
    with logs.bound(server_uuid=server, event_id="e-1", trace_id=TRACE):
        log.info("mirrored %d bytes", 42)
    log.warning("after")
    log.debug("below the level")
    inside, after = lines(capsys.readouterr().err)
    assert inside["message"] == "mirrored 42 bytes"
    assert (inside["level"], inside["logger"]) == ("INFO", "modelserve.tests.logs")
    assert (inside["server_uuid"], inside["event_id"], inside["trace_id"]) == (
        str(server),
        "e-1",
        TRACE,
    )
    assert after["message"] == "after" and "server_uuid" not in after


def test_the_text_format_stays_one_readable_line(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(logs.LogSettings())
    with logs.bound(server_uuid="s"):
        log.info("hello")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("INFO modelserve.tests.logs: hello")


async def test_concurrent_tasks_never_see_each_others_fields(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    logs.install_context()

    async def work(server: str) -> None:
        with logs.bound(server_uuid=server):
            for _ in range(3):
                await asyncio.sleep(0)
                log.warning("working on %s", server)

    with caplog.at_level(logging.WARNING):
        await asyncio.gather(work("a"), work("b"))
    seen = [(r.getMessage()[-1], getattr(r, "server_uuid", None)) for r in caplog.records]
    assert len(seen) == 6 and all(said == bound for said, bound in seen)


def test_trace_id_reads_a_w3c_traceparent() -> None:
    assert logs.trace_id(f"00-{TRACE}-b7ad6b7169203331-01") == TRACE
    assert logs.trace_id("garbage") is None and logs.trace_id(None) is None


async def test_the_gateway_middleware_binds_server_and_trace_through_a_stream(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    logs.install_context()
    app = FastAPI()

    @app.get("/{server}/v1/stream")
    async def stream(server: str) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            log.warning("chunk")
            yield b"data: 1\n\n"

        return StreamingResponse(body())

    server = uuid.uuid4()
    transport = httpx.ASGITransport(app=logs.ServerContext(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        with caplog.at_level(logging.WARNING):
            answer = await http.get(
                f"/{server}/v1/stream",
                headers={"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
            )
            not_a_server = await http.get("/metrics/v1/stream")
    assert answer.status_code == not_a_server.status_code == 200
    first, second = caplog.records
    assert (getattr(first, "server_uuid", None), getattr(first, "trace_id", None)) == (
        str(server),
        TRACE,
    )
    assert not hasattr(second, "server_uuid")
