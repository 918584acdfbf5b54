"""Property-based fuzz (Hypothesis) of the three parsers that take bytes from strangers.

- GGUF inspection: a small valid GGUF with random bytes overwritten, runs cut
  out and the file truncated; or a random header after the magic. The answer is
  a GGUFInfo or a GGUFError, within a second: never another exception or a hang.
- CloudEvent decoding (the steps' door): random ``ce-`` headers and bodies give
  a CloudEvent or an EventError, and then verification and payload parsing give
  only EventError or AuthError.
- The OpenAI request parsing of the runtime: any JSON gives a request or a
  ValidationError, and a request's ``llama_params`` only a ValueError.

The seed is fixed (rounds 0, 1, ... each with its own seed) and the default budget
is one round of ``EXAMPLES`` per target; ``FUZZ_S=<seconds>`` runs more rounds
until that time is spent on each target.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelserve.runtime.requests import ChatRequest, CompletionRequest, EmbeddingRequest
from modelserve.shared import events as ev
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import GGUFError, GGUFInfo, inspect_gguf
from modelserve.shared.settings import load_settings
from support.reliability import Recorder

pytestmark = pytest.mark.reliability("hostile input")
EXAMPLES = 300


def fuzz(prop: Callable[..., None], strategy: Any, budget_s: float) -> int:
    """Run ``prop`` over ``strategy``: round n uses seed n; at least one round."""
    rounds, deadline = 0, time.monotonic() + budget_s
    while rounds == 0 or time.monotonic() < deadline:
        run: Callable[[], None] = seed(rounds)(
            settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(prop))  # type: ignore[no-untyped-call]
        )
        run()
        rounds += 1
    return rounds * EXAMPLES


def small_gguf(path: Path) -> bytes:
    """A complete little GGUF: the keys inspection reads, three small tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_name("fuzz")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a"])
    writer.add_chat_template("{{ messages }}")
    for n, shape in enumerate(((4, 8), (8,), (8, 8))):
        writer.add_tensor(f"t{n}", np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def fuzz_seconds(request: pytest.FixtureRequest) -> float:
    seconds: float = request.config.getoption("fuzz_seconds", default=0.0)
    return seconds


def test_fuzz_gguf_inspection(tmp_path: Path, reliability: Recorder, fuzz_seconds: float) -> None:
    good = small_gguf(tmp_path / "good.gguf")
    assert isinstance(inspect_gguf(tmp_path / "good.gguf"), GGUFInfo)  # the control
    target = tmp_path / "fuzzed.gguf"
    outcomes: dict[str, int] = {}

    def check(content: bytes) -> None:
        target.write_bytes(content)
        started = time.monotonic()
        try:
            inspect_gguf(target)
            outcomes["accepted"] = outcomes.get("accepted", 0) + 1
        except GGUFError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        assert time.monotonic() - started < 1.0, "inspection took over a second"

    mutations = st.lists(
        st.tuples(st.integers(0, len(good) - 1), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=6,
    )

    @st.composite
    def broken(draw: st.DrawFn) -> bytes:
        content = bytearray(good)
        for at, value in draw(mutations):
            content[at : at + len(value)] = value
        if draw(st.booleans()):  # cut a run out of the middle
            start = draw(st.integers(0, len(content) - 1))
            del content[start : start + draw(st.integers(1, 64))]
        if draw(st.booleans()):
            content = content[: draw(st.integers(0, len(content)))]
        return bytes(content)

    header = st.builds(
        lambda version, counts, rest: b"GGUF" + version + counts + rest,
        st.sampled_from([b"\x02\x00\x00\x00", b"\x03\x00\x00\x00"])
        | st.binary(min_size=4, max_size=4),
        st.binary(min_size=16, max_size=16),
        st.binary(max_size=2048),
    )
    reliability.case(
        "fuzz: GGUF inspection",
        injected=f"mutated and truncated GGUFs, random headers ({EXAMPLES} per round)",
        checked="GGUFInfo or GGUFError within 1 s; no other exception",
        outcome="survived",
    )
    tried = fuzz(check, broken() | header, fuzz_seconds)
    reliability.note(f"GGUF fuzz: {tried} files, {outcomes}")


def test_fuzz_cloudevent_decoding(reliability: Recorder, fuzz_seconds: float) -> None:
    app_settings = load_settings(jwt_secret=secrets.token_hex(24))
    verifier = TokenVerifier.from_settings(app_settings)
    server = uuid.uuid4()
    token = TokenIssuer.from_settings(app_settings).pipeline_token(
        server, subject="alice", role=Role.OPERATOR
    )
    decoded = [0]

    def check(headers: dict[str, str], body: bytes) -> None:
        try:
            event = ev.decode(headers, body)
        except ev.EventError:
            return
        decoded[0] += 1
        with contextlib.suppress(ev.EventError, AuthError):
            ev.verify_event(event, verifier)
        with contextlib.suppress(ev.EventError):
            ev.payload(event, ev.PAYLOADS.get(event["type"], ev.ServeRequested))

    text = st.text(max_size=40) | st.sampled_from(
        [
            "1.0",
            "1.1",
            str(server),
            ev.SERVE_REQUESTED,
            ev.MODEL_URL_SIGNED,
            "application/json",
            "application/cloudevents+json",
            token,
        ]
    )
    header_names = st.sampled_from(
        [
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-specversion",
            "ce-subject",
            "ce-time",
            "ce-" + ev.TOKEN_ATTRIBUTE,
            "ce-traceparent",
            "content-type",
        ]
    )
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
        max_leaves=20,
    )
    structured = st.fixed_dictionaries(
        {},
        optional={
            "specversion": text,
            "id": text,
            "source": text,
            "type": text,
            "subject": text,
            "data": json_values,
            ev.TOKEN_ATTRIBUTE: text,
            "datacontenttype": text,
        },
    ).map(lambda d: json.dumps(d).encode())
    bodies = (
        st.binary(max_size=256) | structured | json_values.map(lambda v: json.dumps(v).encode())
    )
    reliability.case(
        "fuzz: CloudEvent decoding",
        injected=f"random ce- headers and bodies, binary and structured ({EXAMPLES} per round)",
        checked="CloudEvent or EventError; then only EventError/AuthError",
        outcome="survived",
    )
    binary_headers = st.fixed_dictionaries(
        {
            "ce-specversion": st.sampled_from(["1.0", "1.0", "0.3"]) | text,
            "ce-id": st.text(min_size=1, max_size=20),
            "ce-source": st.text(min_size=1, max_size=20),
            "ce-type": st.sampled_from(sorted(ev.PAYLOADS)) | text,
            "content-type": st.sampled_from(["application/json", "text/plain"]) | text,
        },
        optional={
            "ce-subject": st.just(str(server)) | text,
            "ce-" + ev.TOKEN_ATTRIBUTE: st.just(token) | text,
            "ce-time": text,
        },
    )
    structured_headers = st.just({"content-type": "application/cloudevents+json"})
    headers = binary_headers | structured_headers | st.dictionaries(header_names, text, max_size=9)
    pairs = st.tuples(headers, bodies)
    tried = fuzz(lambda pair: check(*pair), pairs, fuzz_seconds)
    reliability.note(f"CloudEvent fuzz: {tried} requests, {decoded[0]} decoded")


def test_fuzz_openai_request_parsing(reliability: Recorder, fuzz_seconds: float) -> None:
    parsed = [0]
    scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    junk = scalar | st.lists(scalar, max_size=3) | st.dictionaries(st.text(max_size=6), scalar)
    number = st.floats(-1e6, 1e6) | st.integers(-(2**70), 2**70) | junk
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"])},
        optional={
            "content": st.text(max_size=40)
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}))
            | junk
        },
    )
    optional = {
        "prompt": st.text(max_size=40) | st.lists(st.text(max_size=10), max_size=3) | junk,
        "messages": st.lists(message, max_size=3) | junk,
        "input": st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3) | junk,
        "max_tokens": number,
        "max_completion_tokens": number,
        "temperature": number,
        "top_p": number,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | junk,
        "seed": number,
        "presence_penalty": number,
        "frequency_penalty": number,
        "logit_bias": st.dictionaries(
            st.integers(-(2**40), 2**40).map(str) | st.text(max_size=4), number, max_size=3
        )
        | junk,
        "n": st.integers(0, 3) | junk,
        "stream": st.booleans() | junk,
        "stream_options": st.dictionaries(st.sampled_from(["include_usage", "x"]), junk) | junk,
        "encoding_format": st.sampled_from(["float", "base64", "hex"]) | junk,
    }
    plausible = st.fixed_dictionaries(
        {"model": st.just("demo")},
        optional={
            "prompt": st.text(max_size=40),
            "messages": st.lists(message, min_size=1, max_size=3),
            "input": st.text(min_size=1, max_size=20),
            "max_tokens": st.integers(1, 2**70),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0.001, 1),
            "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3),
            "seed": st.integers(0, 2**70),
            "presence_penalty": st.floats(-2, 2),
            "logit_bias": st.dictionaries(
                st.integers(-(2**40), 2**40).map(str), st.floats(allow_nan=True), max_size=3
            ),
            "stream": st.booleans(),
        },
    )
    one_wild = st.tuples(plausible, st.sampled_from(sorted(optional)), junk).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    bodies = (
        plausible
        | one_wild
        | st.fixed_dictionaries({"model": st.just("demo") | junk}, optional=optional)
        | junk
    )

    def check(body: Any) -> None:
        for model in (CompletionRequest, ChatRequest, EmbeddingRequest):
            try:
                request = model.model_validate(body)
            except ValidationError:
                continue
            parsed[0] += 1
            if isinstance(request, CompletionRequest | ChatRequest):
                with contextlib.suppress(ValueError):
                    request.sampling(request.seed)
                    _ = request.stops

    reliability.case(
        "fuzz: OpenAI request parsing",
        injected=f"random JSON bodies for completions, chat and embeddings ({EXAMPLES} per round)",
        checked="a request or a ValidationError; its sampling parameters only ValueError",
        outcome="survived",
    )
    tried = fuzz(check, bodies, fuzz_seconds)
    reliability.note(f"OpenAI fuzz: {tried} bodies, {parsed[0]} parsed")
