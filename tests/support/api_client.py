"""The real API app in-process, for tests that need one of its doors (DELETE)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from cloudevents.http import CloudEvent
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.api.deps import RuntimeLogs
from modelserve.functions.appliers import Applier
from modelserve.functions.catalog.local import LocalCatalog
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from modelserve.shared.settings import Settings
from modelserve.shared.store.base import ObjectStore
from modelserve.shared.store.factory import make_store


@dataclass
class Api:
    http: httpx.AsyncClient
    token: str
    issuer: TokenIssuer  # for tokens of other users and roles

    async def delete(self, server: uuid.UUID) -> dict[str, Any]:
        """``DELETE /servers/{uuid}`` as an admin; the server as the API answers."""
        response = await self.http.delete(
            f"/servers/{server}", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def in_process_api(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    applier: Applier,
    store: ObjectStore | None = None,
    runtime_logs: RuntimeLogs | None = None,
) -> AsyncIterator[Api]:
    async def publish(event: CloudEvent) -> None:
        raise AssertionError("these tests deliver pipeline events themselves")

    # The admin the token speaks for is a real user: the API refuses a deleted user's.
    async with sessions.begin() as session:
        if await repo.get_user(session, "root") is None:
            await create_user(session, "root", secrets.token_urlsafe(16), Role.ADMIN)

    issuer = TokenIssuer.from_settings(settings)
    app = create_app(
        ApiDeps(
            settings,
            sessions,
            issuer,
            TokenVerifier.from_settings(settings),
            publish,
            LocalCatalog(settings.data_dir / "no-catalog"),
            applier,
            store or make_store(settings),
            runtime_logs=runtime_logs,
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as http:
        yield Api(http, issuer.access_token("root", Role.ADMIN), issuer)
