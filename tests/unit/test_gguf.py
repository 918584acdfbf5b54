"""GGUF inspection on synthetic models, and a precise error for every bad file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from modelserve.shared.gguf_inspect import (
    GGUFError,
    ImplausibleGGUF,
    NotGGUF,
    TruncatedGGUF,
    estimate_memory,
    inspect_gguf,
)
from modelserve.shared.gguf_synth import PRESETS, write_synthetic_gguf


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Path:
    return tiny_model


def expected_parameters(preset: str, vocab: int = 259) -> int:
    p = PRESETS[preset]
    kv = p.embedding // p.heads * p.kv_heads
    per_block = (
        2 * p.embedding  # two norms
        + 2 * p.embedding * p.embedding  # q, output
        + 2 * kv * p.embedding  # k, v
        + 3 * p.feed_forward * p.embedding  # gate, up, down
    )
    return 2 * vocab * p.embedding + p.embedding + p.blocks * per_block


def test_tiny_model_header(tiny: Path) -> None:
    info = inspect_gguf(tiny)
    assert info.architecture == "llama"
    assert info.name == "modelserve-synthetic-tiny"
    assert (info.file_type, info.file_type_id) == ("F32", 0)
    assert info.parameter_count == expected_parameters("tiny")
    assert (info.context_length, info.block_count, info.embedding_length) == (2048, 2, 64)
    assert (info.head_count, info.head_count_kv, info.head_dim) == (4, 4, 16)
    assert info.vocab_size == 259
    assert info.has_chat_template
    assert info.tensor_count == 2 * 9 + 3
    assert info.tensor_data_bytes == info.parameter_count * 4
    assert info.tensor_data_bytes < info.file_size < 600_000


def test_f16_preset_with_grouped_kv_heads(tmp_path: Path) -> None:
    info = inspect_gguf(write_synthetic_gguf(tmp_path / "mini.gguf", "mini", name="m"))
    assert (info.name, info.file_type, info.head_count_kv) == ("m", "F16", 4)
    assert info.parameter_count == expected_parameters("mini")


@pytest.mark.parametrize(
    ("preset", "architecture", "head_count", "tensors"),
    [
        # 2 blocks of attn_norm + a Mamba-1 mixer (9), no feed-forward; 3 outside blocks
        ("mamba", "mamba", 0, 2 * 10 + 3),
        # Mamba, attention, Mamba: Jamba's mixer adds 3 norms (12), attention is 4
        # matrices, every block has attn_norm and a feed-forward (4)
        ("hybrid", "jamba", 4, 2 * (1 + 12 + 4) + (1 + 4 + 4) + 3),
    ],
)
def test_recurrent_and_hybrid_presets(
    tmp_path: Path, preset: str, architecture: str, head_count: int, tensors: int
) -> None:
    info = inspect_gguf(write_synthetic_gguf(tmp_path / f"{preset}.gguf", preset))
    assert (info.architecture, info.name) == (architecture, f"modelserve-synthetic-{preset}")
    assert (info.block_count, info.embedding_length) == (PRESETS[preset].blocks, 64)
    assert (info.head_count, info.file_type, info.tensor_count) == (head_count, "F32", tensors)
    assert info.tensor_data_bytes < info.file_size < 1_000_000


def test_memory_estimate(tiny: Path) -> None:
    info = inspect_gguf(tiny)
    estimate = estimate_memory(info, 512)
    # 2 (K and V) x 2 blocks x 512 tokens x 4 kv heads x 16 dims x 2 bytes (f16)
    assert estimate.kv_cache_bytes == 2 * 2 * 512 * 4 * 16 * 2
    assert estimate.weights_bytes == info.tensor_data_bytes
    assert estimate.total_bytes == (
        estimate.weights_bytes + estimate.kv_cache_bytes + estimate.overhead_bytes
    )
    full = estimate_memory(info)  # the header's context length
    assert full.context_length == 2048
    assert full.kv_cache_bytes == 4 * estimate.kv_cache_bytes
    # a quantized cache: q8_0 keeps blocks of 32 values in 34 bytes, q4_0 in 18
    q8 = estimate_memory(info, 512, type_k="q8_0", type_v="q8_0")
    assert q8.kv_cache_bytes == 2 * 2 * 512 * 4 * 16 * 34 // 32
    mixed = estimate_memory(info, 512, type_k="q8_0", type_v="q4_0")
    assert mixed.kv_cache_bytes == 2 * 512 * 4 * 16 * (34 + 18) // 32


def corrupt(tmp_path: Path, tiny: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("<html>404 not found</html>")
    with pytest.raises(NotGGUF, match=r"not a GGUF file \(starts with b'<htm'"):
        inspect_gguf(path)
    path.write_bytes(b"")
    with pytest.raises(NotGGUF, match="starts with b''"):
        inspect_gguf(path)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (10, "shorter than the GGUF header"),
        (200, "truncated or corrupt"),
        (-1000, "the tensor data ends early"),
    ],
    ids=["in-header", "in-metadata", "in-tensor-data"],
)
def test_truncated(tmp_path: Path, tiny: Path, cut: int, message: str) -> None:
    data = tiny.read_bytes()
    path = corrupt(tmp_path, tiny, "cut.gguf", data[:cut])
    with pytest.raises(TruncatedGGUF, match=message):
        inspect_gguf(path)


def test_absurd_counts_are_refused_before_reading(tmp_path: Path, tiny: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[8:16] = struct.pack("<Q", 2**40)
    with pytest.raises(ImplausibleGGUF, match="1099511627776 tensors"):
        inspect_gguf(corrupt(tmp_path, tiny, "absurd.gguf", bytes(data)))
    data = bytearray(tiny.read_bytes())
    data[16:24] = struct.pack("<Q", 90_000)
    with pytest.raises(TruncatedGGUF, match="90000 keys"):
        inspect_gguf(corrupt(tmp_path, tiny, "many-keys.gguf", bytes(data)))


def test_unsupported_version_and_paths(tmp_path: Path, tiny: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[4:8] = struct.pack("<I", 99)
    with pytest.raises(GGUFError, match="version 99 is not supported"):
        inspect_gguf(corrupt(tmp_path, tiny, "v99.gguf", bytes(data)))
    with pytest.raises(GGUFError, match="no such file"):
        inspect_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="is a directory"):
        inspect_gguf(tmp_path)


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        write_synthetic_gguf(tmp_path / "x.gguf", "huge")
