"""Tokens at the admission webhook: kopf's webhook server over TLS, as the API server calls it.

The webhook is the operator's own (integration/operator/test_admission.py's
fixture: config/'s webhook configuration, a generated CA, Postgres). A spy on
the model lookup, the first business step after the token check, proves that a
refused token never reached the contract.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import delete

from integration.operator.conftest import api
from integration.operator.test_admission import (
    Webhook,
    answer,
    modelserve,
    registered_webhooks,
    review,
    webhook,
)
from modelserve.operator.admission import VALIDATE_ID
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.auth.users import create_user
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.models import Role, User
from support.reliability import Recorder
from support.tokens import PIPELINE_DOOR_CASES, hostile_tokens

__all__ = [
    "api",
    "registered_webhooks",
    "webhook",
]
pytestmark = pytest.mark.reliability("tokens")
USERS = {"alice": Role.OPERATOR, "vic": Role.VIEWER, "dora": Role.OPERATOR, "dan": Role.OPERATOR}


async def test_hostile_tokens_at_the_admission_webhook(
    webhook: Webhook, reliability: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[uuid.UUID] = []
    real_get_model = repo.get_model

    async def spy(session: Any, model_uuid: uuid.UUID) -> Any:
        lookups.append(model_uuid)
        return await real_get_model(session, model_uuid)

    monkeypatch.setattr(repo, "get_model", spy)
    engine = make_engine(webhook.settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        for user, role in USERS.items():
            await create_user(session, user, f"{user}-password-123", role)
    issuer = TokenIssuer.from_settings(webhook.settings)
    server = uuid.uuid4()

    async def verdict(token: str | None) -> dict[str, Any]:
        return await answer(webhook, VALIDATE_ID, review(modelserve(token, server)))

    # The controls: the pipeline's token and an operator's are admitted, and looked up.
    for token in (
        issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR),
        issuer.access_token("alice", Role.OPERATOR),
    ):
        assert (await verdict(token))["allowed"] is True
    assert len(lookups) == 2
    dora = issuer.access_token("dora", Role.OPERATOR)
    dan = issuer.access_token("dan", Role.OPERATOR)
    assert (await verdict(dora))["allowed"] is True and (await verdict(dan))["allowed"] is True
    async with sessions.begin() as session:
        await repo.set_user_disabled(session, "dora", True)
        await session.execute(delete(User).where(User.username == "dan"))
    await engine.dispose()
    await asyncio.sleep(webhook.settings.auth_cache_ttl_seconds)
    lookups.clear()

    tokens = hostile_tokens(webhook.settings, issuer, server, door="pipeline")
    tokens.pop("access-token")  # an operator's access token is welcome here (see above)
    tokens["viewer"] = issuer.access_token("vic", Role.VIEWER)
    tokens["disabled-user"] = dora
    tokens["deleted-user"] = dan
    names = [c for c in PIPELINE_DOOR_CASES if c in tokens] + [
        "viewer",
        "disabled-user",
        "deleted-user",
    ]
    for case in names:
        reliability.case(
            f"admission webhook: {case}",
            injected=f"a ModelServe whose auth annotation holds a {case} token",
            checked="allowed: false with 401/403 naming the annotation; no model lookup",
        )
        result = await verdict(tokens[case])
        assert result["allowed"] is False, (case, result)
        assert result["status"]["code"] in (401, 403), (case, result)
        assert ms.AUTH_ANNOTATION in result["status"]["message"], (case, result)
    assert lookups == [], "a refused token reached the contract check"
