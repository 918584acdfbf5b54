"""Chat as real model families write it: refusing templates, reasoning, control-token markers.

Each model is a generated GGUF carrying the family's template (``support/chat_templates``)
and, where the real vocabulary has them, its markers as control tokens. The random
model writes a family's output only when made to: the ``grammar`` field spells the
text, and a logit bias picks a control token where the grammar allows one.
Families covered: Gemma 3 (no tools, roles must alternate), Qwen3 and DeepSeek-R1
(``<think>``, the latter opened by the template), gpt-oss (harmony channels),
Mistral (``[TOOL_CALLS]`` a control token), Llama 3.x (``<|python_tag|>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.chat_templates import (
    DEEPSEEK_R1,
    GEMMA3,
    GPT_OSS,
    LLAMA3,
    MISTRAL,
    QWEN3,
    SPECIAL_TOKENS,
)
from support.runtime import RuntimeServer, start_runtime

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}},
    "required": ["city"],
    "additionalProperties": False,
}
TIME: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]


def serve(
    tmp_path_factory: pytest.TempPathFactory, family: str, template: str, *args: str
) -> RuntimeServer:
    model = write_synthetic_gguf(
        Path(tmp_path_factory.mktemp("models")) / f"{family}.gguf",
        "tiny",
        chat_template=template,
        special_tokens=SPECIAL_TOKENS.get(family, ()),
    )
    return start_runtime(model, "--model-name", "demo", "--n-ctx", "4096", *args)


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def spelled(text: str) -> dict[str, Any]:
    """A grammar making the model write exactly ``text``."""
    return {"grammar": f"root ::= {json.dumps(text)}"}


def token_id(runtime: RuntimeServer, text: str) -> int:
    answer = httpx.post(f"{runtime.url}/tokenize", json={"content": text}, timeout=10)
    (token,) = answer.json()["tokens"]
    return int(token)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = serve(tmp_path_factory, "gemma3", GEMMA3)
    yield server
    server.stop()


# -- a template that refuses the conversation ------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_template_that_raises_is_a_400_in_openais_shape(
    gemma: RuntimeServer, stream: bool
) -> None:
    """Gemma 3 raises on roles out of turn; llama-server and OpenAI answer 400, not 500."""
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        "max_tokens": 4,
        "stream": stream,
    }
    answer = httpx.post(f"{gemma.openai_base}/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert "roles must alternate" in error["message"]
    good = client(gemma).chat.completions.create(model="demo", messages=ASK, max_tokens=4)
    assert good.choices[0].message.content is not None  # the server is unharmed


# -- tool calls on a template without a tool syntax --------------------------------------


def _check_call(call: Any, names: set[str]) -> None:
    assert call.type == "function" and call.id
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "single"])
def test_required_on_a_template_without_tool_syntax_returns_a_call(
    gemma: RuntimeServer, parallel: bool
) -> None:
    """llama-server's generic format under a grammar: never a 200 without tool_calls."""
    for seed in range(3):
        reply = client(gemma).chat.completions.create(
            model="demo",
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=parallel,
            max_tokens=1500,  # parallel calls: the random model may write several
            seed=seed,
        )
        choice = reply.choices[0]
        calls = choice.message.tool_calls or []
        assert calls, (choice.finish_reason, choice.message.content)
        assert choice.finish_reason == "tool_calls"
        assert len(calls) == 1 or parallel
        for call in calls:
            _check_call(call, {"get_weather", "get_time"})


def test_a_named_tool_on_a_template_without_tool_syntax(gemma: RuntimeServer) -> None:
    chunks = client(gemma).chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=600,
        seed=1,
        stream=True,
    )
    names, arguments, finish = [], "", None
    for chunk in chunks:
        for part in chunk.choices:
            for delta in part.delta.tool_calls or []:
                assert delta.function is not None
                names.append(delta.function.name)
                arguments += delta.function.arguments or ""
            finish = part.finish_reason or finish
    assert names == ["get_weather"]
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert finish == "tool_calls"


def test_auto_recognises_the_generic_format(gemma: RuntimeServer) -> None:
    written = '{"tool_call": {"name": "get_time", "arguments": {}}}'
    reply = client(gemma).chat.completions.create(
        model="demo", messages=ASK, tools=TOOLS, max_tokens=200, extra_body=spelled(written)
    )
    calls: list[Any] = list(reply.choices[0].message.tool_calls or [])
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_time", "{}")]
    answer = '{"response": "It is sunny."}'
    reply = client(gemma).chat.completions.create(
        model="demo", messages=ASK, tools=TOOLS, max_tokens=200, extra_body=spelled(answer)
    )
    assert reply.choices[0].message.content == "It is sunny."
    assert not reply.choices[0].message.tool_calls


# -- reasoning -----------------------------------------------------------------------

QWEN3_OUT = "<think>\nThe user asks about Oslo.\n</think>\n\nIt is sunny in Oslo."
R1_OUT = "Oslo is in Norway.\n</think>\n\nIt is sunny in Oslo."  # the template opened <think>
HARMONY_OUT = (
    "<|channel|>analysis<|message|>The user asks about Oslo.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>It is sunny in Oslo."
)
REASONING = {
    "qwen3": (QWEN3, QWEN3_OUT, "The user asks about Oslo.\n"),
    "deepseek-r1": (DEEPSEEK_R1, R1_OUT, "Oslo is in Norway.\n"),
    "gpt-oss": (GPT_OSS, HARMONY_OUT, "The user asks about Oslo."),
}


@pytest.fixture(scope="module", params=sorted(REASONING))
def reasoner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RuntimeServer]]:
    family = str(request.param)
    server = serve(tmp_path_factory, family, REASONING[family][0])
    yield family, server
    server.stop()


def _reasoning_stream(runtime: RuntimeServer, **kwargs: Any) -> tuple[str, str]:
    body = {"model": "demo", "messages": ASK, "stream": True, **kwargs}
    thought = content = ""
    with httpx.stream(
        "POST", f"{runtime.openai_base}/chat/completions", json=body, timeout=60
    ) as answer:
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for part in json.loads(line[6:])["choices"]:
                thought += part["delta"].get("reasoning_content") or ""
                content += part["delta"].get("content") or ""
    return thought, content


def test_reasoning_comes_back_as_reasoning_content(
    reasoner: tuple[str, RuntimeServer],
) -> None:
    family, runtime = reasoner
    _, written, thought = REASONING[family]
    body = {"model": "demo", "messages": ASK, "max_tokens": 300, **spelled(written)}
    answer = httpx.post(f"{runtime.openai_base}/chat/completions", json=body, timeout=60)
    message = answer.json()["choices"][0]["message"]
    assert message["content"] == "It is sunny in Oslo."
    assert message["reasoning_content"] == thought
    assert _reasoning_stream(runtime, max_tokens=300, **spelled(written)) == (
        thought,
        "It is sunny in Oslo.",
    )


def test_reasoning_format_none_leaves_the_text_as_written(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    runtime = serve(tmp_path_factory, "qwen3", QWEN3, "--reasoning-format", "none")
    try:
        reply = client(runtime).chat.completions.create(
            model="demo", messages=ASK, max_tokens=300, extra_body=spelled(QWEN3_OUT)
        )
        assert reply.choices[0].message.content == QWEN3_OUT
        assert _reasoning_stream(runtime, max_tokens=300, **spelled(QWEN3_OUT)) == ("", QWEN3_OUT)
    finally:
        runtime.stop()


# -- tool-call markers that are control tokens -------------------------------------------

MARKED = {
    "mistral": (MISTRAL, "[TOOL_CALLS]", ' [{"name": "get_time", "arguments": {}}]'),
    "llama3": (LLAMA3, "<|python_tag|>", '{"name": "get_time", "parameters": {}}'),
}


@pytest.mark.parametrize("family", sorted(MARKED))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_control_token_marker_reaches_the_tool_parser(
    tmp_path_factory: pytest.TempPathFactory, family: str, stream: bool
) -> None:
    """The model writes the family's marker as its control token (as real models do),
    which llama.cpp renders as nothing unless asked to."""
    template, marker, call = MARKED[family]
    runtime = serve(tmp_path_factory, family, template)
    try:
        marker_id = token_id(runtime, marker)
        assert marker_id >= 259  # a control token, not its bytes
        kwargs: Any = {
            "model": "demo",
            "messages": ASK,
            "tools": TOOLS,
            "max_tokens": 200,
            "logit_bias": {str(marker_id): 100},
            "extra_body": spelled(marker + call),
        }
        if stream:
            calls = []
            for chunk in client(runtime).chat.completions.create(stream=True, **kwargs):
                for part in chunk.choices:
                    for delta in part.delta.tool_calls or []:
                        assert delta.function is not None
                        calls.append((delta.function.name, delta.function.arguments))
        else:
            message = client(runtime).chat.completions.create(**kwargs).choices[0].message
            calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        assert calls == [("get_time", "{}")]
    finally:
        runtime.stop()
