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

Two presets cover llama.cpp's other kinds of sequence memory, which the engine
must reuse differently: ``mamba`` is recurrent (Mamba-1: every block keeps a
fixed-size state instead of a KV cache) and ``hybrid`` is Jamba-shaped (Mamba-1
blocks and attention blocks in one model, so both memories at once). Jamba is
the hybrid here because its recurrent blocks are the same Mamba-1 blocks and its
attention blocks the same as llama's (without RoPE): the least new tensors of
the hybrid architectures llama.cpp loads.
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
    architecture: str = "llama"
    """``llama``; ``mamba`` (recurrent: Mamba-1 blocks only, no attention, no
    feed-forward, so ``heads``, ``kv_heads`` and ``feed_forward`` are 0); or
    ``jamba`` (hybrid: the blocks in ``attention_blocks`` are attention, the
    others Mamba-1, each followed by a feed-forward)."""
    attention_blocks: tuple[int, ...] = ()
    """Jamba only: which blocks are attention blocks."""
    ssm_state: int = 16
    """Mamba-1 state size per channel (``d_state``)."""
    ssm_conv: int = 4
    """Mamba-1 convolution width (``d_conv``)."""
    ssm_dt_rank: int = 4
    """Mamba-1 rank of the time-step projection (``dt_rank``)."""

    @property
    def ssm_inner(self) -> int:
        """Mamba-1 inner width (``d_inner``): llama.cpp supports only twice the embedding."""
        return 2 * self.embedding


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
    # ~0.4 MB, recurrent (Mamba-1, 2 blocks): the engine's recurrent-memory paths.
    # Weights as strong as margin's: at the usual scale the state adds next to
    # nothing (two prompts ending alike gave equal logits), so a state handed to the
    # wrong request would go unseen; here it changes the text, with wide margins.
    "mamba": Preset(
        blocks=2,
        embedding=64,
        heads=0,
        kv_heads=0,
        feed_forward=0,
        context=2048,
        f16=False,
        weight_scale=0.3,
        output_scale=4.0,
        letters=16,
        architecture="mamba",
    ),
    # ~0.8 MB, hybrid (Jamba: Mamba-1, attention, Mamba-1): recurrent and KV memory
    # in one model, the engine's hybrid-memory paths; strong weights as mamba's.
    "hybrid": Preset(
        blocks=3,
        embedding=64,
        heads=4,
        kv_heads=4,
        feed_forward=128,
        context=2048,
        f16=False,
        weight_scale=0.3,
        output_scale=4.0,
        letters=16,
        architecture="jamba",
        attention_blocks=(1,),
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


class _Tensors:
    """Writes one model's tensors: random matrices, unit norms, Mamba-1 constants."""

    def __init__(self, writer: gguf.GGUFWriter, shape: Preset, seed: int) -> None:
        self.writer = writer
        self.shape = shape
        self.rng = np.random.default_rng(seed)
        self.dtype = np.float16 if shape.f16 else np.float32

    def weights(self, *dims: int) -> np.ndarray:
        values = self.rng.standard_normal(dims, dtype=np.float32) * self.shape.weight_scale
        return values.astype(self.dtype)

    def matrix(self, name: str, values: np.ndarray) -> None:
        if self.shape.q8:
            quantized = gguf.quants.quantize(
                values.astype(np.float32), gguf.GGMLQuantizationType.Q8_0
            )
            self.writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            self.writer.add_tensor(name, values.astype(self.dtype))

    def f32(self, name: str, values: np.ndarray) -> None:
        """Vectors, and the Mamba tensors llama.cpp's kernels read as F32 only."""
        self.writer.add_tensor(name, values.astype(np.float32))

    def norm(self, name: str, size: int) -> None:
        self.f32(name, np.ones(size, dtype=np.float32))

    def attention(self, prefix: str, n_embd_kv: int) -> None:
        n_embd = self.shape.embedding
        self.matrix(f"{prefix}.attn_q.weight", self.weights(n_embd, n_embd))
        self.matrix(f"{prefix}.attn_k.weight", self.weights(n_embd_kv, n_embd))
        self.matrix(f"{prefix}.attn_v.weight", self.weights(n_embd_kv, n_embd))
        self.matrix(f"{prefix}.attn_output.weight", self.weights(n_embd, n_embd))

    def feed_forward(self, prefix: str) -> None:
        n_embd, n_ff = self.shape.embedding, self.shape.feed_forward
        self.norm(f"{prefix}.ffn_norm.weight", n_embd)
        self.matrix(f"{prefix}.ffn_gate.weight", self.weights(n_ff, n_embd))
        self.matrix(f"{prefix}.ffn_up.weight", self.weights(n_ff, n_embd))
        self.matrix(f"{prefix}.ffn_down.weight", self.weights(n_embd, n_ff))

    def mamba(self, prefix: str, *, inner_norms: bool) -> None:
        """A Mamba-1 mixer, shaped as llama.cpp loads it (numpy shapes: ggml's reversed).

        A and the time-step bias follow Mamba's own initialisation (A = -1..-d_state,
        time steps between 0.001 and 0.1), so the state decays and stays finite
        however long a sequence runs. Jamba adds RMS norms on dt, B and C
        (``inner_norms``).
        """
        shape, rng = self.shape, self.rng
        n_embd, inner, state, rank = (
            shape.embedding,
            shape.ssm_inner,
            shape.ssm_state,
            shape.ssm_dt_rank,
        )
        self.matrix(f"{prefix}.ssm_in.weight", self.weights(2 * inner, n_embd))
        self.f32(f"{prefix}.ssm_conv1d.weight", self.weights(inner, shape.ssm_conv))
        self.f32(f"{prefix}.ssm_conv1d.bias", np.zeros(inner, dtype=np.float32))
        self.matrix(f"{prefix}.ssm_x.weight", self.weights(rank + 2 * state, inner))
        if inner_norms:
            self.norm(f"{prefix}.ssm_dt_norm.weight", rank)
            self.norm(f"{prefix}.ssm_b_norm.weight", state)
            self.norm(f"{prefix}.ssm_c_norm.weight", state)
        self.matrix(f"{prefix}.ssm_dt.weight", self.weights(inner, rank))
        step = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), inner))
        self.f32(f"{prefix}.ssm_dt.bias", step + np.log(-np.expm1(-step)))  # softplus^-1
        decay = -np.arange(1, state + 1, dtype=np.float32)
        self.f32(f"{prefix}.ssm_a", np.tile(decay, (inner, 1)))
        self.f32(f"{prefix}.ssm_d", np.ones(inner, dtype=np.float32))
        self.matrix(f"{prefix}.ssm_out.weight", self.weights(n_embd, inner))


def _check(preset: str, shape: Preset) -> None:
    if shape.architecture == "mamba":
        if shape.heads or shape.kv_heads or shape.feed_forward or shape.attention_blocks:
            raise ValueError(f"{preset}: a mamba model has no attention and no feed-forward")
        return
    if shape.architecture not in ("llama", "jamba"):
        raise ValueError(f"{preset}: unknown architecture {shape.architecture!r}")
    if shape.embedding % shape.heads or shape.heads % shape.kv_heads:
        raise ValueError("embedding must divide by heads, and heads by kv_heads")
    blocks = set(shape.attention_blocks)
    if shape.architecture == "jamba" and not (blocks and blocks < set(range(shape.blocks))):
        raise ValueError(f"{preset}: a jamba model needs attention and Mamba blocks both")
    if shape.architecture == "llama" and blocks:
        raise ValueError(f"{preset}: every llama block is an attention block")


def write_synthetic_gguf(
    path: Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    name: str | None = None,
    chat_template: str | None = None,
    special_tokens: tuple[str, ...] = (),
) -> Path:
    """Write a loadable GGUF with random weights to ``path``; returns ``path``.

    The preset decides the architecture (llama unless it says otherwise).
    ``chat_template`` is the ``tokenizer.chat_template`` it carries (a model
    family's template, to test the runtime against it); the default is a short
    generic one. ``special_tokens`` are control tokens added after the byte tokens
    (the model never writes them unless a grammar or a logit bias makes it).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    _check(preset, shape)
    arch = shape.architecture
    tokens, scores, types = byte_vocab(special_tokens)
    n_vocab, n_embd = len(tokens), shape.embedding
    head_dim = n_embd // shape.heads if shape.heads else 0
    n_embd_kv = head_dim * shape.kv_heads

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
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
    if arch == "jamba":  # a block without KV heads is a Mamba block
        writer.add_head_count_kv(
            [shape.kv_heads if b in shape.attention_blocks else 0 for b in range(shape.blocks)]
        )
    else:
        writer.add_head_count_kv(shape.kv_heads)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    if arch in ("mamba", "jamba"):
        writer.add_ssm_conv_kernel(shape.ssm_conv)
        writer.add_ssm_inner_size(shape.ssm_inner)
        writer.add_ssm_state_size(shape.ssm_state)
        writer.add_ssm_time_step_rank(shape.ssm_dt_rank)
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

    out = _Tensors(writer, shape, seed)
    out.matrix("token_embd.weight", out.weights(n_vocab, n_embd))
    for block in range(shape.blocks):
        prefix = f"blk.{block}"
        out.norm(f"{prefix}.attn_norm.weight", n_embd)
        if arch == "mamba" or (arch == "jamba" and block not in shape.attention_blocks):
            out.mamba(prefix, inner_norms=arch == "jamba")
        else:
            out.attention(prefix, n_embd_kv)
        if arch != "mamba":
            out.feed_forward(prefix)
    out.norm("output_norm.weight", n_embd)
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    emit = emitting_tokens(shape.letters)
    output[emit] = (
        out.rng.standard_normal((len(emit), n_embd), dtype=np.float32) * shape.output_scale
    )
    out.matrix("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
