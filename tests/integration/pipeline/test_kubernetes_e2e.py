"""Kubernetes mode end to end, up to the InferenceService.

The public API and the pipeline functions (functions-framework over HTTP, the
embedded broker with config/'s Triggers) run in Kubernetes mode with real
Postgres and MinIO; the apply step and the API log in as config/'s
``modelserve-functions`` ServiceAccount and the operator as
``modelserve-operator``. KServe's controller is not running: the InferenceService
is where this test stops.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.context_factory import make_applier, make_catalog
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db.models import Role
from modelserve.shared.settings import load_settings
from modelserve.shared.store.factory import make_store
from support import waiting
from support.asgi import serving
from support.kubectl import KubeconfigFor
from support.operator_harness import running_operator
from support.records import wait_for_status

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
NAMESPACE = "modelserve"


async def eventually(check: Callable[[], Any], within: float = 60, **how: Any) -> Any:
    """As support.waiting.eventually, with this file's longer default wait."""
    return await waiting.eventually(check, within, **how)


async def test_post_serve_ends_in_an_owned_inference_service_and_delete_removes_both(
    pipeline_factory: Any,
    tiny_gguf: bytes,
    modelserve_crds: client.ApiClient,
    kubeconfig_for: KubeconfigFor,
) -> None:
    api = modelserve_crds
    pipe = await pipeline_factory(
        mode="kubernetes",
        kubeconfig=kubeconfig_for("modelserve-functions"),
        public_base_url="https://models.example.test",
    )
    settings = pipe.settings
    pipe.upload_upstream("demo", tiny_gguf)
    broker = pipe.broker()
    async with pipe.sessions.begin() as session:
        await create_user(session, "alice", "alice-password-1", Role.OPERATOR)
    app = create_app(
        ApiDeps(
            settings,
            pipe.sessions,
            pipe.issuer,
            TokenVerifier.from_settings(settings),
            broker.publish,
            make_catalog(settings),
            make_applier(settings),
            make_store(settings),
            None,
        )
    )
    operator_settings = load_settings(
        mode="kubernetes",
        database_url=settings.database_url,
        kubeconfig=kubeconfig_for("modelserve-operator"),
        jwt_secret=settings.jwt_secret,
        public_base_url="https://models.example.test",
    )
    objects = client.CustomObjectsApi(api)
    auth = {"Authorization": f"Bearer {pipe.issuer.access_token('alice', Role.OPERATOR)}"}
    async with serving(app) as url:
        with running_operator(operator_settings):
            answer = await pipe.http.post(f"{url}/serve", json={"model": "demo"}, headers=auth)
            assert answer.status_code == 202, answer.text
            server = uuid.UUID(answer.json()["server_uuid"])
            name = ms.resource_name(server)
            async with asyncio.timeout(60):
                await broker.drain()
            assert not broker.dead

            def modelserve() -> dict[str, Any] | None:
                try:
                    found: dict[str, Any] = objects.get_namespaced_custom_object(
                        ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, name
                    )
                except ApiException:
                    return None
                return found

            def isvc() -> dict[str, Any] | None:
                try:
                    found: dict[str, Any] = objects.get_namespaced_custom_object(
                        *ISVC[:2], NAMESPACE, ISVC[2], name
                    )
                except ApiException:
                    return None
                return found

            owner = await eventually(modelserve)
            assert owner["spec"]["serverUuid"] == str(server)
            child = await eventually(isvc)
            (reference,) = child["metadata"]["ownerReferences"]
            assert (reference["kind"], reference["uid"]) == ("ModelServe", owner["metadata"]["uid"])
            assert reference["blockOwnerDeletion"] is True
            assert child["spec"]["predictor"]["model"]["storageUri"].endswith("demo.gguf")
            await wait_for_status(pipe.sessions, server, "loading", within=30)

            deleted = await pipe.http.delete(f"{url}/servers/{server}", headers=auth)
            assert deleted.status_code == 200, deleted.text
            await eventually(lambda: modelserve() is None)
            await eventually(lambda: isvc() is None)
