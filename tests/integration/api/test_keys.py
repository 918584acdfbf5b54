"""API keys and disabled users at every door (API, gateway, ``/auth``), on both engines.

The stack's API and gateway each have their own credential cache, as two
replicas would: a revocation through the API reaches the gateway only through
its cache expiring, which is what the 2-second promise is about.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db.models import ApiKey, Role
from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.runtime import RuntimeServer, start_runtime

Sessions = async_sessionmaker[AsyncSession]
PROMISE_SECONDS = 2.0


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo")
    yield server
    server.stop()


@pytest.fixture
async def db_stack(stack_factory: Any, sessions: Sessions) -> Any:
    """The API and the gateway on a fresh SQLite, then a fresh Postgres database."""
    return await stack_factory(sessions=sessions)


async def add_server(
    stack: Any, status: str = ServerStatus.MIRRORING, url: str | None = None
) -> uuid.UUID:
    async with stack.sessions.begin() as session:
        return await new_server(session, status=status, owner="alice", internal_url=url)


async def make_key(stack: Any, user: str, **body: Any) -> dict[str, Any]:
    response = await stack.http.post(
        f"{stack.api}/keys", headers=stack.auth(user), json={"name": "test key", **body}
    )
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def gateway_status(stack: Any, server: uuid.UUID, credential: str) -> int:
    """The gateway's answer; a server still mirroring answers 503 once auth passed."""
    response = await stack.http.get(
        f"{stack.gateway}/{server}/v1/models", headers=bearer(credential)
    )
    return int(response.status_code)


async def authz_status(stack: Any, path: str, credential: str) -> int:
    response = await stack.http.get(
        f"{stack.api}/auth", headers={**bearer(credential), "X-Forwarded-Uri": path}
    )
    return int(response.status_code)


async def refused_within(check: Any, seconds: float = PROMISE_SECONDS) -> float:
    """Seconds until ``check()`` answers 401/403; fails past ``seconds``."""
    start = time.monotonic()
    while True:
        status = await check()
        elapsed = time.monotonic() - start
        if status in (401, 403):
            return elapsed
        assert elapsed < seconds, f"still accepted ({status}) after {elapsed:.2f} s"
        await asyncio.sleep(0.05)


async def test_a_key_works_through_the_openai_client_until_revoked(
    db_stack: Any, runtime: RuntimeServer
) -> None:
    stack = db_stack
    server = await add_server(stack, ServerStatus.READY, runtime.url)
    made = await make_key(stack, "alice", server_uuid=str(server))
    key = made["key"]
    assert key.startswith(f"msk_{made['key_id']}_") and len(key) > 50
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway}/{server}/v1", api_key=key, max_retries=0)
    assert [m.id for m in (await client.models.list()).data] == ["demo"]
    reply = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None

    listed = await stack.http.get(f"{stack.api}/keys", headers=stack.auth("alice"))
    assert [k["key_id"] for k in listed.json()] == [made["key_id"]]
    assert key not in listed.text and "secret" not in listed.text  # shown once, never again
    ok = await stack.http.get(
        f"{stack.api}/auth", headers={**bearer(key), "X-Forwarded-Uri": f"/{server}/v1/models"}
    )
    assert ok.status_code == 200
    assert (ok.headers["x-auth-kind"], ok.headers["x-auth-subject"]) == ("key", "alice")
    assert ok.headers["x-auth-key"] == made["key_id"]

    revoked = await stack.http.delete(
        f"{stack.api}/keys/{made['key_id']}", headers=stack.auth("alice")
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # The API's replica dropped the key at once; the gateway's cache sees it within 2 s.
    assert await authz_status(stack, f"/{server}/v1/models", key) == 401
    await refused_within(lambda: gateway_status(stack, server, key))
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    again = await stack.http.delete(
        f"{stack.api}/keys/{made['key_id']}", headers=stack.auth("alice")
    )
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # idempotent


async def test_scope_and_the_doors_a_key_does_not_open(db_stack: Any) -> None:
    stack = db_stack
    server, other = await add_server(stack), await add_server(stack)
    scoped = (await make_key(stack, "alice", server_uuid=str(server)))["key"]
    every = (await make_key(stack, "alice"))["key"]
    assert await gateway_status(stack, server, scoped) == 503  # through auth, still mirroring
    assert await gateway_status(stack, other, scoped) == 403
    assert await gateway_status(stack, other, every) == 503
    assert await authz_status(stack, f"/{other}/v1/models", scoped) == 403
    # A key opens model endpoints only: not the API, not /auth for API paths.
    assert (await stack.http.get(f"{stack.api}/servers", headers=bearer(every))).status_code == 401
    assert await authz_status(stack, "/servers", every) == 401
    key_id = every.split("_")[1]
    forged = {
        "malformed": "msk_nothex_abc",
        "wrong-secret": f"msk_{key_id}_{'A' * 43}",
        "unknown-id": f"msk_{'0' * 12}_{'A' * 43}",
        "truncated": every[:-1],
    }
    for name, credential in forged.items():
        assert await gateway_status(stack, server, credential) == 401, name
        assert await authz_status(stack, f"/{server}/v1/models", credential) == 401, name


async def test_an_expired_key_is_refused(db_stack: Any) -> None:
    stack = db_stack
    server = await add_server(stack)
    made = await make_key(stack, "alice", expires_in_seconds=3600)
    assert made["expires_at"] is not None
    assert await gateway_status(stack, server, made["key"]) == 503
    async with stack.sessions.begin() as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await session.execute(
            update(ApiKey).where(ApiKey.key_id == made["key_id"]).values(expires_at=past)
        )
    await refused_within(lambda: gateway_status(stack, server, made["key"]))
    assert await authz_status(stack, f"/{server}/v1/models", made["key"]) == 401


async def test_a_disabled_user_is_refused_at_every_door(db_stack: Any) -> None:
    stack = db_stack
    server = await add_server(stack)
    key = (await make_key(stack, "alice"))["key"]
    token = stack.token("alice")
    assert await gateway_status(stack, server, key) == 503
    assert await gateway_status(stack, server, token) == 503
    api = await stack.http.get(f"{stack.api}/servers", headers=bearer(token))
    assert api.status_code == 200

    not_admin = await stack.http.patch(
        f"{stack.api}/users/alice", headers=stack.auth("bob"), json={"disabled": True}
    )
    assert not_admin.status_code == 403
    itself = await stack.http.patch(
        f"{stack.api}/users/root", headers=stack.auth("root"), json={"disabled": True}
    )
    assert itself.status_code == 409
    disabled = await stack.http.patch(
        f"{stack.api}/users/alice", headers=stack.auth("root"), json={"disabled": True}
    )
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None

    # This replica (the API, /auth) refuses at once; the gateway within 2 s.
    api = await stack.http.get(f"{stack.api}/servers", headers=bearer(token))
    assert api.status_code == 403 and "disabled" in api.json()["detail"]
    assert await authz_status(stack, f"/{server}/v1/models", key) == 403
    assert await authz_status(stack, f"/{server}/v1/models", token) == 403
    assert await authz_status(stack, "/servers", token) == 403
    await refused_within(lambda: gateway_status(stack, server, key))
    await refused_within(lambda: gateway_status(stack, server, token))
    # The token has not expired: only the disabling refuses it.
    listed = await stack.http.get(f"{stack.api}/users", headers=stack.auth("root"))
    assert {u["username"]: u["disabled_at"] is not None for u in listed.json()}["alice"]

    enabled = await stack.http.patch(
        f"{stack.api}/users/alice", headers=stack.auth("root"), json={"disabled": False}
    )
    assert enabled.status_code == 200 and enabled.json()["disabled_at"] is None
    start = time.monotonic()
    while await gateway_status(stack, server, key) != 503:
        assert time.monotonic() - start < PROMISE_SECONDS
        await asyncio.sleep(0.05)
    unknown = await stack.http.patch(
        f"{stack.api}/users/nobody", headers=stack.auth("root"), json={"disabled": True}
    )
    assert unknown.status_code == 404


async def test_who_sees_and_revokes_which_keys(db_stack: Any) -> None:
    stack = db_stack
    alices = await make_key(stack, "alice")
    bobs = await make_key(stack, "bob")
    mine = await stack.http.get(f"{stack.api}/keys", headers=stack.auth("bob"))
    assert [k["key_id"] for k in mine.json()] == [bobs["key_id"]]
    spying = await stack.http.get(f"{stack.api}/keys?owner=alice", headers=stack.auth("bob"))
    assert spying.status_code == 403
    theft = await stack.http.delete(
        f"{stack.api}/keys/{alices['key_id']}", headers=stack.auth("bob")
    )
    assert theft.status_code == 404
    every = await stack.http.get(f"{stack.api}/keys", headers=stack.auth("root"))
    assert {k["key_id"] for k in every.json()} == {alices["key_id"], bobs["key_id"]}
    by_admin = await stack.http.delete(
        f"{stack.api}/keys/{alices['key_id']}", headers=stack.auth("root")
    )
    assert by_admin.status_code == 200 and by_admin.json()["owner"] == "alice"

    unknown = await stack.http.post(
        f"{stack.api}/keys",
        headers=stack.auth("alice"),
        json={"name": "x", "server_uuid": str(uuid.uuid4())},
    )
    assert unknown.status_code == 404
    failed = await add_server(stack, ServerStatus.FAILED)
    gone = await stack.http.post(
        f"{stack.api}/keys",
        headers=stack.auth("alice"),
        json={"name": "x", "server_uuid": str(failed)},
    )
    assert gone.status_code == 409


async def test_only_users_own_keys(db_stack: Any) -> None:
    """An access token whose subject is no user (a deleted one) gets no key: the door
    refuses it before the keys route could."""
    token = db_stack.issuer.access_token("ci-service", Role.OPERATOR)
    answer = await db_stack.http.post(
        f"{db_stack.api}/keys", headers=bearer(token), json={"name": "x"}
    )
    assert answer.status_code == 401 and "does not exist" in answer.json()["detail"]


async def test_no_database_round_trip_per_request(db_stack: Any, db_engine: Any) -> None:
    """A spy on the engine's statements: credentials are read once per TTL, not per call."""
    stack = db_stack
    server = await add_server(stack)
    key = (await make_key(stack, "alice"))["key"]
    token = stack.token("alice")
    statements: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lowered = statement.lower()
        if "api_keys" in lowered or "from users" in lowered:
            statements.append(statement)

    event.listen(db_engine.sync_engine, "before_cursor_execute", spy)
    try:
        guard = stack.gateway_guard
        loads_before = guard.loads
        start = time.monotonic()
        answers = await asyncio.gather(
            *(gateway_status(stack, server, c) for c in [key, token] * 10)
        )
        for _ in range(10):
            answers += [await gateway_status(stack, server, key)]
            answers += [await gateway_status(stack, server, token)]
        elapsed = time.monotonic() - start
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", spy)
    assert answers == [503] * 40
    ttl = stack.settings.auth_cache_ttl_seconds
    most = 2 * (1 + int(elapsed / ttl) + 1)  # key and user, once per TTL that passed
    loads = guard.loads - loads_before
    assert 2 <= loads <= most, (loads, elapsed)
    assert len(statements) <= 2 * loads  # a load reads once (and may write last-used times)
    assert len(statements) < 40


async def test_last_used_is_written_in_batches(db_stack: Any) -> None:
    stack = db_stack
    server = await add_server(stack)
    made = await make_key(stack, "alice")
    assert made["last_used_at"] is None
    assert await gateway_status(stack, server, made["key"]) == 503
    listed = await stack.http.get(f"{stack.api}/keys", headers=stack.auth("alice"))
    assert listed.json()[0]["last_used_at"] is None  # not written by the request itself
    await stack.gateway_guard.flush()
    listed = await stack.http.get(f"{stack.api}/keys", headers=stack.auth("alice"))
    assert listed.json()[0]["last_used_at"] is not None
