"""What every step gets: configuration and clients, built once at the edge."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cloudevents.http import CloudEvent
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.appliers import Applier
from modelserve.functions.catalog.base import Catalog
from modelserve.shared import events as ev
from modelserve.shared import lifecycle
from modelserve.shared.auth.tokens import Claims, TokenIssuer, TokenVerifier
from modelserve.shared.contract import ResourceContract
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.metrics import StepMetrics
from modelserve.shared.settings import Settings
from modelserve.shared.store.base import ObjectStore

Publish = Callable[[CloudEvent], Awaitable[None]]


class StepFailure(Exception):
    """The request cannot be served: the chain ends with serve.failed and this reason."""

    def __init__(self, reason: str, violations: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.violations = violations or []


class RetryLater(Exception):
    """A dependency is down or busy: answer 503 so the broker redelivers later."""


class Superseded(Exception):
    """The server moved on without this event (deleted, failed, or further along).

    The step stops where it is and its event is acked with no reply: redelivering
    it could never succeed, and going on would write over a newer truth. Nothing is
    recorded for it, so a twin delivery that did the work gives the event's answer.
    """

    def __init__(self, server: uuid.UUID, wanted: ServerStatus, current: ServerStatus) -> None:
        super().__init__(f"server {server} is {current.value}; not moving it to {wanted.value}")
        self.current = current


@dataclass
class StepContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore
    verifier: TokenVerifier
    issuer: TokenIssuer | None
    catalog: Catalog
    contract: ResourceContract
    applier: Applier
    http: httpx.AsyncClient
    publish: Publish | None = None
    # What the functions' /metrics serves (the embedded stack: the process's registry).
    # A field, not made in __post_init__: dataclasses.replace keeps the same one.
    metrics: StepMetrics = field(default_factory=lambda: StepMetrics(CollectorRegistry()))

    def requester(self, event: CloudEvent) -> Claims:
        """Who asked for this serve and with which role: the verified claims of the
        event's pipeline token (the runner verified it before the step ran), never the
        event's data, which any holder of a broker connection could have written."""
        return ev.verify_event(event, self.verifier)

    def token_for(self, event: CloudEvent) -> str | None:
        """A fresh pipeline token for the next event, bound to the same server, requester
        and role as the incoming one; or the incoming one if we can't sign."""
        if self.issuer is not None:
            claims = self.requester(event)
            assert claims.role is not None  # verify_pipeline refuses a token without one
            return self.issuer.pipeline_token(
                ev.subject_uuid(event), subject=claims.subject, role=claims.role
            )
        token = event.get(ev.TOKEN_ATTRIBUTE)
        return str(token) if token else None

    def reply(self, step: str, parent: CloudEvent, event_type: str, data: Any) -> CloudEvent:
        return ev.make_event(
            event_type,
            data,
            source=f"/modelserve/functions/{step}",
            subject=ev.subject_uuid(parent),
            token=self.token_for(parent),
            parent=parent,
        )

    async def advance(self, server: uuid.UUID, status: ServerStatus, **fields: Any) -> None:
        """Move the server on through the lifecycle, or raise Superseded when it may not."""
        moved = await lifecycle.move(self.sessions, server, status, **fields)
        if not moved:
            raise Superseded(server, status, moved.status)
