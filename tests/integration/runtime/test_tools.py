"""Function calling through the real client, on models carrying each family's template.

The tiny model has random weights, so it calls a tool only when made to: a
forced ``tool_choice`` must make every answer a valid call (the grammar), and
for ``auto`` the raw ``grammar`` field makes it write its family's call syntax,
which the runtime must then recognise as a call rather than as content.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.chat_templates import FAMILIES
from support.runtime import RuntimeServer, start_runtime

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
# What each family's model writes for a call (used to make the random model write one)
WRITTEN = {
    "llama3": '{"name": "get_time", "parameters": {"zone": "UTC"}}',
    "qwen": '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>',
    "hermes": '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>',
    "mistral": '[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "UTC"}}]',
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def served(family: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    model = write_synthetic_gguf(
        Path(tmp_path_factory.mktemp("models")) / f"{family}.gguf",
        "tiny",
        chat_template=FAMILIES[family],
    )
    server = start_runtime(model, "--model-name", "demo", "--n-ctx", "8192")
    yield server
    server.stop()


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def _check_call(call: Any, names: set[str]) -> None:
    assert call.type == "function"
    assert call.id
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_makes_every_answer_a_valid_call(served: RuntimeServer) -> None:
    ids = set()
    for seed in range(4):
        reply = client(served).chat.completions.create(
            model="demo",
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            max_tokens=1500,  # parallel calls: the random model may write several
            seed=seed,
        )
        assert isinstance(reply, ChatCompletion)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert calls
        for call in calls:
            _check_call(call, set(SCHEMAS))
            ids.add(call.id)
    assert len(ids) >= 4  # every call has its own id


def test_a_named_function_is_the_one_called_once(served: RuntimeServer) -> None:
    for seed in range(3):
        reply = client(served).chat.completions.create(
            model="demo",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=400,
            seed=seed,
        )
        calls = reply.choices[0].message.tool_calls or []
        assert len(calls) == 1
        _check_call(calls[0], {"get_weather"})
        assert reply.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_gives_one_call(served: RuntimeServer) -> None:
    for seed in range(3):
        reply = client(served).chat.completions.create(
            model="demo",
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=400,
            seed=seed,
        )
        assert len(reply.choices[0].message.tool_calls or []) == 1


def test_streamed_calls_arrive_as_deltas_with_ids(served: RuntimeServer) -> None:
    stream = client(served).chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=1500,
        seed=7,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        for part in chunk.choices:
            for delta in part.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                if delta.function is not None:
                    entry["name"] += delta.function.name or ""
                    entry["arguments"] += delta.function.arguments or ""
            finish = part.finish_reason or finish
    assert finish == "tool_calls"
    assert calls and sorted(calls) == list(range(len(calls)))
    for entry in calls.values():
        assert entry["id"].startswith("call_")
        jsonschema.validate(json.loads(entry["arguments"]), SCHEMAS[entry["name"]])


def _written_call(family: str) -> str:
    text = WRITTEN[family]
    return "root ::= " + json.dumps(text)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_recognises_a_call_in_the_familys_syntax(
    served: RuntimeServer, family: str, stream: bool
) -> None:
    kwargs: Any = {
        "model": "demo",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "auto",
        "max_tokens": 200,
        "extra_body": {"grammar": _written_call(family)},
    }
    if not stream:
        message = client(served).chat.completions.create(**kwargs).choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        content = message.content or ""
    else:
        pieces, calls = [], []
        for chunk in client(served).chat.completions.create(stream=True, **kwargs):
            for part in chunk.choices:
                pieces.append(part.delta.content or "")
                for delta in part.delta.tool_calls or []:
                    assert delta.function is not None
                    calls.append((delta.function.name, delta.function.arguments))
        content = "".join(pieces)
    assert calls == [("get_time", '{"zone": "UTC"}')]
    assert content.strip() == ""


def test_tool_choice_none_leaves_the_text_as_content(served: RuntimeServer, family: str) -> None:
    reply = client(served).chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=200,
        extra_body={"grammar": _written_call(family)},
    )
    message = reply.choices[0].message
    assert not message.tool_calls
    assert message.content == WRITTEN[family]
    assert reply.choices[0].finish_reason == "stop"


def test_the_template_renders_tools_and_tool_results(served: RuntimeServer) -> None:
    def prompt_tokens(**kwargs: Any) -> int:
        reply = client(served).chat.completions.create(model="demo", max_tokens=1, **kwargs)
        assert reply.usage is not None
        return int(reply.usage.prompt_tokens)

    plain = prompt_tokens(messages=ASK)
    with_tools = prompt_tokens(messages=ASK, tools=TOOLS)
    assert with_tools > plain + len(json.dumps(WEATHER))  # one token per byte in this vocabulary
    result = "It is 21 degrees and sunny in Oslo today."
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]
    # a past call is written into the prompt, and so is the tool's result
    assert prompt_tokens(messages=history[:-1]) > prompt_tokens(messages=ASK) + len("get_weather")
    before_result = prompt_tokens(messages=history[:-1], tools=TOOLS)
    assert prompt_tokens(messages=history, tools=TOOLS) > before_result + len(result)


def test_a_template_without_tools_hears_of_them_in_a_system_message(
    runtime: RuntimeServer,
) -> None:
    """The generic template has no place for tools: they are described, in llama-server's
    generic JSON format."""
    plain = client(runtime).chat.completions.create(model="demo", messages=ASK, max_tokens=1)
    reply = client(runtime).chat.completions.create(
        model="demo", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=1500, seed=3
    )
    assert plain.usage is not None and reply.usage is not None
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens + len(json.dumps(WEATHER))
    assert reply.choices[0].finish_reason == "tool_calls"
    calls = reply.choices[0].message.tool_calls or []
    assert calls
    for call in calls:
        _check_call(call, set(SCHEMAS))
