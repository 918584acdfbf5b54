"""Reading usage out of answers passing through the gateway."""

from __future__ import annotations

import json

import pytest

from modelserve.functions.usage import (
    MAX_JSON_BYTES,
    BadMeteredRequest,
    UsageMeter,
    WorstCaseOverBudget,
    prepare_request,
)


def sse(*chunks: object) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def test_a_stream_asks_for_usage_and_hides_it_from_a_client_that_did_not() -> None:
    prepared = prepare_request(b'{"stream": true, "model": "m"}')
    assert prepared.hide_usage
    assert json.loads(prepared.body)["stream_options"] == {"include_usage": True}
    meter = UsageMeter("text/event-stream", prepared.hide_usage)
    body = sse(
        {"choices": [{"delta": {"content": "he"}}]},
        {"choices": [{"delta": {"content": "llo"}}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    )
    passed = b"".join(meter.feed(body[i : i + 5]) for i in range(0, len(body), 5))
    passed += meter.rest()
    assert b"usage" not in passed and passed.endswith(b"data: [DONE]\n\n")
    assert meter.finish() == (7, 2)


def test_a_client_that_asked_keeps_its_usage_chunk() -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}}
    prepared = prepare_request(json.dumps(body).encode())
    assert (json.loads(prepared.body), prepared.hide_usage) == (body, False)
    meter = UsageMeter("text/event-stream", False)
    answer = sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    assert meter.feed(answer) == answer


def test_bodies_the_gateway_cannot_judge_are_refused() -> None:
    for body in (
        b"{",
        b"[]",
        b'{"stream": 1}',
        b'{"stream": "true"}',
        b'{"n": "3"}',
        b'{"stream_options": {"include_usage": "false"}}',
        b'{"max_tokens": 1.5}',
        b'{"n": true}',
        b'{"stream_options": []}',
    ):
        with pytest.raises(BadMeteredRequest):
            prepare_request(body)
    assert not prepare_request(b'{"stream": false}').hide_usage


def test_a_budget_holds_the_worst_case() -> None:
    asked = prepare_request(b'{"prompt": ["a", "b"], "n": 3, "max_tokens": 10}')
    assert asked.worst_case == 60
    with pytest.raises(WorstCaseOverBudget):
        asked.cap(59)
    asked.cap(60)
    unnamed = prepare_request(b'{"messages": [], "n": 2}')
    assert unnamed.worst_case is None
    unnamed.cap(11)
    assert json.loads(unnamed.body)["max_tokens"] == 5
    assert prepare_request(b'{"prompt": "x"}').worst_case == 16  # the runtime's default


def test_token_lists_and_long_answers_are_never_free() -> None:
    tokenize = UsageMeter("application/json", False)
    tokenize.feed(b'{"tokens": [1, 2, 3]}')
    assert tokenize.finish() == (3, 0)
    detokenize = UsageMeter("application/json", False, request_tokens=4)
    detokenize.feed(b'{"content": "abcd"}')
    assert detokenize.finish() == (4, 0)
    long = UsageMeter("application/json", False)
    text = json.dumps("x" * (MAX_JSON_BYTES + 10) + '"usage": {"prompt_tokens": 99}}')
    long.feed(b'{"choices": [{"text": ' + text.encode() + b"}], ")
    long.feed(b'"usage": {"prompt_tokens": 5, "completion_tokens": 6}}')
    assert long.finish() == (5, 6)
    unread = UsageMeter("application/json", False)
    unread.feed(b"[" + b"1," * MAX_JSON_BYTES + b"1]")
    assert unread.finish() == (0, 2 * MAX_JSON_BYTES + 3)  # one per byte


def test_json_answers_and_cut_streams() -> None:
    meter = UsageMeter("application/json", False)
    meter.feed(b'{"usage": {"prompt_tokens": 3, ')
    meter.feed(b'"completion_tokens": 4}}')
    assert meter.finish() == (3, 4)
    cut = UsageMeter("text/event-stream", True)
    cut.feed(sse({"choices": [{"text": "a"}]}, {"choices": [{"text": "b"}]})[:-14])
    assert cut.finish() == (0, 2)  # no usage chunk came: the pieces sent
