"""Put a verified GGUF into the store and record it.

The mirror step (a catalog download) and the API's upload (``models push``)
end the same way: the bytes are checked (size, sha256, GGUF header), streamed
into the store under their final key, and only then recorded. A file that fails
any check leaves nothing visible. An upload is whole in scratch space before it
is stored (``ingest``); a download is stored while it arrives (``ingest_stream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord
from modelserve.shared.gguf_inspect import GGUFError, GGUFInfo, facts_of, inspect_gguf
from modelserve.shared.store.base import ObjectInfo, ObjectIntegrityError, ObjectStore, iter_file

MODEL_NAMESPACE = uuid.UUID("0b8f8a0e-3c6e-4f55-a1c9-5d0f3b0e7a21")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_NAME_LENGTH = 128
LEASE_TTL = dt.timedelta(minutes=2)  # writers renew it while they work


class IngestError(Exception):
    """The file cannot become a model; the message says why. Nothing was kept."""


def model_uuid(name: str) -> uuid.UUID:
    """The same model name always gets the same UUID, whoever mirrors or uploads it."""
    return uuid.uuid5(MODEL_NAMESPACE, name)


def object_key(name: str) -> str:
    return f"{name}/{name}.gguf"


def lease_name(name: str) -> str:
    """One writer per model name: the mirror step and uploads take this lease."""
    return f"mirror:{name}"


def is_model_name(name: str) -> bool:
    """Safe in object keys and file names: letters, digits, '.', '_', '-'; no leading '.'."""
    return bool(name) and set(name) <= NAME_CHARS and not name.startswith(".")


def check_model_name(name: str) -> str:
    """A new model's name (an upload): also bounded, and no leading '-'."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise IngestError(f"a model name needs 1..{MAX_NAME_LENGTH} characters")
    if not is_model_name(name) or name.startswith("-"):
        raise IngestError(
            f"{name!r} is not a valid model name: use letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-'"
        )
    return name


async def _inspect(name: str, path: Path) -> GGUFInfo:
    try:
        return await asyncio.to_thread(inspect_gguf, path)
    except GGUFError as exc:
        raise IngestError(f"{name} is not a usable GGUF: {exc}") from None


async def _put(
    store: ObjectStore,
    name: str,
    chunks: AsyncIterator[bytes],
    expected_size: int | None,
    expected_sha256: str | None,
) -> ObjectInfo:
    try:
        return await store.put(
            object_key(name), chunks, expected_size=expected_size, expected_sha256=expected_sha256
        )
    except ObjectIntegrityError as exc:
        raise IngestError(f"{name}: {exc}") from None


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    stored: ObjectInfo,
    info: GGUFInfo,
    source: str,
) -> ModelRecord:
    assert stored.sha256 is not None, "both stores report the sha256 they computed"
    async with sessions.begin() as session:
        record, _ = await repo.get_or_create_model(
            session,
            model_uuid=model_uuid(name),
            model_name=name,
            object_path=stored.key,
            sha256=stored.sha256,
            size_bytes=stored.size,
            architecture=info.architecture,
            file_type=info.file_type,
            parameter_count=info.parameter_count,
            context_length=info.context_length,
            source=source,
            gguf=facts_of(info),
        )
    return record


async def ingest(
    scratch: Path,
    name: str,
    *,
    store: ObjectStore,
    sessions: async_sessionmaker[AsyncSession],
    source: str,
    size: int,
    sha256: str,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> ModelRecord:
    """Verify ``scratch`` (``size`` bytes hashing to ``sha256``), store it, record it.

    For a file that is already whole on disk (an upload): every check runs before
    a byte goes to the store. The scratch file is deleted when a check fails; on
    success the caller may delete it.
    """
    try:
        if expected_size is not None and size != expected_size:
            raise IngestError(
                f"size mismatch for {name}: expected {expected_size} bytes, {size} arrived"
            )
        if expected_sha256 is not None and sha256 != expected_sha256.lower():
            raise IngestError(
                f"sha256 mismatch for {name}: expected {expected_sha256}, the file is {sha256}"
            )
        info = await _inspect(name, scratch)
        # Checked again while streaming: the scratch file could change under us.
        stored = await _put(store, name, iter_file(scratch), size, sha256)
    except IngestError:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)  # never resumed
        raise
    return await _record(sessions, name, stored, info, source)


async def ingest_stream(
    chunks: AsyncGenerator[bytes, None],
    name: str,
    *,
    header: Callable[[], Path],
    store: ObjectStore,
    sessions: async_sessionmaker[AsyncSession],
    source: str,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> ModelRecord:
    """Store ``chunks`` as model ``name`` while they arrive (a catalog download), and
    record it.

    The GGUF header is inspected at the end of the stream, in the file ``header()``
    names (where the same bytes were written), before the store commits: the
    store's put makes nothing visible when the stream raises, and it checks the
    size and sha256 itself. ``chunks`` is closed on the way out, whatever happened.
    """
    inspected: list[GGUFInfo] = []

    async def checked() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk
        inspected.append(await _inspect(name, header()))

    async with contextlib.aclosing(chunks):
        stored = await _put(store, name, checked(), expected_size, expected_sha256)
    return await _record(sessions, name, stored, inspected[0], source)
