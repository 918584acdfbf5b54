"""The runtime's engine in-process, and llama.cpp's own path as the reference.

The engine (``LlamaEngine``) is what the runtime serves; the reference is
llama-cpp-python's ``Llama``, run greedily one token at a time, recording for each
token how far the best logit leads the second. llama.cpp's CPU kernels are not
batch-invariant, so two correct paths may pick differently where the two best
tokens are nearly tied: texts are compared up to the reference's first near tie.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from modelserve.runtime.config import build_config
from modelserve.runtime.engine import LlamaEngine
from modelserve.runtime.requests import ChatMessage, ChatRequest, CompletionRequest
from modelserve.shared.metrics import RuntimeMetrics
from support.procs import MissingService

ROOT = Path(__file__).resolve().parents[2]
# A logit (= log-probability) lead under which another batch shape may flip a pick.
# Gemma's Q4_K kernels quantize activations per batch: the same 42 tokens prefilled
# in a batch of 42 or of 48 moved a later lead by 0.24 (measured), so 0.5, not 0.1.
NEAR_TIE = 0.5
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@cache
def gemma_gguf() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF, fetched once per machine by ``.ci/gemma-gguf``."""
    done = subprocess.run(
        [str(ROOT / ".ci" / "gemma-gguf"), "python3"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise MissingService(f"the Gemma GGUF could not be fetched: {done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Greedy:
    """A greedy continuation and, for each token, the lead of the best logit."""

    tokens: list[int]
    leads: list[float]

    def sure(self) -> int:
        """How many leading tokens were picked by more than ``NEAR_TIE``."""
        for i, lead in enumerate(self.leads):
            if lead < NEAR_TIE:
                return i
        return len(self.tokens)


class Reference:
    """llama.cpp's own single-sequence path (llama-cpp-python's ``Llama``)."""

    def __init__(self, model: Path, n_ctx: int = 2048) -> None:
        from llama_cpp import Llama
        from llama_cpp import llama_cpp as lib

        # Flash attention as the engine's context gets it (llama.cpp's "auto" turns it on
        # on CPU): the two attention kernels differ by up to ~0.25 in a logit lead.
        self.llm = Llama(str(model), n_ctx=n_ctx, logits_all=True, flash_attn=True, verbose=False)
        vocab = lib.llama_model_get_vocab(self.llm.model)
        self._ends: Callable[[int], bool] = lambda token: bool(lib.llama_vocab_is_eog(vocab, token))

    def tokenize(self, text: str, *, bos: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode(), add_bos=bos, special=True))

    def text(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode(errors="replace")

    def greedy(self, prompt: list[int], max_tokens: int) -> Greedy:
        llm: Any = self.llm
        llm.reset()
        llm.eval(prompt)
        tokens: list[int] = []
        leads: list[float] = []
        for _ in range(max_tokens):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            best, second = np.partition(logits, -2)[-2:][::-1]
            token = int(np.argmax(logits))
            if self._ends(token):
                break
            tokens.append(token)
            leads.append(float(best - second))
            llm.eval([token])
        return Greedy(tokens, leads)

    def agrees(self, text: str, prompt: list[int], max_tokens: int) -> tuple[bool, str]:
        """Whether ``text`` is the greedy continuation of ``prompt`` up to the first
        near tie; also returns the part compared (empty: nothing was sure)."""
        reference = self.greedy(prompt, max_tokens)
        sure = reference.sure()
        expected = self.text(reference.tokens[:sure])
        if sure == len(reference.tokens):
            return text == expected, expected
        return text.startswith(expected), expected


class InProcessEngine:
    """The runtime's engine on an event loop of its own, for direct checks."""

    def __init__(self, model: Path, **config: Any) -> None:
        self.registry = CollectorRegistry()
        self.metrics = RuntimeMetrics(self.registry)
        self.engine = LlamaEngine.load(
            model, build_config(model=str(model), **config), self.metrics
        )
        self.loop = asyncio.new_event_loop()

    def complete(
        self, prompt: str | list[int], max_tokens: int, scope: str = "", **fields: Any
    ) -> dict[str, Any]:
        request = CompletionRequest(
            model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, **fields
        )
        request.scoped(scope)
        return self._run("completion", request)

    def chat(
        self, messages: list[dict[str, Any]], max_tokens: int, **fields: Any
    ) -> dict[str, Any]:
        request = ChatRequest(
            model="m",
            messages=[ChatMessage.model_validate(m) for m in messages],
            max_tokens=max_tokens,
            temperature=0,
            **fields,
        )
        return self._run("chat", request)

    def _run(self, kind: str, request: CompletionRequest | ChatRequest) -> dict[str, Any]:
        response, usage = self.loop.run_until_complete(self.engine.complete(kind, request))
        return {**response, "usage": usage.as_dict()}

    def together(
        self,
        prompts: list[str | list[int]],
        max_tokens: int,
        scopes: list[str] | None = None,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """Several completions submitted at once (decoded in the same batches), each
        in its caller's scope (``scopes``, one a prompt; default: all in one)."""

        async def all_of() -> list[dict[str, Any]]:
            requests = []
            for number, prompt in enumerate(prompts):
                request = CompletionRequest(
                    model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, **fields
                )
                request.scoped(scopes[number] if scopes else "")
                requests.append(request)
            done = await asyncio.gather(*(self.engine.complete("completion", r) for r in requests))
            return [{**response, "usage": usage.as_dict()} for response, usage in done]

        return self.loop.run_until_complete(all_of())

    def lookups(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "modelserve_prefix_cache_lookups_total", {"outcome": outcome}
        )
        return value or 0.0

    def close(self) -> None:
        self.engine.close()
        self.loop.close()


@contextmanager
def in_process(model: Path, **config: Any) -> Iterator[InProcessEngine]:
    engine = InProcessEngine(model, **config)
    try:
        yield engine
    finally:
        engine.close()


def cached(response: dict[str, Any]) -> int:
    return int(response["usage"]["prompt_tokens_details"]["cached_tokens"])
