"""The start of every serve: the server record (``requested``) and its ``serve.requested``.

``POST /serve`` and the CloudEvents door call this; so do the tests and the
benchmarks that drive the pipeline without the API, so a run they start is the
one the API starts.
"""

from __future__ import annotations

import uuid

from cloudevents.http import CloudEvent
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import events as ev
from modelserve.shared import lifecycle
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.models import Role


async def open_serve(
    sessions: async_sessionmaker[AsyncSession],
    issuer: TokenIssuer,
    *,
    server: uuid.UUID,
    request: ev.ServeRequest,
    gateway_url: str,
    source: str,
) -> CloudEvent:
    """Record ``server`` for ``request`` and return the event that starts its pipeline
    (the caller publishes it: the API marks the server failed when that fails)."""
    async with sessions.begin() as session:
        await lifecycle.create(
            session,
            server_uuid=server,
            model_name=request.model,
            owner=request.requested_by,
            runtime_params=request.runtime_params,
            replicas=request.replicas,
            gateway_url=gateway_url,
        )
    return ev.make_event(
        ev.SERVE_REQUESTED,
        ev.ServeRequested(request=request),
        source=source,
        subject=server,
        token=issuer.pipeline_token(server, subject=request.requested_by, role=Role(request.role)),
    )
