"""Fetch a catalog URL into a local file: resumable, refreshing expired URLs.

The file grows in place, so a dropped connection (or a crashed function that is
retried) resumes with an HTTP ``Range`` request from the bytes already there.
A 401/403 means the signed URL expired: the catalog is asked for a fresh one
and the download resumes. Only URLs on the catalog's own origins are fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from modelserve.functions.catalog.base import Catalog, SignedModel
from modelserve.shared.hashing import hash_file

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
Progress = Callable[[int, int | None], Awaitable[None]]


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says why."""


class UntrustedSource(DownloadError):
    """The URL points outside the configured catalog's origins."""


def _copy_file(source: Path, dest: Path, offset: int, digest: hashlib._Hash) -> tuple[int, int]:
    """Append ``source`` from ``offset`` to ``dest``; returns (new offset, source size)."""
    with source.open("rb") as reader, dest.open("ab") as writer:
        reader.seek(offset)
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
            offset += len(chunk)
    return offset, source.stat().st_size


def _total_from(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return offset + int(length) if length is not None else None


async def fetch(
    model: str,
    signed: SignedModel,
    dest: Path,
    *,
    catalog: Catalog,
    http: httpx.AsyncClient,
    progress: Progress | None = None,
    attempts: int = 6,
    backoff: float = 0.25,
    progress_every: float = 0.5,
) -> tuple[int, str]:
    """Download ``model`` into ``dest``; returns (size, sha256) of the whole file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset, digest = await asyncio.to_thread(hash_file, dest)
    current, failures, last_report = signed, 0, 0.0
    total = signed.size_bytes

    async def report(force: bool = False) -> None:
        nonlocal last_report
        if progress is not None and (force or time.monotonic() - last_report >= progress_every):
            last_report = time.monotonic()
            await progress(offset, total)

    async def retry(reason: str, refresh: bool) -> None:
        nonlocal failures, current
        failures += 1
        if failures > attempts:
            raise DownloadError(f"giving up on {model} after {attempts} retries: {reason}")
        log.warning("download of %s: %s; retry %d from byte %d", model, reason, failures, offset)
        await asyncio.sleep(backoff * 2 ** (failures - 1))
        if refresh or current.expires_at < time.time() + 5:
            current = await catalog.sign(model)

    while True:
        if not catalog.allows(current.url):
            raise UntrustedSource(
                f"refusing to fetch {model} from {current.url.split('?')[0]}: "
                "not an origin of the configured catalog"
            )
        if current.url.startswith("file://"):
            source = Path(current.url.removeprefix("file://"))
            offset, total = await asyncio.to_thread(_copy_file, source, dest, offset, digest)
            break
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with http.stream("GET", current.url, headers=headers) as response:
                if response.status_code in (401, 403):
                    await retry(f"HTTP {response.status_code} (expired URL?)", refresh=True)
                    continue
                if response.status_code == 416 and offset:
                    break  # nothing left to fetch: the file is complete
                if response.status_code >= 500 or response.status_code == 429:
                    await retry(f"HTTP {response.status_code}", refresh=False)
                    continue
                if response.status_code not in (200, 206):
                    raise DownloadError(f"fetching {model} failed: HTTP {response.status_code}")
                if response.status_code == 200 and offset:
                    # The server ignored Range: start over.
                    offset, digest = 0, hashlib.sha256()
                    await asyncio.to_thread(dest.write_bytes, b"")
                total = _total_from(response, offset) or total
                writer = await asyncio.to_thread(dest.open, "ab")
                try:
                    # No chunk size: bytes are written as they arrive, so a dropped
                    # connection loses nothing that was already received.
                    async for chunk in response.aiter_bytes():
                        await asyncio.to_thread(writer.write, chunk)
                        digest.update(chunk)
                        offset += len(chunk)
                        await report()
                finally:
                    writer.close()
            if total is not None and offset < total:
                await retry(f"connection ended at byte {offset} of {total}", refresh=False)
                continue
            break
        except httpx.TransportError as exc:
            await retry(f"{type(exc).__name__}: {exc}", refresh=False)
    await report(force=True)
    return offset, digest.hexdigest()
