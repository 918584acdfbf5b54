"""The public API over HTTP: sign-in, roles, serve, servers, models, events, CloudEvents."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from cloudevents.http import CloudEvent

from modelserve.shared import events as ev
from modelserve.shared import lifecycle
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import PIPELINE_AUDIENCE, TokenVerifier
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server


async def test_sign_in(stack: Any) -> None:
    good = await stack.http.post(
        f"{stack.api}/auth/token", data={"username": "alice", "password": "alice-password-1"}
    )
    assert good.status_code == 200
    token = good.json()["access_token"]
    claims = TokenVerifier.from_settings(stack.settings).verify_access(token)
    assert (claims.subject, claims.role) == ("alice", Role.OPERATOR)
    for user, password in (("alice", "wrong-password-x"), ("nobody", "alice-password-1")):
        bad = await stack.http.post(
            f"{stack.api}/auth/token", data={"username": user, "password": password}
        )
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"


async def test_serve_records_the_server_and_starts_the_pipeline(stack: Any) -> None:
    response = await stack.http.post(
        f"{stack.api}/serve",
        headers=stack.auth("alice"),
        json={"model": "demo", "replicas": 0, "runtime_params": {"n_ctx": 512}},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    server = uuid.UUID(body["server_uuid"])
    assert body["gateway_url"] == f"http://gateway.test/{server}"
    assert body["status_url"] == f"/servers/{server}"
    (event,) = stack.published
    assert event["type"] == ev.SERVE_REQUESTED and ev.subject_uuid(event) == server
    claims = ev.verify_event(event, TokenVerifier.from_settings(stack.settings))
    assert claims.audience == PIPELINE_AUDIENCE
    assert claims.role is not None and claims.role.value == "operator"
    request = ev.payload(event, ev.ServeRequested).request
    assert (request.model, request.requested_by, request.runtime_params) == (
        "demo",
        "alice",
        {"n_ctx": 512},
    )
    listed = await stack.http.get(f"{stack.api}/servers", headers=stack.auth("vic"))
    assert [s["server_uuid"] for s in listed.json()] == [str(server)]
    one = await stack.http.get(f"{stack.api}/servers/{server}", headers=stack.auth("vic"))
    assert (one.json()["owner"], one.json()["status"]) == ("alice", "requested")


async def test_roles(stack: Any) -> None:
    viewer = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("vic"), json={"model": "demo"}
    )
    assert viewer.status_code == 403
    served = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("alice"), json={"model": "demo"}
    )
    server = served.json()["server_uuid"]
    other = await stack.http.delete(f"{stack.api}/servers/{server}", headers=stack.auth("bob"))
    assert other.status_code == 403 and "only their own" in other.json()["detail"]
    admin = await stack.http.delete(f"{stack.api}/servers/{server}", headers=stack.auth("root"))
    # Nothing was applied yet (no pipeline runs here): deleted at once.
    assert admin.status_code == 200 and admin.json()["status"] == "deleted"
    again = await stack.http.delete(f"{stack.api}/servers/{server}", headers=stack.auth("root"))
    assert again.status_code == 200 and again.json()["status"] == "deleted"  # idempotent
    missing = await stack.http.get(f"{stack.api}/servers/{uuid.uuid4()}", headers=stack.auth("vic"))
    assert missing.status_code == 404


async def test_delete_removes_the_modelserve(stack: Any) -> None:
    served = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("alice"), json={"model": "demo"}
    )
    server = uuid.UUID(served.json()["server_uuid"])
    folder = stack.settings.data_dir / "modelserves" / "modelserve"
    folder.mkdir(parents=True)
    resource = folder / f"{ms.resource_name(server)}.json"
    resource.write_text("{}")
    deleted = await stack.http.delete(f"{stack.api}/servers/{server}", headers=stack.auth("alice"))
    assert deleted.status_code == 200
    assert not resource.exists()


async def test_bad_serve_bodies_are_422(stack: Any) -> None:
    for body in (
        {"model": ""},
        {"model": "demo", "replicas": -1},
        {"model": "demo", "runtime_params": {"n_ctx": 1}},
        {"model": "demo", "memory": "lots"},
        {"model": "demo", "colour": "red"},
    ):
        response = await stack.http.post(
            f"{stack.api}/serve", headers=stack.auth("alice"), json=body
        )
        assert response.status_code == 422, body
    assert stack.published == []


async def test_models_lists_mirrored_and_catalog(stack: Any) -> None:
    response = await stack.http.get(f"{stack.api}/models", headers=stack.auth("vic"))
    assert response.status_code == 200
    assert response.json()["catalog"][0]["name"] == "demo"
    assert response.json()["catalog"][0]["mirrored"] is False
    alias = await stack.http.get(f"{stack.api}/models/available", headers=stack.auth("vic"))
    assert [m["name"] for m in alias.json()] == ["demo"]
    assert (await stack.http.get(f"{stack.api}/status")).json() == {"status": "ok"}


async def test_cloudevent_door(stack: Any) -> None:
    event = CloudEvent(
        {"type": ev.SERVE_REQUESTED, "source": "/ci/pipeline"}, {"model": "demo", "replicas": 1}
    )
    for encode in (ev.encode_structured, ev.encode_binary):
        headers, body = encode(event)
        response = await stack.http.post(
            f"{stack.api}/cloudevents", content=body, headers={**headers, **stack.auth("alice")}
        )
        assert response.status_code == 202, response.text
    assert len(stack.published) == 2
    wrong = CloudEvent({"type": ev.MODEL_AVAILABLE, "source": "/x"}, {})
    headers, body = ev.encode_structured(wrong)
    response = await stack.http.post(
        f"{stack.api}/cloudevents", content=body, headers={**headers, **stack.auth("alice")}
    )
    assert response.status_code == 400 and "only" in response.text
    unauthenticated = await stack.http.post(
        f"{stack.api}/cloudevents", content=body, headers=headers
    )
    assert unauthenticated.status_code == 401


async def test_status_events_arrive_in_order(stack: Any) -> None:
    served = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("alice"), json={"model": "demo"}
    )
    server = uuid.UUID(served.json()["server_uuid"])
    seen: list[str] = []

    async def listen() -> None:
        async with stack.http.stream(
            "GET", f"{stack.api}/events", headers=stack.auth("vic")
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:])["status"])
                    if seen[-1] == "ready":
                        return

    listener = asyncio.create_task(listen())
    for status in (
        ServerStatus.CHECKING,
        ServerStatus.MIRRORING,
        ServerStatus.VALIDATING,
        ServerStatus.APPLYING,
        ServerStatus.PENDING,
        ServerStatus.LOADING,
        ServerStatus.READY,
    ):
        await asyncio.sleep(0.7)
        assert await lifecycle.move(stack.sessions, server, status)
    async with asyncio.timeout(15):
        await listener
    assert seen == [
        "requested",
        "checking",
        "mirroring",
        "validating",
        "applying",
        "pending",
        "loading",
        "ready",
    ]


async def test_jwks_is_empty_for_a_shared_secret(stack: Any) -> None:
    response = await stack.http.get(f"{stack.api}/.well-known/jwks.json")
    assert response.status_code == 200 and response.json() == {"keys": []}


async def test_open_event_streams_share_one_database_poll(stack: Any) -> None:
    """Five dashboards open: still one poll per interval, not one per stream."""
    feed = stack.api_app.state.server_feed
    streams = 5
    first_events: list[int] = []

    async def listen() -> None:
        async with stack.http.stream(
            "GET", f"{stack.api}/events", headers=stack.auth("vic")
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    first_events.append(1)
                    await asyncio.sleep(3)
                    return

    async with stack.sessions.begin() as session:
        await new_server(session, owner="alice")
    listeners = [asyncio.create_task(listen()) for _ in range(streams)]
    while len(feed.listeners) < streams:  # noqa: ASYNC110 - waiting on the others' state
        await asyncio.sleep(0.05)
    before, started = feed.polls, time.monotonic()
    await asyncio.sleep(2)
    polls, elapsed = feed.polls - before, time.monotonic() - started
    await asyncio.gather(*listeners)
    assert len(first_events) == streams  # every stream got the server
    assert polls <= elapsed / feed.poll_seconds + 2, (polls, elapsed)  # shared, not x5
    await asyncio.sleep(0.1)
    assert not feed.listeners  # closed streams leave, and the poll stops with the last


async def test_a_model_name_that_could_never_be_one_is_refused_at_the_door(stack: Any) -> None:
    for name in ("../../../etc/passwd", "de\u0000mo", "\u202e\ufeffdemo", "x" * 10_000, "-rf"):
        answer = await stack.http.post(
            f"{stack.api}/serve", headers=stack.auth("alice"), json={"model": name}
        )
        assert answer.status_code == 422, (name[:20], answer.text)
        assert "not a valid model name" in answer.text or "characters" in answer.text
    assert stack.published == []  # nothing reached the pipeline
    async with stack.sessions() as session:
        assert list(await repo.list_servers(session)) == []  # nor the database
