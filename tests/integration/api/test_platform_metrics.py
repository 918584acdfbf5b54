"""The API's and the gateway's /metrics after real traffic through them to a real runtime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelserve.functions.api.series import MemorySeries, PrometheusSeries, sample_once
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.metrics import documented_names
from modelserve.shared.net import free_port
from support.prometheus_server import start_prometheus
from support.records import new_server
from support.runtime import RuntimeServer, start_runtime
from support.scrape import exposed_names, fetch, value
from support.services import start_or_skip
from support.traces import memory_exporter


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo")
    yield server
    server.stop()


async def test_gateway_counts_each_server_s_requests_latency_bytes_and_streams(
    stack: Any, runtime: RuntimeServer
) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(
            session, status=ServerStatus.READY, owner="alice", internal_url=runtime.url
        )
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
    )
    answer = await client.with_raw_response.completions.create(
        model="demo", prompt="ab", max_tokens=4
    )
    plain = len(answer.content)
    streamed = 0
    async with client.with_streaming_response.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    ) as stream:
        async for piece in stream.iter_bytes():
            streamed += len(piece)
    unknown = await stack.http.get(
        f"{stack.gateway}/{uuid.uuid4()}/v1/models", headers=stack.auth("alice")
    )
    assert unknown.status_code == 404

    text = await asyncio.to_thread(fetch, f"{stack.gateway}/metrics", stack.token("root"))
    assert exposed_names(text) == documented_names("gateway") | documented_names("usage")
    s = str(server)
    assert value(text, "modelserve_gateway_requests_total", server_uuid=s, code="200") == 2
    # A made-up UUID does not become a label: it counts under "".
    assert value(text, "modelserve_gateway_requests_total", server_uuid="", code="404") == 1
    assert f'server_uuid="{unknown.url.path.split("/")[1]}"' not in text
    assert value(text, "modelserve_gateway_added_latency_seconds_count", server_uuid=s) == 2
    latency = value(text, "modelserve_gateway_added_latency_seconds_sum", server_uuid=s)
    assert latency is not None and 0 < latency < 5
    assert value(text, "modelserve_gateway_response_bytes_total", server_uuid=s) == (
        plain + streamed
    )
    sent = value(text, "modelserve_gateway_request_bytes_total", server_uuid=s)
    assert sent is not None and sent > 0
    assert value(text, "modelserve_gateway_streams_active", server_uuid=s) == 0


async def test_api_counts_requests_by_route_template(stack: Any) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(session, status=ServerStatus.READY, owner="alice")
    for _ in range(2):
        found = await stack.http.get(f"{stack.api}/servers/{server}", headers=stack.auth("alice"))
        assert found.status_code == 200
    missing = await stack.http.get(
        f"{stack.api}/servers/{uuid.uuid4()}", headers=stack.auth("alice")
    )
    assert missing.status_code == 404
    assert (await stack.http.get(f"{stack.api}/no/such/page")).status_code == 404

    text = await asyncio.to_thread(fetch, f"{stack.api}/metrics")
    assert exposed_names(text) == documented_names("api")
    route = "/servers/{server_uuid}"
    assert value(text, "modelserve_api_requests_total", route=route, method="GET", code="200") == 2
    assert value(text, "modelserve_api_requests_total", route=route, method="GET", code="404") == 1
    assert value(text, "modelserve_api_requests_total", route="(unmatched)", code="404") == 1
    assert str(server) not in text  # the template, never the path
    count = value(text, "modelserve_api_request_duration_seconds_count", route=route, method="GET")
    assert count == 3


async def test_a_server_s_series_move_under_traffic(
    stack_factory: Any, runtime: RuntimeServer
) -> None:
    """The embedded stack's sampler scrapes the real runtime; the API answers the charts."""
    store = MemorySeries(interval=0.5)
    stack = await stack_factory(series=store)
    async with stack.sessions.begin() as session:
        server = await new_server(
            session, status=ServerStatus.READY, owner="alice", internal_url=runtime.url
        )
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
    )
    targets = {server: runtime.url}
    await sample_once(store, lambda: targets, stack.http)
    for _ in range(4):
        await client.completions.create(model="demo", prompt="ab", max_tokens=24)
        await asyncio.sleep(0.3)
        await sample_once(store, lambda: targets, stack.http)

    answer = await stack.http.get(
        f"{stack.api}/servers/{server}/series", headers=stack.auth("vic"), params={"minutes": 5}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["t"]) == 4 and body["t"] == sorted(body["t"])
    tokens = body["series"]["tokens_per_second"]
    assert all(t is not None and t > 0 for t in tokens), tokens
    assert all(v is not None and v > 0 for v in body["series"]["ttft_p50_seconds"])
    assert all(v is not None and v > 0 for v in body["series"]["memory_mb"])
    assert body["series"]["slots_total"][-1] >= 1
    missing = await stack.http.get(
        f"{stack.api}/servers/{uuid.uuid4()}/series", headers=stack.auth("bob")
    )
    assert missing.status_code == 404


async def test_without_a_metrics_source_the_api_says_which_setting_to_set(stack: Any) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(session, status=ServerStatus.READY, owner="alice")
    answer = await stack.http.get(
        f"{stack.api}/servers/{server}/series", headers=stack.auth("alice")
    )
    assert answer.status_code == 503 and "MODELSERVE_PROMETHEUS_URL" in answer.text


async def test_a_server_s_series_from_a_real_prometheus(
    stack_factory: Any, runtime: RuntimeServer
) -> None:
    """Kubernetes' way: Prometheus scrapes the runtime (labelled with its server, as
    config/observability/'s PodMonitor does) and the gateway; the API asks it."""
    port = free_port()  # Prometheus' address is wanted before it can start
    http = httpx.AsyncClient()
    scrape_token = "scrape-token-0123456789abcdef"  # the gateway names servers only to it
    stack = await stack_factory(
        series=PrometheusSeries(f"http://127.0.0.1:{port}", http, step=1),
        metrics_token=scrape_token,
    )
    async with stack.sessions.begin() as session:
        server = await new_server(
            session, status=ServerStatus.READY, owner="alice", internal_url=runtime.url
        )
    targets = {
        runtime.url.removeprefix("http://"): {"server_uuid": str(server)},
        stack.gateway.removeprefix("http://").rstrip("/"): {},
    }
    prometheus = await asyncio.to_thread(
        start_or_skip, lambda: start_prometheus(targets, port=port, bearer=scrape_token)
    )
    try:
        client = openai.AsyncOpenAI(
            base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
        )

        async def charted() -> dict[str, Any] | None:
            await client.completions.create(model="demo", prompt="ab", max_tokens=24)
            answer = await stack.http.get(
                f"{stack.api}/servers/{server}/series",
                headers=stack.auth("vic"),
                params={"minutes": 5},
            )
            assert answer.status_code == 200, answer.text
            series = answer.json()["series"]
            wanted = ("tokens_per_second", "ttft_p95_seconds", "gateway_requests_per_second")
            if all(any(v for v in series[name] if v) for name in wanted):
                return dict(series)
            return None

        series = None
        for _ in range(60):
            if series := await charted():
                break
            await asyncio.sleep(0.5)
        assert series is not None, "Prometheus never had the server's series"
        assert max(v for v in series["memory_mb"] if v is not None) > 1
        assert max(v for v in series["slots_total"] if v is not None) >= 1
    finally:
        await asyncio.to_thread(prometheus.stop)
        await http.aclose()


async def test_post_serve_opens_the_trace_its_event_carries(stack: Any) -> None:
    spans = memory_exporter()
    spans.clear()
    accepted = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("alice"), json={"model": "demo"}
    )
    assert accepted.status_code == 202, accepted.text
    (serve,) = [s for s in spans.get_finished_spans() if s.name == "serve"]
    assert serve.context is not None
    assert serve.attributes is not None
    assert serve.attributes["server_uuid"] == accepted.json()["server_uuid"]
    (event,) = stack.published
    assert event["traceparent"].split("-")[1:3] == [
        f"{serve.context.trace_id:032x}",
        f"{serve.context.span_id:016x}",
    ]
