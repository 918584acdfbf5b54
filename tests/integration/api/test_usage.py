"""Token usage through the gateway: exact across parallel streams, batched, filtered.

The expected figures come from the runtime's own Prometheus counters, not from
the gateway, so a gateway that miscounts (or counts a stream twice) fails.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.runtime import RuntimeServer, start_runtime

Sessions = async_sessionmaker[AsyncSession]
NO_EOS = {"2": -100}  # every answer runs to max_tokens, so the runtime's counters match


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo", "--max-queue", "40")
    yield server
    server.stop()


@pytest.fixture
async def db_stack(stack_factory: Any, sessions: Sessions) -> Any:
    return await stack_factory(sessions=sessions)


async def runtime_tokens(url: str) -> tuple[float, float]:
    """(prompt, generated) tokens the runtime counted so far."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("modelserve_prompt_tokens_total", "modelserve_generated_tokens_total"):
            values[name] = float(value)
    return values["modelserve_prompt_tokens_total"], values["modelserve_generated_tokens_total"]


async def setup(stack: Any, runtime: RuntimeServer, user: str = "alice") -> tuple[uuid.UUID, str]:
    async with stack.sessions.begin() as session:
        server = await new_server(
            session, status=ServerStatus.READY, owner="alice", internal_url=runtime.url
        )
    made = await stack.http.post(
        f"{stack.api}/keys", headers=stack.auth(user), json={"name": "meter"}
    )
    return server, made.json()["key"]


async def usage(stack: Any, as_user: str = "root", **params: str) -> dict[str, Any]:
    answer = await stack.http.get(f"{stack.api}/usage", headers=stack.auth(as_user), params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_usage_adds_up_exactly_across_parallel_streams(
    db_stack: Any, runtime: RuntimeServer
) -> None:
    stack = db_stack
    server, key = await setup(stack, runtime)
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway}/{server}/v1", api_key=key, max_retries=0)
    before = await runtime_tokens(runtime.url)

    async def stream(i: int) -> tuple[int, bool]:
        asks = i % 2 == 0
        chunks = await client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": f"stream number {i} " * (1 + i % 3)}],
            max_tokens=6,
            stream=True,
            logit_bias=NO_EOS,
            stream_options={"include_usage": True} if asks else openai.omit,
        )
        empty = 0
        async for chunk in chunks:
            if not chunk.choices:
                empty += 1
                assert chunk.usage is not None
        return empty, asks

    results = await asyncio.gather(*(stream(i) for i in range(20)))
    # The usage chunk reaches only the clients that asked for it.
    assert [empty for empty, asks in results if asks] == [1] * 10
    assert [empty for empty, asks in results if not asks] == [0] * 10
    reply = await client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "once"}],
        max_tokens=4,
        logit_bias=NO_EOS,
    )
    after = await runtime_tokens(runtime.url)
    assert stack.recorder is not None
    await stack.recorder.flush()
    total = await usage(stack, server_uuid=str(server))
    assert total["requests"] == 21
    assert total["prompt_tokens"] == after[0] - before[0]
    assert total["completion_tokens"] == after[1] - before[1]
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    (row,) = total["rows"]
    assert (row["username"], row["key_id"]) == ("alice", key.split("_")[1])


async def test_a_cut_stream_counts_what_was_sent(db_stack: Any, runtime: RuntimeServer) -> None:
    stack = db_stack
    server, key = await setup(stack, runtime)
    received = 0
    async with stack.http.stream(
        "POST",
        f"{stack.gateway}/{server}/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "demo",
            "prompt": "a",
            "max_tokens": 400,
            "stream": True,
            "logit_bias": NO_EOS,
        },
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"text"' in line:
                received += 1
                if received == 3:
                    break
    assert stack.recorder is not None
    for _ in range(100):  # the gateway notices the hang-up, then records
        await stack.recorder.flush()
        counted = await usage(stack, server_uuid=str(server))
        if counted["requests"]:
            break
        await asyncio.sleep(0.05)
    assert counted["requests"] == 1
    assert 3 <= counted["completion_tokens"] < 400


async def test_usage_is_batched_and_filtered(db_stack: Any, runtime: RuntimeServer) -> None:
    stack = db_stack
    server, key = await setup(stack, runtime)
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway}/{server}/v1", api_key=key, max_retries=0)
    await client.completions.create(model="demo", prompt="a", max_tokens=3, logit_bias=NO_EOS)
    async with stack.sessions.begin() as session:  # bob uses a server of his own
        bobs_server = await new_server(
            session, status=ServerStatus.READY, owner="bob", internal_url=runtime.url
        )
    jwt = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{bobs_server}/v1", api_key=stack.token("bob"), max_retries=0
    )
    await jwt.completions.create(model="demo", prompt="b", max_tokens=2, logit_bias=NO_EOS)
    await client.models.list()  # not metered
    assert (await usage(stack))["requests"] == 0  # nothing written by the requests themselves
    assert stack.recorder is not None
    await stack.recorder.flush()
    everyone = await usage(stack)
    assert (everyone["requests"], everyone["completion_tokens"]) == (2, 5)
    alices = await usage(stack, "alice")  # a user sees their own
    assert alices == await usage(stack, "root", user="alice")
    assert (alices["completion_tokens"], alices["rows"][0]["key_id"]) == (3, key.split("_")[1])
    bobs = await usage(stack, "root", user="bob")
    assert (bobs["completion_tokens"], bobs["rows"][0]["key_id"]) == (2, "")
    by_key = await usage(stack, key_id=key.split("_")[1])
    assert by_key["completion_tokens"] == 3
    assert (await usage(stack, since="2999-01-01T00:00:00Z"))["requests"] == 0
    assert (await usage(stack, until="2000-01-01T00:00:00Z"))["requests"] == 0
    spying = await stack.http.get(
        f"{stack.api}/usage", headers=stack.auth("alice"), params={"user": "bob"}
    )
    assert spying.status_code == 403
    metrics = (await stack.http.get(f"{stack.gateway}/metrics", headers=stack.auth("root"))).text
    labels = f'key="",server="{bobs_server}",user="bob"'
    assert f"modelserve_gateway_completion_tokens_total{{{labels}}} 2.0" in metrics
