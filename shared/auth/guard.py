"""Every door's credential check: a JWT or an API key, and whether its user is disabled.

Why a cache, and why this one. A revoked key, an expired one, or any credential
of a disabled user must be refused within 2 seconds on every replica of the API,
the gateway and ``/auth``, without a database round trip per request. There is no
shared bus between replicas that works on both platforms (SQLite has no
LISTEN/NOTIFY; Knative replicas come and go), so each replica keeps what it read
about a key or a user for ``ttl`` seconds (default 1, at most 2) and then reads it
again. That bounds staleness to ``ttl`` everywhere with one query per key (or
user) in use per replica per ``ttl``, whatever the request rate; concurrent
misses share one load. The replica that revokes or disables drops its entry at
once (``invalidate_*``), so there the refusal is immediate.

Last-used times are noted in memory and written in batches (with the next load,
or ``flush``), never by the request itself.

A JWT's signature and claims are checked once per token and server, not per
request (the gateway's hot path: PyJWT's HMAC check alone cost a tenth of its
time): the result is kept until the token's ``exp``, at most
``VERIFIED_SECONDS``, in a bounded map. Only the verification is kept; whether
its user is disabled or gone is still asked of the user cache on every request,
so a disabled user is refused exactly as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.auth import apikeys
from modelserve.shared.auth.errors import (
    DisabledUser,
    ExpiredToken,
    Forbidden,
    InvalidToken,
    MissingToken,
    RevokedKey,
)
from modelserve.shared.auth.tokens import Claims, TokenKind, TokenVerifier
from modelserve.shared.cache import MAX_ENTRIES, TtlCache
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role

# A verified JWT is trusted again without its signature check for at most this long
# (and never past its exp): a key removed from a JWKS stops its tokens within it.
VERIFIED_SECONDS = 60.0
# Key ids missing from the guard's index looked up one by one per ttl (a key made
# on another replica a moment ago); random ids past these cost nothing.
UNINDEXED_LOOKUPS = 8


@dataclass(frozen=True)
class Budget:
    """A tokens-per-UTC-day limit on a key (``scope`` "key") or a user ("user")."""

    scope: str
    name: str
    tokens_per_day: int


@dataclass(frozen=True)
class Principal:
    """Who a verified credential speaks for at a server's door."""

    subject: str
    kind: str  # "access", "server" (a JWT of those kinds) or "key"
    role: Role | None
    key_id: str | None = None
    budgets: tuple[Budget, ...] = ()
    bound_to: uuid.UUID | None = None  # the one server a key is bound to


@dataclass(frozen=True)
class UserState:
    disabled: bool
    tokens_per_day: int | None
    role: Role = Role.VIEWER
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class KeyState:
    """What the database said about a key and its owner when last read."""

    secret_hash: str
    owner: str
    owner_role: Role
    owner_disabled: bool
    server_uuid: uuid.UUID | None
    expires_at: dt.datetime | None
    revoked: bool
    key_budget: int | None = None
    owner_budget: int | None = None


class AccessGuard:
    """Verifies a bearer credential and refuses revoked, expired and disabled ones."""

    def __init__(
        self,
        verifier: TokenVerifier,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verifier = verifier
        self._sessions = sessions
        self._keys: TtlCache[str, KeyState | None] = TtlCache(ttl, clock)
        self._users: TtlCache[str, UserState | None] = TtlCache(ttl, clock)
        # server -> its owner ("" for none, None: no such server yet), for who may use it.
        self._owners: TtlCache[uuid.UUID, str | None] = TtlCache(ttl, clock)
        self._verified: dict[tuple[str, uuid.UUID], tuple[float, Claims]] = {}
        # Every key id that exists, read at most once per ``ttl``: a random well-formed
        # key costs no query of its own and never takes a place in the key cache.
        self._ttl = ttl
        self._key_ids: frozenset[str] = frozenset()
        self._key_ids_read = float("-inf")
        self._key_ids_lock = asyncio.Lock()
        self._lookups_left = 0
        self.index_loads = 0
        self._clock = clock
        self._used: dict[str, dt.datetime] = {}
        self.loads = 0  # database round trips for credentials, for tests and metrics

    # --- the doors ------------------------------------------------------------------

    async def access(self, token: str | None, required: Role = Role.VIEWER) -> Claims:
        """The API's check: a user access token of an enabled user with ``required``."""
        if apikeys.looks_like_key(token):
            raise InvalidToken("API keys open server endpoints only; the API needs a token")
        claims = self.verifier.verify_access(token)
        user = await self._refuse_disabled(claims.subject, must_exist=True)
        assert user is not None  # must_exist
        claims = _current(claims, user)
        if claims.role is None or not claims.role.allows(required):
            role = claims.role.value if claims.role else None
            raise Forbidden(f"role {role!r} may not do this; needs {required.value!r}")
        return claims

    async def for_server(self, token: str | None, server: uuid.UUID) -> Principal:
        """The gateway's and ``/auth``'s check for one server: a key or a JWT.

        The one rule of who may use a server (open, wake, call it), the same at
        every door: its owner, an admin, or a credential issued for exactly that
        server (a key bound to it, which only its owner or an admin can make, or
        a server-scoped token, which only the platform's signer makes). A viewer
        token or an unscoped key of another user is refused with 403. A server
        not known (yet) passes here; the gateway then answers 404.
        """
        if token is not None and apikeys.looks_like_key(token):
            who = await self._key(token, server)
            bound = who.bound_to == server
        else:
            claims = self._verified_for_server(token, server)
            user = await self._refuse_disabled(
                claims.subject, must_exist=claims.kind is TokenKind.ACCESS
            )
            budgets = _budgets(None, None, claims.subject, user.tokens_per_day if user else None)
            if claims.kind is TokenKind.SERVER:
                who, bound = Principal(claims.subject, "server", None, None, budgets), True
            else:
                role = _current(claims, user).role if user is not None else claims.role
                who, bound = Principal(claims.subject, "access", role, None, budgets), False
        if not bound and who.role is not Role.ADMIN:
            owner = await self._owners.get(server, self._load_owner)
            if owner is not None and owner != who.subject:
                raise Forbidden(
                    f"server {server} is another user's: only its owner, an admin, or a key "
                    "or token issued for that server may use it"
                )
        return who

    # --- invalidation (the replica that made the change) ----------------------------

    def invalidate_key(self, key_id: str) -> None:
        self._keys.invalidate(key_id)

    def note_key(self, key_id: str) -> None:
        """A key this replica just made: known at once, not at the index's next read."""
        self._key_ids = self._key_ids | {key_id}

    def invalidate_user(self, username: str) -> None:
        self._users.invalidate(username)
        self._keys.invalidate_where(lambda state: state is not None and state.owner == username)
        for key in [k for k, (_, c) in list(self._verified.items()) if c.subject == username]:
            self._verified.pop(key, None)

    async def flush(self) -> None:
        """Write the last-used times noted since the last batch."""
        if not self._used:
            return
        used, self._used = self._used, {}
        async with self._sessions.begin() as session:
            await repo.touch_api_keys(session, used)

    # --- internals --------------------------------------------------------------------

    def _verified_for_server(self, token: str | None, server: uuid.UUID) -> Claims:
        """``verify_for_server``, its success remembered per (token, server) until exp."""
        if token is None:
            return self.verifier.verify_for_server(token, server)  # raises MissingToken
        now = self._clock()
        if (hit := self._verified.get((token, server))) is not None:
            if now < hit[0]:
                return hit[1]
            self._verified.pop((token, server), None)
        claims = self.verifier.verify_for_server(token, server)  # a refusal raises: not kept
        left = (claims.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        if len(self._verified) >= MAX_ENTRIES:
            self._verified.clear()  # crude but bounded, like the other caches
        self._verified[(token, server)] = (now + min(left, VERIFIED_SECONDS), claims)
        return claims

    async def _key(self, token: str, server: uuid.UUID) -> Principal:
        parsed = apikeys.parse(token)
        if parsed is None:
            raise InvalidToken("the API key is malformed")
        key_id, secret = parsed
        if not await self._key_exists(key_id):
            raise InvalidToken("the API key is not valid")
        state = await self._keys.get(key_id, self._load_key)
        if state is None or not apikeys.secret_matches(state.secret_hash, secret):
            raise InvalidToken("the API key is not valid")
        if state.revoked:
            raise RevokedKey("the API key was revoked")
        if state.expires_at is not None and state.expires_at <= dt.datetime.now(dt.UTC):
            raise ExpiredToken("the API key has expired")
        if state.owner_disabled:
            raise DisabledUser(f"user {state.owner!r} is disabled")
        if state.server_uuid is not None and state.server_uuid != server:
            raise Forbidden(f"the API key is scoped to another server, not {server}")
        self._used[key_id] = dt.datetime.now(dt.UTC)
        budgets = _budgets(key_id, state.key_budget, state.owner, state.owner_budget)
        return Principal(state.owner, "key", state.owner_role, key_id, budgets, state.server_uuid)

    async def _refuse_disabled(self, username: str, *, must_exist: bool) -> UserState | None:
        """Refuse a disabled user; and a deleted one where the token speaks for a user.

        Access tokens are only ever issued to users (login, the CLI, the stack's
        admin), so one whose user is gone is a deleted user's and is refused from
        the next read on, not at its expiry. Server-scoped tokens may name a
        service (``ci-bot``) that has no user row.
        """
        user = await self._users.get(username, self._load_user)
        if user is None and must_exist:
            raise InvalidToken(f"user {username!r} does not exist (any more)")
        if user is not None and user.disabled:
            raise DisabledUser(f"user {username!r} is disabled")
        return user

    async def _load_key(self, key_id: str) -> KeyState | None:
        self.loads += 1
        await self.flush()
        async with self._sessions() as session:
            found = await repo.api_key_with_owner(session, key_id)
        if found is None:
            return None
        key, owner = found
        return KeyState(
            secret_hash=key.secret_hash,
            owner=key.owner,
            owner_role=Role(owner.role),
            owner_disabled=owner.disabled_at is not None,
            server_uuid=key.server_uuid,
            expires_at=key.expires_at,
            revoked=key.revoked_at is not None,
            key_budget=key.tokens_per_day,
            owner_budget=owner.tokens_per_day,
        )

    async def _key_exists(self, key_id: str) -> bool:
        """Whether ``key_id`` may exist, with no query of its own for most unknown ids.

        The index of every key id is read again at most once per ``ttl``. An id
        not in it may be a key another replica made since: up to
        ``UNINDEXED_LOOKUPS`` such ids per ``ttl`` are looked up one by one
        (and noted when found); past that an unknown id is refused unread.
        """
        if key_id in self._key_ids:
            return True
        async with self._key_ids_lock:  # concurrent misses share one read
            if key_id in self._key_ids:
                return True
            if self._clock() >= self._key_ids_read + self._ttl:
                self.index_loads += 1
                async with self._sessions() as session:
                    self._key_ids = await repo.api_key_ids(session)
                self._key_ids_read = self._clock()
                self._lookups_left = UNINDEXED_LOOKUPS
                return key_id in self._key_ids
            if self._lookups_left > 0:
                self._lookups_left -= 1
                found = await self._load_key(key_id)
                if found is not None:
                    self.note_key(key_id)
                return found is not None
        return False

    async def _load_owner(self, server: uuid.UUID) -> str | None:
        """The server's owner; "" for a record nobody owns (only admins may use it)."""
        async with self._sessions() as session:
            try:
                return (await repo.get_server(session, server)).owner or ""
            except repo.NotFound:
                return None

    async def _load_user(self, username: str) -> UserState | None:
        """None: no such user (a service's own token)."""
        self.loads += 1
        async with self._sessions() as session:
            user = await repo.get_user(session, username)
            if user is None:
                return None
            return UserState(
                user.disabled_at is not None,
                user.tokens_per_day,
                Role(user.role),
                user.created_at,
            )


def _current(claims: Claims, user: UserState) -> Claims:
    """An access token's claims with the role the user has now, read from their record.

    A demoted user's old tokens lose the role at once (within the user cache's
    TTL), and a token issued before its user was (re)created is not theirs.
    """
    issued = claims.raw.get("iat")
    created = user.created_at
    if created is not None and isinstance(issued, int | float):
        created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
        if issued < int(created.timestamp()):
            raise InvalidToken("the token was issued before its user was (re)created")
    return dataclasses.replace(claims, role=user.role)


def _budgets(
    key_id: str | None, key_limit: int | None, user: str, user_limit: int | None
) -> tuple[Budget, ...]:
    found = []
    if key_id is not None and key_limit is not None:
        found.append(Budget("key", key_id, key_limit))
    if user_limit is not None:
        found.append(Budget("user", user, user_limit))
    return tuple(found)


__all__ = ["AccessGuard", "MissingToken", "Principal"]
