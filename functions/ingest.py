"""Put a verified GGUF from scratch space into the store and record it.

The mirror step (a catalog download) and the API's upload (``models push``)
end the same way: the file in scratch is checked (size, sha256, GGUF header),
streamed into the store under its final key, and only then recorded. A file
that fails any check is deleted and nothing becomes visible.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord
from modelserve.shared.gguf_inspect import GGUFError, facts_of, inspect_gguf
from modelserve.shared.store.base import CHUNK_SIZE, ObjectIntegrityError, ObjectStore

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


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk


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

    The scratch file is deleted when a check fails; on success the caller may
    delete it (the mirror keeps it until its status update is written).
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
        try:
            info = await asyncio.to_thread(inspect_gguf, scratch)
        except GGUFError as exc:
            raise IngestError(f"{name} is not a usable GGUF: {exc}") from None
        key = object_key(name)
        try:
            await store.put(key, file_chunks(scratch), expected_size=size, expected_sha256=sha256)
        except ObjectIntegrityError as exc:  # the scratch file changed under us
            raise IngestError(str(exc)) from None
    except IngestError:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)  # never resumed
        raise
    async with sessions.begin() as session:
        record, _ = await repo.get_or_create_model(
            session,
            model_uuid=model_uuid(name),
            model_name=name,
            object_path=key,
            sha256=sha256,
            size_bytes=size,
            architecture=info.architecture,
            file_type=info.file_type,
            parameter_count=info.parameter_count,
            context_length=info.context_length,
            source=source,
            gguf=facts_of(info),
        )
    return record
