"""The admission webhooks, registered from config/operator/webhooks.yaml and called by
the real API server, plus AdmissionReview requests sent to them directly.

The webhook gets its certificate from config/secrets/generate-webhook-cert.sh,
the API server trusts it through the caBundle injected from that script's CA (what
config/kustomization.yaml does), and reaches it through the Service named in
webhooks.yaml, routed to this host (support/webhook_route.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from kubernetes import client

from modelserve.operator.admission import MUTATE_ID, VALIDATE_ID
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import facts_of, inspect_gguf
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings
from support.databases import create_postgres_database, drop_postgres_database
from support.kube import KubeCluster, ensure_namespace
from support.kubectl import KubeconfigFor, kubectl
from support.operator_harness import running_operator
from support.postgres import PostgresServer
from support.procs import port_open
from support.toolchain import ROOT
from support.webhook_route import host_address, route_service_to_host

pytestmark = [pytest.mark.kube, pytest.mark.postgres]
MODEL = uuid.UUID("7a1f3c9e-1b2d-4c5e-8f90-0a1b2c3d4e5f")
SHA256 = "c" * 64  # MODEL's record
WEBHOOKS = ROOT / "config" / "operator" / "webhooks.yaml"
CERT_SCRIPT = ROOT / "config" / "secrets" / "generate-webhook-cert.sh"
SERVICE = "modelserve-operator-webhook"  # webhooks.yaml's clientConfig.service
NAMESPACE = "team-a"


@dataclass
class Webhook:
    url: str
    settings: Settings
    http: httpx.AsyncClient
    cluster: KubeCluster

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST as the API server does: to this host, verifying the Service's DNS name."""
        return await self.http.post(
            f"{self.url}/{path}",
            json=body,
            extensions={"sni_hostname": f"{SERVICE}.modelserve.svc"},
        )


@pytest.fixture(scope="module")
def registered_webhooks(
    api: client.ApiClient, kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int]]:
    """config/'s webhook configurations with the generated CA; removed at the end."""
    certs = tmp_path_factory.mktemp("webhook-certs")
    subprocess.run(["sh", str(CERT_SCRIPT), str(certs)], check=True, capture_output=True)
    bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    documents = [d for d in yaml.safe_load_all(WEBHOOKS.read_text()) if d]
    for document in documents:
        for hook in document["webhooks"]:
            assert hook["clientConfig"]["service"]["name"] == SERVICE
            hook["clientConfig"]["caBundle"] = bundle
    port = free_port()
    route_service_to_host(api, "modelserve", SERVICE, port, host_address())
    ensure_namespace(api, NAMESPACE)
    kubectl(
        kube_cluster.kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    yield certs, port
    for document in documents:
        kubectl(
            kube_cluster.kubeconfig,
            "delete",
            document["kind"].lower(),
            document["metadata"]["name"],
            "--ignore-not-found",
        )


@pytest.fixture
async def webhook(
    api: client.ApiClient,
    kube_cluster: KubeCluster,
    kubeconfig_for: KubeconfigFor,
    registered_webhooks: tuple[Path, int],
    postgres_server: PostgresServer,
    tiny_model: Path,
    tmp_path: Path,
) -> AsyncIterator[Webhook]:
    certs, port = registered_webhooks
    url = await create_postgres_database(postgres_server)
    contract = tmp_path / "contract.yaml"
    contract.write_text("limits: {max_replicas: 2}\nrole_overrides: {admin: {max_replicas: 8}}\n")
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=kubeconfig_for("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        contract_file=contract,
    )
    address = host_address()
    server = kopf.WebhookServer(
        addr=address,
        port=port,
        certfile=str(certs / "tls.crt"),
        pkeyfile=str(certs / "tls.key"),
    )
    engine = make_engine(url)
    with running_operator(settings, webhook=server):  # it migrates the fresh database
        info = inspect_gguf(tiny_model)
        async with make_sessionmaker(engine).begin() as session:
            await repo.get_or_create_model(
                session,
                model_uuid=MODEL,
                model_name="demo",
                object_path="demo/demo.gguf",
                sha256=SHA256,
                size_bytes=info.file_size,
                gguf=facts_of(info),
            )
        deadline = time.monotonic() + 20  # kopf is ready before its webhook server listens
        while not port_open(port, address):
            assert time.monotonic() < deadline, "the webhook server never listened"
            await asyncio.sleep(0.1)
        tls = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        async with httpx.AsyncClient(verify=tls, timeout=30) as http:
            yield Webhook(f"https://{address}:{port}", settings, http, kube_cluster)
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
        "storage_uri": "s3://models/demo/demo.gguf",  # MODEL's object, in settings.bucket
        "sha256": SHA256,  # and its sha256
    }
    values.update(spec)
    return ms.manifest(ms.ModelServeSpec.model_validate(values), NAMESPACE, auth_token=token)


async def answer(webhook: Webhook, hook: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await webhook.post(hook, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["response"]
    assert result["uid"] == body["request"]["uid"]
    return result


async def test_pipeline_token_and_contract_admit(
    webhook: Webhook,
) -> None:
    settings = webhook.settings
    server = uuid.uuid4()
    token = TokenIssuer.from_settings(settings).pipeline_token(
        server, subject="alice", role=Role.OPERATOR
    )
    result = await answer(webhook, VALIDATE_ID, review(modelserve(token, server)))
    assert result["allowed"] is True, result


@pytest.mark.parametrize("case", ["missing", "other-server", "viewer", "forged"])
async def test_bad_tokens_are_refused(webhook: Webhook, case: str) -> None:
    settings = webhook.settings
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    token = {
        "missing": None,
        "other-server": issuer.pipeline_token(uuid.uuid4(), subject="alice", role=Role.OPERATOR),
        "viewer": issuer.access_token("vic", Role.VIEWER),
        "forged": TokenIssuer.from_settings(
            load_settings(jwt_secret=secrets.token_hex(24))
        ).pipeline_token(server, subject="alice", role=Role.OPERATOR),
    }[case]
    result = await answer(webhook, VALIDATE_ID, review(modelserve(token, server)))
    assert result["allowed"] is False
    assert ms.AUTH_ANNOTATION in result["status"]["message"]
    assert result["status"]["code"] in (401, 403)


async def test_contract_is_judged_for_the_token_role(
    webhook: Webhook,
) -> None:
    settings = webhook.settings
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    big = {"replicas": ms.Replicas(min=1, max=5), "runtime": ms.RuntimeParams(n_ctx=9000)}
    refused = await answer(
        webhook,
        VALIDATE_ID,
        review(
            modelserve(
                issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR), server, **big
            )
        ),
    )
    assert refused["allowed"] is False and refused["status"]["code"] == 422
    message = refused["status"]["message"]
    assert "replicas: 5 replicas requested; the limit is 2" in message
    assert "context_length: 9000 tokens requested; the model was trained for 2048" in message
    admin = await answer(
        webhook,
        VALIDATE_ID,
        review(
            modelserve(
                issuer.pipeline_token(server, subject="alice", role=Role.ADMIN),
                server,
                replicas=ms.Replicas(min=1, max=5),
            )
        ),
    )
    assert admin["allowed"] is True, admin


async def test_unknown_model_and_metadata_only_updates(
    webhook: Webhook,
) -> None:
    settings = webhook.settings
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    unknown = modelserve(
        issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR),
        server,
        model_uuid=uuid.uuid4(),
    )
    result = await answer(webhook, VALIDATE_ID, review(unknown))
    assert result["allowed"] is False and "is not a mirrored model" in result["status"]["message"]
    # An update that only adds a finalizer passes, even with an expired/absent token.
    old = modelserve(None, server)
    new = json.loads(json.dumps(old))
    new["metadata"]["finalizers"] = ["modelserve.dev/operator"]
    result = await answer(webhook, VALIDATE_ID, review(new, "UPDATE", old))
    assert result["allowed"] is True
    # Changing the spec needs a valid token again.
    changed = json.loads(json.dumps(old))
    changed["spec"]["replicas"] = {"min": 0, "max": 2}
    result = await answer(webhook, VALIDATE_ID, review(changed, "UPDATE", old))
    assert result["allowed"] is False


async def test_mutating_webhook_fills_defaults(
    webhook: Webhook,
) -> None:
    server = uuid.uuid4()
    sparse = {
        "apiVersion": ms.API_VERSION,
        "kind": ms.KIND,
        "metadata": {"name": ms.resource_name(server), "namespace": NAMESPACE},
        "spec": {
            "serverUuid": str(server),
            "modelName": "demo",
            "storageUri": "s3://models/demo/demo.gguf",
            "resources": {"cpu": "2"},
        },
    }
    result = await answer(webhook, MUTATE_ID, review(sparse))
    assert result["allowed"] is True and result["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(result["patch"]))
    by_path = {op["path"]: op.get("value") for op in operations}
    assert by_path["/spec/replicas"] == {"min": 0, "max": 1}
    assert by_path["/spec/idleTimeoutSeconds"] == 600
    assert by_path["/spec/resources/memory"] == "2Gi"  # a default inside a given object
    assert "/spec/resources/cpu" not in by_path  # what was given stays
    labels = [op for op in operations if op["path"].startswith("/metadata/labels")]
    assert labels and str(server) in json.dumps(labels)


def kubectl_apply(webhook: Webhook, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` as the cluster admin: admission still runs for every user."""
    return kubectl(
        webhook.cluster.kubeconfig, "apply", "-f", "-", stdin=json.dumps(manifest), check=False
    )


async def test_the_api_server_refuses_a_modelserve_without_a_token(webhook: Webhook) -> None:
    result = await asyncio.to_thread(kubectl_apply, webhook, modelserve(None))
    assert result.returncode != 0
    assert 'admission webhook "validate.modelserve.dev" denied the request' in result.stderr
    assert ms.AUTH_ANNOTATION in result.stderr


async def test_the_api_server_refuses_a_modelserve_that_breaks_the_contract(
    webhook: Webhook,
) -> None:
    issuer = TokenIssuer.from_settings(webhook.settings)
    server = uuid.uuid4()
    token = issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR)
    big = modelserve(token, server, replicas=ms.Replicas(min=1, max=5))
    result = await asyncio.to_thread(kubectl_apply, webhook, big)
    assert result.returncode != 0
    assert "breaks the resource contract" in result.stderr
    assert "replicas: 5 replicas requested; the limit is 2" in result.stderr


async def test_the_api_server_stores_the_mutating_webhooks_defaults(
    webhook: Webhook, api: client.ApiClient
) -> None:
    issuer = TokenIssuer.from_settings(webhook.settings)
    server = uuid.uuid4()
    sparse = {
        "apiVersion": ms.API_VERSION,
        "kind": ms.KIND,
        "metadata": {
            "name": ms.resource_name(server),
            "namespace": NAMESPACE,
            "annotations": {
                ms.AUTH_ANNOTATION: issuer.pipeline_token(
                    server, subject="alice", role=Role.OPERATOR
                )
            },
        },
        "spec": {
            "serverUuid": str(server),
            "modelName": "demo",
            "modelUuid": str(MODEL),
            "storageUri": "s3://models/demo/demo.gguf",
            "sha256": SHA256,
        },
    }
    result = await asyncio.to_thread(kubectl_apply, webhook, sparse)
    assert result.returncode == 0, result.stderr
    stored = client.CustomObjectsApi(api).get_namespaced_custom_object(
        ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, ms.resource_name(server)
    )
    assert stored["spec"]["replicas"] == {"min": 0, "max": 1}
    assert stored["spec"]["idleTimeoutSeconds"] == 600
    assert stored["spec"]["resources"]["memory"] == "2Gi"
    assert stored["metadata"]["labels"][ms.SERVER_LABEL] == str(server)
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, ms.resource_name(server)
    )
