"""Log-probabilities in OpenAI's shapes: chat (``logprobs``/``top_logprobs``) and completions."""

from __future__ import annotations

import math

import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionTokenLogprob

from support.runtime import RuntimeServer

NO_EOS = {"2": -100}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say something"}]


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def _check_entries(entries: list[ChatCompletionTokenLogprob], top: int, greedy: bool) -> None:
    for entry in entries:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode()) or "\ufffd" in entry.token
        assert len(entry.top_logprobs) == top
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        if greedy:  # the chosen token is the most likely one
            assert entry.token == entry.top_logprobs[0].token
            assert math.isclose(entry.logprob, entry.top_logprobs[0].logprob, abs_tol=1e-5)


def test_chat_logprobs(runtime: RuntimeServer) -> None:
    reply = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        max_tokens=10,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        logit_bias=NO_EOS,
    )
    assert isinstance(reply, ChatCompletion)
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert len(entries) == 10
    assert "".join(e.token for e in entries) == choice.message.content
    _check_entries(entries, 3, greedy=True)


def test_chat_logprobs_without_top(runtime: RuntimeServer) -> None:
    reply = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        max_tokens=5,
        logprobs=True,
        logit_bias=NO_EOS,
    )
    entries = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries is not None and len(entries) == 5
    assert all(e.top_logprobs == [] for e in entries)


def test_chat_logprobs_are_absent_unless_asked(runtime: RuntimeServer) -> None:
    reply = client(runtime).chat.completions.create(model="demo", messages=ASK, max_tokens=3)
    assert reply.choices[0].logprobs is None


def test_streamed_chat_logprobs(runtime: RuntimeServer) -> None:
    stream = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        logit_bias=NO_EOS,
        stream=True,
    )
    entries: list[ChatCompletionTokenLogprob] = []
    text = []
    for chunk in stream:
        for part in chunk.choices:
            text.append(part.delta.content or "")
            if part.logprobs is not None and part.logprobs.content:
                entries += part.logprobs.content
    assert len(entries) == 12
    assert "".join(e.token for e in entries) == "".join(text)
    _check_entries(entries, 2, greedy=True)


def test_completion_logprobs(runtime: RuntimeServer) -> None:
    reply = client(runtime).completions.create(
        model="demo", prompt="Once", max_tokens=8, logprobs=4, temperature=0, logit_bias=NO_EOS
    )
    assert isinstance(reply, Completion)
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None and len(logprobs.tokens) == 8
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(8)]
    assert logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    for token, value, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) <= 4 and max(top.values()) == value and top[token] == value


def test_streamed_completion_logprobs(runtime: RuntimeServer) -> None:
    tokens: list[str] = []
    text = []
    for chunk in client(runtime).completions.create(
        model="demo", prompt="Once", max_tokens=8, logprobs=1, logit_bias=NO_EOS, stream=True
    ):
        for part in chunk.choices:
            text.append(part.text)
            if part.logprobs is not None and part.logprobs.tokens:
                tokens += part.logprobs.tokens
    assert len(tokens) == 8 and "".join(tokens) == "".join(text)
