"""Read what a GGUF header says, and estimate the memory it needs to serve.

Uses the ``gguf`` package's reader, which memory-maps the file: only the pages it
touches are read, never the whole file. Before the reader runs, the fixed header
is checked by hand, so a file that is not GGUF, is cut short, or claims absurd
counts gets a precise error instead of a numpy exception or a very long loop.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_SIZE = 24  # magic, version, tensor count, kv count
# The smallest possible encodings, used to bound counts by the file's size.
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name len, name, n_dims, one dim, type, offset
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key len, key, value type, smallest value
MAX_TENSORS = 1_000_000
MAX_KVS = 100_000
MAX_ARRAY_ITEMS = 1 << 19
"""Items one metadata array may hold: the largest real ones are vocabularies (Gemma 3's
262,144 tokens, their scores and types) and BPE merges (Llama 3's ~280,000)."""
MAX_METADATA_ITEMS = 1 << 20
"""Array items all metadata may hold together. gguf's reader walks every item in Python
(about 20 us each: Gemma 3's 786,432 take 17 s of CPU), so this bounds its time too."""
MAX_ARRAY_DEPTH = 4
"""Arrays of arrays nested this deep at most (real files have none)."""
# Sizes of the fixed-size GGUF value types (uint8 ... float64); 8 is a string, 9 an array.
_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
MiB = 1024 * 1024


class GGUFError(ValueError):
    """The file cannot be used as a GGUF model; the message says why."""


class NotGGUF(GGUFError):
    pass


class TruncatedGGUF(GGUFError):
    pass


class ImplausibleGGUF(GGUFError):
    pass


@dataclass(frozen=True)
class GGUFInfo:
    """What the header says about a model."""

    path: Path
    file_size: int
    version: int
    architecture: str
    name: str | None
    file_type: str | None
    file_type_id: int | None
    parameter_count: int
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    vocab_size: int | None
    tensor_count: int
    tensor_data_bytes: int
    has_chat_template: bool

    @property
    def head_dim(self) -> int | None:
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to serve: weights + KV cache + a compute/overhead allowance."""

    context_length: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes


def _check_header(path: Path) -> tuple[int, int, int, int]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEADER_SIZE)
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not a GGUF file") from None
    except OSError as exc:
        raise GGUFError(f"{path}: cannot be read: {exc.strerror}") from None
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        found = head[:4]
        raise NotGGUF(f"{path}: not a GGUF file (starts with {found!r}, expected {GGUF_MAGIC!r})")
    if len(head) < HEADER_SIZE:
        raise TruncatedGGUF(f"{path}: truncated: {size} bytes, shorter than the GGUF header")
    version, tensors, kvs = struct.unpack("<IQQ", head[4:])
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
    if tensors > MAX_TENSORS or kvs > MAX_KVS:
        raise ImplausibleGGUF(
            f"{path}: implausible header: {tensors} tensors and {kvs} metadata keys"
        )
    needed = HEADER_SIZE + tensors * MIN_TENSOR_INFO_BYTES + kvs * MIN_KV_BYTES
    if needed > size:
        raise TruncatedGGUF(
            f"{path}: truncated or corrupt: the header lists {tensors} tensors and {kvs} keys, "
            f"which need at least {needed} bytes, but the file has {size}"
        )
    return size, version, tensors, kvs


class _MetadataWalk:
    """The metadata section read by hand, before gguf's reader: array counts are checked
    against the bounds above without walking the items, so a forged count cannot keep
    the reader iterating (it walks every item in Python, even a byte array's)."""

    def __init__(self, path: Path, data: bytes | mmap.mmap, size: int) -> None:
        self.path, self.data, self.size = path, data, size
        self.items = 0

    def _u(self, at: int, width: int) -> int:
        if at + width > self.size:
            raise TruncatedGGUF(
                f"{self.path}: truncated or corrupt GGUF metadata (it runs past byte {self.size})"
            )
        return int.from_bytes(self.data[at : at + width], "little")

    def walk(self, keys: int) -> None:
        at = HEADER_SIZE
        for _ in range(keys):
            at += 8 + self._u(at, 8)  # the key
            kind = self._u(at, 4)
            at = self._value(kind, at + 4)

    def _value(self, kind: int, at: int, depth: int = 0) -> int:
        if kind in _VALUE_SIZES:
            return at + _VALUE_SIZES[kind]
        if kind == _STRING:
            return at + 8 + self._u(at, 8)
        if kind != _ARRAY:
            raise ImplausibleGGUF(f"{self.path}: unknown metadata value type {kind}")
        if depth >= MAX_ARRAY_DEPTH:
            raise ImplausibleGGUF(f"{self.path}: metadata arrays nested over {depth} deep")
        item, count = self._u(at, 4), self._u(at + 4, 8)
        at += 12
        self.items += count
        if count > MAX_ARRAY_ITEMS or self.items > MAX_METADATA_ITEMS:
            raise ImplausibleGGUF(
                f"{self.path}: implausible metadata: an array of {count} items (the limits are "
                f"{MAX_ARRAY_ITEMS} items an array, {MAX_METADATA_ITEMS} in all)"
            )
        if item in _VALUE_SIZES:
            end = at + count * _VALUE_SIZES[item]
            if end > self.size:
                raise TruncatedGGUF(
                    f"{self.path}: truncated or corrupt GGUF metadata (an array runs past the end)"
                )
            return end
        for _ in range(count):
            at = self._value(item, at, depth + 1)
        return at


def _check_metadata(path: Path, size: int, keys: int) -> None:
    with path.open("rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            _MetadataWalk(path, data, size).walk(keys)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()


def _scalar(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    value = field.contents()
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _int(reader: gguf.GGUFReader, key: str) -> int | None:
    value = _scalar(reader, key)
    if isinstance(value, list):  # per-layer arrays (e.g. head counts): take the first
        value = value[0] if value else None
    return int(value) if value is not None else None


def _file_type_name(file_type_id: int | None) -> str | None:
    if file_type_id is None:
        return None
    try:
        name = gguf.LlamaFileType(file_type_id).name
    except ValueError:
        return f"unknown({file_type_id})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def inspect_gguf(path: Path | str) -> GGUFInfo:
    """Read a GGUF's header and tensor table; raise :class:`GGUFError` if unusable."""
    path = Path(path)
    size, version, tensor_count, keys = _check_header(path)
    _check_metadata(path, size, keys)
    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        if "cannot reshape" in str(exc):  # a tensor's bytes run past the end of the file
            raise TruncatedGGUF(
                f"{path}: truncated: the tensor data ends early ({size} bytes on disk)"
            ) from None
        raise TruncatedGGUF(f"{path}: corrupt or truncated GGUF metadata ({exc})") from None
    data_end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    spans = sorted((int(t.data_offset), int(t.n_bytes), t.name) for t in reader.tensors)
    for (start, length, first), (after, _, second) in itertools.pairwise(spans):
        if after < start + length:  # two tensors claim the same bytes: a forged table
            raise ImplausibleGGUF(f"{path}: tensors {first} and {second} overlap at byte {after}")
    if data_end > size:
        raise TruncatedGGUF(
            f"{path}: truncated: tensor data runs to byte {data_end}, the file has {size}"
        )
    architecture = _scalar(reader, "general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise GGUFError(f"{path}: the header has no general.architecture")
    arch = architecture
    file_type_id = _int(reader, "general.file_type")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    name = _scalar(reader, "general.name")
    return GGUFInfo(
        path=path,
        file_size=size,
        version=version,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        file_type=_file_type_name(file_type_id),
        file_type_id=file_type_id,
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        context_length=_int(reader, f"{arch}.context_length"),
        block_count=_int(reader, f"{arch}.block_count"),
        embedding_length=_int(reader, f"{arch}.embedding_length"),
        head_count=_int(reader, f"{arch}.attention.head_count"),
        head_count_kv=_int(reader, f"{arch}.attention.head_count_kv")
        or _int(reader, f"{arch}.attention.head_count"),
        key_length=_int(reader, f"{arch}.attention.key_length"),
        vocab_size=len(tokens.data) if tokens is not None else None,
        tensor_count=tensor_count,
        tensor_data_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        has_chat_template=reader.get_field("tokenizer.chat_template") is not None,
    )


def facts_of(info: GGUFInfo) -> dict[str, Any]:
    """The header facts as JSON-ready data (stored on model records)."""
    facts = dataclasses.asdict(info)
    facts.pop("path")
    return facts


def info_from_facts(path: Path | str, facts: dict[str, Any]) -> GGUFInfo:
    """Rebuild the header facts stored by :func:`facts_of`, without the file."""
    return GGUFInfo(path=Path(path), **facts)


KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4,
    "f16": 2,
    # ggml's blocks of 32 values: a scale (and minimum) beside the packed values
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
"""Bytes per element of each KV cache type the runtime offers (``type_k``/``type_v``)."""


def estimate_memory(
    info: GGUFInfo,
    context_length: int | None = None,
    *,
    type_k: str = "f16",
    type_v: str = "f16",
    overhead_fraction: float = 0.05,
    overhead_floor: int = 32 * MiB,
) -> MemoryEstimate:
    """Weights + KV cache for ``context_length`` tokens + compute buffers.

    The KV cache holds one key and one value vector per layer, token and KV head:
    ``blocks * context * kv_heads * head_dim * (bytes of a key + bytes of a value)``,
    each in its cache type (f16 unless ``type_k``/``type_v`` say otherwise). The
    overhead allowance covers llama.cpp's compute buffers and runtime; it is an
    estimate, not a bound.
    """
    n_ctx = context_length or info.context_length
    if not n_ctx or n_ctx <= 0:
        raise GGUFError(f"{info.path}: no context length given and none in the header")
    head_dim = info.head_dim or 0
    elements = (info.block_count or 0) * n_ctx * (info.head_count_kv or 0) * head_dim
    kv_bytes = elements * (KV_BYTES_PER_ELEMENT[type_k] + KV_BYTES_PER_ELEMENT[type_v])
    overhead = max(overhead_floor, int(info.tensor_data_bytes * overhead_fraction))
    return MemoryEstimate(
        context_length=n_ctx,
        weights_bytes=info.tensor_data_bytes,
        kv_cache_bytes=math.ceil(kv_bytes),
        overhead_bytes=overhead,
    )
