"""The gateway's caches: server routes and verified tokens, their expiry and invalidation.

No database read or JWT check per request is only safe if every change that
must refuse the next request drops what was kept: a status move (the lifecycle's
transition, told at its commit), a disabled or deleted user and a revoked key
(the guard's invalidation, which the API calls after its commit). Each test
holds the cache's clock still, so only the invalidation can explain a refusal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.gateway import Routes
from modelserve.shared import lifecycle
from modelserve.shared.auth import apikeys
from modelserve.shared.auth.errors import (
    DisabledUser,
    ExpiredToken,
    InvalidToken,
    RevokedKey,
    WrongAudience,
)
from modelserve.shared.auth.guard import VERIFIED_SECONDS, AccessGuard
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.cache import TtlCache
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role, User
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.settings import load_settings
from support.records import new_server

Sessions = async_sessionmaker[AsyncSession]


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingVerifier(TokenVerifier):
    """The real verifier, counting the signature checks it makes."""

    checks = 0

    def verify_for_server(
        self, token: Any, server_uuid: uuid.UUID, required: Role = Role.VIEWER
    ) -> Any:
        self.checks += 1
        return super().verify_for_server(token, server_uuid, required)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(engine)
    made = make_sessionmaker(engine)
    async with made.begin() as session:
        await create_user(session, "alice", "alice-password-1", Role.OPERATOR)
    yield made
    await engine.dispose()


@pytest.fixture
def issuer_verifier(tmp_path: Path) -> tuple[TokenIssuer, CountingVerifier]:
    settings = load_settings(
        mode="local",
        data_dir=tmp_path,
        jwt_secret=secrets.token_hex(32),
        public_base_url="http://x",
    )
    verifier = CountingVerifier.from_settings(settings)
    assert isinstance(verifier, CountingVerifier)
    return TokenIssuer.from_settings(settings), verifier


async def ready_server(sessions: Sessions) -> uuid.UUID:
    async with sessions.begin() as session:
        return await new_server(
            session, status=ServerStatus.READY, owner="alice", internal_url="http://runtime:8080"
        )


# --- server routes ---------------------------------------------------------------------


async def test_a_route_is_read_once_per_ttl(sessions: Sessions) -> None:
    clock = Clock()
    routes = Routes(sessions, ttl=1.0, clock=clock)
    server = await ready_server(sessions)
    for _ in range(5):
        route = await routes.get(server)
    assert (route.status, route.internal_url, routes.loads) == (
        ServerStatus.READY,
        "http://runtime:8080",
        1,
    )
    clock.now += 1.0
    await routes.get(server)
    assert routes.loads == 2  # expired: read again


async def test_a_committed_status_move_drops_the_route_at_once(sessions: Sessions) -> None:
    routes = Routes(sessions, ttl=3600.0, clock=Clock())
    server = await ready_server(sessions)
    assert (await routes.get(server)).status is ServerStatus.READY
    async with sessions() as session:  # a move rolled back tells nobody
        assert await lifecycle.transition(session, server, ServerStatus.IDLE)
        await session.rollback()
    assert (await routes.get(server)).status is ServerStatus.READY and routes.loads == 1
    await lifecycle.move(sessions, server, ServerStatus.FAILED, status_message="out of memory")
    route = await routes.get(server)
    assert (route.status, route.message, routes.loads) == (
        ServerStatus.FAILED,
        "out of memory",
        2,
    )
    await lifecycle.move(sessions, server, ServerStatus.DELETING)
    await lifecycle.move(sessions, server, ServerStatus.DELETED)
    route = await routes.get(server)
    assert (route.status, route.internal_url) == (ServerStatus.DELETED, None)


async def test_an_updated_record_drops_the_route_and_an_unknown_server_is_not_kept(
    sessions: Sessions,
) -> None:
    routes = Routes(sessions, ttl=3600.0, clock=Clock())
    server = await ready_server(sessions)
    await routes.get(server)
    async with sessions.begin() as session:
        await repo.update_server(session, server, internal_url="http://moved:8080")
    assert (await routes.get(server)).internal_url == "http://moved:8080"
    unknown = uuid.uuid4()
    for _ in range(2):
        with pytest.raises(repo.NotFound):
            await routes.get(unknown)
    assert routes.loads == 4


async def test_a_gone_gateway_is_not_told(sessions: Sessions) -> None:
    """The watcher list holds gateways weakly: tests and reloads build many."""
    from modelserve.shared.db import changes

    gc.collect()
    before = len(changes._watchers)
    kept = Routes(sessions, ttl=1.0)
    assert len(changes._watchers) == before + 1
    del kept
    gc.collect()
    assert len(changes._watchers) == before


async def test_a_load_overtaken_by_an_invalidation_is_not_kept() -> None:
    cache: TtlCache[str, str] = TtlCache(3600.0, Clock())
    release = asyncio.Event()
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        if len(loads) == 1:
            await release.wait()
            return "read before the change"
        return "read after the change"

    first = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    cache.invalidate("k")  # committed while the first read was in flight
    release.set()
    assert await first == "read before the change"  # its own caller gets it
    assert await cache.get("k", load) == "read after the change"
    assert loads == ["k", "k"]


# --- verified tokens -------------------------------------------------------------------


async def test_a_token_is_verified_once_per_server(
    sessions: Sessions, issuer_verifier: tuple[TokenIssuer, CountingVerifier]
) -> None:
    issuer, verifier = issuer_verifier
    guard = AccessGuard(verifier, sessions, ttl=1.0, clock=Clock())
    token, server, other = issuer.access_token("alice", Role.OPERATOR), uuid.uuid4(), uuid.uuid4()
    for _ in range(5):
        assert (await guard.for_server(token, server)).subject == "alice"
    assert verifier.checks == 1
    await guard.for_server(token, other)
    assert verifier.checks == 2  # another audience check: its own entry
    scoped = issuer.server_token(server, "ci-bot")
    await guard.for_server(scoped, server)
    with pytest.raises(WrongAudience):
        await guard.for_server(scoped, other)  # a scoped token stays scoped
    for _ in range(2):  # a refusal is never kept
        with pytest.raises(InvalidToken):
            await guard.for_server(token[:-4] + "AAAA", server)
    assert verifier.checks == 6


async def test_a_verified_token_is_kept_no_later_than_its_exp(
    sessions: Sessions, issuer_verifier: tuple[TokenIssuer, CountingVerifier]
) -> None:
    issuer, verifier = issuer_verifier
    guard = AccessGuard(verifier, sessions, ttl=1.0)  # the real clock: exp is wall time
    token = issuer.access_token("alice", Role.OPERATOR, ttl=dt.timedelta(seconds=2))
    server = uuid.uuid4()
    assert (await guard.for_server(token, server)).subject == "alice"
    assert VERIFIED_SECONDS > 2  # so only the token's exp can end the entry here
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(exp - time.time() + 0.05)
    with pytest.raises(ExpiredToken):
        await guard.for_server(token, server)


async def test_a_disabled_or_deleted_user_is_refused_from_the_next_request_on(
    sessions: Sessions, issuer_verifier: tuple[TokenIssuer, CountingVerifier]
) -> None:
    issuer, verifier = issuer_verifier
    clock = Clock()
    guard = AccessGuard(verifier, sessions, ttl=1.0, clock=clock)
    token, server = issuer.access_token("alice", Role.OPERATOR), uuid.uuid4()
    await guard.for_server(token, server)
    async with sessions.begin() as session:  # what PATCH /users/alice does
        await repo.set_user_disabled(session, "alice", True)
    guard.invalidate_user("alice")
    with pytest.raises(DisabledUser):
        await guard.for_server(token, server)
    async with sessions.begin() as session:
        await repo.set_user_disabled(session, "alice", False)
    guard.invalidate_user("alice")
    await guard.for_server(token, server)
    async with sessions.begin() as session:  # deleted by hand: no invalidation at all
        await session.execute(delete(User).where(User.username == "alice"))
    clock.now += 1.0  # the user cache's TTL, far short of the verified token's
    with pytest.raises(InvalidToken, match="does not exist"):
        await guard.for_server(token, server)


async def test_a_revoked_key_is_refused_from_the_next_request_on(
    sessions: Sessions, issuer_verifier: tuple[TokenIssuer, CountingVerifier]
) -> None:
    guard = AccessGuard(issuer_verifier[1], sessions, ttl=3600.0, clock=Clock())
    key, server = apikeys.new_key(), uuid.uuid4()
    async with sessions.begin() as session:
        await repo.create_api_key(
            session,
            key_id=key.key_id,
            secret_hash=key.secret_hash,
            name="ci",
            owner="alice",
            server_uuid=None,
            expires_at=None,
        )
    for _ in range(3):
        assert (await guard.for_server(key.plaintext, server)).key_id == key.key_id
    assert guard.loads == 1
    async with sessions.begin() as session:  # what DELETE /keys/<id> does
        await repo.revoke_api_key(session, key.key_id)
    guard.invalidate_key(key.key_id)
    with pytest.raises(RevokedKey):
        await guard.for_server(key.plaintext, server)
