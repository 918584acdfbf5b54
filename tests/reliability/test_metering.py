"""Metering and budgets cannot be skipped: other spellings, odd types, big or odd answers.

Against the real runtime (the tiny generated model) behind the real gateway:
each attack either is refused with a 4xx before the runtime works, or is
metered to the tokens the runtime itself reports. The runtime's own Prometheus
counters are the witness that nothing ran.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from modelserve.functions.usage import MAX_JSON_BYTES
from modelserve.shared.lifecycle import ServerStatus
from support.asgi import serving
from support.records import new_server
from support.reliability import Recorder
from support.runtime import RuntimeServer, start_runtime

pytestmark = pytest.mark.reliability("metering")
NO_EOS = {"2": -100}  # every answer runs to its max_tokens
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

# Spellings of /v1/chat/completions (and neighbours) that a second URL parser
# could read as the chat route; each must be refused, none may reach the runtime.
AMBIGUOUS = {
    "encoded ? at the end": "v1/chat/completions%3F",
    "encoded ? and a query": "v1/chat/completions%3Fx=1",
    "encoded #": "v1/chat/completions%23",
    "encoded / and dot": "v1/chat/completions%2F.",
    "encoded slash inside": "v1/chat%2Fcompletions",
    "encoded dot segment": "v1/%2E/chat/completions",
    "dot segment": "v1/./chat/completions",
    "dot-dot segment": "v1/x/../chat/completions",
    "double slash": "v1//chat/completions",
    "trailing slash": "v1/chat/completions/",
    "encoded letter": "v1/chat/complet%69ons",
    "semicolon parameter": "v1/chat/completions;x",
    "backslash": "v1\\chat\\completions",
}


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo", "--embeddings", "--max-queue", "16")
    yield server
    server.stop()


async def runtime_work(url: str) -> float:
    """Prompt plus generated tokens the runtime counted so far."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("modelserve_prompt_tokens_total", "modelserve_generated_tokens_total"):
            total += float(value)
    return total


async def raw_post(base: str, path: str, token: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """POST ``path`` exactly as written (no client-side normalisation); status and body."""
    url = httpx.URL(base)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def ready_server(stack: Any, url: str) -> uuid.UUID:
    async with stack.sessions.begin() as session:
        return await new_server(session, status=ServerStatus.READY, owner="alice", internal_url=url)


async def budget_key(stack: Any, tokens: int | None) -> tuple[str, str]:
    """(key, key id) of a new key of alice's with ``tokens`` per day."""
    made = await stack.http.post(
        f"{stack.api}/keys",
        headers=stack.auth("alice"),
        json={"name": f"k{uuid.uuid4().hex[:8]}", "tokens_per_day": tokens},
    )
    assert made.status_code == 201, made.text
    return made.json()["key"], made.json()["key_id"]


async def used(stack: Any, key_id: str) -> tuple[int, int]:
    """(prompt, completion) tokens recorded for ``key_id``."""
    await stack.recorder.flush()
    answer = await stack.http.get(
        f"{stack.api}/usage", headers=stack.auth("alice"), params={"key_id": key_id}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["prompt_tokens"], answer.json()["completion_tokens"]


async def spent_key(stack: Any, server: uuid.UUID) -> str:
    """A key whose day's budget is already used up (checked: the canonical path is 429)."""
    key, _ = await budget_key(stack, 1)
    first = await stack.http.post(
        f"{stack.gateway}/{server}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={**CHAT, "max_tokens": 1},
    )
    assert first.status_code == 200, first.text
    again = await stack.http.post(
        f"{stack.gateway}/{server}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=CHAT,
    )
    assert again.status_code == 429, again.text
    return key


async def test_other_spellings_of_a_path_are_refused_not_relayed(
    stack: Any, runtime: RuntimeServer, reliability: Recorder
) -> None:
    server = await ready_server(stack, runtime.url)
    key = await spent_key(stack, server)
    for case, path in AMBIGUOUS.items():
        reliability.case(
            f"gateway path: {case}",
            injected=f"POST /<uuid>/{path} with a key whose budget is spent",
            checked="400 naming the path rule; the runtime did no work",
        )
        before = await runtime_work(runtime.url)
        status, body = await raw_post(stack.gateway, f"/{server}/{path}", key, CHAT)
        assert status == 400, (case, status, body[:300])
        assert b"canonical" in body, (case, body[:300])
        assert await runtime_work(runtime.url) == before, case
    reliability.case(
        "gateway path: encoded slash after the server",
        injected="POST /<uuid>%2Fv1/chat/completions",
        checked="4xx; the runtime did no work",
    )
    before = await runtime_work(runtime.url)
    status, _ = await raw_post(stack.gateway, f"/{server}%2Fv1/chat/completions", key, CHAT)
    assert 400 <= status < 500 and await runtime_work(runtime.url) == before


async def test_fields_the_meter_reads_must_have_their_json_types(
    stack: Any, runtime: RuntimeServer, reliability: Recorder
) -> None:
    server = await ready_server(stack, runtime.url)
    key, _ = await budget_key(stack, None)
    odd: dict[str, dict[str, Any]] = {
        '"stream": 1': {"stream": 1},
        '"stream": "true"': {"stream": "true"},
        '"include_usage": "false"': {"stream": True, "stream_options": {"include_usage": "false"}},
        '"n": "2"': {"n": "2"},
        '"max_tokens": "3"': {"max_tokens": "3"},
    }
    for case, fields in odd.items():
        reliability.case(
            f"chat body {case}",
            injected=f"POST chat/completions with {case}",
            checked="400 naming the field; the runtime did no work",
        )
        before = await runtime_work(runtime.url)
        answer = await stack.http.post(
            f"{stack.gateway}/{server}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={**CHAT, **fields},
        )
        assert answer.status_code == 400, (case, answer.status_code, answer.text[:300])
        assert await runtime_work(runtime.url) == before, case


async def test_embeddings_and_tokenizer_routes_are_metered(
    stack: Any, runtime: RuntimeServer, reliability: Recorder
) -> None:
    server = await ready_server(stack, runtime.url)
    key, key_id = await budget_key(stack, 10_000)
    auth = {"Authorization": f"Bearer {key}"}
    base = f"{stack.gateway}/{server}"
    reliability.case(
        "embeddings metered",
        injected="POST v1/embeddings with two inputs",
        checked="the runtime's usage.prompt_tokens recorded as prompt tokens",
        outcome="survived",
    )
    embedded = await stack.http.post(
        f"{base}/v1/embeddings", headers=auth, json={"model": "demo", "input": ["hi", "there you"]}
    )
    assert embedded.status_code == 200, embedded.text
    expected = embedded.json()["usage"]["prompt_tokens"]
    assert expected > 0 and await used(stack, key_id) == (expected, 0)
    for path in ("tokenize", "v1/tokenize", "openai/v1/tokenize"):
        reliability.case(
            f"{path} metered",
            injected=f"POST {path}",
            checked="the tokens it returns recorded as prompt tokens",
            outcome="survived",
        )
        tokenized = await stack.http.post(
            f"{base}/{path}", headers=auth, json={"content": "count these words please"}
        )
        assert tokenized.status_code == 200, tokenized.text
        expected += len(tokenized.json()["tokens"])
        assert await used(stack, key_id) == (expected, 0), path
    reliability.case(
        "detokenize metered",
        injected="POST v1/detokenize with 5 token ids",
        checked="5 prompt tokens recorded",
        outcome="survived",
    )
    detokenized = await stack.http.post(
        f"{base}/v1/detokenize", headers=auth, json={"tokens": [1, 2, 3, 4, 5]}
    )
    assert detokenized.status_code == 200, detokenized.text
    assert await used(stack, key_id) == (expected + 5, 0)
    reliability.case(
        "embeddings past a spent budget",
        injected="POST v1/embeddings with a key whose budget is spent",
        checked="429; the runtime did no work",
    )
    spent = await spent_key(stack, server)
    before = await runtime_work(runtime.url)
    refused = await stack.http.post(
        f"{base}/v1/embeddings",
        headers={"Authorization": f"Bearer {spent}"},
        json={"model": "demo", "input": "hi"},
    )
    assert refused.status_code == 429 and await runtime_work(runtime.url) == before


async def test_one_request_cannot_run_far_past_its_budget(
    stack: Any, runtime: RuntimeServer, reliability: Recorder
) -> None:
    server = await ready_server(stack, runtime.url)
    url = f"{stack.gateway}/{server}/v1/completions"
    key, key_id = await budget_key(stack, 40)
    auth = {"Authorization": f"Bearer {key}"}
    reliability.case(
        "n x prompts x max_tokens over the budget",
        injected="completions: 2 prompts, n=4, max_tokens=50 under a 40-token budget",
        checked="429 before the runtime works; nothing recorded",
    )
    before = await runtime_work(runtime.url)
    big = {"model": "demo", "prompt": ["a", "b"], "n": 4, "max_tokens": 50, "logit_bias": NO_EOS}
    refused = await stack.http.post(url, headers=auth, json=big)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert await runtime_work(runtime.url) == before
    assert await used(stack, key_id) == (0, 0)
    reliability.case(
        "no max_tokens under a budget",
        injected="chat with n=2 and no max_tokens (the context's worth) under a 40-token budget",
        checked="answered, its completion held within what the budget had left",
    )
    open_ended = {**CHAT, "n": 2, "logit_bias": NO_EOS}
    del open_ended["max_tokens"]
    answer = await stack.http.post(
        f"{stack.gateway}/{server}/v1/chat/completions", headers=auth, json=open_ended
    )
    assert answer.status_code == 200, answer.text
    _, completion = await used(stack, key_id)
    assert 0 < completion <= 40 and completion == answer.json()["usage"]["completion_tokens"]


@pytest.fixture
async def long_answers() -> AsyncIterator[str]:
    """A stand-in runtime whose non-streamed answers are longer than the meter parses whole.

    Shaped as the runtime writes them: ``usage`` last. The real runtime would
    need tens of thousands of tokens to get there.
    """
    app = FastAPI()
    filler = "x" * (MAX_JSON_BYTES + 1024)

    @app.post("/v1/completions")
    async def complete(request: Request) -> Response:
        await request.body()
        answer = {
            "choices": [{"index": 0, "text": filler + '"usage": {"prompt_tokens": 1}}'}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 70_000, "total_tokens": 70_007},
        }
        return Response(json.dumps(answer), media_type="application/json")

    async with serving(app) as url:
        yield url


async def test_a_long_json_answer_is_still_metered(
    stack: Any, long_answers: str, reliability: Recorder
) -> None:
    server = await ready_server(stack, long_answers)
    key, key_id = await budget_key(stack, None)
    reliability.case(
        "non-streamed answer over the meter's parse limit",
        injected=f"a {MAX_JSON_BYTES // 2**20 + 1} MB JSON completion, a fake usage in its text",
        checked="the answer's own usage recorded (7 + 70000), not 0 and not the fake",
    )
    answer = await stack.http.post(
        f"{stack.gateway}/{server}/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "demo", "prompt": "a"},
    )
    assert answer.status_code == 200 and len(answer.content) > MAX_JSON_BYTES
    assert await used(stack, key_id) == (7, 70_000)
