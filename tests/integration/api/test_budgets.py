"""Token budgets at the gateway: 429 past the limit, exact within one request's tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.runtime import RuntimeServer, start_runtime

Sessions = async_sessionmaker[AsyncSession]
NO_EOS = {"2": -100}
MESSAGE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "the same question every time"}
]


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo", "--max-queue", "40")
    yield server
    server.stop()


@pytest.fixture
async def db_stack(stack_factory: Any, sessions: Sessions) -> Any:
    return await stack_factory(sessions=sessions)


async def ready(stack: Any, runtime: RuntimeServer, owner: str = "alice") -> uuid.UUID:
    async with stack.sessions.begin() as session:
        return await new_server(
            session, status=ServerStatus.READY, owner=owner, internal_url=runtime.url
        )


async def test_a_key_budget_holds_exactly_under_parallel_streams(
    db_stack: Any, runtime: RuntimeServer
) -> None:
    stack = db_stack
    server = await ready(stack, runtime)
    measure = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("alice"), max_retries=0
    )
    first = await measure.chat.completions.create(
        model="demo",
        messages=MESSAGE,
        max_tokens=6,
        logit_bias=NO_EOS,
    )
    assert first.usage is not None
    cost = first.usage.total_tokens  # every request below costs exactly this
    # Room for a 4th request's worst case (6 tokens), not for a 5th's.
    budget = 3 * cost + max(cost // 2, 6)
    made = await stack.http.post(
        f"{stack.api}/keys",
        headers=stack.auth("alice"),
        json={"name": "b", "tokens_per_day": budget},
    )
    assert made.status_code == 201 and made.json()["tokens_per_day"] == budget
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=made.json()["key"], max_retries=0
    )

    async def stream() -> bool:
        try:
            chunks = await client.chat.completions.create(
                model="demo",
                messages=MESSAGE,
                max_tokens=6,
                logit_bias=NO_EOS,
                stream=True,
            )
            async for _ in chunks:
                pass
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return False
        return True

    admitted = sum(await asyncio.gather(*(stream() for _ in range(20))))
    assert admitted == 4  # each starts only while the day's figure is below the budget
    assert stack.recorder is not None
    await stack.recorder.flush()
    usage = await stack.http.get(
        f"{stack.api}/usage", headers=stack.auth("alice"), params={"key_id": made.json()["key_id"]}
    )
    total = usage.json()["prompt_tokens"] + usage.json()["completion_tokens"]
    assert total == 4 * cost and budget <= total < budget + cost  # over by under one request

    refused = await stack.http.post(
        f"{stack.gateway}/{server}/v1/chat/completions",
        headers={"Authorization": f"Bearer {made.json()['key']}"},
        json={"model": "demo", "messages": MESSAGE, "max_tokens": 2},
    )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["type"] == "insufficient_quota"
    listing = await client.models.list()  # not metered: still open
    assert listing.data[0].id == "demo"


async def test_a_user_budget_applies_to_their_tokens_and_can_be_lifted(
    db_stack: Any, runtime: RuntimeServer
) -> None:
    stack = db_stack
    server = await ready(stack, runtime, owner="bob")
    patched = await stack.http.patch(
        f"{stack.api}/users/bob", headers=stack.auth("root"), json={"tokens_per_day": 1}
    )
    assert patched.status_code == 200 and patched.json()["tokens_per_day"] == 1
    assert patched.json()["disabled_at"] is None
    client = openai.AsyncOpenAI(
        base_url=f"{stack.gateway}/{server}/v1", api_key=stack.token("bob"), max_retries=0
    )

    async def ask() -> None:
        await client.completions.create(model="demo", prompt="a", max_tokens=1, logit_bias=NO_EOS)

    await ask()  # the day's figure was 0, its worst case 1: admitted, and now past the budget
    with pytest.raises(openai.RateLimitError):
        await ask()
    lifted = await stack.http.patch(
        f"{stack.api}/users/bob", headers=stack.auth("root"), json={"tokens_per_day": None}
    )
    assert lifted.json()["tokens_per_day"] is None
    start = time.monotonic()
    while True:  # the gateway's replica sees it within its cache's TTL
        try:
            await ask()
            break
        except openai.RateLimitError:
            assert time.monotonic() - start < 2.0
            await asyncio.sleep(0.05)
