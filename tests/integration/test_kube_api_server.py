"""The real control plane fixture: version, discovery, CRDs, scheduling onto kwok, GC."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from support.kube import FAKE_NODE, GPU_RESOURCE, KubeCluster, ensure_namespace
from support.toolchain import versions

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
def api_client(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    ensure_namespace(api, "smoke")
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


def test_version_and_discovery_are_the_pinned_kubernetes(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version == versions()["KUBERNETES_VERSION"]
    core = {r.name for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {"pods", "services", "serviceaccounts", "namespaces", "events"} <= core
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"apps", "rbac.authorization.k8s.io", "admissionregistration.k8s.io"} <= groups
    assert GROUP in groups


def wait_for(
    check: Callable[[], Any],
    what: str,
    within: float = 120,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check``; on a loaded 2-core machine kwok and the scheduler can lag, so
    the wait is generous and a failure says what the cluster showed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"not reached within {within}s: {what}" + (f"\n{explain()}" if explain else ""))


def test_a_deployment_runs_on_the_fake_gpu_node(api_client: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    labels = {"app": name}
    apps.create_namespaced_deployment(
        "smoke",
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "example.invalid/none:1",
                                "resources": {
                                    "limits": {"cpu": "2", "memory": "4Gi", GPU_RESOURCE: "1"}
                                },
                            }
                        ]
                    },
                },
            },
        },
    )

    def running() -> Any:
        pods = core.list_namespaced_pod("smoke", label_selector=f"app={name}").items
        return pods if pods and pods[0].status.phase == "Running" else None

    def seen() -> str:
        pods = core.list_namespaced_pod("smoke", label_selector=f"app={name}").items
        node = core.read_node(FAKE_NODE)
        return (
            f"pods: {[(p.status.phase, p.status.conditions) for p in pods]}\n"
            f"node taints: {node.spec.taints}; conditions: "
            f"{[(c.type, c.status) for c in node.status.conditions or []]}"
        )

    (pod,) = wait_for(
        running, "the Deployment's pod Running (controller-manager, scheduler, kwok)", explain=seen
    )
    assert pod.spec.node_name == FAKE_NODE
    ready = wait_for(
        lambda: apps.read_namespaced_deployment(name, "smoke").status.available_replicas,
        "the Deployment available",
    )
    assert ready == 1
    apps.delete_namespaced_deployment(name, "smoke")


def test_more_gpus_than_the_node_has_stay_pending(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    name = f"greedy-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        "smoke",
        {
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "example.invalid/none:1",
                        "resources": {"limits": {GPU_RESOURCE: "3"}},
                    }
                ]
            },
        },
    )

    def unschedulable() -> bool:
        pod = core.read_namespaced_pod(name, "smoke")
        conditions = {c.type: c for c in pod.status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        return scheduled is not None and scheduled.reason == "Unschedulable"

    wait_for(unschedulable, "the scheduler to refuse three GPUs on a two-GPU node")
    core.delete_namespaced_pod(name, "smoke", grace_period_seconds=0)


def test_garbage_collector_deletes_what_an_owner_leaves(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(
        "smoke", {"metadata": {"name": f"owner-{uuid.uuid4().hex[:6]}"}}
    )
    child = core.create_namespaced_config_map(
        "smoke",
        {
            "metadata": {
                "name": f"child-{uuid.uuid4().hex[:6]}",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": owner.metadata.name,
                        "uid": owner.metadata.uid,
                    }
                ],
            }
        },
    )
    core.delete_namespaced_config_map(owner.metadata.name, "smoke")

    def gone() -> bool:
        try:
            core.read_namespaced_config_map(child.metadata.name, "smoke")
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, "the controller-manager's garbage collector to delete the child")
