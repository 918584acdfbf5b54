"""The GGUF's weights and vocabulary, loaded once, and contexts made from them.

Generation and embeddings each get their own llama_context over the same
``llama_model``, so the weights are in memory once. Tokenizing and turning
tokens into bytes only read the vocabulary, which llama.cpp never changes after
loading, so they are safe from any thread; contexts are not (the engine thread
owns the generation context).
"""

from __future__ import annotations

import ctypes
import enum
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.runtime.batch import Tokens
from modelserve.runtime.cpu_quota import available_cpus

LLAMA_LOGGER = "llama-cpp-python"  # where llama-cpp-python routes llama.cpp's log


class ModelLoadError(RuntimeError):
    """llama.cpp could not load the GGUF or create a context for it."""


class MemoryKind(enum.Enum):
    """How a model's sequence memory behaves, which decides what the engine may reuse.

    ``ATTENTION``: a plain KV cache; any prefix of a sequence can be kept, cut or
    copied by position range. ``SLIDING``: interleaved sliding-window attention
    (Gemma 2/3, gpt-oss, Cohere, some Mistral): ranges work on the full-attention
    layers, but the window layers recycle a sequence's cells that fell out of its
    window, so a prefix is reusable only if its window is still there
    (``llama_memory_seq_pos_min``). ``RECURRENT`` (Mamba, RWKV) and ``HYBRID``
    (Jamba, Granite 4-H, Qwen3-Next, LFM2...): a sequence's state is one whole
    thing at its last position; ranges are ignored or refused, so a state can
    only be continued from its end or copied whole at a token boundary.
    """

    ATTENTION = "attention"
    SLIDING = "sliding-window"
    RECURRENT = "recurrent"
    HYBRID = "hybrid"

    @property
    def cuts_ranges(self) -> bool:
        """Whether a sequence can be cut or copied at any position."""
        return self in (MemoryKind.ATTENTION, MemoryKind.SLIDING)


class LlamaModel:
    """A loaded ``llama_model`` with cached per-token text."""

    def __init__(
        self, path: Path, *, n_gpu_layers: int, type_k: str = "f16", type_v: str = "f16"
    ) -> None:
        from llama_cpp import llama_cpp as lib

        logging.getLogger(LLAMA_LOGGER).setLevel(logging.ERROR)
        lib.llama_backend_init()
        self._lib = lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers < 0 else n_gpu_layers
        self.path = path
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelLoadError(f"llama.cpp could not load {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(lib.llama_model_n_embd(self.model))
        self.bos = int(lib.llama_vocab_bos(self.vocab))
        self.eos = int(lib.llama_vocab_eos(self.vocab))
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.n_swa = int(lib.llama_model_n_swa(self.model))
        self.memory = self._memory_kind()
        self._pieces: dict[int, bytes] = {}
        self._end_of_generation: dict[int, bool] = {}
        self._shown: set[int] = set()
        # KV cache element types (ggml_type values) of every context made here
        self.type_k = int(getattr(lib, f"GGML_TYPE_{type_k.upper()}"))
        self.type_v = int(getattr(lib, f"GGML_TYPE_{type_v.upper()}"))

    def _memory_kind(self) -> MemoryKind:
        lib = self._lib
        if lib.llama_model_is_hybrid(self.model):
            return MemoryKind.HYBRID
        if lib.llama_model_is_recurrent(self.model):
            return MemoryKind.RECURRENT
        return MemoryKind.SLIDING if self.n_swa > 0 else MemoryKind.ATTENTION

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> Tokens:
        """Token ids of ``text``; ``add_bos`` puts the model's BOS first if it uses one."""
        data = text.encode()
        capacity = len(data) + 8
        while True:
            out = (self._lib.llama_token * capacity)()
            count = self._lib.llama_tokenize(
                self.vocab, data, len(data), out, capacity, False, special
            )
            if count >= 0:
                break
            capacity = -count
        tokens = np.ctypeslib.as_array(out)[:count].astype(np.int32)
        if add_bos and self.add_bos and self.bos >= 0:
            tokens = np.concatenate([np.array([self.bos], dtype=np.int32), tokens])
        return tokens

    def detokenize(self, tokens: Tokens | list[int], *, special: bool = False) -> str:
        """The text of ``tokens`` (llama.cpp's inverse of tokenize; BOS/EOS render as nothing)."""
        ids = (self._lib.llama_token * len(tokens))(*(int(t) for t in tokens))
        capacity = 8 * len(tokens) + 16
        while True:
            buffer = ctypes.create_string_buffer(capacity)
            size = self._lib.llama_detokenize(
                self.vocab, ids, len(tokens), buffer, capacity, True, special
            )
            if size >= 0:
                return buffer.raw[:size].decode(errors="replace")
            capacity = -size

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (special tokens render as nothing,
        but for those :meth:`show_tokens` named)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._render(token, special=token in self._shown)
            self._pieces[token] = cached
        return cached

    def show_tokens(self, texts: Iterable[str]) -> None:
        """Render the control tokens spelt ``texts`` in generated text: markers the
        output parsers need (Mistral's ``[TOOL_CALLS]``, Llama's ``<|python_tag|>``)
        are control tokens that would otherwise come out as nothing."""
        for text in texts:
            tokens = self.tokenize(text, add_bos=False, special=True)
            if len(tokens) == 1 and self.token_text(int(tokens[0])) == text:
                self._shown.add(int(tokens[0]))
                self._pieces.pop(int(tokens[0]), None)

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelt out (for chat templates' bos/eos)."""
        return self._render(token, special=True).decode(errors="replace")

    def _render(self, token: int, *, special: bool) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = self._lib.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = self._lib.llama_token_to_piece(self.vocab, token, buffer, -size, 0, special)
        return buffer.raw[:size]

    def ends_generation(self, token: int) -> bool:
        """End-of-sequence and the other end-of-generation tokens."""
        known = self._end_of_generation.get(token)
        if known is None:
            known = bool(self._lib.llama_vocab_is_eog(self.vocab, token))
            self._end_of_generation[token] = known
        return known

    def metadata(self, key: str) -> str | None:
        """A string from the GGUF header, e.g. ``tokenizer.chat_template``."""
        size = 1 << 16
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = self._lib.llama_model_meta_val_str(self.model, key.encode(), buffer, size)
            if length < 0:
                return None
            if length < size:
                return buffer.value.decode(errors="replace")
            size = length + 1

    def new_context(
        self,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq_max: int,
        n_threads: int | None,
        embeddings: bool = False,
    ) -> Any:
        """A llama_context with a unified KV cache (any sequence may use all of n_ctx)."""
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512) if not embeddings else n_batch
        params.n_seq_max = n_seq_max
        params.type_k, params.type_v = self.type_k, self.type_v
        cores = available_cpus()  # the pod's CPU limit, not the node's cores
        params.n_threads = n_threads or max(cores // 2, 1)
        params.n_threads_batch = n_threads or cores
        params.kv_unified = True
        params.swa_full = self._swa_full(n_ctx, n_seq_max, params.n_ubatch)
        params.embeddings = embeddings
        if embeddings:
            params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context (n_ctx={n_ctx}, n_batch={n_batch}, "
                f"n_seq_max={n_seq_max}) for {self.path}"
            )
        return ctx

    def _swa_full(self, n_ctx: int, n_seq_max: int, n_ubatch: int) -> bool:
        """Whether the window layers get a cache of ``n_ctx`` cells, or only what the
        windows need (``n_swa`` per sequence, unified, plus a ubatch).

        Full size keeps cells past a window a little longer (until their cell is
        wanted again), never for sure, so the engine checks every reuse anyway. So
        full size is taken only where it costs nothing: where the windows' need is
        at least ``n_ctx``; beyond that the memory is worth more than the chance.
        """
        return self.n_swa <= 0 or n_ctx <= self.n_swa * n_seq_max + n_ubatch

    def free_context(self, ctx: Any) -> None:
        self._lib.llama_free(ctx)

    def close(self) -> None:
        if self.model:
            self._lib.llama_model_free(self.model)
            self.model = None
