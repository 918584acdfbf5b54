"""MinIO (or any S3-compatible server) as the object store.

The ``minio`` client is synchronous, so every call runs in a worker thread. A put
hands the client a file-like reader that pulls chunks from the caller's async
iterator on the event loop; the client uploads in parts of ``part_size`` bytes
(larger for huge or unknown-length objects), one at a time, so memory stays
bounded by a few parts' worth of buffers. Meanwhile the next part is read ahead
(``read_ahead``), so a download feeding the put keeps going. The
reader checks size and sha256 as bytes pass and raises at end of stream on
a mismatch: the client then aborts the multipart upload (or never sends the
single PUT), and nothing becomes visible.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from modelserve.shared.store.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    StoreUnavailable,
    StreamCheck,
    read_ahead,
    validate_key,
)

SHA256_META = "sha256"
MiB = 1024 * 1024
# The client holds about three parts at a peak (the one uploading, the next one
# read, and its copy), so the part size is most of a put's memory. 8 MiB parts
# take an object of known size up to 78 GiB; a larger one gets larger parts
# (S3 allows 10,000). A stream of unknown length could be anything: 16 MiB
# parts (up to 156 GiB) unless the store was given a part size.
DEFAULT_PART_SIZE = 8 * MiB
UNKNOWN_LENGTH_PART_SIZE = 16 * MiB
MAX_PARTS = 10_000
# One part in flight. The client's pool (num_parallel_uploads > 1) uploads faster
# (a one-off timing on the 2-core machine, not a bench row: a 256 MiB put from
# memory in 0.9-1.1 s with 3 in flight against 1.3-2.0 s with one), but on a
# failed put it leaves its worker threads waiting forever, each holding a part.
PARALLEL_UPLOADS = 1
READ_AHEAD_CHUNKS = DEFAULT_PART_SIZE // CHUNK_SIZE  # the next part fills meanwhile
T = TypeVar("T")
_MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound")


def make_minio_client(
    endpoint: str, access_key: str, secret_key: str, *, secure: bool, region: str | None = None
) -> Minio:
    """A client whose retries give up in seconds, so a dead MinIO is reported, not waited on."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
        maxsize=16,
    )
    return Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=http)


class _StreamReader:
    """A blocking ``read(n)`` over an async iterator that lives on ``loop``.

    With ``length`` (the expected size) the client reads exactly that many bytes
    and never asks again, so once they are all here the reader pulls the source
    to its end itself: the size and sha256 are checked, and anything the source
    does at its end (the mirror's header check) runs, before the last part goes.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        loop: asyncio.AbstractEventLoop,
        check: StreamCheck,
        length: int | None,
    ) -> None:
        self._chunks = chunks.__aiter__()
        self._loop = loop
        self._check = check
        self._length = length
        self._held: collections.deque[bytes] = collections.deque()  # joined once per read
        self._held_size = 0
        self._eof = False
        self.sha256: str | None = None

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def _wants_more(self, size: int) -> bool:
        if self._eof:
            return False
        if self._length is not None and self._check.size >= self._length:
            return True  # everything expected is here: pull to the end to check it
        return size < 0 or self._held_size < size

    def read(self, size: int = -1) -> bytes:
        while self._wants_more(size):
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if chunk is None:
                self._eof = True
                self.sha256 = self._check.finish()  # raises on mismatch: upload aborted
            elif chunk:
                self._check.update(chunk)  # raises past the expected size
                self._held.append(chunk)
                self._held_size += len(chunk)
        if size < 0 or size >= self._held_size:
            parts, self._held = list(self._held), collections.deque()
        else:
            parts, need = [], size
            while need:
                chunk = self._held.popleft()
                if len(chunk) > need:  # split the one chunk that crosses the end
                    self._held.appendleft(chunk[need:])
                    chunk = chunk[:need]
                parts.append(chunk)
                need -= len(chunk)
        out = b"".join(parts)
        self._held_size -= len(out)
        return out


class MinioStore(ObjectStore):
    """Objects in one bucket of a MinIO server."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int | None = None,
        read_ahead_chunks: int | None = None,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.endpoint = str(getattr(getattr(client, "_base_url", None), "host", "?"))
        self._part_size = part_size
        # The source keeps going while the client hashes and sends parts.
        self._read_ahead = READ_AHEAD_CHUNKS if read_ahead_chunks is None else read_ahead_chunks

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(f"{exc.code}: {exc.object_name or exc.bucket_name}") from exc
            raise StoreError(f"object store refused: {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(
                f"object store at {self.endpoint} is unreachable: {exc}"
            ) from exc

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    async def ensure_ready(self) -> None:
        if not await self._call(self._client.bucket_exists, self.bucket):
            try:
                await self._call(self._client.make_bucket, self.bucket)
            except StoreError as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc):
                    raise

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        validate_key(key)
        check = StreamCheck(expected_size, expected_sha256)
        ahead = read_ahead(chunks, self._read_ahead)
        # A known length spares the client a copy of every part (it reads one byte
        # past a part to find the end of an unknown-length stream, then slices it off).
        length = expected_size if expected_size else None
        if length is None:
            part_size = self._part_size or UNKNOWN_LENGTH_PART_SIZE
        else:
            needed = -(-length // (MAX_PARTS * MiB)) * MiB
            part_size = max(self._part_size or DEFAULT_PART_SIZE, needed)
        reader = _StreamReader(ahead, asyncio.get_running_loop(), check, length)
        metadata = {SHA256_META: check.expected_sha256} if check.expected_sha256 else None
        try:
            await self._call(
                self._client.put_object,
                self.bucket,
                key,
                reader,
                length=length or -1,
                part_size=part_size,
                num_parallel_uploads=PARALLEL_UPLOADS,
                content_type=content_type,
                metadata=metadata,
            )
        finally:
            await ahead.aclose()  # stops the reading task when the upload failed
        info = await self.stat(key)
        # Without an expected digest up front the object carries no sha256 metadata;
        # report the one computed while streaming.
        return info if info.sha256 else _with_sha(info, reader.sha256)

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        st = await self._call(self._client.stat_object, self.bucket, key)
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        assert st.last_modified is not None and st.size is not None
        return ObjectInfo(
            key=key,
            size=st.size,
            sha256=meta.get(f"x-amz-meta-{SHA256_META}"),
            last_modified=st.last_modified.astimezone(dt.UTC),
            content_type=st.content_type or "application/octet-stream",
        )

    async def get(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return
        response = await self._call(
            self._client.get_object, self.bucket, key, offset=offset, length=length or 0
        )
        try:
            while True:
                chunk = await asyncio.to_thread(response.read, CHUNK_SIZE)
                if not chunk:
                    break
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        objects = await self._call(
            lambda: list(self._client.list_objects(self.bucket, prefix=prefix, recursive=True))
        )
        return [
            await self.stat(o.object_name) for o in sorted(objects, key=lambda o: o.object_name)
        ]

    async def delete(self, key: str) -> bool:
        if not await self.exists(key):
            return False
        await self._call(self._client.remove_object, self.bucket, key)
        return True

    async def presign_get(self, key: str, expires: dt.timedelta) -> str:
        validate_key(key)
        if expires <= dt.timedelta(0):
            raise ValueError("a signed URL needs a positive lifetime")
        return await self._call(
            self._client.presigned_get_object, self.bucket, key, expires=expires
        )


def _with_sha(info: ObjectInfo, sha256: str | None) -> ObjectInfo:
    return ObjectInfo(info.key, info.size, sha256, info.last_modified, info.content_type)
