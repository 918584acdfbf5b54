"""One llama.cpp sampler chain per request, sampling that request's own batch row.

The chain mirrors what llama-cpp-python's ``create_completion`` builds (its
defaults: top-k 40, min-p 0.05, penalties over the last 64 tokens), so answers
keep their character on the batched engine; llama-server's extra knobs
(``top_k``, ``min_p``, ``typical_p``, ``repeat_penalty``) set the same samplers.
``logit_bias`` is a sampler of its own here, so it no longer competes with
other logits processors, and nothing runs as a Python callback inside llama.cpp
(where exceptions would be lost). Penalties count generated tokens only, as
OpenAI defines them. A grammar, when a request has one, checks the chain's
choice (``grammar.py``); without one sampling is a single llama.cpp call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelserve.runtime.grammar import Grammar

TOP_K = 40
MIN_P = 0.05
PENALTY_LAST_N = 64
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks one


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of sampling (OpenAI's names and ranges, llama-server's extras)."""

    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None
    top_k: int = TOP_K
    min_p: float = MIN_P
    typical_p: float = 1.0
    repeat_penalty: float = 1.0


class SamplerChain:
    """A llama_sampler chain; ``sample`` draws (and accepts) the token of one batch row."""

    def __init__(
        self, params: SamplingParams, n_vocab: int, grammar: Grammar | None = None
    ) -> None:
        from llama_cpp import llama_cpp as lib

        self._lib = lib
        self.grammar = grammar
        self._chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self._keep: list[Any] = []

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(self._chain, sampler)

        if params.logit_bias:
            biases = (lib.llama_logit_bias * len(params.logit_bias))()
            for index, (token, bias) in enumerate(params.logit_bias.items()):
                biases[index].token = ctypes.c_int32(int(token))
                biases[index].bias = float(bias)
            self._keep.append(biases)
            add(lib.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        if params.presence_penalty or params.frequency_penalty or params.repeat_penalty != 1.0:
            add(
                lib.llama_sampler_init_penalties(
                    n_vocab,
                    PENALTY_LAST_N,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(lib.llama_sampler_init_top_k(params.top_k))
        if params.typical_p < 1.0:
            add(lib.llama_sampler_init_typical(params.typical_p, 1))
        add(lib.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0:
            add(lib.llama_sampler_init_min_p(params.min_p, 1))
        add(lib.llama_sampler_init_temp(params.temperature))
        seed = RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(lib.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any, row: int) -> int:
        """The token drawn from the logits of batch row ``row`` of the last decode."""
        if self.grammar is not None:
            return self.grammar.sample(self._chain, ctx, row)
        return int(self._lib.llama_sampler_sample(self._chain, ctx, row))

    def close(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None
        if self.grammar is not None:
            self.grammar.close()
