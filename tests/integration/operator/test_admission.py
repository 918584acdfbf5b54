"""The admission webhooks with real AdmissionReview requests over HTTPS."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from modelserve.operator.admission import MUTATE_ID, VALIDATE_ID
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import facts_of, inspect_gguf
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings
from support.databases import create_postgres_database, drop_postgres_database
from support.kube import KubeCluster
from support.operator_harness import running_operator
from support.postgres import PostgresServer
from support.procs import port_open

pytestmark = [pytest.mark.kube, pytest.mark.postgres]
MODEL = uuid.UUID("7a1f3c9e-1b2d-4c5e-8f90-0a1b2c3d4e5f")


@pytest.fixture
async def webhook(
    api: Any,
    kube_cluster: KubeCluster,
    postgres_server: PostgresServer,
    tiny_model: Path,
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Settings, httpx.AsyncClient]]:
    url = await create_postgres_database(postgres_server)
    engine = make_engine(url)
    await upgrade(engine)
    info = inspect_gguf(tiny_model)
    async with make_sessionmaker(engine).begin() as session:
        await repo.get_or_create_model(
            session,
            model_uuid=MODEL,
            model_name="demo",
            object_path="demo/demo.gguf",
            sha256="c" * 64,
            size_bytes=info.file_size,
            gguf=facts_of(info),
        )
    contract = tmp_path / "contract.yaml"
    contract.write_text("limits: {max_replicas: 2}\nrole_overrides: {admin: {max_replicas: 8}}\n")
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=kube_cluster.kubeconfig,
        jwt_secret=secrets.token_hex(24),
        contract_file=contract,
    )
    port = free_port()
    server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=port,
        host="127.0.0.1",
        certfile=str(kube_cluster.pki.server_cert),
        pkeyfile=str(kube_cluster.pki.server_key),
    )
    with running_operator(settings, webhook=server):
        deadline = time.monotonic() + 20  # kopf is ready before its webhook server listens
        while not port_open(port):
            assert time.monotonic() < deadline, "the webhook server never listened"
            await asyncio.sleep(0.1)
        tls = ssl.create_default_context(cafile=str(kube_cluster.pki.ca_cert))
        async with httpx.AsyncClient(verify=tls, timeout=30) as http:
            yield f"https://127.0.0.1:{port}", settings, http
    await engine.dispose()
    await drop_postgres_database(postgres_server, url)


def review(
    obj: dict[str, Any], operation: str = "CREATE", old: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": ms.GROUP, "version": ms.VERSION, "kind": ms.KIND},
            "resource": {"group": ms.GROUP, "version": ms.VERSION, "resource": ms.PLURAL},
            "requestKind": {"group": ms.GROUP, "version": ms.VERSION, "kind": ms.KIND},
            "operation": operation,
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "object": obj,
            "oldObject": old,
            "userInfo": {"username": "system:serviceaccount:modelserve:modelserve-functions"},
            "dryRun": False,
        },
    }


def modelserve(token: str | None, server: uuid.UUID | None = None, **spec: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "server_uuid": server or uuid.uuid4(),
        "model_name": "demo",
        "model_uuid": MODEL,
        "storage_uri": "s3://models/demo/demo.gguf",
    }
    values.update(spec)
    return ms.manifest(ms.ModelServeSpec.model_validate(values), "team-a", auth_token=token)


async def answer(
    http: httpx.AsyncClient, url: str, hook: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(f"{url}/{hook}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["response"]
    assert result["uid"] == body["request"]["uid"]
    return result


async def test_pipeline_token_and_contract_admit(
    webhook: tuple[str, Settings, httpx.AsyncClient],
) -> None:
    url, settings, http = webhook
    server = uuid.uuid4()
    token = TokenIssuer.from_settings(settings).pipeline_token(server, role=Role.OPERATOR)
    result = await answer(http, url, VALIDATE_ID, review(modelserve(token, server)))
    assert result["allowed"] is True, result


@pytest.mark.parametrize("case", ["missing", "other-server", "viewer", "forged"])
async def test_bad_tokens_are_refused(
    webhook: tuple[str, Settings, httpx.AsyncClient], case: str
) -> None:
    url, settings, http = webhook
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    token = {
        "missing": None,
        "other-server": issuer.pipeline_token(uuid.uuid4()),
        "viewer": issuer.access_token("vic", Role.VIEWER),
        "forged": TokenIssuer.from_settings(
            load_settings(jwt_secret=secrets.token_hex(24))
        ).pipeline_token(server),
    }[case]
    result = await answer(http, url, VALIDATE_ID, review(modelserve(token, server)))
    assert result["allowed"] is False
    assert ms.AUTH_ANNOTATION in result["status"]["message"]
    assert result["status"]["code"] in (401, 403)


async def test_contract_is_judged_for_the_token_role(
    webhook: tuple[str, Settings, httpx.AsyncClient],
) -> None:
    url, settings, http = webhook
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    big = {"replicas": ms.Replicas(min=1, max=5), "runtime": ms.RuntimeParams(n_ctx=9000)}
    refused = await answer(
        http,
        url,
        VALIDATE_ID,
        review(modelserve(issuer.pipeline_token(server, role=Role.OPERATOR), server, **big)),
    )
    assert refused["allowed"] is False and refused["status"]["code"] == 422
    message = refused["status"]["message"]
    assert "replicas: 5 replicas requested; the limit is 2" in message
    assert "context_length: 9000 tokens requested; the model was trained for 2048" in message
    admin = await answer(
        http,
        url,
        VALIDATE_ID,
        review(
            modelserve(
                issuer.pipeline_token(server, role=Role.ADMIN),
                server,
                replicas=ms.Replicas(min=1, max=5),
            )
        ),
    )
    assert admin["allowed"] is True, admin


async def test_unknown_model_and_metadata_only_updates(
    webhook: tuple[str, Settings, httpx.AsyncClient],
) -> None:
    url, settings, http = webhook
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    unknown = modelserve(issuer.pipeline_token(server), server, model_uuid=uuid.uuid4())
    result = await answer(http, url, VALIDATE_ID, review(unknown))
    assert result["allowed"] is False and "is not a mirrored model" in result["status"]["message"]
    # An update that only adds a finalizer passes, even with an expired/absent token.
    old = modelserve(None, server)
    new = json.loads(json.dumps(old))
    new["metadata"]["finalizers"] = ["modelserve.dev/operator"]
    result = await answer(http, url, VALIDATE_ID, review(new, "UPDATE", old))
    assert result["allowed"] is True
    # Changing the spec needs a valid token again.
    changed = json.loads(json.dumps(old))
    changed["spec"]["replicas"] = {"min": 0, "max": 2}
    result = await answer(http, url, VALIDATE_ID, review(changed, "UPDATE", old))
    assert result["allowed"] is False


async def test_mutating_webhook_fills_defaults(
    webhook: tuple[str, Settings, httpx.AsyncClient],
) -> None:
    url, _, http = webhook
    server = uuid.uuid4()
    sparse = {
        "apiVersion": ms.API_VERSION,
        "kind": ms.KIND,
        "metadata": {"name": ms.resource_name(server), "namespace": "team-a"},
        "spec": {
            "serverUuid": str(server),
            "modelName": "demo",
            "storageUri": "s3://models/demo/demo.gguf",
            "resources": {"cpu": "2"},
        },
    }
    result = await answer(http, url, MUTATE_ID, review(sparse))
    assert result["allowed"] is True and result["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(result["patch"]))
    by_path = {op["path"]: op.get("value") for op in operations}
    assert by_path["/spec/replicas"] == {"min": 0, "max": 1}
    assert by_path["/spec/idleTimeoutSeconds"] == 600
    assert by_path["/spec/resources/memory"] == "2Gi"  # a default inside a given object
    assert "/spec/resources/cpu" not in by_path  # what was given stays
    labels = [op for op in operations if op["path"].startswith("/metadata/labels")]
    assert labels and str(server) in json.dumps(labels)
