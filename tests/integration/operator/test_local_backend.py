"""The local backend with real runtime processes on the generated model."""

from __future__ import annotations

import asyncio
import os
import secrets
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
from modelserve.shared.auth.users import create_user
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.settings import load_settings
from support.api_client import in_process_api
from support.procs import port_open
from support.records import new_server, wait_for_status

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
        await new_server(  # as the apply step leaves it
            session, server_uuid=server, status=ServerStatus.PENDING, namespace="local"
        )
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
    # CPU is measured between two samples of the same process: busy, it reads above 0.
    deadline = time.monotonic() + 30
    while not (await status_of(sessions, server)).cpu_usage_percent:
        assert time.monotonic() < deadline, "CPU use never recorded"
        url = await backend.ensure_running(server)  # a use, as through the gateway
        await asyncio.to_thread(complete, url)

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
    world: tuple[LocalBackend, Sessions, Path],
) -> None:
    backend, sessions, model = world
    # each value is in range; together they exceed llama.cpp's sequences, which the
    # runtime checks at start
    params = ms.RuntimeParams(n_parallel=200, prefix_cache=200)
    server = await serve(sessions, backend.root, model, runtime=params)
    record = await wait_for_status(sessions, server, "failed")
    assert record.status_message is not None
    assert "refused its parameters" in record.status_message
    assert "exceeds llama.cpp's" in record.status_message
    assert record.status_message.count("exceeds llama.cpp's") == 1  # this start's output only
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


@pytest.mark.parametrize("point", ["loading", "ready", "idle"])
async def test_delete_through_the_api_at_any_point_stops_everything(
    world: tuple[LocalBackend, Sessions, Path], tmp_path: Path, point: str
) -> None:
    backend, sessions, model = world
    idle_after = 2 if point == "idle" else 600
    server = await serve(sessions, backend.root, model, idle_timeout_seconds=idle_after)
    await wait_for_status(sessions, server, point)
    item = backend.servers[server]
    process = item.process
    if point == "loading":  # the runtime is starting: deleted before it is up
        assert process is not None and not item.ready
    elif point == "idle":
        assert process is None
    settings = load_settings(mode="local", data_dir=tmp_path, jwt_secret=secrets.token_hex(24))
    async with in_process_api(settings, sessions, LocalApplier(backend.root)) as api:
        answer = await api.delete(server)
    assert answer["status"] == "deleting"  # the backend finishes the job
    record = await wait_for_status(sessions, server, "deleted")
    assert record.internal_url is None
    assert server not in backend.servers
    assert process is None or process.poll() is not None
    assert not (backend.root / "local" / f"{ms.resource_name(server)}.json").exists()


async def test_an_admin_reads_the_runtime_s_log_through_the_api(
    world: tuple[LocalBackend, Sessions, Path], tmp_path: Path
) -> None:
    backend, sessions, model = world
    server = await serve(sessions, backend.root, model)
    await wait_for_status(sessions, server, "ready")
    async with sessions.begin() as session:
        await create_user(session, "alice", secrets.token_urlsafe(16), Role.OPERATOR)
    settings = load_settings(mode="local", data_dir=tmp_path, jwt_secret=secrets.token_hex(24))
    applier = LocalApplier(backend.root)
    async with in_process_api(settings, sessions, applier, runtime_logs=backend.log_tail) as api:
        admin = {"Authorization": f"Bearer {api.token}"}
        logs = f"/servers/{server}/logs"
        everything = await api.http.get(logs, params={"lines": 2000}, headers=admin)
        assert everything.status_code == 200, everything.text
        lines = everything.json()["lines"]
        assert any("serving demo on http://127.0.0.1:" in line for line in lines), lines
        last = await api.http.get(logs, params={"lines": 2}, headers=admin)
        assert len(last.json()["lines"]) == 2
        for wrong in (0, 2001):
            bounded = await api.http.get(logs, params={"lines": wrong}, headers=admin)
            assert bounded.status_code == 422
        unknown = await api.http.get(f"/servers/{uuid.uuid4()}/logs", headers=admin)
        assert unknown.status_code == 404
        operator = api.issuer.access_token("alice", Role.OPERATOR)
        refused = await api.http.get(logs, headers={"Authorization": f"Bearer {operator}"})
        assert refused.status_code == 403
    async with in_process_api(settings, sessions, applier) as api:  # as on Kubernetes
        cluster = await api.http.get(logs, headers={"Authorization": f"Bearer {api.token}"})
        assert cluster.status_code == 501 and "kubectl logs" in cluster.json()["detail"]


async def test_a_restarted_backend_converges_on_the_records(
    tmp_path: Path, tiny_model: Path
) -> None:
    """``modelserve up`` again: what was ready comes back ready, idle stays idle until
    asked, failed stays failed, and nothing is started twice."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(engine)
    sessions = make_sessionmaker(engine)

    def backend() -> LocalBackend:
        return LocalBackend(
            root=tmp_path / "modelserves", sessions=sessions, log_dir=tmp_path / "logs", tick=0.2
        )

    first, stop = backend(), asyncio.Event()
    loop = asyncio.create_task(first.run(stop))
    ready = await serve(sessions, first.root, tiny_model)
    idle = await serve(sessions, first.root, tiny_model, idle_timeout_seconds=1)
    await wait_for_status(sessions, ready, "ready")
    await wait_for_status(sessions, idle, "idle")
    old_url = (await status_of(sessions, ready)).internal_url
    stop.set()
    await loop  # stops every runtime

    second, stop = backend(), asyncio.Event()
    loop = asyncio.create_task(second.run(stop))
    try:
        deadline = time.monotonic() + 90
        while (record := await status_of(sessions, ready)).internal_url == old_url:
            assert time.monotonic() < deadline, "the ready server was not started again"
            await asyncio.sleep(0.2)
        record = await wait_for_status(sessions, ready, "ready")
        assert record.internal_url and record.internal_url != old_url
        assert isinstance(await asyncio.to_thread(complete, record.internal_url), str)
        await asyncio.sleep(1)
        assert (await status_of(sessions, idle)).status == "idle"
        assert second.servers[idle].process is None
        url = await second.ensure_running(idle, wait_seconds=90)
        assert isinstance(await asyncio.to_thread(complete, url), str)
    finally:
        stop.set()
        await loop
        await engine.dispose()
