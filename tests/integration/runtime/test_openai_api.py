"""The runtime through the real `openai` client: chat, completion, streams, embeddings."""

from __future__ import annotations

import asyncio
import base64
import re
import struct

import httpx
import openai
import pytest

from modelserve.shared.metrics import documented_names
from support.runtime import RuntimeServer
from support.scrape import exposed_names, fetch

NO_EOS = {"2": -100}  # token 2 is </s>: suppressing it makes generations run to max_tokens


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def test_models(runtime: RuntimeServer) -> None:
    models = client(runtime).models.list()
    assert [m.id for m in models.data] == ["demo"]
    assert client(runtime).models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        client(runtime).models.retrieve("other")


def test_chat_completion(runtime: RuntimeServer) -> None:
    reply = client(runtime).chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=12,
        logit_bias=NO_EOS,
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert reply.model == "demo"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens > 3  # the chat template wraps the message


def test_completion(runtime: RuntimeServer) -> None:
    reply = client(runtime).completions.create(
        model="demo", prompt="Once upon a time", max_tokens=8, logit_bias=NO_EOS
    )
    assert reply.choices[0].text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8


def test_streamed_chat_ends_with_done_and_usage(runtime: RuntimeServer) -> None:
    stream = client(runtime).chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=NO_EOS,
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces)
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 20


def test_raw_stream_is_server_sent_events_ending_in_done(runtime: RuntimeServer) -> None:
    with httpx.stream(
        "POST",
        f"{runtime.url}/openai/v1/completions",
        json={"model": "demo", "prompt": "x", "max_tokens": 5, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_embeddings(runtime: RuntimeServer) -> None:
    result = client(runtime).embeddings.create(model="demo", input=["hello", "world!"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in result.data)  # the tiny model's width
    assert result.data[0].embedding != result.data[1].embedding


def test_embeddings_as_base64_are_the_same_floats(runtime: RuntimeServer) -> None:
    """The official client asks for base64 (little-endian float32) unless told not to."""
    url = f"{runtime.url}/v1/embeddings"
    floats = httpx.post(url, json={"model": "demo", "input": "hello"}, timeout=60).json()
    packed = httpx.post(
        url, json={"model": "demo", "input": "hello", "encoding_format": "base64"}, timeout=60
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "message"),
    [
        ("completions", {"model": "other", "prompt": "x"}, 404, "model", "does not exist"),
        ("completions", {"model": "demo", "prompt": "x", "temperature": 5}, 400, "temperature", ""),
        ("completions", {"model": "demo", "prompt": "x", "n": 0}, 400, "n", ""),
        ("completions", {"model": "demo", "prompt": "x", "n": 9}, 400, "n", "at most 4"),
        ("completions", {"model": "demo", "prompt": []}, 400, "prompt", ""),
        ("completions", {"model": "demo", "prompt": "x", "stop": list("abcde")}, 400, "stop", "4"),
        ("completions", {"model": "demo", "prompt": "x", "logprobs": 6}, 400, "logprobs", ""),
        ("completions", {"model": "demo", "prompt": "x", "top_k": -1}, 400, "top_k", ""),
        ("completions", {"model": "demo", "prompt": "x", "min_p": 2}, 400, "min_p", ""),
        ("completions", {"model": "demo", "prompt": "x", "typical_p": 0}, 400, "typical_p", ""),
        (
            "completions",
            {"model": "demo", "prompt": "x", "repeat_penalty": 0},
            400,
            "repeat_penalty",
            "",
        ),
        (
            "completions",
            {"model": "demo", "prompt": "x", "grammar": "root ::= ("},
            400,
            "grammar",
            "",
        ),
        (
            "completions",
            {"model": "demo", "prompt": "x", "logit_bias": {"99999": 1}},
            400,
            "logit_bias",
            "outside 0..258",
        ),
        (
            "completions",
            {"model": "demo", "prompt": "x", "logit_bias": {"5": 101}},
            400,
            "logit_bias",
            "",
        ),
        (
            "completions",
            {"model": "demo", "prompt": "x " * 3000, "max_tokens": 4},
            400,
            "prompt",
            "context",
        ),
        ("completions", {"prompt": "x"}, 400, "model", ""),
        (
            "chat/completions",
            {"model": "demo", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            400,
            "top_logprobs",
            "logprobs must be true",
        ),
        (
            "chat/completions",
            {"model": "demo", "messages": [{"role": "user", "content": "x " * 3000}]},
            400,
            "messages",
            "context",
        ),
        (
            "chat/completions",
            {"model": "demo", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages",
            "",
        ),
        (
            "chat/completions",
            {
                "model": "demo",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema"},
            },
            400,
            "response_format",
            "",
        ),
        (
            "chat/completions",
            {
                "model": "demo",
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            400,
            "tool_choice",
            "nope",
        ),
    ],
)
def test_bad_values_are_400s_naming_the_field(
    runtime: RuntimeServer,
    path: str,
    body: dict[str, object],
    status: int,
    param: str,
    message: str,
) -> None:
    response = httpx.post(f"{runtime.url}/v1/{path}", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert re.search(message, error["message"]), error


def test_bad_values_raise_the_clients_bad_request_error(runtime: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(runtime).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}], temperature=3
        )
    assert caught.value.param == "temperature"


def test_unknown_fields_are_ignored(runtime: RuntimeServer) -> None:
    reply = client(runtime).completions.create(
        model="demo",
        prompt="x",
        max_tokens=2,
        user="someone",
        extra_body={"frobnicate": {"deep": [1, 2]}, "store": True},
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_invalid_json_is_a_400(runtime: RuntimeServer) -> None:
    response = httpx.post(f"{runtime.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


async def test_two_concurrent_streams_both_finish_complete(runtime: RuntimeServer) -> None:
    async_client = openai.AsyncOpenAI(base_url=runtime.openai_base, api_key="x", max_retries=0)

    async def one(prompt: str) -> tuple[str | None, int, int]:
        stream = await async_client.completions.create(
            model="demo",
            prompt=prompt,
            max_tokens=300,
            stream=True,
            stream_options={"include_usage": True},
            logit_bias=NO_EOS,
        )
        finish, chunks, tokens = None, 0, 0
        async for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                reason: str | None = choice.finish_reason  # None on all but the last chunk
                finish = reason or finish
        return finish, chunks, tokens

    results = await asyncio.gather(one("first"), one("second"))
    for finish, chunks, tokens in results:
        assert finish == "length"  # neither was cut short by the other
        assert tokens == 300
        assert chunks >= 300


def metric(runtime: RuntimeServer, name: str) -> float:
    text = httpx.get(f"{runtime.url}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_count_tokens_and_latency(runtime: RuntimeServer) -> None:
    before = metric(runtime, "modelserve_generated_tokens_total")
    prompt_before = metric(runtime, "modelserve_prompt_tokens_total")
    ttft_before = metric(runtime, "modelserve_time_to_first_token_seconds_count")
    reply = client(runtime).completions.create(
        model="demo", prompt="abc", max_tokens=7, logit_bias=NO_EOS
    )
    assert reply.usage is not None
    assert metric(runtime, "modelserve_generated_tokens_total") - before == 7
    # The hook's count agrees with llama.cpp's own tokenizer count (<s>, "▁" as
    # three byte tokens, a, b, c).
    assert reply.usage.prompt_tokens == 7
    assert metric(runtime, "modelserve_prompt_tokens_total") - prompt_before == 7
    assert metric(runtime, "modelserve_time_to_first_token_seconds_count") == ttft_before + 1
    assert metric(runtime, "modelserve_inter_token_latency_seconds_count") >= 6
    assert metric(runtime, "modelserve_requests_running") == 0
    assert metric(runtime, "modelserve_requests_waiting") == 0
    # Every name it serves is in the README's list, and every runtime name there is served.
    assert exposed_names(fetch(f"{runtime.url}/metrics")) == documented_names("runtime")


def test_stream_disconnect_stops_generation(runtime: RuntimeServer) -> None:
    before = metric(runtime, "modelserve_generated_tokens_total")
    with httpx.stream(
        "POST",
        f"{runtime.url}/v1/completions",
        json={
            "model": "demo",
            "prompt": "go",
            "max_tokens": 1900,
            "stream": True,
            "logit_bias": NO_EOS,
        },
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # The connection is closed: the next request is served promptly, and the
    # abandoned generation stopped far short of its 1900 tokens.
    reply = client(runtime).completions.create(model="demo", prompt="next", max_tokens=3)
    assert reply.choices[0].text is not None
    generated = metric(runtime, "modelserve_generated_tokens_total") - before
    assert generated < 1000, f"{generated} tokens generated after the client left"


def test_non_streamed_disconnect_stops_generation(runtime: RuntimeServer) -> None:
    before = metric(runtime, "modelserve_generated_tokens_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{runtime.url}/v1/completions",
            json={"model": "demo", "prompt": "go", "max_tokens": 1900, "logit_bias": NO_EOS},
            timeout=httpx.Timeout(5, read=0.3),
        )
    reply = client(runtime).completions.create(model="demo", prompt="next", max_tokens=3)
    assert reply.choices[0].text is not None
    generated = metric(runtime, "modelserve_generated_tokens_total") - before
    assert generated < 1500, f"{generated} tokens generated after the client left"
