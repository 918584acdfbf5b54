"""The local backend with real runtime processes on the generated model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.appliers import LocalApplier
from modelserve.operator.local_backend import LocalBackend, ServerUnavailable
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from support.procs import port_open
from support.records import wait_for_status

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def world(
    tmp_path: Path, tiny_model: Path
) -> AsyncIterator[tuple[LocalBackend, Sessions, Path]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    model = tiny_model
    backend = LocalBackend(
        root=tmp_path / "modelserves",
        sessions=sessions,
        log_dir=tmp_path / "logs",
        tick=0.2,
        backoff=0.2,
        max_crashes=3,
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(backend.run(stop))
    yield backend, sessions, model
    stop.set()
    await loop
    await engine.dispose()


async def serve(sessions: Sessions, root: Path, model: Path, **spec: Any) -> uuid.UUID:
    server = uuid.uuid4()
    async with sessions.begin() as session:
        await repo.get_or_create_server(session, server_uuid=server, model_name="demo")
    values: dict[str, Any] = {
        "server_uuid": server,
        "model_name": "demo",
        "storage_uri": model.as_uri(),  # tmp_path is absolute already
        "runtime": ms.RuntimeParams(n_ctx=512),
    }
    values.update(spec)
    await LocalApplier(root).apply(ms.manifest(ms.ModelServeSpec.model_validate(values), "local"))
    return server


async def status_of(sessions: Sessions, server: uuid.UUID) -> Any:
    async with sessions() as session:
        return await repo.get_server(session, server)


def complete(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    reply = client.completions.create(model="demo", prompt="hi", max_tokens=3)
    return reply.choices[0].text


async def test_start_serve_idle_and_wake(world: tuple[LocalBackend, Sessions, Path]) -> None:
    backend, sessions, model = world
    server = await serve(sessions, backend.root, model, idle_timeout_seconds=4)
    record = await wait_for_status(sessions, server, "ready")
    assert record.internal_url and record.started_at is not None
    assert record.pod_names and record.pod_names[0].startswith("pid-")
    assert isinstance(await asyncio.to_thread(complete, record.internal_url), str)
    deadline = time.monotonic() + 10
    while (await status_of(sessions, server)).memory_current_mb is None:
        assert time.monotonic() < deadline, "memory never recorded"
        await asyncio.sleep(0.2)
    record = await status_of(sessions, server)
    assert record.memory_current_mb > 1 and record.memory_max_mb >= record.memory_current_mb

    first_port = int(record.internal_url.rsplit(":", 1)[1])
    await wait_for_status(sessions, server, "idle")  # nobody used it for 4 s
    assert not port_open(first_port)

    url = await backend.ensure_running(server, wait_seconds=90)  # the gateway asks: wake up
    assert isinstance(await asyncio.to_thread(complete, url), str)
    assert (await status_of(sessions, server)).status == "ready"


async def test_a_crashed_runtime_is_restarted(world: tuple[LocalBackend, Sessions, Path]) -> None:
    backend, sessions, model = world
    server = await serve(sessions, backend.root, model)
    record = await wait_for_status(sessions, server, "ready")
    pid = backend.servers[server].process.pid  # type: ignore[union-attr]
    os.killpg(pid, signal.SIGKILL)
    await wait_for_status(sessions, server, "loading")
    record = await wait_for_status(sessions, server, "ready")
    assert backend.servers[server].process.pid != pid  # type: ignore[union-attr]
    assert record.internal_url is not None
    assert isinstance(await asyncio.to_thread(complete, record.internal_url), str)


async def test_a_model_that_cannot_load_fails_with_its_reason(
    world: tuple[LocalBackend, Sessions, Path], tmp_path: Path
) -> None:
    backend, sessions, _ = world
    broken = tmp_path / "broken.gguf"
    broken.write_text("<html>not a model</html>")
    server = await serve(sessions, backend.root, broken)
    record = await wait_for_status(sessions, server, "failed")
    assert record.status_message is not None
    assert "exited 3 times" in record.status_message
    assert "not a GGUF file" in record.status_message
    with pytest.raises(ServerUnavailable, match="failed"):
        await backend.ensure_running(server)


async def test_refused_parameters_fail_at_once(
    world: tuple[LocalBackend, Sessions, Path], tmp_path: Path
) -> None:
    backend, sessions, model = world
    missing = tmp_path / "no-such-template.jinja"
    server = await serve(
        sessions, backend.root, model, runtime=ms.RuntimeParams(chat_template=f"@{missing}")
    )
    record = await wait_for_status(sessions, server, "failed")
    assert record.status_message is not None
    assert "refused its parameters" in record.status_message
    assert "cannot read" in record.status_message
    assert record.status_message.count("cannot read") == 1  # this start's output only
    assert backend.servers[server].crashes == 1  # exit 2 is not retried


async def test_deleting_the_modelserve_stops_the_server(
    world: tuple[LocalBackend, Sessions, Path],
) -> None:
    backend, sessions, model = world
    server = await serve(sessions, backend.root, model)
    record = await wait_for_status(sessions, server, "ready")
    assert record.internal_url is not None
    port = int(record.internal_url.rsplit(":", 1)[1])
    (backend.root / "local" / f"{ms.resource_name(server)}.json").unlink()
    await wait_for_status(sessions, server, "deleted")
    assert not port_open(port)
    with pytest.raises(ServerUnavailable, match="no server"):
        await backend.ensure_running(server)
