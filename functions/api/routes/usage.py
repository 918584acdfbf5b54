"""Token usage through the gateway: per minute, filtered by user, key, server and time.

Users see their own usage; an admin sees everyone's (``user`` narrows it). The
gateway writes the rows in batches, so the last couple of seconds may be missing.
"""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, HTTPException

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import Usage, UsageRow
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["usage"])
    viewer = deps.role(Role.VIEWER)

    @api.get("/usage", response_model=Usage)
    async def usage(
        user: str | None = None,
        key_id: str | None = None,
        server_uuid: uuid.UUID | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        claims: Claims = viewer,
    ) -> Usage:
        """Per-minute rows and their totals."""
        if claims.role is not Role.ADMIN:
            if user not in (None, claims.subject):
                raise HTTPException(403, "only an admin may see other users' usage")
            user = claims.subject
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise HTTPException(422, "since/until need a time zone (e.g. a trailing Z)")
        async with deps.sessions() as session:
            rows = [
                UsageRow.model_validate(r, from_attributes=True)
                for r in await repo.usage(
                    session,
                    username=user,
                    key_id=key_id,
                    server_uuid=server_uuid,
                    since=since,
                    until=until,
                )
            ]
        return Usage(
            rows=rows,
            requests=sum(r.requests for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
        )

    return api
