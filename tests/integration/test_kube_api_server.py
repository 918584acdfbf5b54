"""The real etcd + Kubernetes API server fixture: CRD, custom resource, status, watch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from support.kube import KubeApi

pytestmark = pytest.mark.kube

GROUP, VERSION, PLURAL = "smoke.modelserve.dev", "v1", "widgets"


def widget_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def api_client(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(widget_crd())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            break
        time.sleep(0.2)
    else:
        pytest.fail("CRD never became Established")
    yield api
    ext.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    api.close()


def test_custom_resource_status_patch_is_watched(api_client: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(api_client)
    namespace, name = "smoke", f"w-{uuid.uuid4().hex[:8]}"
    created = objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": 3},
        },
    )
    start_rv = created["metadata"]["resourceVersion"]

    # A status written into the main resource is dropped: status is a subresource.
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"status": {"phase": "Ignored"}}
    )
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert (current.get("status") or {}).get("phase") != "Ignored"

    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": {"phase": "Ready"}}
    )

    seen: list[tuple[str, str | None]] = []
    stream = watch.Watch()
    for event in stream.stream(
        objects.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        resource_version=start_rv,
        timeout_seconds=10,
    ):
        obj = event["object"]
        phase = (obj.get("status") or {}).get("phase")
        seen.append((event["type"], phase))
        if phase == "Ready":
            stream.stop()
    assert ("MODIFIED", "Ready") in seen


def test_malformed_spec_is_refused_by_the_server(api_client: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "smoke",
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Widget",
                "metadata": {"name": "bad"},
                "spec": {"size": 0},
            },
        )
    assert refused.value.status == 422
    assert "spec.size" in str(refused.value.body)
