"""Property-based requests generated from the API's own OpenAPI schema: never a 5xx."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.appliers import LocalApplier
from modelserve.functions.catalog.local import LocalCatalog
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.settings import load_settings
from modelserve.shared.store.factory import make_store

ADMIN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("schemathesis")
    settings_ = load_settings(mode="local", data_dir=root, jwt_secret=secrets.token_hex(24))
    engine = make_engine(settings_.resolved_database_url)
    sessions = make_sessionmaker(engine)

    async def prepare() -> None:
        await upgrade(engine)
        async with sessions.begin() as session:
            await create_user(session, "root", "root-password-123", Role.ADMIN)

    asyncio.run(prepare())

    async def publish(event: Any) -> None:
        return None

    issuer = TokenIssuer.from_settings(settings_)
    ADMIN["Authorization"] = f"Bearer {issuer.access_token('root', Role.ADMIN)}"
    app = create_app(
        ApiDeps(
            settings_,
            sessions,
            issuer,
            TokenVerifier.from_settings(settings_),
            publish,
            LocalCatalog(Path(root) / "catalog"),
            LocalApplier(Path(root) / "modelserves"),
            make_store(settings_),
        )
    )
    # /events is an endless stream by design; everything else is generated.
    yield schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/events")


def test_no_server_errors(api_schema: Any) -> None:
    # schemathesis' own pytest loader (from_fixture) does not run under pytest 9, so
    # each operation's strategy is driven with Hypothesis directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_5xx(case: Any) -> None:
            for headers in (ADMIN, {}):  # as an admin, and without a token
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
                )

        no_5xx()
