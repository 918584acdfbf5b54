"""Write llama-architecture GGUF files with random weights.

No model can be downloaded where modelserve is built and tested, so tests, the
demo and the benchmarks use models written here. The vocabulary is SentencePiece
style: ``<unk>``, ``<s>``, ``</s>`` and the 256 ``<0xNN>`` byte tokens, which is
enough for llama.cpp to tokenize any text (byte fallback). The output is
gibberish, but loading, tokenizing, sampling, streaming and timing are real.

The output projection has zero rows for every token but printable ASCII, newline
and end-of-sequence, and larger weights elsewhere, so that under the usual top-k
sampling the model writes valid (if meaningless) text and ends now and then, as
a real model does. Random bytes would be invalid UTF-8, which a real model never
emits and on which llama-cpp-python's streaming slows down super-linearly
(1000 tokens: 1 s as ASCII, 94 s as random bytes).

Random weights at the usual scale give near-flat logits, where the float
reassociation of a different batch size can flip a greedy choice. The
``margin`` preset is for tests that compare greedy texts across batch shapes:
F32 weights, blocks strong enough that the context (not just the last token)
decides the next token, and an output projection large enough that the best
token leads the second by a wide margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    """Shapes of a synthetic model; ``small`` follows a real ~135M-parameter model."""

    blocks: int
    embedding: int
    heads: int
    kv_heads: int
    feed_forward: int
    context: int
    f16: bool
    weight_scale: float = 0.02
    """Standard deviation of the embedding and block weights."""
    output_scale: float = 0.5
    """Standard deviation of the emitting rows of the output projection."""
    q8: bool = False
    """Matrices in Q8_0 (the issue's reference benchmarks used a Q8_0 model)."""
    letters: int | None = None
    """Write only the first ``letters`` lowercase letters (and end-of-sequence)."""


PRESETS: dict[str, Preset] = {
    # ~0.5 MB: what tests and the demo use.
    "tiny": Preset(
        blocks=2, embedding=64, heads=4, kv_heads=4, feed_forward=128, context=2048, f16=False
    ),
    # ~0.5 MB, greedy choices with a clear margin: batch-equality tests.
    "margin": Preset(
        blocks=2,
        embedding=64,
        heads=4,
        kv_heads=4,
        feed_forward=128,
        context=2048,
        f16=False,
        weight_scale=0.15,
        output_scale=4.0,
        letters=16,
    ),
    # ~10 MB: quick benchmarks.
    "mini": Preset(
        blocks=4, embedding=256, heads=8, kv_heads=4, feed_forward=704, context=4096, f16=True
    ),
    # ~210 MB, 30 blocks x 576 wide (SmolLM-135M's shapes): realistic speed.
    "small": Preset(
        blocks=30, embedding=576, heads=9, kv_heads=3, feed_forward=1536, context=8192, f16=True
    ),
    # ~630 MB, 32 blocks x 960 wide (SmolLM-360M's shapes): the cold-start benchmark's
    # larger model, where loading the weights is a visible share of the start.
    "medium": Preset(
        blocks=32, embedding=960, heads=15, kv_heads=5, feed_forward=2560, context=8192, f16=True
    ),
    # ~115 MB, the same shapes in Q8_0: what the runtime benchmark serves.
    "small-q8": Preset(
        blocks=30,
        embedding=576,
        heads=9,
        kv_heads=3,
        feed_forward=1536,
        context=8192,
        f16=True,
        q8=True,
    ),
}


def byte_vocab(special: tuple[str, ...] = ()) -> tuple[list[str], list[float], list[int]]:
    """The byte vocabulary, then ``special``: control tokens (a family's markers, such as
    Mistral's ``[TOOL_CALLS]`` or gpt-oss's ``<|channel|>``), as real vocabularies have."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(special)
    scores = [0.0] * len(tokens)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.CONTROL] * len(special)
    return tokens, scores, [int(t) for t in types]


def emitting_tokens(letters: int | None = None) -> list[int]:
    """Token ids the synthetic model writes: printable ASCII, newline, end-of-sequence.

    With ``letters``, only that many lowercase letters: fewer candidates leave
    wider gaps between the best and second-best token.
    """
    byte_base = 3
    if letters is not None:
        return [2, *(byte_base + ord("a") + i for i in range(letters))]
    printable = [byte_base + b for b in range(0x20, 0x7F)]
    return [2, byte_base + 0x0A, *printable]


def write_synthetic_gguf(
    path: Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    name: str | None = None,
    chat_template: str | None = None,
    special_tokens: tuple[str, ...] = (),
) -> Path:
    """Write a loadable llama GGUF with random weights to ``path``; returns ``path``.

    ``chat_template`` is the ``tokenizer.chat_template`` it carries (a model
    family's template, to test the runtime against it); the default is a short
    generic one. ``special_tokens`` are control tokens added after the byte tokens
    (the model never writes them unless a grammar or a logit bias makes it).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    if shape.embedding % shape.heads or shape.heads % shape.kv_heads:
        raise ValueError("embedding must divide by heads, and heads by kv_heads")
    rng = np.random.default_rng(seed)
    dtype = np.float16 if shape.f16 else np.float32
    tokens, scores, types = byte_vocab(special_tokens)
    n_vocab, n_embd = len(tokens), shape.embedding
    head_dim = n_embd // shape.heads
    n_embd_kv = head_dim * shape.kv_heads

    def weights(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * shape.weight_scale).astype(dtype)

    def add_matrix(name: str, values: np.ndarray) -> None:
        if shape.q8:
            quantized = gguf.quants.quantize(
                values.astype(np.float32), gguf.GGMLQuantizationType.Q8_0
            )
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values.astype(dtype))

    def norm() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)  # 1-D tensors stay F32, as llama.cpp expects

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name or f"modelserve-synthetic-{preset}")
    if shape.q8:
        file_type = gguf.LlamaFileType.MOSTLY_Q8_0
    else:
        file_type = gguf.LlamaFileType.MOSTLY_F16 if shape.f16 else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    writer.add_context_length(shape.context)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(shape.blocks)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(chat_template or CHAT_TEMPLATE)

    add_matrix("token_embd.weight", weights(n_vocab, n_embd))
    for block in range(shape.blocks):
        prefix = f"blk.{block}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", norm())
        add_matrix(f"{prefix}.attn_q.weight", weights(n_embd, n_embd))
        add_matrix(f"{prefix}.attn_k.weight", weights(n_embd_kv, n_embd))
        add_matrix(f"{prefix}.attn_v.weight", weights(n_embd_kv, n_embd))
        add_matrix(f"{prefix}.attn_output.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", norm())
        add_matrix(f"{prefix}.ffn_gate.weight", weights(shape.feed_forward, n_embd))
        add_matrix(f"{prefix}.ffn_up.weight", weights(shape.feed_forward, n_embd))
        add_matrix(f"{prefix}.ffn_down.weight", weights(n_embd, shape.feed_forward))
    writer.add_tensor("output_norm.weight", norm())
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    emit = emitting_tokens(shape.letters)
    output[emit] = rng.standard_normal((len(emit), n_embd), dtype=np.float32) * shape.output_scale
    add_matrix("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
