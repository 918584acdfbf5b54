"""JSON and JSON-schema answers, and raw GBNF, from a random-weight model.

Without the grammar the tiny model writes printable noise that never parses,
so every assertion here fails if constrained sampling is missing or leaky.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from support.runtime import RuntimeServer

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "tags", "active"],
    "additionalProperties": False,
}
MESSAGES: list[Any] = [{"role": "user", "content": "Describe a person as JSON."}]


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def _schema_format() -> Any:
    return {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }


def test_json_schema_answers_validate_across_50_seeded_samples(runtime: RuntimeServer) -> None:
    answers: list[str] = []
    for seed in range(13):  # 13 requests x 2 choices, non-streamed
        reply = client(runtime).chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format=_schema_format(),
            max_tokens=400,
            seed=seed,
            n=2,
        )
        assert isinstance(reply, ChatCompletion)
        assert [c.index for c in reply.choices] == [0, 1]
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice
            answers.append(choice.message.content or "")
    for seed in range(100, 124):  # 24 streamed
        texts: dict[int, list[str]] = {}
        stream = client(runtime).chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format=_schema_format(),
            max_tokens=400,
            seed=seed,
            stream=True,
        )
        for chunk in stream:
            assert isinstance(chunk, ChatCompletionChunk)
            for part in chunk.choices:
                texts.setdefault(part.index, []).append(part.delta.content or "")
                if part.finish_reason is not None:
                    assert part.finish_reason == "stop"
        answers.append("".join(texts[0]))
    assert len(answers) == 50
    for answer in answers:
        jsonschema.validate(json.loads(answer), PERSON)
    assert len(set(answers)) > 25  # seeded samples, not one answer repeated


def test_json_object_answers_parse(runtime: RuntimeServer) -> None:
    """Any object: nothing bounds its strings, so some answers run to ``max_tokens``."""
    finished = 0
    for seed in range(10):
        reply = client(runtime).chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format={"type": "json_object"},
            max_tokens=300,
            seed=seed,
        )
        choice = reply.choices[0]
        content = choice.message.content or ""
        assert content.startswith("{"), content
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
            finished += 1
    assert finished >= 3


def test_raw_gbnf_grammar_as_an_extra_field(runtime: RuntimeServer) -> None:
    grammar = 'root ::= ("yes" | "no") " " [0-9]{2}'
    seen = set()
    for seed in range(8):
        reply = client(runtime).completions.create(
            model="demo",
            prompt="Answer:",
            max_tokens=50,
            seed=seed,
            extra_body={"grammar": grammar},
        )
        text = reply.choices[0].text
        word, number = text.split(" ")
        assert word in ("yes", "no") and len(number) == 2 and number.isdigit(), text
        seen.add(text)
    assert len(seen) > 1


@pytest.mark.parametrize(
    "schema",
    [{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}],
    ids=["dangling-ref"],
)
def test_a_schema_without_a_grammar_is_a_400(runtime: RuntimeServer, schema: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(runtime).chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    assert caught.value.param == "response_format"
