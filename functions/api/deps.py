"""What the API's routers are built from: configuration and clients, made at the edge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from cloudevents.http import CloudEvent
from fastapi import Depends
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.logins import LoginGate
from modelserve.functions.api.security import requires
from modelserve.functions.api.series import Series
from modelserve.functions.appliers import Applier
from modelserve.functions.catalog.base import Catalog
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.db.models import Role
from modelserve.shared.metrics import ApiMetrics
from modelserve.shared.settings import Settings
from modelserve.shared.store.base import ObjectStore

Publish = Callable[[CloudEvent], Awaitable[None]]
# A server's last runtime log lines (the local backend's ``log_tail``).
RuntimeLogs = Callable[[UUID, int], Awaitable[list[str]]]


@dataclass
class ApiDeps:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    issuer: TokenIssuer
    verifier: TokenVerifier
    publish: Publish
    catalog: Catalog
    applier: Applier
    store: ObjectStore
    dashboard_dir: Path | None = None
    # The credential check with its short cache; built from the verifier when not
    # given. The embedded stack hands the API and the gateway the same one.
    access_guard: AccessGuard | None = None
    # What /metrics serves: the API's own, or (embedded stack) the whole process's.
    registry: CollectorRegistry | None = None
    # Where a server's charts come from: the embedded stack's memory, or Prometheus.
    series: Series | None = None
    # A server's runtime log: the local backend's files; None on Kubernetes (kubectl logs).
    runtime_logs: RuntimeLogs | None = None

    def __post_init__(self) -> None:
        self.guard: AccessGuard = self.access_guard or AccessGuard(
            self.verifier, self.sessions, ttl=self.settings.auth_cache_ttl_seconds
        )
        self.metrics_registry = self.registry or CollectorRegistry()
        self.metrics = ApiMetrics(self.metrics_registry)
        self.logins = LoginGate(self.settings)

    def role(self, role: Role) -> Any:
        """A FastAPI dependency that answers with the caller's claims, at least ``role``."""
        return Depends(requires(self.guard, role))
