"""Broken GGUF files built from a good one: every way its layout can be made to lie.

The good file's layout comes from the ``gguf`` package's reader (where each
metadata key, tensor-info entry and tensor's bytes start); each broken copy
changes one thing there: cut at every section boundary and inside each section,
a wrong magic or version, absurd counts, a string length pointing past the end,
an unknown type, overlapping tensor offsets, a tensor past the end.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf


def _part_offsets(field: gguf.ReaderField) -> list[int]:
    """File offsets of a field's parts (they are laid out back to back)."""
    offsets, at = [], field.offset
    for part in field.parts:
        offsets.append(at)
        at += int(part.nbytes)
    return offsets


def broken_ggufs(good: Path, out: Path) -> dict[str, Path]:
    """Case name -> a broken copy of ``good`` written under ``out``."""
    data = good.read_bytes()
    reader = gguf.GGUFReader(good, "r")
    kv_fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    tensor_fields = [t.field for t in reader.tensors]
    out.mkdir(parents=True, exist_ok=True)
    cases: dict[str, bytes] = {}

    # Cut at every section boundary and in the middle of each section.
    boundaries = {
        "magic": 2,
        "header": 24,
        "first key": kv_fields[0].offset,
        "last key": kv_fields[-1].offset,
        "tensor table": tensor_fields[0].offset,
        "last tensor info": tensor_fields[-1].offset,
        "tensor data": reader.data_offset,
        "last tensor": reader.tensors[-1].data_offset,
    }
    for name, at in boundaries.items():
        cases[f"truncated at {name}"] = data[:at]
        cases[f"truncated inside {name}"] = data[: at + 3]
    cases["truncated by one byte"] = data[:-1]
    for n, field in enumerate(kv_fields[:: max(1, len(kv_fields) // 6)]):
        middle = field.offset + sum(int(p.nbytes) for p in field.parts) // 2
        cases[f"truncated inside key {n} ({field.name})"] = data[:middle]

    def patched(at: int, value: bytes) -> bytes:
        return data[:at] + value + data[at + len(value) :]

    cases["wrong magic"] = patched(0, b"GGML")
    cases["not a model at all"] = b"<html>nope</html>" * 10
    cases["empty file"] = b""
    for version in (0, 1, 4, 0xFFFFFFFF):
        cases[f"version {version}"] = patched(4, struct.pack("<I", version))
    cases["absurd tensor count"] = patched(8, struct.pack("<Q", 2**63))
    cases["absurd key count"] = patched(16, struct.pack("<Q", 2**62))
    cases["one key more than there is"] = patched(16, struct.pack("<Q", len(kv_fields) + 1))
    cases["one tensor more than there is"] = patched(8, struct.pack("<Q", len(tensor_fields) + 1))

    first_key = kv_fields[0]
    cases["key length past the end"] = patched(first_key.offset, struct.pack("<Q", 2**40))
    cases["key length one past the end"] = patched(
        first_key.offset, struct.pack("<Q", len(data) - first_key.offset)
    )
    string_field = next(f for f in kv_fields if f.types == [gguf.GGUFValueType.STRING])
    value_at = _part_offsets(string_field)[3]  # key len, key, type, value len, value
    cases[f"value length past the end ({string_field.name})"] = patched(
        value_at, struct.pack("<Q", 2**40)
    )
    type_at = _part_offsets(first_key)[2]
    cases["unknown value type"] = patched(type_at, struct.pack("<I", 99))
    array_field = next(f for f in kv_fields if f.types and f.types[0] == gguf.GGUFValueType.ARRAY)
    count_at = _part_offsets(array_field)[4]  # key len, key, type, item type, count
    cases[f"array count past the end ({array_field.name})"] = patched(
        count_at, struct.pack("<Q", 2**40)
    )

    first, second = tensor_fields[0], tensor_fields[1]
    first_parts, second_parts = _part_offsets(first), _part_offsets(second)
    cases["tensor name length past the end"] = patched(first.offset, struct.pack("<Q", 2**40))
    cases["absurd tensor dimensions count"] = patched(first_parts[2], struct.pack("<I", 0xFFFFFFFF))
    cases["absurd tensor dimension"] = patched(first_parts[3], struct.pack("<Q", 2**40))
    cases["unknown tensor type"] = patched(first_parts[4], struct.pack("<I", 9999))
    first_offset = bytes(first.parts[5].tobytes())
    cases["overlapping tensor offsets"] = patched(second_parts[5], first_offset)
    cases["tensor offset past the end"] = patched(second_parts[5], struct.pack("<Q", 2**40))
    same_length = [
        (a, b)
        for a in tensor_fields
        for b in tensor_fields
        if a is not b and a.parts[1].nbytes == b.parts[1].nbytes
    ]
    if same_length:
        a, b = same_length[0]
        cases["duplicate tensor name"] = patched(_part_offsets(b)[1], bytes(a.parts[1].tobytes()))

    paths = {}
    for n, (name, content) in enumerate(cases.items()):
        path = out / f"broken-{n:02d}.gguf"
        path.write_bytes(content)
        paths[name] = path
    return paths
