"""config/'s RBAC is exactly what the operator and the functions use.

Each identity logs in with a token minted for its ServiceAccount of config/. The
granted set comes from ``kubectl auth can-i --list`` (less what every
authenticated user may do); the used set from the API server's audit log while
the code runs its whole path. A missing rule shows up as a 403, an excessive one
as a grant nobody used.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelserve.functions.appliers import KubernetesApplier
from modelserve.shared import modelserve as ms
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.settings import load_settings
from support import rbac
from support.databases import create_postgres_database, drop_postgres_database
from support.kube import KubeCluster, ensure_namespace
from support.kubectl import KubeconfigFor, kubectl
from support.operator_harness import running_operator
from support.postgres import PostgresServer
from support.records import new_server, wait_for_status
from support.waiting import eventually

pytestmark = [pytest.mark.kube]
NAMESPACE = "modelserve"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
OPERATOR = {
    ("modelserves.modelserve.dev", "list"),
    ("modelserves.modelserve.dev", "watch"),
    ("modelserves.modelserve.dev", "patch"),
    ("modelserves.modelserve.dev/status", "patch"),
    ("modelserves.modelserve.dev/finalizers", "update"),
    ("inferenceservices.serving.kserve.io", "list"),
    ("inferenceservices.serving.kserve.io", "watch"),
    ("inferenceservices.serving.kserve.io", "create"),
    ("inferenceservices.serving.kserve.io", "patch"),
    ("inferenceservices.serving.kserve.io", "delete"),
    ("customresourcedefinitions.apiextensions.k8s.io", "list"),
    ("customresourcedefinitions.apiextensions.k8s.io", "watch"),
    ("pods.metrics.k8s.io", "list"),
}
# Never a request of its own: OwnerReferencesPermissionEnforcement checks it when the
# operator creates an InferenceService that blocks its ModelServe's deletion.
IMPLIED = {("modelserves.modelserve.dev/finalizers", "update")}
FUNCTIONS = {
    ("modelserves.modelserve.dev", "create"),
    ("modelserves.modelserve.dev", "delete"),
}


def user(service_account: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{service_account}"


@pytest.fixture(scope="module")
def baseline(kube_cluster: KubeCluster, kubeconfig_for: KubeconfigFor) -> set[rbac.Permission]:
    """What a ServiceAccount with no bindings at all may do (discovery, self reviews)."""
    kubectl(kube_cluster.kubeconfig, "create", "serviceaccount", "nobody", f"-n={NAMESPACE}")
    return rbac.granted(kubeconfig_for("nobody"), NAMESPACE)


def test_can_i_list_names_exactly_what_each_service_account_needs(
    api: client.ApiClient, kubeconfig_for: KubeconfigFor, baseline: set[rbac.Permission]
) -> None:
    operator = rbac.granted(kubeconfig_for("modelserve-operator"), NAMESPACE) - baseline
    functions = rbac.granted(kubeconfig_for("modelserve-functions"), NAMESPACE) - baseline
    assert operator == OPERATOR
    assert functions == FUNCTIONS
    # The functions' Role is namespaced: nothing anywhere else.
    assert rbac.granted(kubeconfig_for("modelserve-functions"), "default") - baseline == set()


@pytest.mark.postgres
async def test_the_operator_uses_every_grant_and_is_refused_nothing(
    api: client.ApiClient,
    kube_cluster: KubeCluster,
    kubeconfig_for: KubeconfigFor,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kopf")  # as `modelserve operator` logs, Events on
    url = await create_postgres_database(postgres_server)
    engine = make_engine(url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=kubeconfig_for("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        public_base_url="https://models.example.test",
    )
    namespace = ensure_namespace(api, f"rbac-{secrets.token_hex(3)}")
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri="s3://models/demo/demo.gguf",
    )
    name = ms.resource_name(spec.server_uuid)
    async with sessions.begin() as session:
        await new_server(session, server_uuid=spec.server_uuid, status=ServerStatus.PENDING)
    objects = client.CustomObjectsApi(api)
    mark = kube_cluster.audit_mark()
    with running_operator(settings, post_events=True):
        objects.create_namespaced_custom_object(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, ms.manifest(spec, namespace)
        )

        def isvc() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = objects.get_namespaced_custom_object(
                    *ISVC[:2], namespace, ISVC[2], name
                )
            except ApiException:
                return None
            return found

        await eventually(isvc)
        await wait_for_status(sessions, spec.server_uuid, "loading", within=20)
        # A changed ModelServe spec is patched into the InferenceService.
        objects.patch_namespaced_custom_object(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name, {"spec": {"replicas": {"max": 3}}}
        )
        await eventually(
            lambda: (isvc() or {}).get("spec", {}).get("predictor", {}).get("maxReplicas") == 3
        )
        await asyncio.sleep(1.5)  # one metrics tick (metrics_interval=1)
        objects.delete_namespaced_custom_object(ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name)
        await eventually(lambda: isvc() is None)
        await wait_for_status(sessions, spec.server_uuid, "deleted", within=20)
    events = list(kube_cluster.audit_events(user("modelserve-operator"), since=mark))
    assert rbac.forbidden(events) == []
    assert rbac.used(events) == OPERATOR - IMPLIED
    await engine.dispose()
    await drop_postgres_database(postgres_server, url)


async def test_the_functions_use_every_grant_and_are_refused_nothing(
    api: client.ApiClient, kube_cluster: KubeCluster, kubeconfig_for: KubeconfigFor
) -> None:
    functions = config.new_client_from_config(
        config_file=str(kubeconfig_for("modelserve-functions"))
    )
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri="s3://models/demo/demo.gguf",
    )
    mark = kube_cluster.audit_mark()
    applier = KubernetesApplier(functions)
    manifest = ms.manifest(spec, NAMESPACE)
    assert (await applier.apply(manifest))[1] is True
    assert (await applier.apply(manifest))[1] is False  # redelivered
    assert await applier.delete(NAMESPACE, ms.resource_name(spec.server_uuid)) is True
    functions.close()
    events = list(kube_cluster.audit_events(user("modelserve-functions"), since=mark))
    assert rbac.forbidden(events) == []
    assert rbac.used(events) == FUNCTIONS


def test_blocking_the_owners_deletion_needs_the_finalizers_grant(
    api: client.ApiClient, kube_cluster: KubeCluster, kubeconfig_for: KubeconfigFor
) -> None:
    """Without ``modelserves/finalizers`` the operator's InferenceService is refused (403)."""
    namespace = ensure_namespace(api, f"rbac-{secrets.token_hex(3)}")
    rbac_api = client.RbacAuthorizationV1Api(api)
    role = rbac_api.read_cluster_role("modelserve-operator")
    kept = [r for r in role.rules if "modelserves/finalizers" not in (r.resources or [])]
    assert len(kept) == len(role.rules) - 1
    rbac_api.create_cluster_role(
        {"metadata": {"name": "operator-without-finalizers"}, "rules": kept}
    )
    kubectl(kube_cluster.kubeconfig, "create", "serviceaccount", "no-finalizers", f"-n={NAMESPACE}")
    kubectl(
        kube_cluster.kubeconfig,
        "create",
        "clusterrolebinding",
        "operator-without-finalizers",
        "--clusterrole=operator-without-finalizers",
        f"--serviceaccount={NAMESPACE}:no-finalizers",
    )
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri="s3://models/demo/demo.gguf",
    )
    owner = client.CustomObjectsApi(api).create_namespaced_custom_object(
        ms.GROUP, ms.VERSION, namespace, ms.PLURAL, ms.manifest(spec, namespace)
    )
    child = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": ms.API_VERSION,
                    "kind": ms.KIND,
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"predictor": {"model": {"modelFormat": {"name": "gguf"}}}},
    }
    for account, allowed in (("no-finalizers", False), ("modelserve-operator", True)):
        identity = config.new_client_from_config(config_file=str(kubeconfig_for(account)))
        try:
            objects = client.CustomObjectsApi(identity)
            if allowed:
                objects.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], child)
                continue
            with pytest.raises(ApiException) as refused:
                objects.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], child)
            assert refused.value.status == 403
            assert "cannot set blockOwnerDeletion" in str(refused.value.body)
        finally:
            identity.close()
