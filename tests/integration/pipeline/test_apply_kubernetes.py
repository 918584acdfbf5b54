"""The apply step's Kubernetes applier against the real cluster with the ModelServe CRD.

The applier logs in as config/'s ``modelserve-functions`` ServiceAccount (a token
the API server minted), so it has exactly the RBAC a cluster gives the functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelserve.functions.appliers import ApplyError, KubernetesApplier
from modelserve.shared import modelserve as ms
from support.kube import KubeCluster
from support.kubectl import KubeconfigFor, kubectl

pytestmark = pytest.mark.kube
NAMESPACE = "modelserve"  # the settings' default, and where config/'s Role applies


@pytest.fixture(scope="module")
def api(modelserve_crds: client.ApiClient, config_rbac: None) -> client.ApiClient:
    """The cluster admin: reads back what the functions wrote."""
    return modelserve_crds


@pytest.fixture(scope="module")
def functions_api(kubeconfig_for: KubeconfigFor) -> Iterator[client.ApiClient]:
    """The functions' own identity."""
    api_client = config.new_client_from_config(
        config_file=str(kubeconfig_for("modelserve-functions"))
    )
    yield api_client
    api_client.close()


def spec(**overrides: object) -> ms.ModelServeSpec:
    values: dict[str, object] = {
        "server_uuid": uuid.uuid4(),
        "model_name": "demo",
        "model_uuid": uuid.uuid4(),
        "storage_uri": "s3://models/demo/demo.gguf",
        "sha256": "a" * 64,
        "runtime": ms.RuntimeParams(n_ctx=512),
        "resources": ms.Resources(cpu="500m", memory="1Gi"),
        "replicas": ms.Replicas(min=0, max=2),
    }
    values.update(overrides)
    return ms.ModelServeSpec.model_validate(values)


async def test_apply_creates_one_modelserve_and_deletes_it(
    api: client.ApiClient, functions_api: client.ApiClient
) -> None:
    applier = KubernetesApplier(functions_api)
    wanted = spec()
    manifest = ms.manifest(wanted, NAMESPACE, auth_token="token-123")
    resource, created = await applier.apply(manifest)
    assert (resource, created) == (f"{NAMESPACE}/{ms.resource_name(wanted.server_uuid)}", True)
    assert (await applier.apply(manifest))[1] is False  # a redelivery is not an error

    objects = client.CustomObjectsApi(api)
    listed = objects.list_namespaced_custom_object(ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL)
    ours = [i for i in listed["items"] if i["spec"]["serverUuid"] == str(wanted.server_uuid)]
    assert len(ours) == 1
    stored = ours[0]
    assert ms.spec_of(stored) == wanted
    assert stored["metadata"]["annotations"][ms.AUTH_ANNOTATION] == "token-123"
    assert stored["metadata"]["labels"][ms.SERVER_LABEL] == str(wanted.server_uuid)

    # DELETE /servers/{uuid} deletes it with the same identity (config/ must allow it).
    assert await applier.delete(NAMESPACE, ms.resource_name(wanted.server_uuid)) is True
    assert await applier.delete(NAMESPACE, ms.resource_name(wanted.server_uuid)) is False


async def test_the_functions_may_not_write_elsewhere(functions_api: client.ApiClient) -> None:
    manifest = ms.manifest(spec(), "default")
    with pytest.raises(ApplyError, match="403"):
        await KubernetesApplier(functions_api).apply(manifest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"storageUri": "http://elsewhere/x.gguf"}, "storageUri"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"replicas": {"min": 3, "max": 1}}, "replicas.min must not exceed replicas.max"),
        ({"runtime": {"nCtx": 4}}, "nCtx"),
        ({"resources": {"memory": "lots"}}, "memory"),
        ({"runtime": {"chatTemplate": "@/etc/passwd"}}, "'@path'"),
        ({"runtime": {"typeK": "q4_K_M"}}, "typeK"),
    ],
    ids=["storage-uri", "sha256", "replicas", "n-ctx", "memory", "template-at-path", "type-k"],
)
async def test_malformed_spec_is_refused_by_the_api_server(
    functions_api: client.ApiClient, change: dict[str, object], message: str
) -> None:
    manifest = ms.manifest(spec(), NAMESPACE)
    manifest["spec"].update(change)
    with pytest.raises(ApplyError, match="422") as refused:
        await KubernetesApplier(functions_api).apply(manifest)
    assert message in str(refused.value)


def test_kubectl_get_shows_the_printer_columns(
    api: client.ApiClient, kube_cluster: KubeCluster
) -> None:
    wanted = spec()
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, ms.manifest(wanted, NAMESPACE)
    )
    name = ms.resource_name(wanted.server_uuid)
    table = kubectl(kube_cluster.kubeconfig, "get", "modelserves", name, f"-n={NAMESPACE}").stdout
    header, row = table.splitlines()
    assert header.split() == ["NAME", "SERVER", "UUID", "MODEL", "PHASE", "URL", "AGE"]
    assert row.split()[:3] == [name, str(wanted.server_uuid), "demo"]
    short = kubectl(kube_cluster.kubeconfig, "get", "ms", name, f"-n={NAMESPACE}").stdout
    assert short.splitlines()[0] == header  # the short name from the CRD


def test_server_uuid_is_immutable(api: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(api)
    wanted = spec()
    manifest = ms.manifest(wanted, NAMESPACE)
    objects.create_namespaced_custom_object(ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, manifest)
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(
            ms.GROUP,
            ms.VERSION,
            NAMESPACE,
            ms.PLURAL,
            ms.resource_name(wanted.server_uuid),
            {"spec": {"serverUuid": str(uuid.uuid4())}},
        )
    assert refused.value.status == 422
    assert "serverUuid is immutable" in str(refused.value.body)
