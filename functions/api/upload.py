"""``PUT /models/{name}``: a GGUF uploaded by a user becomes a mirrored model.

The body streams into scratch space (never into memory), hashed on the way;
then the same checks as a catalog mirror run (functions/ingest.py). The model's
lease, shared with the mirror step, keeps an upload and a download of one name
from racing for the same object key.

Hostile uploads are bounded (``UploadLimits``, from settings): a body announced
bigger than the limit or than the free scratch space is refused before a byte is
written; a streamed one is cut off when it gets there; one that stalls is
dropped after ``idle_seconds``. The scratch file goes in every case.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import ClientDisconnect

from modelserve.functions.ingest import (
    LEASE_TTL,
    IngestError,
    check_model_name,
    ingest,
    lease_name,
)
from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord
from modelserve.shared.store.base import CHUNK_SIZE, ObjectStore, StoreUnavailable

LEASE_REFRESH_SECONDS = 30.0
DISK_CHECK_BYTES = 64 * 1024 * 1024  # how often a streamed upload looks at free space


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    reserve_bytes: int  # free space an upload must leave behind
    idle_seconds: float


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


async def _chunks(request: Request, idle_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks; 408 when none comes for ``idle_seconds`` (a slow drip)."""
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), idle_seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise HTTPException(
                408, f"the upload sent nothing for {idle_seconds:g} s; nothing was kept"
            ) from None
        yield chunk


# The OpenAPI description of the raw body (FastAPI cannot infer it from Request).
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def _take_lease(sessions: async_sessionmaker[AsyncSession], name: str, holder: str) -> bool:
    async with sessions.begin() as session:
        return await repo.acquire_lease(session, lease_name(name), holder, LEASE_TTL)


async def _release_lease(
    sessions: async_sessionmaker[AsyncSession], name: str, holder: str
) -> None:
    async with sessions.begin() as session:
        await repo.release_lease(session, lease_name(name), holder)


async def _spool(
    request: Request,
    scratch: Path,
    refresh: Callable[[], Awaitable[object]],
    limits: UploadLimits,
) -> tuple[int, str]:  # (size, sha256)
    digest, size, buffer = hashlib.sha256(), 0, bytearray()
    last_refresh = time.monotonic()
    next_disk_check = DISK_CHECK_BYTES
    with scratch.open("wb") as handle:
        async for chunk in _chunks(request, limits.idle_seconds):
            digest.update(chunk)
            size += len(chunk)
            if size > limits.max_bytes:
                raise HTTPException(413, f"the upload is larger than {limits.max_bytes} bytes")
            if size >= next_disk_check:
                next_disk_check += DISK_CHECK_BYTES
                if await asyncio.to_thread(_free_bytes, scratch.parent) < limits.reserve_bytes:
                    raise HTTPException(507, "the scratch space is full; nothing was kept")
            buffer += chunk
            if len(buffer) >= CHUNK_SIZE:
                await asyncio.to_thread(handle.write, bytes(buffer))
                buffer.clear()
            if time.monotonic() - last_refresh > LEASE_REFRESH_SECONDS:
                await refresh()
                last_refresh = time.monotonic()
        await asyncio.to_thread(handle.write, bytes(buffer))
    return size, digest.hexdigest()


async def receive_model(
    name: str,
    request: Request,
    *,
    store: ObjectStore,
    sessions: async_sessionmaker[AsyncSession],
    work_dir: Path,
    uploader: str,
    expected_sha256: str | None,
    limits: UploadLimits,
) -> ModelRecord:
    try:
        check_model_name(name)
    except IngestError as exc:
        raise HTTPException(422, str(exc)) from None
    length = request.headers.get("content-length")
    expected_size = int(length) if length and length.isdigit() else None
    if expected_size is not None:
        if expected_size > limits.max_bytes:
            raise HTTPException(413, f"the upload is larger than {limits.max_bytes} bytes")
        await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
        free = await asyncio.to_thread(_free_bytes, work_dir)
        if expected_size > free - limits.reserve_bytes:
            raise HTTPException(
                507, f"{expected_size} bytes do not fit the scratch space ({free} bytes free)"
            )
    holder = f"upload:{uploader}/{uuid.uuid4()}"
    if not await _take_lease(sessions, name, holder):
        raise HTTPException(409, f"model {name!r} is being mirrored or uploaded right now")
    scratch = work_dir / "uploads" / f"{uuid.uuid4()}.part"
    try:
        # Checked under the lease: a mirror that finished just before cannot be overwritten.
        async with sessions() as session:
            if await repo.get_model_by_name(session, name) is not None:
                raise HTTPException(
                    409, f"model {name!r} already exists; upload it under another name"
                )
        await asyncio.to_thread(scratch.parent.mkdir, parents=True, exist_ok=True)
        try:
            size, sha256 = await _spool(
                request, scratch, lambda: _take_lease(sessions, name, holder), limits
            )
        except ClientDisconnect:
            raise HTTPException(400, "the upload was interrupted; nothing was kept") from None
        if expected_size is not None and size != expected_size:
            raise HTTPException(
                400, f"the upload was cut short: {size} of {expected_size} bytes arrived"
            )
        return await ingest(
            scratch,
            name,
            store=store,
            sessions=sessions,
            source=f"upload:{uploader}",
            size=size,
            sha256=sha256,
            expected_sha256=expected_sha256,
        )
    except IngestError as exc:
        raise HTTPException(422, str(exc)) from None
    except StoreUnavailable as exc:
        raise HTTPException(503, f"the object store is unavailable: {exc}") from None
    finally:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)
        await _release_lease(sessions, name, holder)
