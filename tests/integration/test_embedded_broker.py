"""The embedded broker's delivery semantics against real HTTP subscribers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from cloudevents.http import CloudEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.broker.triggers import Delivery, Trigger, load, parse_duration
from modelserve.shared import events as ev
from modelserve.shared.net import free_port

REQUEST = ev.ServeRequest(model="m", requested_by="a", role="operator")


@dataclass
class Subscriber:
    """Answers each delivery with the next status in ``script`` (then the last one)."""

    script: list[int]
    reply: CloudEvent | None = None
    received: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, request: Request) -> Response:
        self.received.append((time.monotonic(), dict(request.headers)))
        status = self.script[min(len(self.received) - 1, len(self.script) - 1)]
        if status == 200 and self.reply is not None:
            headers, body = ev.encode_binary(self.reply)
            return Response(body, status_code=200, headers=headers)
        return Response(b"nope" if status >= 400 else b"", status_code=status)


Serve = Callable[[Subscriber], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(subscriber: Subscriber) -> str:
        app = Starlette(routes=[Route("/", subscriber.__call__, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn only exposes a flag
            await asyncio.sleep(0.01)
        servers.append((server, task))
        return f"http://127.0.0.1:{server.config.port}/"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


def event() -> CloudEvent:
    return ev.make_event(
        ev.SERVE_REQUESTED, ev.ServeRequested(request=REQUEST), source="/t", subject=uuid.uuid4()
    )


def trigger(retry: int, dead_letter: str | None = "dls") -> Trigger:
    return Trigger(
        "t",
        "b",
        "sub",
        {"type": ev.SERVE_REQUESTED},
        Delivery(retry=retry, backoff_delay=0.05, dead_letter=dead_letter),
    )


async def run(broker: EmbeddedBroker, sent: CloudEvent) -> None:
    await broker.publish(sent)
    async with asyncio.timeout(30):
        await broker.drain()


async def test_retries_with_backoff_then_dead_letters(serve: Serve) -> None:
    failing, sink = Subscriber([503]), Subscriber([202])
    urls = {"sub": await serve(failing), "dls": await serve(sink)}
    async with httpx.AsyncClient() as http:
        broker = EmbeddedBroker([trigger(retry=3)], urls.__getitem__, http)
        sent = event()
        await run(broker, sent)
    assert len(failing.received) == 4  # the first try and three retries
    gaps = [b[0] - a[0] for a, b in zip(failing.received, failing.received[1:], strict=False)]
    assert gaps[0] >= 0.04 and gaps[2] >= 0.15  # 0.05, 0.1, 0.2: exponential
    (letter,) = sink.received
    assert letter[1]["ce-id"] == sent["id"]
    assert letter[1]["ce-knativeerrorcode"] == "503"
    assert letter[1]["ce-knativeerrordest"] == urls["sub"]
    assert broker.dead[0].code == 503


async def test_400_is_not_retried(serve: Serve) -> None:
    bad, sink = Subscriber([400]), Subscriber([202])
    urls = {"sub": await serve(bad), "dls": await serve(sink)}
    async with httpx.AsyncClient() as http:
        await run(EmbeddedBroker([trigger(retry=5)], urls.__getitem__, http), event())
    assert len(bad.received) == 1 and len(sink.received) == 1


async def test_a_retried_delivery_that_succeeds_routes_its_reply(serve: Serve) -> None:
    first = event()
    reply = ev.make_event(
        ev.MODEL_MISSING,
        ev.ModelMissing(request=REQUEST),
        source="/s",
        subject=ev.subject_uuid(first),
        parent=first,
    )
    flaky = Subscriber([500, 200], reply=reply)
    downstream = Subscriber([202])
    urls = {"sub": await serve(flaky), "next": await serve(downstream)}
    rules = [trigger(retry=2), Trigger("t2", "b", "next", {"type": ev.MODEL_MISSING})]
    async with httpx.AsyncClient() as http:
        broker = EmbeddedBroker(rules, urls.__getitem__, http)
        await run(broker, first)
    assert len(flaky.received) == 2
    assert [h["ce-id"] for _, h in downstream.received] == [reply["id"]]
    assert not broker.dead


async def test_filters_and_manifests(serve: Serve, tmp_path: Path) -> None:
    assert parse_duration("PT0.5S") == 0.5 and parse_duration("PT1M30S") == 90
    with pytest.raises(ValueError):
        parse_duration("5 seconds")
    manifest = tmp_path / "t.yaml"
    manifest.write_text(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n"
        "spec: {delivery: {retry: 2, backoffDelay: PT0.1S}}\n---\n"
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: only-missing}\n"
        "spec:\n  broker: b\n  filter: {attributes: {type: " + ev.MODEL_MISSING + "}}\n"
        "  subscriber: {uri: 'http://example.invalid/'}\n"
    )
    (rule,) = load([manifest], "b")
    assert rule.delivery.retry == 2 and rule.delivery.backoff_delay == 0.1  # from the Broker
    assert rule.matches({"type": ev.MODEL_MISSING}) and not rule.matches({"type": "x"})
    with pytest.raises(ValueError, match="no Trigger for broker 'other'"):
        load([manifest], "other")
