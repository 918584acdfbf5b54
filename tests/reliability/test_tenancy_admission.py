"""Tenancy at the admission webhook: a ModelServe is its server owner's, for its own model.

The webhook is the operator's own, over TLS (integration/operator/test_admission.py's
fixture, Postgres behind it). Bob's server is recorded as the pipeline records it
(owner bob, namespace team-a). Each ModelServe below is refused, and the controls
(bob's own, an admin's) are admitted:

- mallory, an operator, names bob's server (her own token, or a pipeline token the
  pipeline made for her own serve of that UUID);
- bob's token, but in another namespace or under another name (a second
  ModelServe for one server: a second InferenceService, or a patch of the real one);
- another model's object or sha256 under bob's ``modelUuid`` (the contract judged
  one model, the pod would pull another);
- a GPU the contract does not grant (GPUs are granted, never assumed);
- a chat template read from a file on the runtime's host (``@path``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from integration.operator.conftest import api
from integration.operator.test_admission import (
    NAMESPACE,
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
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.reliability import Recorder

__all__ = ["api", "registered_webhooks", "webhook"]
pytestmark = pytest.mark.reliability("tenancy")


async def test_a_modelserve_must_be_its_owners_for_its_own_model(
    webhook: Webhook, reliability: Recorder
) -> None:
    engine = make_engine(webhook.settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    server = uuid.uuid4()
    async with sessions.begin() as session:
        for user, role in (("bob", Role.OPERATOR), ("mallory", Role.OPERATOR), ("ada", Role.ADMIN)):
            await create_user(session, user, f"{user}-password-123", role)
        await new_server(
            session,
            server_uuid=server,
            owner="bob",
            status=ServerStatus.APPLYING,
            namespace=NAMESPACE,
        )
    await engine.dispose()
    issuer = TokenIssuer.from_settings(webhook.settings)
    bob = issuer.access_token("bob", Role.OPERATOR)
    mallory = issuer.access_token("mallory", Role.OPERATOR)

    async def verdict(obj: dict[str, Any]) -> dict[str, Any]:
        return await answer(webhook, VALIDATE_ID, review(obj))

    # The controls: the owner's own, the pipeline's for the owner, and an admin's.
    for token in (
        bob,
        issuer.pipeline_token(server, subject="bob", role=Role.OPERATOR),
        issuer.access_token("ada", Role.ADMIN),
    ):
        result = await verdict(modelserve(token, server))
        assert result["allowed"] is True, result

    elsewhere = modelserve(bob, server)
    elsewhere["metadata"]["namespace"] = "team-b"
    renamed = modelserve(bob, server)
    renamed["metadata"]["name"] = "my-copy"
    cases: dict[str, tuple[str, dict[str, Any], int]] = {
        "another user's server": (
            "mallory's operator token on a ModelServe naming bob's serverUuid",
            modelserve(mallory, server),
            403,
        ),
        "another user's server, pipeline token": (
            "a pipeline token bound to bob's server but minted for mallory",
            modelserve(
                issuer.pipeline_token(server, subject="mallory", role=Role.OPERATOR), server
            ),
            403,
        ),
        "another namespace": (
            "bob's own token, the ModelServe in a namespace his server does not run in",
            elsewhere,
            403,
        ),
        "another name": ("bob's own token, a second ModelServe name for his server", renamed, 403),
        "another model's object": (
            "storageUri of another object under bob's modelUuid",
            modelserve(bob, server, storage_uri="s3://models/other/other.gguf"),
            422,
        ),
        "another model's sha256": (
            "a sha256 that is not the model record's",
            modelserve(bob, server, sha256="d" * 64),
            422,
        ),
        "no sha256": (
            "no sha256 at all: the runtime would verify nothing",
            modelserve(bob, server, sha256=None),
            422,
        ),
        "a GPU not granted": (
            "resources.gpus 1 under a contract that grants none",
            modelserve(bob, server, resources=ms.Resources(gpus=1)),
            422,
        ),
        "@path chat template": (
            "runtime.chatTemplate '@/var/run/secrets/kubernetes.io/serviceaccount/token'",
            modelserve(
                bob,
                server,
                runtime=ms.RuntimeParams.model_construct(  # raw YAML: no client check
                    chat_template="@/var/run/secrets/kubernetes.io/serviceaccount/token"
                ),
            ),
            422,
        ),
    }
    for name, (injected, _, _) in cases.items():
        reliability.case(
            f"admission: {name}",
            injected=injected,
            checked="allowed: false with its reason",
        )
    for name, (_, obj, code) in cases.items():
        result = await verdict(obj)
        assert result["allowed"] is False, (name, result)
        assert result["status"]["code"] == code, (name, result)
