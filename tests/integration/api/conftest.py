"""The public API and the gateway on loopback, with real users in a real database."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.http import CloudEvent
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.api.series import Series
from modelserve.functions.appliers import LocalApplier
from modelserve.functions.catalog.local import LocalCatalog
from modelserve.functions.gateway import GatewayDeps, Wake, create_gateway
from modelserve.functions.usage import UsageRecorder
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.settings import Settings, load_settings
from modelserve.shared.store.base import ObjectStore
from modelserve.shared.store.factory import make_store
from support.asgi import serving

PASSWORDS = {
    "root": "root-password-123",
    "alice": "alice-password-1",
    "vic": "vic-password-12",
    "bob": "bob-password-123",
}
ROLES = {"root": Role.ADMIN, "alice": Role.OPERATOR, "vic": Role.VIEWER, "bob": Role.OPERATOR}


@dataclass
class Stack:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    issuer: TokenIssuer
    api: str
    gateway: str
    http: httpx.AsyncClient
    published: list[CloudEvent]
    wakes: list[Any] = field(default_factory=list)
    api_guard: AccessGuard | None = None
    gateway_guard: AccessGuard | None = None
    recorder: UsageRecorder | None = None
    api_app: Any = None

    def token(self, user: str) -> str:
        return self.issuer.access_token(user, ROLES[user])

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}


@pytest.fixture
async def stack_factory(tmp_path: Path, tiny_model: Path) -> AsyncIterator[Any]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(engine)
    default_sessions = make_sessionmaker(engine)
    seeded: set[int] = set()
    catalog = tmp_path / "catalog"
    await asyncio.to_thread(catalog.mkdir)
    await asyncio.to_thread(shutil.copyfile, tiny_model, catalog / "demo.gguf")
    contexts: list[Any] = []

    async def build(
        wake: Wake | None = None,
        store: ObjectStore | None = None,
        dashboard_dir: Path | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        series: Series | None = None,
        **settings_overrides: Any,
    ) -> Stack:
        """API and gateway on loopback; ``sessions`` picks another database (Postgres)."""
        sessions = sessions or default_sessions
        if id(sessions) not in seeded:
            seeded.add(id(sessions))
            async with sessions.begin() as session:
                for user, password in PASSWORDS.items():
                    await create_user(session, user, password, ROLES[user])
        settings = load_settings(
            mode="local",
            data_dir=tmp_path,
            jwt_secret=secrets.token_hex(24),
            public_base_url="http://gateway.test",
            **settings_overrides,
        )
        published: list[CloudEvent] = []

        async def publish(event: CloudEvent) -> None:
            published.append(event)

        issuer = TokenIssuer.from_settings(settings)
        verifier = TokenVerifier.from_settings(settings)
        http = httpx.AsyncClient(timeout=60)
        api_deps = ApiDeps(
            settings,
            sessions,
            issuer,
            verifier,
            publish,
            LocalCatalog(tmp_path / "catalog"),
            LocalApplier(tmp_path / "modelserves"),
            store or make_store(settings),
            dashboard_dir,
            series=series,
        )
        api_app = create_app(api_deps)
        wakes: list[Any] = []

        async def counted_wake(server: Any) -> str:
            wakes.append(server)
            assert wake is not None
            return await wake(server)

        gateway_deps = GatewayDeps(
            verifier,
            sessions,
            http,
            counted_wake if wake else None,
            auth_cache_ttl=settings.auth_cache_ttl_seconds,
            max_body_bytes=settings.max_body_bytes,
            metrics_token=(
                settings.metrics_token.get_secret_value() if settings.metrics_token else None
            ),
        )
        gateway_app = create_gateway(gateway_deps)
        api_cm, gateway_cm = serving(api_app), serving(gateway_app)
        api_url, gateway_url = await api_cm.__aenter__(), await gateway_cm.__aenter__()
        contexts.append((api_cm, gateway_cm, http))
        return Stack(
            settings,
            sessions,
            issuer,
            api_url,
            gateway_url,
            http,
            published,
            wakes,
            api_guard=api_deps.guard,
            gateway_guard=gateway_deps.guard,
            recorder=gateway_deps.recorder,
            api_app=api_app,
        )

    yield build
    for api_cm, gateway_cm, http in contexts:
        await gateway_cm.__aexit__(None, None, None)
        await api_cm.__aexit__(None, None, None)
        await http.aclose()
    await engine.dispose()


@pytest.fixture
async def stack(stack_factory: Any) -> Stack:
    built: Stack = await stack_factory()
    return built
