"""The apply step's Kubernetes applier against the real API server with the ModelServe CRD."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelserve.functions.appliers import ApplyError, KubernetesApplier
from modelserve.shared import modelserve as ms
from support.crds import install
from support.kube import KubeApi

pytestmark = pytest.mark.kube
CRD = Path(__file__).resolve().parents[3] / "config" / "crd" / "modelserve.yaml"


@pytest.fixture(scope="module")
def api(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    install(api_client, CRD)
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


async def test_apply_creates_one_modelserve(api: client.ApiClient) -> None:
    applier = KubernetesApplier(api)
    wanted = spec()
    manifest = ms.manifest(wanted, "team-a", auth_token="token-123")
    resource, created = await applier.apply(manifest)
    assert (resource, created) == (f"team-a/{ms.resource_name(wanted.server_uuid)}", True)
    assert (await applier.apply(manifest))[1] is False  # a redelivery is not an error

    objects = client.CustomObjectsApi(api)
    listed = objects.list_namespaced_custom_object(ms.GROUP, ms.VERSION, "team-a", ms.PLURAL)
    ours = [i for i in listed["items"] if i["spec"]["serverUuid"] == str(wanted.server_uuid)]
    assert len(ours) == 1
    stored = ours[0]
    assert ms.spec_of(stored) == wanted
    assert stored["metadata"]["annotations"][ms.AUTH_ANNOTATION] == "token-123"
    assert stored["metadata"]["labels"][ms.SERVER_LABEL] == str(wanted.server_uuid)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"storageUri": "http://elsewhere/x.gguf"}, "storageUri"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"replicas": {"min": 3, "max": 1}}, "replicas.min must not exceed replicas.max"),
        ({"runtime": {"nCtx": 4}}, "nCtx"),
        ({"resources": {"memory": "lots"}}, "memory"),
    ],
    ids=["storage-uri", "sha256", "replicas", "n-ctx", "memory"],
)
async def test_malformed_spec_is_refused_by_the_api_server(
    api: client.ApiClient, change: dict[str, object], message: str
) -> None:
    manifest = ms.manifest(spec(), "team-a")
    manifest["spec"].update(change)
    with pytest.raises(ApplyError, match="422") as refused:
        await KubernetesApplier(api).apply(manifest)
    assert message in str(refused.value)


def test_printer_columns(api: client.ApiClient) -> None:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(f"{ms.PLURAL}.{ms.GROUP}")
    columns = [c.name for c in crd.spec.versions[0].additional_printer_columns]
    assert columns == ["Server UUID", "Model", "Phase", "URL", "Age"]


def test_server_uuid_is_immutable(api: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(api)
    wanted = spec()
    manifest = ms.manifest(wanted, "team-b")
    objects.create_namespaced_custom_object(ms.GROUP, ms.VERSION, "team-b", ms.PLURAL, manifest)
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(
            ms.GROUP,
            ms.VERSION,
            "team-b",
            ms.PLURAL,
            ms.resource_name(wanted.server_uuid),
            {"spec": {"serverUuid": str(uuid.uuid4())}},
        )
    assert refused.value.status == 422
    assert "serverUuid is immutable" in str(refused.value.body)
