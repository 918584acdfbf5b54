"""Several choices and prompts per request, echo, stop, max_completion_tokens and seeds."""

from __future__ import annotations

import re

import httpx
import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from support.runtime import RuntimeServer

NO_EOS = {"2": -100}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a story"}]


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def metric(runtime: RuntimeServer, name: str) -> float:
    text = httpx.get(f"{runtime.url}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_n_choices_share_one_prefill(runtime: RuntimeServer) -> None:
    prefilled = metric(runtime, "modelserve_prompt_tokens_total")
    reply = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        n=3,
        max_tokens=20,
        seed=11,
        logit_bias=NO_EOS,
    )
    assert isinstance(reply, ChatCompletion)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) == 3  # each choice samples with its own seed
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 60
    # the prompt is counted, and decoded, once for all three choices
    assert (
        metric(runtime, "modelserve_prompt_tokens_total") - prefilled == reply.usage.prompt_tokens
    )


def test_a_seed_reproduces_every_choice(runtime: RuntimeServer) -> None:
    def texts() -> list[str | None]:
        reply = client(runtime).chat.completions.create(
            model="demo",
            messages=ASK,
            n=2,
            max_tokens=16,
            seed=1234,
            logit_bias=NO_EOS,
        )
        return [c.message.content for c in reply.choices]

    first = texts()
    assert texts() == first
    alone = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        max_tokens=16,
        seed=1234,
        logit_bias=NO_EOS,
    )
    assert alone.choices[0].message.content == first[0]  # choice 0 uses the seed itself


def test_streamed_choices_are_indexed(runtime: RuntimeServer) -> None:
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        n=2,
        max_tokens=10,
        logit_bias=NO_EOS,
        stream=True,
    ):
        for part in chunk.choices:
            texts[part.index] = texts.get(part.index, "") + (part.delta.content or "")
            if part.finish_reason:
                finishes[part.index] = part.finish_reason
    assert sorted(texts) == [0, 1]
    assert finishes == {0: "length", 1: "length"}


def test_several_prompts_with_n_and_echo(runtime: RuntimeServer) -> None:
    reply = client(runtime).completions.create(
        model="demo",
        prompt=["First prompt", "Second one"],
        n=2,
        max_tokens=5,
        echo=True,
        logit_bias=NO_EOS,
    )
    assert isinstance(reply, Completion)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert [c.text.startswith("First prompt") for c in reply.choices] == [True, True, False, False]
    assert all(c.text.startswith("Second one") for c in reply.choices[2:])
    assert all(len(c.text) > len("Second one") for c in reply.choices)
    assert reply.usage is not None and reply.usage.completion_tokens == 20


def test_streamed_echo_comes_first(runtime: RuntimeServer) -> None:
    pieces = [
        part.text
        for chunk in client(runtime).completions.create(
            model="demo", prompt="Echo me", max_tokens=4, echo=True, stream=True
        )
        for part in chunk.choices
    ]
    assert pieces[0] == "Echo me"


def test_max_completion_tokens(runtime: RuntimeServer) -> None:
    reply = client(runtime).chat.completions.create(
        model="demo",
        messages=ASK,
        max_completion_tokens=9,
        logit_bias=NO_EOS,
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    assert reply.choices[0].finish_reason == "length"


def test_up_to_four_stop_sequences(runtime: RuntimeServer) -> None:
    def complete(stop: list[str] | None) -> tuple[str, str]:
        choice = (
            client(runtime)
            .completions.create(
                model="demo",
                prompt="Stop here",
                max_tokens=60,
                seed=5,
                logit_bias=NO_EOS,
                stop=stop,
            )
            .choices[0]
        )
        return choice.text, choice.finish_reason

    full, _ = complete(None)
    stops = ["\u2603", "\u2604", "\u2605", full[20:22]]  # only the last one occurs
    cut, reason = complete(stops)
    assert cut == full[: full.index(full[20:22])]
    assert reason == "stop"


def test_choices_of_a_long_prompt_fit_the_cache_once(runtime: RuntimeServer) -> None:
    """Three copies of an 800-token prompt would overflow 2048 cells; one shared copy fits."""
    reply = client(runtime).completions.create(
        model="demo", prompt="word " * 160, n=3, max_tokens=10, logit_bias=NO_EOS
    )
    assert reply.usage is not None and reply.usage.prompt_tokens > 700
    assert [c.finish_reason for c in reply.choices] == ["length"] * 3
    assert reply.usage.completion_tokens == 30
