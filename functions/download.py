"""A catalog file as one stream of bytes: resumable, refreshing expired URLs.

The mirror hands this stream straight to the object store's verified ``put``,
so a model is fetched, hashed and uploaded in one pass, never written whole to
disk and read back. Network bytes are still appended to a scratch file before
they are handed on: a retried mirror (a redelivered event after a crash, a store
that went away mid-upload) replays what the scratch file holds and fetches only
the rest with an HTTP ``Range`` request. A 401/403 means the signed URL expired:
the catalog is asked for a fresh one and the download resumes. Only URLs on the
catalog's own origins are fetched. A ``file://`` URL (the local catalog) is read
in place, with no scratch copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import httpx

from modelserve.functions.catalog.base import Catalog, SignedModel
from modelserve.shared.store.base import iter_file

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
Progress = Callable[[int, int | None], Awaitable[None]]


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says why."""


class UntrustedSource(DownloadError):
    """The URL points outside the configured catalog's origins."""


def _total_from(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return offset + int(length) if length is not None else None


class _Appender:
    """Appends to the scratch file, opened with the first byte (a refused URL leaves no
    file behind)."""

    def __init__(self, path: Path, model: str) -> None:
        self._path, self._model = path, model
        self._file: BinaryIO | None = None

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._path.open("ab")
        self._file.write(data)
        self._file.flush()

    async def append(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:  # a full disk is ours, not the store's or the network's
            raise DownloadError(f"cannot keep {self._model} in scratch space: {exc}") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


class Download:
    """The bytes of ``model`` from the first to the last, as :meth:`chunks` yields them.

    ``path`` is where those bytes are on disk once the stream has ended (the
    scratch file, or the local catalog's own file), for checks that read a file.
    """

    def __init__(
        self,
        model: str,
        signed: SignedModel,
        scratch: Path,
        *,
        catalog: Catalog,
        http: httpx.AsyncClient,
        progress: Progress | None = None,
        attempts: int = 6,
        backoff: float = 0.25,
        progress_every: float = 0.5,
    ) -> None:
        self.model = model
        self.path = scratch
        self._scratch = scratch
        self._current = signed
        self._catalog = catalog
        self._http = http
        self._progress = progress
        self._attempts = attempts
        self._backoff = backoff
        self._progress_every = progress_every
        self._failures = 0
        self._last_report = 0.0
        self.done = 0
        self.total = signed.size_bytes

    async def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress is not None and (
            force or now - self._last_report >= self._progress_every
        ):
            self._last_report = now
            await self._progress(self.done, self.total)

    async def _retry(self, reason: str, refresh: bool) -> None:
        self._failures += 1
        if self._failures > self._attempts:
            raise DownloadError(
                f"giving up on {self.model} after {self._attempts} retries: {reason}"
            )
        log.warning(
            "download of %s: %s; retry %d from byte %d",
            self.model,
            reason,
            self._failures,
            self.done,
        )
        await asyncio.sleep(self._backoff * 2 ** (self._failures - 1))
        if refresh or self._current.expires_at < time.time() + 5:
            self._current = await self._catalog.sign(self.model)

    def _trusted_url(self) -> str:
        url = self._current.url
        if not self._catalog.allows(url):
            raise UntrustedSource(
                f"refusing to fetch {self.model} from {url.split('?')[0]}: "
                "not an origin of the configured catalog"
            )
        return url

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        url = self._trusted_url()
        # Each inner generator is closed as this one is, not when it is collected:
        # a network response must not stay open behind an upload that failed.
        if url.startswith("file://"):
            self.path = Path(url.removeprefix("file://"))
            async with contextlib.aclosing(iter_file(self.path)) as local:
                async for chunk in local:
                    self.done += len(chunk)
                    yield chunk
                    await self._report()
        else:
            await asyncio.to_thread(self._scratch.parent.mkdir, parents=True, exist_ok=True)
            if await asyncio.to_thread(self._scratch.exists):
                async with contextlib.aclosing(iter_file(self._scratch)) as earlier:
                    async for chunk in earlier:  # what an earlier attempt fetched
                        self.done += len(chunk)
                        yield chunk
            async with contextlib.aclosing(self._fetch_rest()) as rest:
                async for chunk in rest:
                    yield chunk
        await self._report(force=True)

    async def _fetch_rest(self) -> AsyncGenerator[bytes, None]:
        """The bytes after ``self.done`` from the network, each appended to the scratch
        file before it is handed on."""
        # Received pieces (32-64 KiB) are joined once per chunk: growing a bytearray
        # by them copied each chunk many times over (the mirror's hottest line).
        pending: list[bytes] = []
        held = 0

        scratch = _Appender(self._scratch, self.model)

        async def flush() -> bytes:
            nonlocal held
            data = b"".join(pending)
            pending.clear()
            held = 0
            await scratch.append(data)
            self.done += len(data)
            return data

        try:
            while True:
                url = self._trusted_url()
                headers = {"Range": f"bytes={self.done}-"} if self.done else {}
                try:
                    async with self._http.stream("GET", url, headers=headers) as response:
                        status = response.status_code
                        if status in (401, 403):
                            await self._retry(f"HTTP {status} (expired URL?)", refresh=True)
                            continue
                        if status == 416 and self.done:
                            return  # nothing left to fetch: the file is complete
                        if status >= 500 or status == 429:
                            await self._retry(f"HTTP {status}", refresh=False)
                            continue
                        if status not in (200, 206):
                            raise DownloadError(f"fetching {self.model} failed: HTTP {status}")
                        offset = self.done if status == 206 else 0
                        self.total = _total_from(response, offset) or self.total
                        body = response.aiter_bytes()
                        ignored_range = status == 200 and self.done > 0
                        if ignored_range and (carry := await self._skip_known(body)):
                            pending.append(carry)
                            held += len(carry)
                        async for received in body:
                            pending.append(received)
                            held += len(received)
                            if held >= CHUNK:
                                yield await flush()
                                await self._report()
                except httpx.TransportError as exc:
                    if pending:  # what arrived before the drop is kept and handed on
                        yield await flush()
                    await self._retry(f"{type(exc).__name__}: {exc}", refresh=False)
                    continue
                if pending:
                    yield await flush()
                if self.total is not None and self.done < self.total:
                    await self._retry(
                        f"connection ended at byte {self.done} of {self.total}", refresh=False
                    )
                    continue
                return
        finally:
            scratch.close()

    async def _skip_known(self, body: AsyncIterator[bytes]) -> bytes:
        """Read past the bytes already handed on, checking they are the ones on disk (a
        file that changed upstream meanwhile cannot be stitched together); returns the
        new bytes that came in the same network chunk as the last known ones."""
        position, carry = 0, b""
        while position < self.done:
            received = await anext(body, b"")
            if not received:
                raise DownloadError(f"{self.model} got shorter while it was being fetched")
            take = min(len(received), self.done - position)
            known = await asyncio.to_thread(_read_at, self._scratch, position, take)
            if received[:take] != known:
                await asyncio.to_thread(self._scratch.unlink, missing_ok=True)
                raise DownloadError(
                    f"{self.model} changed upstream while it was being fetched; "
                    "serve it again to start over"
                )
            position += take
            carry = received[take:]
        return carry
