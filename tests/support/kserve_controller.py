"""The real KServe controller manager (v0.16.0, built by ``.ci/build-kserve``) on the test cluster.

It is installed the way ``install/<version>/kserve.yaml`` of KServe's own module
installs it, less what cannot or need not run here:

- cert-manager's ``Issuer``/``Certificate``: the fixture makes a CA and writes the
  serving pair where controller-runtime reads it (``$TMPDIR/k8s-webhook-server/
  serving-certs``), and puts that CA into the webhook configurations' ``caBundle``;
- the Deployments, DaemonSet and Services: the manager runs as a host process,
  logged in as its own ServiceAccount (``kserve-controller-manager``) so the
  ClusterRole of ``kserve.yaml`` is what it may do, and its webhook Service is a
  selectorless Service routed to this host (support/webhook_route.py);
- the LLMInferenceService and local-model-cache controllers' objects (other
  binaries, not built).

The CRDs, ``inferenceservice-config`` and the webhook configurations are KServe's
own, so what KServe's defaulting and validation webhooks and its reconcilers say
about our objects is what a cluster would say.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelserve.shared.net import free_port
from support.kube import KubeCluster
from support.kubectl import kubectl, service_account_kubeconfig
from support.pki import make_serving_pair
from support.procs import MissingService, ServerProcess, find_binary, port_open
from support.toolchain import go_module, versions
from support.webhook_route import host_address, route_service_to_host

KSERVE_HINT = "run .ci/build-kserve (from .ci/run) to build it into that dir"
NAMESPACE = "kserve"
MANAGER_ACCOUNT = "kserve-controller-manager"
WEBHOOK_SERVICE = "kserve-webhook-server-service"
# The RBAC objects of kserve.yaml the manager itself needs (the proxy, local-model
# and llmisvc ones belong to binaries that do not run here), and its configuration.
KEPT = {
    ("ServiceAccount", MANAGER_ACCOUNT),
    ("Role", "kserve-leader-election-role"),
    ("RoleBinding", "kserve-leader-election-rolebinding"),
    ("ClusterRole", "kserve-manager-role"),
    ("ClusterRoleBinding", "kserve-manager-rolebinding"),
    ("ConfigMap", "inferenceservice-config"),
}
WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def install_file() -> Path:
    """``install/<version>/kserve.yaml`` of the pinned KServe module."""
    version = versions()["KSERVE_VERSION"]
    try:
        module = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
    except MissingService as exc:
        raise MissingService(f"KServe's install manifests: {exc}") from None
    return module / "install" / version / "kserve.yaml"


def _without_istio(config: dict[str, Any]) -> None:
    """KServe's setting for a cluster with no Istio (Kourier, or here none at all).

    With Istio's virtual host enabled (kserve.yaml's default) the InferenceService's
    address is a Service pointing at Istio's local gateway, routed by a
    VirtualService; without Istio it is the predictor's own Knative Service.
    """
    ingress = json.loads(config["data"]["ingress"])
    ingress["disableIstioVirtualHost"] = True
    config["data"]["ingress"] = json.dumps(ingress, indent=2)


def _served_by_manager(document: dict[str, Any]) -> bool:
    return all(
        hook["clientConfig"]["service"]["name"] == WEBHOOK_SERVICE
        for hook in document.get("webhooks", [])
    )


def manager_manifests(ca_bundle: bytes) -> list[dict[str, Any]]:
    """The objects of ``kserve.yaml`` the manager needs, webhooks trusting ``ca_bundle``."""
    wanted: list[dict[str, Any]] = []
    bundle = base64.b64encode(ca_bundle).decode()
    for document in yaml.safe_load_all(install_file().read_text()):
        if not document:
            continue
        kind, name = document["kind"], document["metadata"]["name"]
        if (kind, name) in KEPT or kind in {"Namespace", "CustomResourceDefinition"}:
            if (kind, name) == ("ConfigMap", "inferenceservice-config"):
                _without_istio(document)
            wanted.append(document)
        elif kind in WEBHOOK_KINDS and _served_by_manager(document):
            for hook in document["webhooks"]:
                hook["clientConfig"]["caBundle"] = bundle
            wanted.append(document)
    return wanted


@dataclass
class KServeController:
    """The running manager: its process (log in ``log``) and its temp dir."""

    process: ServerProcess
    base_dir: Path

    @property
    def log(self) -> Path:
        return self.process.log_path

    def stop(self) -> None:
        self.process.stop()


def start_kserve(cluster: KubeCluster) -> KServeController:
    """Install KServe's CRDs, config and webhooks, then run the manager until it serves."""
    binary = find_binary("kserve-manager", hint=KSERVE_HINT)
    install_file()
    base = Path(tempfile.mkdtemp(prefix="kserve-", dir=cluster.base_dir))
    tmp = base / "tmp"
    service_dns = f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"
    ca = make_serving_pair(
        tmp / "k8s-webhook-server" / "serving-certs", [service_dns, f"{service_dns}.cluster.local"]
    )
    documents = manager_manifests(ca.read_bytes())
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in documents if d["kind"] != "CustomResourceDefinition"]
    # Server-side: KServe's CRDs are too large for kubectl's last-applied annotation.
    for batch in (crds, rest):
        kubectl(
            cluster.kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}),
        )
    kubectl(
        cluster.kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{d['metadata']['name']}" for d in crds],
    )
    address, port = host_address(), free_port()
    api = cluster.admin_client()
    try:
        route_service_to_host(api, NAMESPACE, WEBHOOK_SERVICE, port, address)
    finally:
        api.close()
    kubeconfig = service_account_kubeconfig(cluster, base, NAMESPACE, MANAGER_ACCOUNT)
    probe_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "KUBECONFIG": str(kubeconfig),
        "POD_NAMESPACE": NAMESPACE,  # what the Deployment's fieldRef gives it
        "TMPDIR": str(tmp),  # controller-runtime's cert dir lives under it
    }
    # The webhook server binds every interface (kserve's manager has no host flag);
    # the API server reaches it on this host's address through the EndpointSlice.
    process = ServerProcess(
        name="kserve-manager",
        argv=[
            binary,
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-probe-addr=127.0.0.1:{probe_port}",
            f"--webhook-port={port}",
        ],
        log_path=base / "kserve-manager.log",
        env=env,
        cwd=base,
    ).start()
    cluster.processes.append(process)
    process.wait_ready(
        lambda: (
            httpx.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=2).status_code == 200
            and port_open(port, address)
        ),
        timeout=120,
    )
    return KServeController(process, base)
