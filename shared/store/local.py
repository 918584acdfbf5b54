"""A directory as the object store: the embedded default.

Objects live at ``<root>/<key>``; their sha256 lives in ``<root>/.meta/<key>.json``.
A put streams into ``<root>/.incoming/`` and is renamed into place only after
verification (rename is atomic on one filesystem). Signed URLs carry an HMAC of
key and expiry that the API checks before serving the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from modelserve.shared.store.base import (
    CHUNK_SIZE,
    BadSignature,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
    StreamCheck,
    validate_key,
)

META_DIR = ".meta"
INCOMING_DIR = ".incoming"
SIGNED_PATH = "/objects"


class LocalStore(ObjectStore):
    """Objects as files under ``root``; URLs signed with ``signing_key``."""

    def __init__(self, root: Path, signing_key: bytes, base_url: str) -> None:
        if len(signing_key) < 16:
            raise ValueError("the local store's signing key needs at least 16 bytes")
        self.root = root
        self._key = signing_key
        self._base_url = base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta(self, key: str) -> Path:
        return self.root / META_DIR / f"{validate_key(key)}.json"

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    async def ensure_ready(self) -> None:
        try:
            (self.root / INCOMING_DIR).mkdir(parents=True, exist_ok=True)
            (self.root / META_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use {self.root} as object store: {exc}") from exc

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        final, meta = self._path(key), self._meta(key)
        check = StreamCheck(expected_size, expected_sha256)
        await self.ensure_ready()
        part = self.root / INCOMING_DIR / f"{uuid.uuid4().hex}.part"
        try:
            handle: BinaryIO = await asyncio.to_thread(part.open, "wb")
            try:
                async for chunk in chunks:
                    check.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
                await asyncio.to_thread(_flush_and_sync, handle)
            finally:
                handle.close()
            sha256 = check.finish()
            await asyncio.to_thread(
                _commit,
                part,
                final,
                meta,
                {"sha256": sha256, "size": check.size, "content_type": content_type},
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        return await self.stat(key)

    async def stat(self, key: str) -> ObjectInfo:
        path, meta = self._path(key), self._meta(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None
        try:
            info = json.loads(meta.read_text())
        except (FileNotFoundError, ValueError):
            info = {}
        return ObjectInfo(
            key=key,
            size=st.st_size,
            sha256=info.get("sha256"),
            last_modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
            content_type=info.get("content_type", "application/octet-stream"),
        )

    async def get(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None
        try:
            handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        def walk() -> list[str]:
            keys = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = Path(dirpath, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
            return sorted(keys)

        return [await self.stat(key) for key in await asyncio.to_thread(walk)]

    async def delete(self, key: str) -> bool:
        path, meta = self._path(key), self._meta(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            meta.unlink()
        return True

    # --- signed URLs -------------------------------------------------------------

    def _signature(self, key: str, expires: int) -> str:
        message = f"GET\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def presign_get(self, key: str, expires: dt.timedelta) -> str:
        validate_key(key)
        if expires <= dt.timedelta(0):
            raise ValueError("a signed URL needs a positive lifetime")
        deadline = int(time.time() + expires.total_seconds())
        query = urlencode({"expires": deadline, "signature": self._signature(key, deadline)})
        return f"{self._base_url}{SIGNED_PATH}/{quote(key)}?{query}"

    def verify_signature(
        self, key: str, expires: int, signature: str, now: float | None = None
    ) -> None:
        """Raise BadSignature unless ``signature`` signs ``key`` and has not expired."""
        validate_key(key)
        if not hmac.compare_digest(self._signature(key, expires), signature):
            raise BadSignature("the URL signature does not match")
        if (time.time() if now is None else now) > expires:
            raise BadSignature("the signed URL has expired")


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _commit(part: Path, final: Path, meta: Path, info: dict[str, object]) -> None:
    # Metadata first, then the object: whoever sees the object also sees its sha256.
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta_part = meta.with_name(meta.name + ".part")
    meta_part.write_text(json.dumps(info))
    os.replace(meta_part, meta)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
