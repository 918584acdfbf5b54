"""Recurrent and hybrid models in the engine: no ride, no cut, no state handed on.

Tiny generated GGUFs (``gguf_synth``'s ``mamba`` and ``hybrid`` presets, random
weights) stand in for Mamba/RWKV and for Jamba-like hybrids. Their state is one
whole thing per sequence: a prefix of it cannot be copied or cut. The engine is
checked in-process against llama.cpp's own single-sequence path, up to the
first near tie (random weights give near-flat logits, so only sure tokens are
compared).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelserve.runtime.llama_model import MemoryKind
from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.engine import Reference, cached, in_process

KINDS = {"mamba": MemoryKind.RECURRENT, "hybrid": MemoryKind.HYBRID}
PREAMBLE = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48]  # a shared start, as a template gives


@pytest.fixture(scope="module", params=sorted(KINDS))
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = str(request.param)
    return write_synthetic_gguf(tmp_path_factory.mktemp("models") / f"{name}.gguf", name)


@pytest.fixture(scope="module")
def reference(model: Path) -> Iterator[Reference]:
    yield Reference(model, n_ctx=512)


def tokens_of(response: dict[str, Any]) -> str:
    return str(response["choices"][0]["text"])


def test_the_memory_kind_is_read_from_the_model(model: Path) -> None:
    with in_process(model, n_ctx=256, n_parallel=1) as run:
        assert run.engine.model.memory is KINDS[model.stem]
        assert not run.engine.model.memory.cuts_ranges


def test_concurrent_requests_sharing_a_start_do_not_ride(model: Path, reference: Reference) -> None:
    """Two chats share a template's preamble: a rider would copy the running one's
    whole state (its own tokens included); llama.cpp failed (recurrent) or leaked it
    (hybrid). Each must equal its own solo run."""
    prompts: list[str | list[int]] = [[*PREAMBLE, 60, 61, 62], [*PREAMBLE, 70, 71, 72, 73]]
    with in_process(model, n_ctx=512, n_parallel=4, prefix_cache=4) as run:
        answers = run.together(prompts, 12)
    for prompt, answer in zip(prompts, answers, strict=True):
        assert cached(answer) == 0
        ok, expected = reference.agrees(tokens_of(answer), list(prompt), 12)  # type: ignore[arg-type]
        assert ok, f"{tokens_of(answer)!r} is not llama.cpp's {expected!r}"


def test_n_choices_copy_the_whole_state_at_the_prompts_end(
    model: Path, reference: Reference
) -> None:
    prompt = [*PREAMBLE, 60, 61, 62]
    with in_process(model, n_ctx=512, n_parallel=4) as run:
        response = run.complete(prompt, 12, n=3)
    for choice in response["choices"]:
        ok, expected = reference.agrees(choice["text"], prompt, 12)
        assert ok, f"{choice['text']!r} is not llama.cpp's {expected!r}"


def test_a_kept_state_is_continued_only_from_its_end(model: Path, reference: Reference) -> None:
    """A kept sequence that is wholly a prefix of the next prompt (a chat's next turn)
    is continued; one that only shares a start is not cut, and reports nothing cached."""
    first = [*PREAMBLE, 60, 61, 62]
    with in_process(model, n_ctx=512, n_parallel=1, prefix_cache=2) as run:
        run.complete(first, 1)  # kept: the prompt (its one generated token is not decoded)
        turn = [*first, 80, 81, 82, 83]
        continued = run.complete(turn, 8)
        other = [*PREAMBLE, 90, 91, 92]
        fresh = run.complete(other, 8)
    assert cached(continued) == len(first)
    ok, expected = reference.agrees(tokens_of(continued), turn, 8)
    assert ok, f"{tokens_of(continued)!r} is not llama.cpp's {expected!r}"
    assert cached(fresh) == 0
    ok, expected = reference.agrees(tokens_of(fresh), other, 8)
    assert ok, f"{tokens_of(fresh)!r} is not llama.cpp's {expected!r}"
