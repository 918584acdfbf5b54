"""One suite, two backends: the local directory and the real MinIO server."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from modelserve.shared.net import free_port
from modelserve.shared.store.base import (
    BadSignature,
    InvalidKey,
    ObjectIntegrityError,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
    iter_bytes,
)
from modelserve.shared.store.local import INCOMING_DIR, LocalStore
from modelserve.shared.store.minio_store import MinioStore, make_minio_client
from support.minio_server import MinioServer

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest multipart part: small parts exercise multipart uploads


@pytest.fixture(params=["local", "minio"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    backend: ObjectStore
    if request.param == "minio":
        server: MinioServer = request.getfixturevalue("minio_server")
        client = make_minio_client(
            server.endpoint, server.access_key, server.secret_key, secure=False
        )
        backend = MinioStore(client, f"t-{uuid.uuid4().hex[:16]}", part_size=PART)
    else:
        backend = LocalStore(tmp_path / "objects", b"k" * 32, "http://127.0.0.1:8080")
    await backend.ensure_ready()
    return backend


def leftovers(store: ObjectStore) -> list[str]:
    """Half-written state a failed put might leave: incoming files or open multipart uploads."""
    if isinstance(store, LocalStore):
        return sorted(p.name for p in (store.root / INCOMING_DIR).iterdir())
    assert isinstance(store, MinioStore)
    result = store._client._list_multipart_uploads(store.bucket)
    return [u.object_name for u in result.uploads]


async def generated(total: int, chunk: int = MiB, seed: int = 7) -> AsyncIterator[bytes]:
    """Deterministic pseudo-random bytes produced on the fly, never all in memory."""
    block = hashlib.sha256(str(seed).encode()).digest() * (chunk // 32)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


async def digest_of(total: int) -> str:
    h = hashlib.sha256()
    async for piece in generated(total):
        h.update(piece)
    return h.hexdigest()


async def test_put_stat_get_round_trip(store: ObjectStore) -> None:
    data = os.urandom(3 * MiB + 123)
    info = await store.put("models/a.gguf", iter_bytes(data, 64 * 1024), content_type="x/gguf")
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    stat = await store.stat("models/a.gguf")
    assert stat.size == len(data)
    assert stat.content_type == "x/gguf"
    assert abs((stat.last_modified - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    assert await store.read_all("models/a.gguf") == data


async def test_expected_digest_is_recorded_and_checked(store: ObjectStore) -> None:
    data = os.urandom(200_000)
    digest = hashlib.sha256(data).hexdigest()
    await store.put("ok.bin", iter_bytes(data), expected_sha256=digest, expected_size=len(data))
    assert (await store.stat("ok.bin")).sha256 == digest


@pytest.mark.parametrize("size", [100_000, 12 * MiB], ids=["single-put", "multipart"])
async def test_sha256_mismatch_leaves_nothing(store: ObjectStore, size: int) -> None:
    with pytest.raises(ObjectIntegrityError, match="sha256 mismatch"):
        await store.put("bad.bin", generated(size), expected_sha256="0" * 64)
    assert not await store.exists("bad.bin")
    assert leftovers(store) == []


async def test_size_mismatch_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(ObjectIntegrityError, match="more than the expected 1000 bytes"):
        await store.put("big.bin", iter_bytes(b"x" * 5000, 500), expected_size=1000)
    with pytest.raises(ObjectIntegrityError, match="expected 9000 bytes, received 5000"):
        await store.put("small.bin", iter_bytes(b"x" * 5000), expected_size=9000)
    assert not await store.exists("big.bin")
    assert not await store.exists("small.bin")
    assert leftovers(store) == []


async def test_source_failure_mid_stream_leaves_nothing(store: ObjectStore) -> None:
    class SourceDied(Exception):
        pass

    async def dying() -> AsyncIterator[bytes]:
        async for piece in generated(11 * MiB):
            yield piece
        raise SourceDied("upstream connection reset")

    with pytest.raises(SourceDied):
        await store.put("partial.bin", dying())
    assert not await store.exists("partial.bin")
    assert leftovers(store) == []


async def test_readers_never_see_a_partial_object(store: ObjectStore) -> None:
    old = b"old" * 1000
    await store.put("swap.bin", iter_bytes(old))
    halfway, release = asyncio.Event(), asyncio.Event()

    async def slow_new() -> AsyncIterator[bytes]:
        yield b"n" * MiB
        halfway.set()
        await release.wait()
        yield b"n" * MiB

    upload = asyncio.create_task(store.put("swap.bin", slow_new()))
    await halfway.wait()
    await store.put("fresh.bin", iter_bytes(b"unrelated"))  # the store keeps serving others
    assert await store.read_all("swap.bin") == old
    release.set()
    await upload
    assert await store.read_all("swap.bin") == b"n" * (2 * MiB)


async def test_ranged_reads(store: ObjectStore) -> None:
    data = os.urandom(2 * MiB + 10)
    await store.put("r.bin", iter_bytes(data))
    for offset, length in [(0, 10), (MiB - 3, 7), (2 * MiB, 10), (5, None), (0, 2 * MiB + 10)]:
        got = b"".join([c async for c in store.get("r.bin", offset, length)])
        end = None if length is None else offset + length
        assert got == data[offset:end], (offset, length)


async def test_list_delete_and_missing(store: ObjectStore) -> None:
    for key in ["b/2.gguf", "a/1.gguf", "b/1.gguf", "c.txt"]:
        await store.put(key, iter_bytes(key.encode()))
    assert [o.key for o in await store.list()] == ["a/1.gguf", "b/1.gguf", "b/2.gguf", "c.txt"]
    assert [o.key for o in await store.list("b/")] == ["b/1.gguf", "b/2.gguf"]
    assert await store.delete("b/1.gguf") is True
    assert await store.delete("b/1.gguf") is False
    with pytest.raises(ObjectNotFound):
        await store.stat("b/1.gguf")
    with pytest.raises(ObjectNotFound):
        await store.read_all("nope.bin")


@pytest.mark.parametrize(
    "key", ["../escape", "/abs", "a//b", ".meta/x", "a/.incoming/b", "a/../b", "", "x\\y"]
)
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, iter_bytes(b"x"))


@pytest.mark.parametrize("announced", [False, True], ids=["unknown-length", "known-length"])
async def test_streaming_put_memory_does_not_grow_with_object_size(
    store: ObjectStore, announced: bool
) -> None:
    # The peak is bounded by the part size, not by the object: tripling the
    # object must not raise it, whether or not its size is known up front.
    peaks = {}
    for total in (24 * MiB, 72 * MiB):
        tracemalloc.start()
        try:
            info = await store.put(
                f"large-{total}.bin", generated(total), expected_size=total if announced else None
            )
            peaks[total] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.size == total
        assert info.sha256 == await digest_of(total)
    small, large = peaks[24 * MiB], peaks[72 * MiB]
    assert large < small * 1.25 + MiB, f"peak grew from {small / MiB:.1f} to {large / MiB:.1f} MiB"
    assert large < 6 * PART, f"peak {large / MiB:.1f} MiB for a {PART // MiB} MiB part size"


async def test_presigned_url_expires(store: ObjectStore) -> None:
    data = b"signed content"
    await store.put("s/obj.bin", iter_bytes(data))
    with pytest.raises(ValueError, match="positive lifetime"):
        await store.presign_get("s/obj.bin", dt.timedelta(0))
    url = await store.presign_get("s/obj.bin", dt.timedelta(minutes=5))
    if isinstance(store, MinioStore):
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(url)).content == data
            short = await store.presign_get("s/obj.bin", dt.timedelta(seconds=1))
            await asyncio.sleep(2.1)
            assert (await http.get(short)).status_code == 403
    else:
        assert isinstance(store, LocalStore)
        parts = urlsplit(url)
        assert parts.path == "/objects/s/obj.bin"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        expires, signature = int(query["expires"]), query["signature"]
        store.verify_signature("s/obj.bin", expires, signature)
        with pytest.raises(BadSignature, match="does not match"):
            store.verify_signature("s/other.bin", expires, signature)
        with pytest.raises(BadSignature, match="does not match"):
            store.verify_signature("s/obj.bin", expires + 3600, signature)
        with pytest.raises(BadSignature, match="expired"):
            store.verify_signature("s/obj.bin", expires, signature, now=time.time() + 600)


async def test_dead_minio_is_reported_quickly() -> None:
    client = make_minio_client(f"127.0.0.1:{free_port()}", "k", "s" * 20, secure=False)
    dead = MinioStore(client, "models")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        await dead.stat("x.gguf")
    with pytest.raises(StoreUnavailable):
        await dead.put("x.gguf", iter_bytes(b"data"))
    assert time.monotonic() - started < 30
