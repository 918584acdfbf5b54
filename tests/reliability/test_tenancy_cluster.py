"""Tenancy on the real control plane: runtimes kept private, servers kept their owners'.

The operator runs as config/'s ``modelserve-operator`` ServiceAccount against the
real API server (RBAC and OwnerReferencesPermissionEnforcement on), with KServe's
real InferenceService CRD; the test plays KServe's controller (status) and an
attacker with write access to a namespace of their own.

- The runtime is private: config/network/runtimes.yaml is accepted by the API
  server with strict validation (in modelserve's namespace and a contract
  namespace), and the InferenceService the operator makes is cluster-local in
  both of KServe's deployment modes and takes the runtime's credential from the
  Secret. That the policy is *enforced* needs a pod network on a real node (the
  real-node issue brings it); these nodes run none, so no packet is dropped here.
- Nobody reroutes a server: InferenceServices carrying the server's two labels
  in another namespace, or in the same namespace under another name with the
  real owner reference copied, Ready at an attacker's URL or Failed, change
  neither the record's ``internal_url`` nor its status; a ModelServe in another
  namespace naming the server gets no InferenceService and moves nothing.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import yaml
from kubernetes import client

from integration.operator.conftest import api
from integration.operator.test_operator import a_pending_modelserve, env, isvcs, mark_ready
from modelserve.kserve.inference_service import ServerSpec, build_inference_service
from modelserve.operator.handlers import ISVC, MANAGED_BY
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings
from support.kube import KubeCluster, ensure_namespace
from support.kubectl import kubectl
from support.operator_harness import running_operator
from support.records import wait_for_status
from support.reliability import Recorder
from support.scrape import fetch, value
from support.toolchain import ROOT
from support.waiting import eventually

__all__ = ["api", "env"]
pytestmark = [pytest.mark.reliability("tenancy"), pytest.mark.kube, pytest.mark.postgres]
POLICY = ROOT / "config" / "network" / "runtimes.yaml"
EVIL = "http://collector.attacker.example"
SINCE = "2026-11-22T00:00:00Z"


def _policy_in(namespace: str) -> dict[str, Any]:
    (document,) = [d for d in yaml.safe_load_all(POLICY.read_text()) if d]
    document["metadata"]["namespace"] = namespace
    return dict(document)


async def test_runtimes_are_cluster_local_behind_a_network_policy(
    api: client.ApiClient,
    kube_cluster: KubeCluster,
    env: tuple[Settings, Any],
    reliability: Recorder,
) -> None:
    reliability.case(
        "runtime NetworkPolicy",
        injected="kubectl apply --server-side --validate=strict of config/network/runtimes.yaml",
        checked="accepted in modelserve's and a contract namespace; selects the runtime pods; "
        "admits only the gateway, Knative's activator/autoscaler, the local gateway, Prometheus",
        outcome="refused",
    )
    reliability.case(
        "runtime published on the ingress",
        injected="the InferenceService the operator makes for a ModelServe",
        checked="labelled cluster-local for Knative and for KServe's Standard mode; the runtime's "
        "credential comes from the Secret, never the spec",
        outcome="refused",
    )
    reliability.note(
        "NetworkPolicy accepted by the real API server; enforced only with a pod network on a"
        " real node (not run here)"
    )
    settings, sessions = env
    namespace, _ = await a_pending_modelserve(api, sessions)
    networking = client.NetworkingV1Api(api)
    for target in ("modelserve", namespace):
        kubectl(
            kube_cluster.kubeconfig,
            "apply",
            "--server-side",
            "--validate=strict",
            "-f",
            "-",
            stdin=json.dumps(_policy_in(target)),
        )
        stored = networking.read_namespaced_network_policy("modelserve-runtimes", target)
        assert stored.spec.policy_types == ["Ingress"]
        selected = {e.key for e in stored.spec.pod_selector.match_expressions}
        assert selected == {ms.SERVER_LABEL, "serving.kserve.io/inferenceservice"}
        sources = [
            (p.namespace_selector.match_labels, p.pod_selector.match_labels)
            for rule in stored.spec.ingress
            for p in rule._from
        ]
        assert all(ns and pods for ns, pods in sources), "every source names its namespace"
        assert (
            {"kubernetes.io/metadata.name": "modelserve"},
            {"serving.knative.dev/service": "modelserve-gateway"},
        ) in sources

    with running_operator(settings):
        (isvc,) = await eventually(lambda: isvcs(api, namespace))
    labels = isvc["metadata"]["labels"]
    assert labels["networking.knative.dev/visibility"] == "cluster-local"
    assert labels["networking.kserve.io/visibility"] == "cluster-local"
    env_vars = {e["name"]: e for e in isvc["spec"]["predictor"]["model"]["env"]}
    token = env_vars["MODELSERVE_RUNTIME_INTERNAL_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"]["name"] == "modelserve-runtime-token"


def _attacker_isvc(server: Any, namespace: str, name: str) -> dict[str, Any]:
    """What an attacker with write access to ``namespace`` creates: the real labels."""
    manifest = build_inference_service(
        ServerSpec(
            server_uuid=server,
            namespace=namespace,
            model_name="evil",
            storage_uri="s3://evil/evil.gguf",
            labels={MANAGED_BY: ms.resource_name(server)},
        )
    )
    manifest["metadata"]["name"] = name
    return manifest


def _set_status(
    objects: client.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]
) -> None:
    objects.patch_namespaced_custom_object_status(
        *ISVC[:2], namespace, ISVC[2], name, {"status": status}
    )


async def test_no_other_namespace_or_object_can_reroute_a_server(
    api: client.ApiClient, env: tuple[Settings, Any], reliability: Recorder
) -> None:
    for name, injected in (
        (
            "foreign namespace, Ready",
            "an InferenceService with the server's labels in another "
            "namespace, Ready at the attacker's URL",
        ),
        ("foreign namespace, Failed", "the same, Failed (would fail the victim for good)"),
        (
            "same namespace, copied owner",
            "another name in the server's namespace, the real "
            "ModelServe's ownerReference copied, Ready at the attacker's URL",
        ),
        ("foreign ModelServe", "a ModelServe in another namespace naming the server, then deleted"),
    ):
        reliability.case(
            f"reroute: {name}",
            injected=injected,
            checked="the record keeps its ready status and internal_url; no InferenceService is "
            "made for a foreign ModelServe",
            outcome="refused",
        )
    settings, sessions = env
    namespace, spec = await a_pending_modelserve(api, sessions)
    server = spec.server_uuid
    name = ms.resource_name(server)
    objects = client.CustomObjectsApi(api)
    attacker = ensure_namespace(api, f"evil-{secrets.token_hex(3)}")
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"

    def events_seen() -> float:
        found = value(
            fetch(metrics),
            "modelserve_operator_reconciles_total",
            handler="inference_service_changed",
        )
        return found or 0.0

    with running_operator(settings, metrics_address=("127.0.0.1", port)):
        (real,) = await eventually(lambda: isvcs(api, namespace))
        url = f"http://{name}-predictor.{namespace}.svc.cluster.local"
        mark_ready(api, namespace, name, url)
        await wait_for_status(sessions, server, "ready", within=20)

        ready_foreign = _attacker_isvc(server, attacker, name)
        failed_foreign = _attacker_isvc(server, attacker, f"{name}-2")
        shadow = _attacker_isvc(server, namespace, f"{name}-shadow")
        shadow["metadata"]["ownerReferences"] = [
            {**ref, "blockOwnerDeletion": False} for ref in real["metadata"]["ownerReferences"]
        ]
        planted = [(attacker, ready_foreign), (attacker, failed_foreign), (namespace, shadow)]
        before = events_seen()
        for where, manifest in planted:
            objects.create_namespaced_custom_object(*ISVC[:2], where, ISVC[2], manifest)
        await eventually(lambda: events_seen() >= before + len(planted), within=30)
        ready = {
            "url": EVIL,
            "address": {"url": EVIL},
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": SINCE}],
        }
        failed = {
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": SINCE}],
            "modelStatus": {"lastFailureInfo": {"reason": "ModelLoadFailed", "message": "boom"}},
        }
        before = events_seen()
        _set_status(objects, attacker, name, ready)
        _set_status(objects, attacker, f"{name}-2", failed)
        _set_status(objects, namespace, f"{name}-shadow", ready)
        await eventually(lambda: events_seen() >= before + len(planted), within=30)

        # A ModelServe of the attacker's own naming the server (no webhook runs here:
        # this is the operator's own check).
        foreign = ms.manifest(spec, attacker)
        objects.create_namespaced_custom_object(ms.GROUP, ms.VERSION, attacker, ms.PLURAL, foreign)

        def refused() -> dict[str, Any] | None:
            obj = objects.get_namespaced_custom_object(
                ms.GROUP, ms.VERSION, attacker, ms.PLURAL, name
            )
            status = obj.get("status") or {}
            return obj if status.get("phase") == "Failed" else None

        said = (await eventually(refused))["status"]
        assert namespace in said["message"]
        # The attacker's own ModelServe made the controller of their Ready InferenceService:
        # owned, indexed, labelled, and still not the server's (its record's namespace).
        owned = refused()
        assert owned is not None
        before = events_seen()
        objects.patch_namespaced_custom_object(
            *ISVC[:2],
            attacker,
            ISVC[2],
            name,
            {
                "metadata": {
                    "ownerReferences": [
                        {
                            "apiVersion": ms.API_VERSION,
                            "kind": ms.KIND,
                            "name": name,
                            "uid": owned["metadata"]["uid"],
                            "controller": True,
                        }
                    ]
                }
            },
        )
        await eventually(lambda: events_seen() >= before + 1, within=30)

        # Deleting it (the operator's delete handler runs for it) deletes nothing of the
        # server's: neither its record nor its InferenceService.
        objects.delete_namespaced_custom_object(ms.GROUP, ms.VERSION, attacker, ms.PLURAL, name)

        def gone() -> bool:
            listed = objects.list_namespaced_custom_object(
                ms.GROUP, ms.VERSION, attacker, ms.PLURAL
            )["items"]
            return not listed

        await eventually(gone)
        assert [
            i["metadata"]["uid"] for i in isvcs(api, namespace) if i["metadata"]["name"] == name
        ] == [real["metadata"]["uid"]]

    async with sessions() as session:
        record = await repo.get_server(session, server)
    assert (record.status, record.internal_url, record.namespace) == ("ready", url, namespace)
