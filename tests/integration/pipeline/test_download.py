"""The mirror's download as one stream, against a real HTTP server on loopback.

The server can cut a response short, ignore ``Range`` (as plain file servers do)
and change the file between requests, which S3 servers never do, so these cases
are tried here rather than through MinIO (test_mirror_faults.py has those).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from modelserve.functions.catalog.base import Catalog, CatalogEntry, SignedModel
from modelserve.functions.download import Download, DownloadError
from support.loopback_http import LoopbackServer, QuietHandler


@dataclass
class FileServer(LoopbackServer):
    """Serves ``data`` at ``/model.gguf``; the first response is cut after ``cut_after`` bytes."""

    data: bytes
    honour_range: bool = True
    cut_after: int | None = None
    requests: list[str | None] = field(default_factory=list)  # each request's Range header

    def start(self) -> FileServer:
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                owner.requests.append(wanted)
                start = 0
                if wanted and owner.honour_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                body = owner.data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(owner.data) - 1}/{len(owner.data)}"
                    )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut, owner.cut_after = owner.cut_after, None
                self.wfile.write(body[:cut] if cut is not None else body)
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.serve(Handler)
        return self


class OneFileCatalog(Catalog):
    def __init__(self, url: str, origin: str) -> None:
        self.url, self.origin = url, origin

    async def sign(self, model: str) -> SignedModel:
        return SignedModel("test", self.url, time.time() + 3600)

    async def entries(self) -> list[CatalogEntry]:
        return [CatalogEntry("model")]

    def allowed_origins(self) -> set[str]:
        return {self.origin}


@pytest.fixture
def data() -> bytes:
    return bytes(range(256)) * 12_000  # about 3 MB: several of the download's 1 MiB chunks


@pytest.fixture
def server(data: bytes) -> Iterator[FileServer]:
    server = FileServer(data).start()
    yield server
    server.stop()


async def _stream(download: Download) -> bytes:
    received = bytearray()
    async for chunk in download.chunks():
        received += chunk
    return bytes(received)


def _download(server: FileServer, scratch: Path, http: httpx.AsyncClient) -> Download:
    url = f"{server.url}/model.gguf"
    catalog = OneFileCatalog(url, server.url)
    signed = SignedModel("test", url, time.time() + 3600, size_bytes=len(server.data))
    return Download("model", signed, scratch, catalog=catalog, http=http, backoff=0.01)


async def test_a_cut_download_resumes_where_it_stopped(
    server: FileServer, data: bytes, tmp_path: Path
) -> None:
    server.cut_after = 1_500_000
    scratch = tmp_path / "model.part"
    async with httpx.AsyncClient() as http:
        download = _download(server, scratch, http)
        assert await _stream(download) == data
    assert server.requests[0] is None
    assert server.requests[1] == "bytes=1500000-", "the bytes before the cut are not fetched again"
    assert scratch.read_bytes() == data
    assert download.path == scratch and download.done == len(data)


async def test_a_later_attempt_replays_the_scratch_file_and_fetches_the_rest(
    server: FileServer, data: bytes, tmp_path: Path
) -> None:
    scratch = tmp_path / "model.part"
    scratch.write_bytes(data[:1_000_000])  # what a crashed attempt left
    async with httpx.AsyncClient() as http:
        assert await _stream(_download(server, scratch, http)) == data
    assert server.requests == ["bytes=1000000-"]
    assert scratch.read_bytes() == data


async def test_a_server_that_ignores_range_is_read_past_the_known_bytes(
    server: FileServer, data: bytes, tmp_path: Path
) -> None:
    server.honour_range = False
    server.cut_after = 1_234_567
    scratch = tmp_path / "model.part"
    async with httpx.AsyncClient() as http:
        assert await _stream(_download(server, scratch, http)) == data
    assert len(server.requests) == 2
    assert scratch.read_bytes() == data


async def test_a_file_that_changed_upstream_is_not_stitched_together(
    server: FileServer, data: bytes, tmp_path: Path
) -> None:
    server.honour_range = False
    scratch = tmp_path / "model.part"
    scratch.write_bytes(b"\x00" * 1000 + data[1000:500_000])  # an earlier version's first bytes
    async with httpx.AsyncClient() as http:
        with pytest.raises(DownloadError, match="changed upstream"):
            await _stream(_download(server, scratch, http))
    assert not scratch.exists(), "the mismatching bytes are dropped: the next serve starts over"


async def test_a_local_catalog_file_is_read_in_place(data: bytes, tmp_path: Path) -> None:
    source = tmp_path / "catalog" / "model.gguf"
    source.parent.mkdir()
    source.write_bytes(data)
    scratch = tmp_path / "scratch" / "model.part"
    catalog = OneFileCatalog(f"file://{source}", "file://")
    signed = SignedModel("test", f"file://{source}", time.time() + 3600)
    async with httpx.AsyncClient() as http:
        download = Download("model", signed, scratch, catalog=catalog, http=http)
        assert await _stream(download) == data
    assert download.path == source
    assert not scratch.parent.exists(), "no scratch copy of a file that is already local"
