"""Embeddings from a second llama_context over the same weights.

The embedding context is created with mean pooling and is only used from the
engine thread, between decode steps, so it never competes with generation for
the CPU mid-step. Several inputs go into one decode, one sequence each, and
the cache is cleared after every decode (an embedding keeps nothing).
"""

from __future__ import annotations

import ctypes

import numpy as np

from modelserve.runtime.batch import TokenBatch
from modelserve.runtime.llama_model import LlamaModel

MAX_INPUTS_PER_DECODE = 16


class EmbeddingError(RuntimeError):
    """llama.cpp could not embed an input."""


class Embedder:
    """Mean-pooled vectors; inputs longer than ``n_batch`` tokens are truncated."""

    def __init__(self, model: LlamaModel, *, n_batch: int, n_threads: int | None) -> None:
        from llama_cpp import llama_cpp as lib

        self._lib = lib
        self.model = model
        self.ctx = model.new_context(
            n_ctx=n_batch,
            n_batch=n_batch,
            n_seq_max=MAX_INPUTS_PER_DECODE,
            n_threads=n_threads,
            embeddings=True,
        )
        self._memory = lib.llama_get_memory(self.ctx)
        self.n_batch = int(lib.llama_n_batch(self.ctx))
        self._batch = TokenBatch(self.n_batch)

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """One vector per input, and the number of tokens read."""
        tokenized = [
            self.model.tokenize(text, add_bos=True, special=False)[: self.n_batch]
            for text in inputs
        ]
        vectors: list[list[float]] = []
        start = 0
        while start < len(tokenized):
            batch = self._batch
            batch.clear()
            end = start
            while (
                end < len(tokenized)
                and end - start < MAX_INPUTS_PER_DECODE
                and len(tokenized[end]) <= batch.room
            ):
                batch.add(end - start, tokenized[end], 0, output_last=True, output_all=True)
                end += 1
            code = int(self._lib.llama_decode(self.ctx, batch.struct()))
            try:
                if code != 0:
                    raise EmbeddingError(f"llama_decode failed with code {code}")
                for sequence in range(end - start):
                    pointer = self._lib.llama_get_embeddings_seq(self.ctx, sequence)
                    if not pointer:
                        raise EmbeddingError("llama.cpp returned no pooled embedding")
                    row = np.ctypeslib.as_array(
                        ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                        shape=(self.model.n_embd,),
                    )
                    vectors.append([float(x) for x in row])
            finally:
                self._lib.llama_memory_clear(self._memory, True)
            start = end
        return vectors, sum(len(t) for t in tokenized)

    def close(self) -> None:
        self._lib.llama_free(self.ctx)
