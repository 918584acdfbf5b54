"""``PUT /models/{name}`` (``modelserve models push``) into a real store: all or nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from modelserve.functions.ingest import lease_name, model_uuid, object_key
from modelserve.shared.db import repo
from modelserve.shared.store.base import ObjectStore
from modelserve.shared.store.minio_store import MinioStore, make_minio_client
from support.minio_server import MinioServer

from .conftest import Stack


@pytest.fixture(params=["local", "minio"])
async def upload_stack(request: pytest.FixtureRequest, stack_factory: Any) -> Stack:
    store: ObjectStore | None = None
    if request.param == "minio":
        server: MinioServer = request.getfixturevalue("minio_server")
        client = make_minio_client(
            server.endpoint, server.access_key, server.secret_key, secure=False
        )
        store = MinioStore(client, f"u-{uuid.uuid4().hex[:16]}")
        await store.ensure_ready()
    built: Stack = await stack_factory(store=store)
    return built


@pytest.fixture
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


def _store(stack: Stack) -> ObjectStore:
    from modelserve.shared.store.factory import make_store

    return make_store(stack.settings)


async def _put(stack: Stack, name: str, body: bytes, user: str = "alice", **headers: str) -> Any:
    return await stack.http.put(
        f"{stack.api}/models/{name}",
        content=body,
        headers={**stack.auth(user), "Content-Type": "application/octet-stream", **headers},
    )


def _uploads_left(stack: Stack) -> list[Path]:
    folder = stack.settings.resolved_work_dir / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


async def test_upload_is_verified_stored_and_listed(
    upload_stack: Stack, tiny_bytes: bytes, request: pytest.FixtureRequest
) -> None:
    stack = upload_stack
    body = tiny_bytes
    sha = hashlib.sha256(body).hexdigest()
    response = await _put(stack, "my-model.q8", body, **{"X-Content-SHA256": sha})
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["model_uuid"] == str(model_uuid("my-model.q8"))
    assert model["sha256"] == sha and model["size_bytes"] == len(body)
    assert model["architecture"] == "llama" and model["context_length"] > 0
    assert model["source"] == "upload:alice"

    listed = (await stack.http.get(f"{stack.api}/models", headers=stack.auth("vic"))).json()
    assert [m["model_name"] for m in listed["mirrored"]] == ["my-model.q8"]
    async with stack.sessions() as session:
        record = await repo.get_model_by_name(session, "my-model.q8")
    assert record is not None and record.object_path == object_key("my-model.q8")
    assert _uploads_left(stack) == []

    # The same name again is refused and changes nothing.
    again = await _put(stack, "my-model.q8", b"GGUF-something-else")
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


async def test_uploaded_bytes_are_in_the_store(stack_factory: Any, tiny_bytes: bytes) -> None:
    stack: Stack = await stack_factory()
    body = tiny_bytes
    assert (await _put(stack, "kept", body)).status_code == 201
    assert await _store(stack).read_all(object_key("kept")) == body


@pytest.mark.parametrize(
    ("body_of", "headers", "reason"),
    [
        (lambda good: b"not a gguf at all" * 100, {}, "not a usable GGUF"),
        (lambda good: good[: len(good) // 2], {}, "not a usable GGUF"),
        (lambda good: b"", {}, "not a usable GGUF"),
        (lambda good: good, {"X-Content-SHA256": "0" * 64}, "sha256 mismatch"),
    ],
    ids=["garbage", "truncated", "empty", "sha256-mismatch"],
)
async def test_bad_upload_leaves_nothing(
    upload_stack: Stack, tiny_bytes: bytes, body_of: Any, headers: dict[str, str], reason: str
) -> None:
    stack = upload_stack
    response = await _put(stack, "broken", body_of(tiny_bytes), **headers)
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"]
    async with stack.sessions() as session:
        assert await repo.get_model_by_name(session, "broken") is None
    assert _uploads_left(stack) == []
    # The lease is released: a good upload of that name now works.
    assert (await _put(stack, "broken", tiny_bytes)).status_code == 201


@pytest.mark.parametrize(
    ("name", "status"),
    [("../etc", 404), (".hidden", 422), ("spaces in name", 422), ("x" * 129, 422)],
)
async def test_bad_names_are_refused(
    stack: Stack, tiny_bytes: bytes, name: str, status: int
) -> None:
    response = await _put(stack, name, tiny_bytes)
    assert response.status_code == status, response.text
    async with stack.sessions() as session:
        assert list(await repo.list_models(session)) == []


async def test_roles(stack: Stack, tiny_bytes: bytes) -> None:
    body = tiny_bytes
    assert (await _put(stack, "m", body, user="vic")).status_code == 403
    anonymous = await stack.http.put(f"{stack.api}/models/m", content=body)
    assert anonymous.status_code == 401


async def test_busy_name_is_refused(stack: Stack, tiny_bytes: bytes) -> None:
    async with stack.sessions.begin() as session:
        assert await repo.acquire_lease(
            session, lease_name("busy"), "mirror-elsewhere", dt.timedelta(minutes=1)
        )
    response = await _put(stack, "busy", tiny_bytes)
    assert response.status_code == 409 and "right now" in response.json()["detail"]


async def test_interrupted_upload_leaves_nothing(stack: Stack, tiny_bytes: bytes) -> None:
    body = tiny_bytes
    address = urlsplit(stack.api)
    _reader, writer = await asyncio.open_connection(address.hostname, address.port)
    head = (
        f"PUT /models/cut HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {stack.token('alice')}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 3])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await writer.wait_closed()
    for _ in range(50):  # the server notices the disconnect, cleans up, frees the lease
        await asyncio.sleep(0.1)
        async with stack.sessions() as session:
            holder = await repo.acquire_lease(
                session, lease_name("cut"), "probe", dt.timedelta(seconds=0)
            )
            await session.rollback()
        if holder and not _uploads_left(stack):
            break
    assert _uploads_left(stack) == []
    async with stack.sessions() as session:
        assert await repo.get_model_by_name(session, "cut") is None
    assert (await _put(stack, "cut", body)).status_code == 201
