"""The kopf operator against the real cluster: ModelServe -> InferenceService -> status.

The operator logs in as config/'s ``modelserve-operator`` ServiceAccount, with the
API server enforcing RBAC and OwnerReferencesPermissionEnforcement. The test
plays KServe's controller by writing the InferenceService's status.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import lifecycle
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.metrics import documented_names
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings
from support.databases import create_postgres_database, drop_postgres_database
from support.kube import ensure_namespace
from support.kubectl import KubeconfigFor
from support.operator_harness import running_operator
from support.postgres import PostgresServer
from support.records import new_server, wait_for_status
from support.scrape import exposed_names, fetch, value
from support.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.postgres]
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")


@pytest.fixture
async def env(
    api: client.ApiClient, kubeconfig_for: KubeconfigFor, postgres_server: PostgresServer
) -> AsyncIterator[tuple[Settings, async_sessionmaker[AsyncSession]]]:
    url = await create_postgres_database(postgres_server)
    engine = make_engine(url)
    await upgrade(engine)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=kubeconfig_for("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        public_base_url="https://models.example.test",
    )
    yield settings, make_sessionmaker(engine)
    await engine.dispose()
    await drop_postgres_database(postgres_server, url)


def modelserve_manifest(namespace: str) -> tuple[ms.ModelServeSpec, dict[str, Any]]:
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri="s3://models/demo/demo.gguf",
        sha256="b" * 64,
        runtime=ms.RuntimeParams(n_ctx=1024),
        resources=ms.Resources(cpu="2", memory="3Gi"),
        replicas=ms.Replicas(min=0, max=2),
    )
    return spec, ms.manifest(spec, namespace)


async def a_pending_modelserve(
    api: client.ApiClient, sessions: async_sessionmaker[AsyncSession]
) -> tuple[str, ms.ModelServeSpec]:
    """A fresh namespace, a ``pending`` server record and its ModelServe, as the
    apply step leaves them; returns the namespace and the spec."""
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    spec, manifest = modelserve_manifest(namespace)
    async with sessions.begin() as session:
        await new_server(session, server_uuid=spec.server_uuid, status=ServerStatus.PENDING)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest
    )
    return namespace, spec


def isvcs(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2]
    )["items"]
    return list(items)


async def test_modelserve_becomes_one_inference_service_and_follows_its_status(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    settings, sessions = env
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    spec, manifest = modelserve_manifest(namespace)
    async with sessions.begin() as session:
        await new_server(session, server_uuid=spec.server_uuid, status=ServerStatus.PENDING)
    objects = client.CustomObjectsApi(api)
    with running_operator(settings):
        created = objects.create_namespaced_custom_object(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest
        )
        (isvc,) = await eventually(lambda: isvcs(api, namespace))
        assert isvc["metadata"]["name"] == ms.resource_name(spec.server_uuid)
        (owner,) = isvc["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "ModelServe",
            created["metadata"]["name"],
            created["metadata"]["uid"],
        )
        assert owner["controller"] is True
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == "modelserve-llamacpp"
        assert model["modelFormat"]["name"] == "gguf"
        assert model["storageUri"] == "s3://models/demo/demo.gguf"
        assert model["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}
        assert (
            isvc["spec"]["predictor"]["minReplicas"],
            isvc["spec"]["predictor"]["maxReplicas"],
        ) == (0, 2)
        env_vars = {e["name"]: e.get("value") for e in model["env"]}
        assert env_vars["MODELSERVE_RUNTIME_N_CTX"] == "1024"

        await wait_for_status(sessions, spec.server_uuid, "loading", within=20)

        # KServe's controller reports the service ready.
        url = f"http://{isvc['metadata']['name']}.{namespace}.example.com"
        objects.patch_namespaced_custom_object_status(
            *ISVC[:2],
            namespace,
            ISVC[2],
            isvc["metadata"]["name"],
            {
                "status": {
                    "url": url,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "lastTransitionTime": "2026-11-22T00:00:00Z",
                        }
                    ],
                    "components": {"predictor": {"latestReadyRevision": "ms-x-predictor-00001"}},
                }
            },
        )

        def ready() -> dict[str, Any] | None:
            obj = objects.get_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, created["metadata"]["name"]
            )
            status = obj.get("status") or {}
            return obj if status.get("phase") == "Ready" else None

        status = (await eventually(ready))["status"]
        assert status["url"] == url
        assert status["predictorRevision"] == "ms-x-predictor-00001"
        assert status["gatewayUrl"] == f"https://models.example.test/{spec.server_uuid}"
        await wait_for_status(sessions, spec.server_uuid, "ready", within=20)
        async with sessions() as session:
            record = await repo.get_server(session, spec.server_uuid)
        assert record.internal_url == url and record.started_at is not None
        assert record.inference_service == isvc["metadata"]["name"]

        # Deleting the ModelServe deletes the InferenceService and says so.
        objects.delete_namespaced_custom_object(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, created["metadata"]["name"]
        )
        await eventually(lambda: not isvcs(api, namespace))

        def gone() -> bool:
            try:
                objects.get_namespaced_custom_object(
                    ms.GROUP, ms.VERSION, namespace, ms.PLURAL, created["metadata"]["name"]
                )
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        await eventually(gone)
        await wait_for_status(sessions, spec.server_uuid, "deleted", within=20)


async def test_operator_restarts_converge_without_a_second_inference_service(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    settings, _ = env
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    _, manifest = modelserve_manifest(namespace)
    objects = client.CustomObjectsApi(api)
    # Created while no operator runs: the first operator picks it up at start.
    objects.create_namespaced_custom_object(ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest)
    with running_operator(settings):
        (first,) = await eventually(lambda: isvcs(api, namespace))
    with running_operator(settings):  # killed and restarted: resumes, changes nothing
        await asyncio.sleep(2)
        (again,) = isvcs(api, namespace)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["spec"] == first["spec"]


async def test_operator_serves_its_reconciles_metrics(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    settings, _ = env
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    _, manifest = modelserve_manifest(namespace)
    objects = client.CustomObjectsApi(api)
    port = free_port()
    with running_operator(settings, metrics_address=("127.0.0.1", port)):
        objects.create_namespaced_custom_object(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest
        )
        await eventually(lambda: isvcs(api, namespace))
        url = f"http://127.0.0.1:{port}/metrics"

        def reconciled() -> str | None:
            text = fetch(url)
            ok = value(
                text, "modelserve_operator_reconciles_total", handler="reconcile", outcome="ok"
            )
            return text if ok else None

        text = await eventually(reconciled)
    assert exposed_names(text) == documented_names("operator")
    assert value(text, "modelserve_operator_reconciles_in_flight", handler="reconcile") == 0
    count = value(text, "modelserve_operator_reconcile_duration_seconds_count", handler="reconcile")
    assert count is not None and count >= 1
    changed = value(
        text,
        "modelserve_operator_reconciles_total",
        handler="inference_service_changed",
        outcome="ok",
    )
    assert changed is not None and changed >= 1  # the InferenceService it made was seen


SINCE = "2026-11-22T00:00:00Z"


def mark_ready(api: client.ApiClient, namespace: str, name: str, url: str) -> None:
    """KServe's part: report the InferenceService ready (no KServe controller runs
    in these tests yet)."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        *ISVC[:2],
        namespace,
        ISVC[2],
        name,
        {
            "status": {
                "url": url,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": SINCE},
                ],
            }
        },
    )


async def test_a_restarted_operator_reads_the_truth_from_the_inference_service(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    settings, sessions = env
    namespace, spec = await a_pending_modelserve(api, sessions)
    name = ms.resource_name(spec.server_uuid)
    objects = client.CustomObjectsApi(api)
    url = f"http://{name}.{namespace}.example.com"
    with running_operator(settings):
        (isvc,) = await eventually(lambda: isvcs(api, namespace))
        mark_ready(api, namespace, name, url)
        await wait_for_status(sessions, spec.server_uuid, "ready", within=20)
        # The operator dies having written a stale "loading" (as a crash mid-reconcile
        # would leave it).
    assert await lifecycle.move(sessions, spec.server_uuid, ServerStatus.LOADING)
    with running_operator(settings):  # nothing about the InferenceService changes
        record = await wait_for_status(sessions, spec.server_uuid, "ready", within=20)
    assert record.internal_url == url
    (same,) = isvcs(api, namespace)
    assert same["metadata"]["uid"] == isvc["metadata"]["uid"]

    # Removed while no operator ran: the next one makes it again.
    objects.delete_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name)
    await eventually(lambda: not isvcs(api, namespace))
    with running_operator(settings):
        (remade,) = await eventually(lambda: isvcs(api, namespace))
        assert remade["metadata"]["uid"] != isvc["metadata"]["uid"]
        await wait_for_status(sessions, spec.server_uuid, "loading", within=20)


async def test_a_deletion_with_nothing_left_in_the_cluster_is_finished(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    """The ModelServe was removed before the operator saw it: no delete handler runs,
    so the operator's sweep writes ``deleted``. A server being deleted whose
    ModelServe is still there gets no InferenceService and is left to its handler."""
    settings, sessions = env
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    spec, manifest = modelserve_manifest(namespace)
    async with sessions.begin() as session:
        orphan = await new_server(session, status=ServerStatus.DELETING)
        await new_server(session, server_uuid=spec.server_uuid, status=ServerStatus.DELETING)
    objects = client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest)
    with running_operator(settings):
        await wait_for_status(sessions, orphan, "deleted", within=30)
        await asyncio.sleep(1)
        assert isvcs(api, namespace) == []
        async with sessions() as session:
            assert (await repo.get_server(session, spec.server_uuid)).status == "deleting"


async def test_the_operator_migrates_a_fresh_database_before_it_reconciles(
    api: client.ApiClient, kubeconfig_for: KubeconfigFor, postgres_server: PostgresServer
) -> None:
    url = await create_postgres_database(postgres_server)  # empty: no tables at all
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=kubeconfig_for("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
    )
    namespace = ensure_namespace(api, f"ops-{secrets.token_hex(3)}")
    spec, manifest = modelserve_manifest(namespace)
    try:
        with running_operator(settings):
            async with sessions.begin() as session:  # the schema is there now
                await new_server(session, server_uuid=spec.server_uuid, status=ServerStatus.PENDING)
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest
            )
            await wait_for_status(sessions, spec.server_uuid, "loading", within=20)
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, url)


async def test_with_the_operator_gone_garbage_collection_removes_the_inference_service(
    api: client.ApiClient, env: tuple[Settings, async_sessionmaker[AsyncSession]]
) -> None:
    """The owner reference alone is enough: the operator is uninstalled (its
    finalizer removed by hand, as ``kubectl patch`` would), and the controller-manager's
    garbage collector, not our delete handler, removes the InferenceService. An
    operator installed again afterwards finishes the record."""
    settings, sessions = env
    namespace, spec = await a_pending_modelserve(api, sessions)
    name = ms.resource_name(spec.server_uuid)
    objects = client.CustomObjectsApi(api)
    with running_operator(settings):
        (isvc,) = await eventually(lambda: isvcs(api, namespace))
        await wait_for_status(sessions, spec.server_uuid, "loading", within=20)
    assert await lifecycle.move(sessions, spec.server_uuid, ServerStatus.DELETING)

    objects.delete_namespaced_custom_object(ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name)
    held = objects.get_namespaced_custom_object(ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name)
    assert held["metadata"]["finalizers"] == ["modelserve.dev/operator"]
    await asyncio.sleep(2)  # nobody runs the delete handler: the child stays
    assert [i["metadata"]["uid"] for i in isvcs(api, namespace)] == [isvc["metadata"]["uid"]]

    objects.patch_namespaced_custom_object(
        ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name, {"metadata": {"finalizers": None}}
    )
    await eventually(lambda: not isvcs(api, namespace), 60)
    async with sessions() as session:
        assert (await repo.get_server(session, spec.server_uuid)).status == "deleting"
    with running_operator(settings):
        await wait_for_status(sessions, spec.server_uuid, "deleted", within=30)
