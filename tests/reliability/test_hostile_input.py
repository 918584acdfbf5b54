"""Hostile input: names, runtime parameters, bodies, uploads, CloudEvents, broken GGUFs.

Each is refused with a precise 4xx (never a 5xx, a crash or a hang), and
afterwards nothing is left: no event published, no record, no object in the
store, no scratch file. The property-based fuzz is in test_fuzz.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from modelserve.functions.main import MAX_EVENT_BYTES
from modelserve.functions.steps import registry
from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import ModelRecord, ProcessedEvent, Role, ServerRecord
from modelserve.shared.gguf_inspect import GGUFError, inspect_gguf
from modelserve.shared.settings import load_settings
from support.gguf_corpus import broken_ggufs
from support.pipeline import Functions, running_functions
from support.records import new_server
from support.reliability import Recorder
from support.spy_upstream import spy_upstream

pytestmark = pytest.mark.reliability("hostile input")

HOSTILE_NAMES = {
    "path traversal": "../../../etc/passwd",
    "absolute path": "/etc/passwd",
    "NUL byte": "de\u0000mo",
    "right-to-left override + BOM": "\u202e\ufeffdemo",
    "zero-width joiner": "de\u200dmo",
    "fullwidth letters": "\uff44\uff45\uff4d\uff4f",
    "combining marks": "de\u0301mo",
    "newline": "demo\nX-Injected: 1",
    "10 kB": "a" * 10_000,
    "dot dot": "..",
    "leading dash": "-rf",
    "backslash traversal": "..\\..\\windows",
    "URL-encoded traversal": "%2e%2e%2fetc",
    "emoji": "demo\U0001f600",
}

ABSURD_PARAMS: dict[str, dict[str, Any]] = {
    "n_ctx 10^12": {"runtime_params": {"n_ctx": 10**12}},
    "n_ctx negative": {"runtime_params": {"n_ctx": -1}},
    "n_ctx as text": {"runtime_params": {"n_ctx": "lots"}},
    "n_gpu_layers 10^30": {"runtime_params": {"n_gpu_layers": 10**30}},
    "n_threads 10^6": {"runtime_params": {"n_threads": 10**6}},
    "n_batch 0": {"runtime_params": {"n_batch": 0}},
    "n_parallel 10^5": {"runtime_params": {"n_parallel": 100_000}},
    "seed 2^64": {"runtime_params": {"seed": 2**64}},
    "max_queue 10^9": {"runtime_params": {"max_queue": 10**9}},
    "chat_template 100 kB": {"runtime_params": {"chat_template": "x" * 100_000}},
    "chat_template @path (reads a server file)": {
        "runtime_params": {"chat_template": "@/proc/self/environ"}
    },
    "type_k not a cache type": {"runtime_params": {"type_k": "q4_K_M"}},
    "unknown runtime param": {"runtime_params": {"rm_rf": True}},
    "replicas 10^9": {"replicas": 10**9},
    "replicas negative": {"replicas": -5},
    "cpu 1e9": {"cpu": "1e9"},
    "memory nonsense": {"memory": "lots"},
    "namespace traversal": {"namespace": "../kube-system"},
    "unknown field": {"sudo": True},
}


async def counts(stack: Any) -> tuple[int, int, int]:
    """(events published, server records, model records)."""
    async with stack.sessions() as session:
        servers = await session.scalar(select(func.count()).select_from(ServerRecord))
        models = await session.scalar(select(func.count()).select_from(ModelRecord))
    return len(stack.published), int(servers or 0), int(models or 0)


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


async def test_hostile_names_and_absurd_parameters(stack: Any, reliability: Recorder) -> None:
    auth = stack.auth("alice")
    ok = await stack.http.post(f"{stack.api}/serve", headers=auth, json={"model": "demo"})
    assert ok.status_code == 202, ok.text  # the control: a good name is served
    before = await counts(stack)
    for case, name in HOSTILE_NAMES.items():
        reliability.case(
            f"POST /serve name: {case}",
            injected=f"model name {name[:40]!r}",
            checked="422 naming the rule; no event, no record",
        )
        answer = await stack.http.post(f"{stack.api}/serve", headers=auth, json={"model": name})
        assert answer.status_code == 422, (case, answer.status_code, answer.text)
    for case, body in ABSURD_PARAMS.items():
        reliability.case(
            f"POST /serve: {case}",
            injected=f"serve body {str(body)[:60]}",
            checked="422; no event, no record",
        )
        answer = await stack.http.post(
            f"{stack.api}/serve", headers=auth, json={"model": "demo", **body}
        )
        assert answer.status_code == 422, (case, answer.status_code, answer.text)
    assert await counts(stack) == before


async def test_hostile_upload_names(stack: Any, tiny_model: Path, reliability: Recorder) -> None:
    auth = stack.auth("alice")
    content = await asyncio.to_thread(tiny_model.read_bytes)
    before = await counts(stack)
    for case, name in HOSTILE_NAMES.items():
        reliability.case(
            f"PUT /models name: {case}",
            injected=f"an upload named {name[:40]!r}",
            checked="4xx; no record, no object, no scratch file",
        )
        answer = await stack.http.put(
            f"{stack.api}/models/{quote(name, safe='')}", headers=auth, content=content
        )
        assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text)
    assert await counts(stack) == before
    assert files_under(stack.settings.resolved_work_dir) == []
    assert await stack_objects(stack) == []


async def stack_objects(stack: Any) -> list[str]:
    from modelserve.shared.store.factory import make_store

    return [o.key for o in await make_store(stack.settings).list()]


async def raw_request(url: str, head: str, body: bytes = b"", wait: float = 10) -> str:
    """Send ``head`` (and ``body``) on a raw socket; the status line that comes back."""
    parsed = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), wait)
        return line.decode().strip()
    finally:
        writer.close()


async def test_oversized_bodies_are_refused_before_they_are_read(
    stack_factory: Any, reliability: Recorder
) -> None:
    stack = await stack_factory(max_body_bytes=64 * 1024)
    token = stack.token("alice")
    async with spy_upstream() as (upstream, hits):
        async with stack.sessions.begin() as session:
            server = await new_server(session, status="ready", owner="alice", internal_url=upstream)
        await oversized_bodies(stack, server, token, reliability)
    assert stack.published == [] and hits == []


async def oversized_bodies(
    stack: Any, server: uuid.UUID, token: str, reliability: Recorder
) -> None:
    for door, url, path in (
        ("api", stack.api, "/serve"),
        ("gateway", stack.gateway, f"/{server}/v1/chat/completions"),
    ):
        reliability.case(
            f"{door}: 1 GB Content-Length",
            injected="headers announcing a 1 GB JSON body, then silence",
            checked="413 at once, without waiting for the body",
        )
        started = time.monotonic()
        status = await raw_request(
            url,
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1073741824\r\n",
            b"{",
        )
        assert status.startswith("HTTP/1.1 413"), (door, status)
        assert time.monotonic() - started < 5
        reliability.case(
            f"{door}: streamed body past the limit",
            injected="a chunked 256 kB body (the limit is 64 kB)",
            checked="413, the rest not buffered",
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"model": "demo", "pad": "'
            for _ in range(64):
                yield b"x" * 4096
            yield b'"}'

        answer = await stack.http.post(
            f"{url}{path}", headers=stack.auth("alice"), content=chunks()
        )
        assert answer.status_code == 413, (door, answer.status_code, answer.text)


async def test_uploads_cannot_fill_the_disk_or_hang(
    stack_factory: Any, tiny_model: Path, reliability: Recorder
) -> None:
    stack = await stack_factory(
        max_upload_bytes=64 * 1024, upload_idle_seconds=1.0, upload_reserve_bytes=10**15
    )
    token = stack.token("alice")
    scratch = stack.settings.resolved_work_dir
    head = (
        "PUT /models/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\n{length}"
    )
    reliability.case(
        "upload: 1 TB Content-Length",
        injected="an upload announcing 1 TB",
        checked="413 before a byte is written",
    )
    status = await raw_request(
        stack.api,
        head.format(name="huge", token=token, length="Content-Length: 1099511627776\r\n"),
        b"GGUF",
    )
    assert status.startswith("HTTP/1.1 413"), status
    reliability.case(
        "upload: bigger than the free scratch space",
        injected="an upload of 10 kB where the reserve leaves no room",
        checked="507 before a byte is written",
    )
    status = await raw_request(
        stack.api,
        head.format(name="roomless", token=token, length="Content-Length: 10000\r\n"),
        b"GGUF",
    )
    assert status.startswith("HTTP/1.1 507"), status
    reliability.case(
        "upload: streamed past the limit",
        injected="a chunked upload of 256 kB (the limit is 64 kB)",
        checked="413 when it passes the limit; the scratch file removed",
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 4096

    answer = await stack.http.put(
        f"{stack.api}/models/streamed", headers=stack.auth("alice"), content=chunks()
    )
    assert answer.status_code == 413, answer.text
    reliability.case(
        "upload: slow drip",
        injected="a chunked upload that sends 4 bytes, then nothing",
        checked="408 after the idle limit; scratch file removed; the lease freed",
    )
    started = time.monotonic()
    status = await raw_request(
        stack.api,
        head.format(name="slowpoke", token=token, length="Transfer-Encoding: chunked\r\n"),
        b"4\r\nGGUF\r\n",
    )
    assert status.startswith("HTTP/1.1 408"), status
    assert time.monotonic() - started < 5
    assert files_under(scratch) == []
    assert await stack_objects(stack) == []
    assert await counts(stack) == (0, 0, 0)
    # The slow drip's lease is gone: a good upload of that name goes through.
    roomy = await stack_factory(sessions=stack.sessions)
    content = await asyncio.to_thread(tiny_model.read_bytes)
    good = await roomy.http.put(
        f"{roomy.api}/models/slowpoke", headers=roomy.auth("alice"), content=content
    )
    assert good.status_code == 201, good.text


async def test_broken_gguf_corpus(
    stack: Any, tiny_model: Path, tmp_path: Path, reliability: Recorder
) -> None:
    """Inspection says precisely why, fast; the upload door answers 422 and keeps nothing."""
    corpus = await asyncio.to_thread(broken_ggufs, tiny_model, tmp_path / "corpus")
    auth = stack.auth("alice")
    for n, (case, path) in enumerate(corpus.items()):
        reliability.case(
            f"GGUF: {case}",
            injected=f"a GGUF {case} ({path.stat().st_size} bytes), inspected and uploaded",
            checked="GGUFError within 2 s; upload 422; no record, object or scratch file",
        )
        started = time.monotonic()
        with pytest.raises(GGUFError):
            inspect_gguf(path)
        assert time.monotonic() - started < 2, case
        content = await asyncio.to_thread(path.read_bytes)
        answer = await stack.http.put(
            f"{stack.api}/models/broken-{n}", headers=auth, content=content
        )
        assert answer.status_code == 422, (case, answer.status_code, answer.text)
    assert await counts(stack) == (0, 0, 0)
    assert await stack_objects(stack) == []
    assert files_under(stack.settings.resolved_work_dir) == []


# --- CloudEvents at the pipeline functions ----------------------------------------------


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Functions]]:
    settings = load_settings(
        mode="local",
        data_dir=tmp_path_factory.mktemp("events"),
        jwt_secret=secrets.token_hex(24),
    )
    engine = make_engine(settings.resolved_database_url)
    asyncio.run(upgrade(engine))
    asyncio.run(engine.dispose())
    with running_functions(settings) as running:
        yield settings, running


def ledger_rows(settings: Any) -> int:
    async def read() -> int:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                count = await session.scalar(select(func.count()).select_from(ProcessedEvent))
                return int(count or 0)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def malformed_events(settings: Any) -> dict[str, tuple[dict[str, str], bytes, set[int]]]:
    """Case -> (headers, body, the statuses that are right for it)."""
    issuer = TokenIssuer.from_settings(settings)

    async def record() -> uuid.UUID:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                return await new_server(session, model_name="demo")
        finally:
            await engine.dispose()

    server = asyncio.run(record())
    good = ev.make_event(
        ev.SERVE_REQUESTED,
        ev.ServeRequested(request=ev.ServeRequest(model="demo", requested_by="a", role="viewer")),
        source="/reliability",
        subject=server,
        token=issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR),
    )
    headers, body = ev.encode_binary(good)
    s_headers, s_body = ev.encode_structured(good)

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k.lower() != name}

    bad_400 = {400}
    return {
        "garbage body": ({"content-type": "text/plain"}, b"\x00\xff garbage", bad_400),
        "no ce- headers": ({"content-type": "application/json"}, body, bad_400),
        "no id": (without("ce-id"), body, bad_400),
        "no source": (without("ce-source"), body, bad_400),
        "no type": (without("ce-type"), body, bad_400),
        "bad specversion": ({**headers, "ce-specversion": "9.9"}, body, bad_400),
        "structured, broken JSON": (s_headers, s_body[: len(s_body) // 2], bad_400),
        "structured, a JSON list": (s_headers, b"[1, 2, 3]", bad_400),
        "structured, deep nesting": (s_headers, b"[" * 100_000 + b"]" * 100_000, {400, 413}),
        "subject not a UUID": ({**headers, "ce-subject": "../../etc"}, body, {400}),
        "data not JSON": ({**headers, "content-type": "application/json"}, b"{nope", bad_400),
        "data of the wrong shape": (headers, b'{"request": 42}', {200, 202, 400}),
        "oversized (1 MB)": (headers, b'{"pad": "' + b"x" * 1_000_000 + b'"}', {413}),
        "oversized, chunked": (headers, b"", {413}),  # body sent as a stream below
        "1 GB Content-Length": ({**headers, "content-length": str(2**30)}, b"", {413}),
    }


def test_malformed_and_oversized_cloudevents(
    functions: tuple[Any, Functions], reliability: Recorder
) -> None:
    settings, running = functions
    cases = malformed_events(settings)
    before = ledger_rows(settings)
    for step in registry.STEPS.values():
        url = running.urls[step.service]
        for case, (headers, body, expected) in cases.items():
            reliability.case(
                f"{step.name}: {case}",
                injected=f"a CloudEvent request: {case}",
                checked=f"{sorted(expected)}, never 5xx; no step ran on it",
            )
            if case == "oversized, chunked":

                def stream() -> Iterator[bytes]:
                    for _ in range(MAX_EVENT_BYTES // 4096 + 2):
                        yield b"x" * 4096

                answer = httpx.post(url, headers=headers, content=stream(), timeout=30)
            elif case == "1 GB Content-Length":
                answer = asyncio.run(lying_post(url, headers, int(headers["content-length"])))
            else:
                answer = httpx.post(url, headers=headers, content=body, timeout=30)
            if step.name != "availability" and case == "data of the wrong shape":
                expected = {400}  # the type check refuses it first
            assert answer.status_code in expected, (step.name, case, answer.status_code)
    # Only "data of the wrong shape" at availability may reach a step, which refuses it
    # as serve.failed (a reply): never a second record or a crash.
    assert ledger_rows(settings) - before <= 1


async def lying_post(url: str, headers: dict[str, str], length: int) -> httpx.Response:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
    status = await raw_request(
        url, f"POST / HTTP/1.1\r\nHost: x\r\n{lines}Content-Length: {length}\r\n", b"{"
    )
    return httpx.Response(int(status.split()[1]))
