"""llama-server's extras: sampling knobs as extra body fields, /tokenize and /detokenize."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from support.runtime import RuntimeServer

NO_EOS = {"2": -100}


def client(runtime: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.openai_base, api_key="unused", max_retries=0)


def text(runtime: RuntimeServer, seed: int, **extra: Any) -> str:
    reply = client(runtime).completions.create(
        model="demo",
        prompt="Knobs",
        max_tokens=24,
        seed=seed,
        logit_bias=NO_EOS,
        extra_body=extra,
    )
    return reply.choices[0].text


def test_top_k_one_is_greedy(runtime: RuntimeServer) -> None:
    greedy = text(runtime, 0, temperature=0)
    assert text(runtime, 1, top_k=1) == greedy
    assert text(runtime, 2, top_k=1) == greedy
    assert text(runtime, 1) != text(runtime, 2)  # without it, seeds differ


def test_min_p_one_keeps_only_the_best_token(runtime: RuntimeServer) -> None:
    greedy = text(runtime, 0, temperature=0)
    assert text(runtime, 3, min_p=1.0) == greedy
    assert text(runtime, 4, min_p=1.0) == greedy


def test_typical_p_narrows_the_choice(runtime: RuntimeServer) -> None:
    # one token is kept at each step, whatever the seed
    assert text(runtime, 5, typical_p=0.001) == text(runtime, 6, typical_p=0.001)


def test_repeat_penalty_changes_greedy_text(runtime: RuntimeServer) -> None:
    plain = text(runtime, 0, temperature=0)
    penalised = text(runtime, 0, temperature=0, repeat_penalty=5.0)
    assert penalised != plain
    assert len(set(penalised)) >= len(set(plain))


def test_tokenize_and_detokenize(runtime: RuntimeServer) -> None:
    tokens = httpx.post(f"{runtime.url}/tokenize", json={"content": "hello"}, timeout=10).json()
    assert tokens["tokens"] and all(isinstance(t, int) for t in tokens["tokens"])
    back = httpx.post(
        f"{runtime.url}/detokenize", json={"tokens": tokens["tokens"]}, timeout=10
    ).json()
    # The synthetic vocabulary has no "\u2581" piece, so SentencePiece's word-start
    # marker comes back as its own bytes rather than as a space.
    assert back["content"].replace("\u2581", " ").strip() == "hello"
    special = httpx.post(
        f"{runtime.openai_base}/tokenize",
        json={"content": "hello", "add_special": True},
        timeout=10,
    ).json()
    assert special["tokens"] == [1, *tokens["tokens"]]  # <s> first
    pieces = httpx.post(
        f"{runtime.url}/tokenize", json={"content": "hi", "with_pieces": True}, timeout=10
    ).json()
    assert [p["id"] for p in pieces["tokens"]] == httpx.post(
        f"{runtime.url}/tokenize", json={"content": "hi"}, timeout=10
    ).json()["tokens"]
    assert (
        "".join(p["piece"] for p in pieces["tokens"] if isinstance(p["piece"], str)).strip() == "hi"
    )


def test_detokenize_refuses_unknown_ids(runtime: RuntimeServer) -> None:
    response = httpx.post(f"{runtime.url}/detokenize", json={"tokens": [99999]}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tokens"
