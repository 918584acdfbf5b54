"""The object-store interface both backends (MinIO, a local directory) implement.

Writes stream from an async iterator and are atomic: the object appears under
its final key only once every byte arrived and matched the expected size and
sha256, and a failed write leaves nothing behind. Reads stream in chunks and may
start at an offset, so a multi-gigabyte GGUF never sits in memory.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 1024


class StoreError(Exception):
    """Base class of object-store failures."""


class ObjectNotFound(StoreError):
    """No object under that key."""


class InvalidKey(StoreError, ValueError):
    """The key could escape the store or collides with its internal names."""


class ObjectIntegrityError(StoreError):
    """The bytes received do not match the expected size or sha256; nothing was stored."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (a dead MinIO, a missing directory)."""


class BadSignature(StoreError):
    """A signed URL's signature is wrong or it has expired."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None
    last_modified: dt.datetime
    content_type: str = "application/octet-stream"


def validate_key(key: str) -> str:
    """Keys are relative, '/'-separated, and no segment is empty, '.', '..' or hidden."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object keys need 1..{MAX_KEY_LENGTH} characters")
    if "\\" in key or "\x00" in key or key.startswith("/"):
        raise InvalidKey(f"invalid object key {key!r}: no backslash, NUL or leading '/'")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKey(
                f"invalid object key {key!r}: empty, '.'-prefixed and '..' segments are refused"
            )
    return key


def validate_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a sha256 hex digest: {value!r}")
    return value


class StreamCheck:
    """Counts and hashes bytes as they pass; refuses them as soon as they can't match."""

    def __init__(self, expected_size: int | None, expected_sha256: str | None) -> None:
        self.expected_size = expected_size
        self.expected_sha256 = validate_sha256(expected_sha256)
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise ObjectIntegrityError(
                f"received more than the expected {self.expected_size} bytes"
            )
        self._hash.update(chunk)

    def finish(self) -> str:
        """Check the totals at end of stream; returns the sha256 hex digest."""
        digest = self._hash.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise ObjectIntegrityError(
                f"size mismatch: expected {self.expected_size} bytes, received {self.size}"
            )
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise ObjectIntegrityError(
                f"sha256 mismatch: expected {self.expected_sha256}, received {digest}"
            )
        return digest


class ObjectStore(abc.ABC):
    """Async object store; every method may raise :class:`StoreError` subclasses."""

    @abc.abstractmethod
    async def ensure_ready(self) -> None:
        """Create the bucket/directory if needed; raise StoreUnavailable if unreachable."""

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Stream ``chunks`` to ``key``; visible only when complete and verified."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Metadata of ``key``; raises ObjectNotFound."""

    @abc.abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (default: to the end) of ``key`` from ``offset``."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there (deleting twice is fine)."""

    @abc.abstractmethod
    async def presign_get(self, key: str, expires: dt.timedelta) -> str:
        """A URL that fetches ``key`` without credentials until ``expires`` has passed."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where a runtime finds ``key``: ``s3://bucket/key`` or ``file:///path``."""

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def read_all(self, key: str) -> bytes:
        """Whole object in memory: for small objects and tests only."""
        return b"".join([chunk async for chunk in self.get(key)])


async def iter_bytes(data: bytes, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Adapt in-memory bytes to the streaming put interface."""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def iter_file(path: Path, chunk_size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
    """Adapt a file on disk to the streaming put interface (read in a worker thread)."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


async def read_ahead(chunks: AsyncIterator[bytes], depth: int) -> AsyncGenerator[bytes, None]:
    """``chunks``, pulled by a task of its own up to ``depth`` chunks ahead of the consumer.

    A store that uploads part by part stops reading while a part is in flight;
    reading ahead lets the source (a download) fill the next part meanwhile, at
    the cost of ``depth`` chunks of memory. Errors of the source reach the
    consumer as they are; closing this iterator stops the task.
    """
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max(1, depth))

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
        except Exception as exc:
            await queue.put(_Failed(exc))
        else:
            await queue.put(_END)
        finally:  # also when cancelled: the source's own clean-up runs now, not at GC
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield cast(bytes, item)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
