"""The engine on a real model: Gemma 3 270M Q4_K_M (sliding-window attention, 262k vocabulary).

Every greedy text here is checked against llama.cpp's own single-sequence path
(llama-cpp-python's ``Llama`` in-process, ``support/engine.py``) up to the
reference's first near tie. The engine runs in-process too, so each test can
choose its context, slots and prefix cache and read the engine's metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelserve.runtime.llama_model import MemoryKind
from support.engine import Reference, cached, in_process

pytestmark = pytest.mark.timeout(600)

PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "The days of the week are Monday, Tuesday,",
    "1, 2, 3, 4, 5,",
]
SYSTEM = (
    "You are the front desk of the Hotel Meridian. The guest wifi password is tangerine-42. "
    "Breakfast is served from seven to ten on the first floor, and the pool opens at eight."
)
ASK_PASSWORD = " Guest: What is the wifi password?\nFront desk: The password is"
UNRELATED = [
    "Once upon a time, in a small village by the sea,",
    "The mitochondria is the powerhouse of the cell because",
    "To install the package, run the following command:",
]
FILLER = (
    "The committee met again on Thursday to review the harbour budget, the ferry timetable "
    "and the repairs to the north pier, and agreed to meet again the following month. "
)
EOG_BANNED = {1: -100.0, 106: -100.0}  # <eos> and <end_of_turn>: streams run to max_tokens


@pytest.fixture(scope="module")
def reference(gemma_model: Path) -> Iterator[Reference]:
    yield Reference(gemma_model, n_ctx=4096)


def text(response: dict[str, Any]) -> str:
    choice = response["choices"][0]
    return str(choice["text"] if "text" in choice else choice["message"]["content"])


def assert_agrees(reference: Reference, got: str, prompt: list[int], max_tokens: int) -> None:
    ok, expected = reference.agrees(got, prompt, max_tokens)
    assert len(expected) >= 4, f"the reference is sure of too little to compare: {expected!r}"
    assert ok, f"engine {got!r} differs from llama.cpp's {expected!r}"


def test_the_model_is_a_sliding_window_one(gemma_model: Path) -> None:
    with in_process(gemma_model, n_ctx=1024, n_parallel=1) as run:
        assert run.engine.model.memory is MemoryKind.SLIDING
        assert run.engine.model.n_swa == 512


def test_completions_alone_and_batched_equal_llama_cpp(
    gemma_model: Path, reference: Reference
) -> None:
    prompts = [reference.tokenize(p) for p in PROMPTS]
    with in_process(gemma_model, n_ctx=2048, n_parallel=4, prefix_cache=0) as run:
        alone = [run.complete(p, 24) for p in prompts]
        together = run.together(list(prompts), 24)
    for prompt, one, batched in zip(prompts, alone, together, strict=True):
        assert_agrees(reference, text(one), prompt, 24)
        assert_agrees(reference, text(batched), prompt, 24)


def test_chat_gets_one_bos_and_continues_like_llama_cpp(
    gemma_model: Path, reference: Reference
) -> None:
    """A GGUF without a template falls back to ChatML; the prompt still starts with
    the model's BOS, once (without it Gemma answers "assistant" over and over)."""
    messages = [{"role": "user", "content": "Name three fruits that are red."}]
    with in_process(gemma_model, n_ctx=1024, n_parallel=1) as run:
        rendered = run.engine.template.render(messages).prompt
        answer = run.chat(messages, 24)
    prompt = reference.tokenize(rendered)  # BOS + the rendered text
    assert prompt[0] == run.engine.model.bos and prompt[1] != prompt[0]
    assert answer["usage"]["prompt_tokens"] == len(prompt)
    assert_agrees(reference, text(answer), prompt, 24)
    assert not text(answer).lstrip().startswith("assistant")


def test_n_choices_equal_llama_cpp(gemma_model: Path, reference: Reference) -> None:
    prompt = reference.tokenize(PROMPTS[0])
    with in_process(gemma_model, n_ctx=1024, n_parallel=4) as run:
        response = run.complete(prompt, 16, n=3)
    assert len(response["choices"]) == 3
    for choice in response["choices"]:
        assert_agrees(reference, choice["text"], prompt, 16)


def test_logprobs_equal_llama_cpps(gemma_model: Path, reference: Reference) -> None:
    prompt = reference.tokenize(PROMPTS[1])
    greedy = reference.greedy(prompt, 12)
    with in_process(gemma_model, n_ctx=1024, n_parallel=2) as run:
        response = run.complete(prompt, 12, logprobs=2)
    logprobs = response["choices"][0]["logprobs"]
    sure = greedy.sure()
    assert sure >= 4
    assert logprobs["tokens"][:sure] == [reference.text([t]) for t in greedy.tokens[:sure]]
    pairs = zip(greedy.leads[:sure], logprobs["top_logprobs"], strict=False)
    for position, (lead, top) in enumerate(pairs):
        best, second = sorted(top.values(), reverse=True)[:2]
        assert abs((best - second) - lead) < 0.1, f"token {position}: lead {lead} vs {top}"


def test_prefix_cache_survives_unrelated_requests(gemma_model: Path, reference: Reference) -> None:
    """Unrelated prompts share only BOS with a kept one: no reuse is reported, and the
    kept system prompt is still there for the next request that starts with it."""
    system = reference.tokenize(SYSTEM)
    first = system + reference.tokenize(" Guest: When is breakfast?\nFront desk:", bos=False)
    later = system + reference.tokenize(ASK_PASSWORD, bos=False)
    with in_process(gemma_model, n_ctx=2048, n_parallel=2, prefix_cache=4) as run:
        run.complete(first, 8)
        for prompt in UNRELATED:
            assert cached(run.complete(reference.tokenize(prompt), 8)) == 0
        answer = run.complete(later, 16)
        hits, misses = run.lookups("hit"), run.lookups("miss")
    assert cached(answer) >= len(system)
    assert_agrees(reference, text(answer), later, 16)
    assert (hits, misses) == (1, 4)


def _padded(reference: Reference, head: list[int], total: int) -> list[int]:
    filler = reference.tokenize(FILLER, bos=False)
    tokens = list(head)
    while len(tokens) < total:
        tokens += filler
    return tokens[:total]


def test_sliding_window_prefix_reuse_is_right_after_churn(
    gemma_model: Path, reference: Reference
) -> None:
    """A long kept sequence whose early window cells another request could recycle:
    a later request reusing its system prompt must answer as a fresh model does
    (reused by taking over, the window layers lost the system prompt)."""
    system = reference.tokenize(SYSTEM)
    question = system + reference.tokenize(ASK_PASSWORD, bos=False)
    long_one = _padded(reference, system, 600)
    with in_process(gemma_model, n_ctx=1024, n_parallel=1, prefix_cache=2) as run:
        run.complete(long_one, 1)
        run.complete(_padded(reference, reference.tokenize(UNRELATED[0]), 300), 1)
        run.complete(long_one, 1)
        run.complete(_padded(reference, reference.tokenize(UNRELATED[1]), 200), 1)
        answer = run.complete(question, 12)
    assert_agrees(reference, text(answer), question, 12)


def test_a_recycled_window_is_prefilled_again_not_reported_cached(
    gemma_model: Path, reference: Reference
) -> None:
    """With a window-sized cache (n_ctx past what the windows need, so swa_full is
    off) a kept sequence loses its early window cells to the next long request. The
    engine must see that (llama_memory_seq_pos_min), prefill again and say so."""
    system = reference.tokenize(SYSTEM)
    question = system + reference.tokenize(ASK_PASSWORD, bos=False)
    with in_process(gemma_model, n_ctx=4096, n_batch=512, n_parallel=1, prefix_cache=2) as run:
        run.complete(_padded(reference, system, 1200), 1)
        run.complete(_padded(reference, reference.tokenize(UNRELATED[2]), 900), 1)
        answer = run.complete(question, 12)
        stale = run.lookups("stale")
    assert stale == 1
    assert cached(answer) == 0
    assert_agrees(reference, text(answer), question, 12)


def test_kv_pressure_ends_one_request_at_a_time(gemma_model: Path, reference: Reference) -> None:
    """Four streams that cannot all fit: the longest is ended, one at a time, and an
    ended stream's cells are freed, not kept, so the others run on."""
    prompts: list[str | list[int]] = [reference.tokenize(p) for p in PROMPTS]
    with in_process(gemma_model, n_ctx=256, n_batch=256, n_parallel=4, prefix_cache=4) as run:
        responses = run.together(prompts, 400, logit_bias=EOG_BANNED)
    lengths = sorted(r["usage"]["completion_tokens"] for r in responses)
    assert all(r["choices"][0]["finish_reason"] == "length" for r in responses)
    assert len(set(lengths)) == len(lengths), f"several streams ended together: {lengths}"
    assert lengths[-1] > 2 * lengths[0], lengths
