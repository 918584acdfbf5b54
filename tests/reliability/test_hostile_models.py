"""Hostile input inside models and requests: template, metadata and grammar bombs.

A GGUF is the uploader's code and data: its chat template runs on the runtime's
event loop for every chat request, and its metadata is walked at upload. A
grammar is the requester's. Each bomb here is refused quickly with a precise
error (a 400 for requests, a GGUFError at upload, a start-up error for a
template too large to compile) and the runtime keeps answering.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import pytest

from modelserve.shared.gguf_inspect import GGUFError, inspect_gguf
from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.reliability import Recorder
from support.runtime import RuntimeServer, run_runtime_to_failure, start_runtime

pytestmark = pytest.mark.reliability("hostile input")

# Each renders at most a few bytes of text per message, but costs unbounded time or memory.
TEMPLATE_BOMBS = {
    "a 100 MB constant": "{{ 'a' * 10**8 }}{% for m in messages %}{{ m.content }}{% endfor %}",
    "a literal 100 MB constant": "{{ 'a' * 100000000 }}",
    "nested range loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "a string doubled 60 times": (
        "{% set ns = namespace(s='a') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    ),
    "a list doubled 60 times": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(60) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}"
    ),
    "a 1 GB padding filter": "{{ 'a' | center(1000000000) }}",
    "a 1 GB padding method": "{{ 'a'.ljust(1000000000) }}",
    "a 1 GB format width": "{{ '%*s' % (1000000000, 'a') }}",
}
SECONDS = 5.0  # far above a bounded render (1 s at most), far below what the bombs cost


def _serve(tmp_path: Path, template: str) -> RuntimeServer:
    model = write_synthetic_gguf(tmp_path / "bomb.gguf", "tiny", chat_template=template)
    return start_runtime(model, "--model-name", "demo")


@pytest.fixture
def chat() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as http:
        yield http


def _ask(http: httpx.Client, runtime: RuntimeServer, **extra: object) -> httpx.Response:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return http.post(f"{runtime.openai_base}/chat/completions", json={**body, **extra})


@pytest.mark.parametrize("bomb", sorted(TEMPLATE_BOMBS))
def test_chat_template_bombs_are_bounded(
    tmp_path: Path, chat: httpx.Client, reliability: Recorder, bomb: str
) -> None:
    reliability.case(
        f"GGUF chat template: {bomb}",
        injected=f"a GGUF whose chat template is {bomb}",
        checked=f"a chat request answers 400 within {SECONDS:g} s; the runtime still answers",
    )
    runtime = _serve(tmp_path, TEMPLATE_BOMBS[bomb])
    try:
        started = time.monotonic()
        answer = _ask(chat, runtime)
        took = time.monotonic() - started
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "messages"
        assert took < SECONDS, took
        completion = chat.post(
            f"{runtime.openai_base}/completions",
            json={"model": "demo", "prompt": "a", "max_tokens": 2},
        )
        assert completion.status_code == 200
    finally:
        runtime.stop()


def test_a_huge_chat_template_is_refused_at_start(tmp_path: Path, reliability: Recorder) -> None:
    reliability.case(
        "GGUF chat template: 1 MB of text",
        injected="a GGUF whose chat template is 1 MB",
        checked="the runtime refuses to start, saying the template is over the limit",
    )
    model = write_synthetic_gguf(tmp_path / "big.gguf", "tiny", chat_template="x" * 1_000_000)
    result = run_runtime_to_failure(model)
    assert result.returncode == 1, result.stderr
    assert "the chat template is 1000000 characters; the limit is" in result.stderr


@pytest.mark.parametrize("depth", [1_000, 1_000_000])
def test_deeply_nested_grammars_are_refused(
    tiny_model: Path, chat: httpx.Client, reliability: Recorder, depth: int
) -> None:
    reliability.case(
        f"grammar nested {depth} deep",
        injected=f"a request grammar of {depth} nested groups",
        checked="400 naming grammar (before llama.cpp's recursive parser); the runtime answers",
    )
    runtime = start_runtime(tiny_model, "--model-name", "demo")
    try:
        grammar = "root ::= " + "(" * depth + '"a"' + ")" * depth
        answer = _ask(chat, runtime, grammar=grammar)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "grammar"
        assert "nests groups deeper" in answer.json()["error"]["message"]
        assert _ask(chat, runtime).status_code == 200
    finally:
        runtime.stop()


def _with_array(good: Path, out: Path, count: int) -> Path:
    """``good`` with one more metadata key: a byte array of ``count`` items."""
    reader = gguf.GGUFReader(good, "r")
    data = good.read_bytes()
    keys_at = 16
    (keys,) = struct.unpack_from("<Q", data, keys_at)
    name = b"modelserve.padding"
    entry = struct.pack("<Q", len(name)) + name + struct.pack("<IIQ", 9, 0, count)
    entry += b"\x01" * count
    first, last = reader.tensors[0].field, reader.tensors[-1].field
    tensors_at = first.offset
    table_end = last.offset + sum(int(part.nbytes) for part in last.parts)
    # the new key goes last among the keys; tensor offsets are relative to the data
    # section, which moves as a whole (re-aligned)
    alignment = 32
    head = data[:keys_at] + struct.pack("<Q", keys + 1) + data[keys_at + 8 : tensors_at]
    body = head + entry + data[tensors_at:table_end]
    body += b"\x00" * (-len(body) % alignment)
    out.write_bytes(body + data[reader.data_offset :])
    return out


@pytest.mark.parametrize("count", [1 << 21, 1 << 23])
def test_huge_metadata_arrays_are_refused_without_walking_them(
    tiny_model: Path, tmp_path: Path, reliability: Recorder, count: int
) -> None:
    reliability.case(
        f"GGUF metadata array of {count} items",
        injected=f"a GGUF with a {count}-item metadata array (gguf's reader walks each item)",
        checked="GGUFError naming the array within 2 s",
    )
    path = _with_array(tiny_model, tmp_path / "array.gguf", count)
    started = time.monotonic()
    with pytest.raises(GGUFError, match=f"an array of {count} items"):
        inspect_gguf(path)
    assert time.monotonic() - started < 2
