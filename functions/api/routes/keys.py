"""API keys: make one (shown once), list them (never their secrets), revoke one.

A key belongs to the user who made it and opens one server, or every server its
owner may use (their own; every server for an admin). A key is bound only to a
server its maker owns, or by an admin: binding is how an owner lends one
server. Users see and revoke their own keys; an admin sees and revokes
all. A revocation here is seen at once by this replica's cache and within the
cache's TTL (at most 2 s) by every other replica.
"""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, HTTPException

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import Key, KeyBody, NewKey
from modelserve.shared.auth import apikeys
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import GONE, ServerStatus


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["keys"])
    viewer = deps.role(Role.VIEWER)

    @api.post("/keys", status_code=201, response_model=NewKey)
    async def create_key(body: KeyBody, claims: Claims = viewer) -> NewKey:
        """The key's plaintext is in this answer only; the database keeps its hash."""
        made = apikeys.new_key()
        expires = (
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=body.expires_in_seconds)
            if body.expires_in_seconds is not None
            else None
        )
        async with deps.sessions.begin() as session:
            if await repo.get_user(session, claims.subject) is None:
                raise HTTPException(403, f"{claims.subject!r} is not a user; only users own keys")
            if body.server_uuid is not None:
                try:
                    server = await repo.get_server(session, body.server_uuid)
                except repo.NotFound:
                    raise HTTPException(404, f"no server {body.server_uuid}") from None
                if ServerStatus(server.status) in GONE:
                    raise HTTPException(409, f"server {body.server_uuid} is {server.status}")
                if claims.role is not Role.ADMIN and server.owner != claims.subject:
                    raise HTTPException(
                        403, "a key can be bound only to a server its maker owns (or by an admin)"
                    )
            record = await repo.create_api_key(
                session,
                key_id=made.key_id,
                secret_hash=made.secret_hash,
                name=body.name,
                owner=claims.subject,
                server_uuid=body.server_uuid,
                expires_at=expires,
                tokens_per_day=body.tokens_per_day,
            )
            listed = Key.of(record)
        deps.guard.note_key(made.key_id)
        return NewKey(**listed.model_dump(), key=made.plaintext)

    @api.get("/keys", response_model=list[Key])
    async def list_keys(
        owner: str | None = None, server_uuid: uuid.UUID | None = None, claims: Claims = viewer
    ) -> list[Key]:
        """Your keys; an admin sees everyone's (``owner`` narrows it)."""
        if claims.role is not Role.ADMIN:
            if owner not in (None, claims.subject):
                raise HTTPException(403, "only an admin may list other users' keys")
            owner = claims.subject
        async with deps.sessions() as session:
            return [Key.of(k) for k in await repo.list_api_keys(session, owner, server_uuid)]

    @api.delete("/keys/{key_id}", response_model=Key)
    async def revoke_key(key_id: str, claims: Claims = viewer) -> Key:
        """Revoke a key (idempotent); it is refused everywhere within seconds."""
        async with deps.sessions.begin() as session:
            found = await repo.get_api_key(session, key_id)
            if found is None or (claims.role is not Role.ADMIN and found.owner != claims.subject):
                raise HTTPException(404, f"no key {key_id!r}")  # others' keys stay invisible
            revoked = Key.of(await repo.revoke_api_key(session, key_id))
        deps.guard.invalidate_key(key_id)
        return revoked

    return api
