"""The gateway to a real runtime through the real openai client, and the token matrix."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.runtime import RuntimeServer, start_runtime
from support.tokens import USER_DOOR_CASES, hostile_tokens


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo")
    yield server
    server.stop()


async def ready_server(stack: Any, url: str | None, status: str = "ready") -> uuid.UUID:
    async with stack.sessions.begin() as session:
        return await new_server(session, status=status, owner="alice", internal_url=url)


@pytest.mark.parametrize("case", USER_DOOR_CASES)
async def test_token_matrix(stack: Any, runtime: RuntimeServer, case: str) -> None:
    server = await ready_server(stack, runtime.url)
    token = hostile_tokens(stack.settings, stack.issuer, server)[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    api = await stack.http.get(f"{stack.api}/servers", headers=headers)
    gateway = await stack.http.get(f"{stack.gateway}/{server}/v1/models", headers=headers)
    authz = await stack.http.get(
        f"{stack.api}/auth", headers={**headers, "X-Forwarded-Uri": f"/{server}/v1/models"}
    )
    for name, response in (("api", api), ("gateway", gateway), ("auth", authz)):
        assert response.status_code in (401, 403), f"{name}: {response.status_code}"
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_openai_client_through_the_gateway(stack: Any, runtime: RuntimeServer) -> None:
    server = await ready_server(stack, runtime.url)
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
    )
    assert [m.id for m in (await client.models.list()).data] == ["demo"]
    reply = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert reply.choices[0].message.content is not None
    completion = await client.completions.create(model="demo", prompt="a", max_tokens=4)
    assert completion.choices[0].text is not None
    pieces: list[str] = []
    stream = await client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "stream"}],
        max_tokens=30,
        stream=True,
        logit_bias={"2": -100},
    )
    async for chunk in stream:
        pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert len(pieces) >= 20  # many chunks: the gateway did not buffer the stream
    scoped = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1",
        api_key=stack.issuer.server_token(server, "ci-bot"),
        max_retries=0,
    )
    assert (await scoped.models.list()).data[0].id == "demo"
    anonymous = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key="nope", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await anonymous.models.list()


async def test_unknown_starting_and_failed_servers(stack: Any) -> None:
    auth = stack.auth("alice")
    unknown = await stack.http.get(f"{stack.gateway}/{uuid.uuid4()}/v1/models", headers=auth)
    assert unknown.status_code == 404
    starting = await ready_server(stack, None, status=ServerStatus.MIRRORING)
    answer = await stack.http.get(f"{stack.gateway}/{starting}/v1/models", headers=auth)
    assert answer.status_code == 503 and int(answer.headers["retry-after"]) > 0
    failed = await ready_server(stack, None, status=ServerStatus.FAILED)
    answer = await stack.http.get(f"{stack.gateway}/{failed}/v1/models", headers=auth)
    assert answer.status_code == 410
    not_uuid = await stack.http.get(f"{stack.gateway}/not-a-uuid/v1/models", headers=auth)
    assert not_uuid.status_code == 404


async def test_idle_server_is_woken_in_local_mode(
    stack_factory: Any, runtime: RuntimeServer
) -> None:
    async def wake(server: uuid.UUID) -> str:
        return runtime.url  # the local backend starts the process and returns its URL

    stack = await stack_factory(wake=wake)
    server = await ready_server(stack, None, status=ServerStatus.IDLE)
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
    )
    assert (await client.models.list()).data[0].id == "demo"
    assert stack.wakes == [server]


async def test_auth_endpoint_answers_with_identity(stack: Any) -> None:
    server = uuid.uuid4()
    ok = await stack.http.get(
        f"{stack.api}/auth",
        headers={
            "Authorization": f"Bearer {stack.issuer.server_token(server, 'ci-bot')}",
            "X-Forwarded-Uri": f"/{server}/v1/chat/completions",
        },
    )
    assert ok.status_code == 200
    assert (ok.headers["x-auth-subject"], ok.headers["x-auth-kind"]) == ("ci-bot", "server")
    api = await stack.http.get(
        f"{stack.api}/auth",
        headers={
            "Authorization": f"Bearer {stack.issuer.access_token('vic', Role.VIEWER)}",
            "X-Forwarded-Uri": "/servers",
        },
    )
    assert api.status_code == 200 and api.headers["x-auth-role"] == "viewer"


async def test_auth_answers_envoys_prefixed_check_with_the_same_rule(stack: Any) -> None:
    """Kourier's Envoy asks at ``/auth`` + the original path, with the original method
    (config/optional/kourier-extauthz.yaml)."""
    server = uuid.uuid4()
    scoped = {"Authorization": f"Bearer {stack.issuer.server_token(server, 'ci-bot')}"}
    ok = await stack.http.post(f"{stack.api}/auth/{server}/v1/chat/completions", headers=scoped)
    assert ok.status_code == 200
    assert (ok.headers["x-auth-subject"], ok.headers["x-auth-kind"]) == ("ci-bot", "server")
    other = await stack.http.post(f"{stack.api}/auth/{uuid.uuid4()}/v1/models", headers=scoped)
    assert other.status_code in (401, 403)  # scoped to another server
    assert (await stack.http.get(f"{stack.api}/auth/servers")).status_code == 401
    viewer = {"Authorization": f"Bearer {stack.issuer.access_token('vic', Role.VIEWER)}"}
    listed = await stack.http.get(f"{stack.api}/auth/servers", headers=viewer)
    assert listed.status_code == 200 and listed.headers["x-auth-role"] == "viewer"
    # Signing in needs no credential at the ingress; it still reaches the real login.
    assert (await stack.http.post(f"{stack.api}/auth/auth/token")).status_code == 200
    login = await stack.http.post(
        f"{stack.api}/auth/token", data={"username": "vic", "password": "wrong-password"}
    )
    assert login.status_code == 401


async def test_a_runtime_that_dies_is_a_502_to_retry_or_an_error_event(stack: Any) -> None:
    """A runtime killed before it answers: 502 with Retry-After (the backend brings it
    back in seconds). Killed mid-stream: the stream ends with an error event, never
    silently cut."""
    deaths: list[str] = []

    async def runtime(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if not deaths:  # the first one dies before answering
            deaths.append("before")
        else:  # the second answers a stream, two chunks, then dies
            deaths.append("mid-stream")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            writer.write(b'1b\r\ndata: {"choices": ["one"]}\n\n\r\n')
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.transport.abort()  # like kill -9: no FIN, no last chunk

    dying = await asyncio.start_server(runtime, "127.0.0.1", 0)
    port = dying.sockets[0].getsockname()[1]
    server = await ready_server(stack, f"http://127.0.0.1:{port}")
    auth = stack.auth("alice")
    try:
        gone = await stack.http.post(
            f"{stack.gateway}/{server}/v1/completions", headers=auth, json={}
        )
        assert gone.status_code == 502 and gone.headers["retry-after"] == "5", gone.text
        lines: list[str] = []
        async with stack.http.stream(
            "POST", f"{stack.gateway}/{server}/v1/completions", headers=auth, json={}
        ) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line:
                    lines.append(line)
    finally:
        dying.close()
        await dying.wait_closed()
    assert deaths == ["before", "mid-stream"]
    assert lines[0] == 'data: {"choices": ["one"]}'
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == 502 and "stopped answering mid-stream" in error["message"]


async def test_a_small_answer_cut_short_is_a_502_not_a_truncated_body(stack: Any) -> None:
    """A non-streamed answer of known length is relayed whole: one the runtime breaks
    off before its length is reached is a 502 to retry, never half a JSON body."""

    async def runtime(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n"
            b'{"choices": ['
        )
        await writer.drain()
        writer.transport.abort()

    cutting = await asyncio.start_server(runtime, "127.0.0.1", 0)
    port = cutting.sockets[0].getsockname()[1]
    server = await ready_server(stack, f"http://127.0.0.1:{port}")
    try:
        answer = await stack.http.post(
            f"{stack.gateway}/{server}/v1/completions", headers=stack.auth("alice"), json={}
        )
    finally:
        cutting.close()
        await cutting.wait_closed()
    assert answer.status_code == 502 and answer.headers["retry-after"] == "5", answer.text
    assert "broke off" in answer.json()["detail"]


async def test_the_path_and_query_reach_the_runtime_as_sent(stack: Any) -> None:
    lines: list[bytes] = []

    async def runtime(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0])
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    seen = await asyncio.start_server(runtime, "127.0.0.1", 0)
    port = seen.sockets[0].getsockname()[1]
    server = await ready_server(stack, f"http://127.0.0.1:{port}")
    try:
        answer = await stack.http.get(
            f"{stack.gateway}/{server}/v1/models?limit=2&after=a%20b&x=%2F",
            headers=stack.auth("alice"),
        )
    finally:
        seen.close()
        await seen.wait_closed()
    assert answer.status_code == 200 and answer.json() == {}
    assert lines == [b"GET /v1/models?limit=2&after=a%20b&x=%2F HTTP/1.1"]
