"""Reading usage out of answers passing through the gateway."""

from __future__ import annotations

import json

from modelserve.functions.usage import UsageMeter, prepare_request


def sse(*chunks: object) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def test_a_stream_asks_for_usage_and_hides_it_from_a_client_that_did_not() -> None:
    prepared = prepare_request("chat/completions", b'{"stream": true, "model": "m"}')
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
    body = b'{"stream": true, "stream_options": {"include_usage": true}}'
    prepared = prepare_request("v1/completions", body)
    assert (prepared.body, prepared.hide_usage) == (body, False)
    meter = UsageMeter("text/event-stream", False)
    answer = sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    assert meter.feed(answer) == answer


def test_other_requests_pass_unchanged() -> None:
    for path, body in (("models", b"{}"), ("chat/completions", b"{"), ("completions", b"[]")):
        assert prepare_request(path, body).body == body
    assert not prepare_request("completions", b'{"stream": false}').hide_usage


def test_json_answers_and_cut_streams() -> None:
    meter = UsageMeter("application/json", False)
    meter.feed(b'{"usage": {"prompt_tokens": 3, ')
    meter.feed(b'"completion_tokens": 4}}')
    assert meter.finish() == (3, 4)
    cut = UsageMeter("text/event-stream", True)
    cut.feed(sse({"choices": [{"text": "a"}]}, {"choices": [{"text": "b"}]})[:-14])
    assert cut.finish() == (0, 2)  # no usage chunk came: the pieces sent
