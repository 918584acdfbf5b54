"""Knative Serving v0.50.0 (controller, webhook; from .ci/build-knative) on a test cluster.

Installed as ``config/core/`` of Knative Serving's own module installs it, less
what cannot run here: the Deployments and Services (the binaries run as host
processes, the webhook's Service is routed to this host, support/webhook_route.py)
and the ``routing-serving-certs`` Certificate (no cert-manager). The networking
CRDs (KIngress, ServerlessService, Certificate) come from ``knative.dev/networking``
and the caching ``Image`` CRD from ``knative.dev/caching``, at the versions
Serving's ``go.mod`` requires. ``config-deployment`` skips tag resolution for
every registry: the controller would otherwise resolve image tags to digests
over the network, which this host cannot reach.

The webhook makes its own serving certificate (into the ``webhook-certs``
Secret) and injects its CA into its webhook configurations, as in a cluster.
Both binaries log in as cluster admin: the ServiceAccounts and roles of
``config/core/`` are installed but not what they run as. ``install_serving_crds``
alone is what a cluster needs before KServe's manager starts (it looks for the
Knative Service CRD once, at start).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelserve.shared.net import free_port
from support.kube import KubeCluster
from support.kubectl import kubectl
from support.procs import MissingService, ServerProcess, find_binary, port_open
from support.toolchain import go_module
from support.webhook_route import host_address, route_service_to_host

KNATIVE_HINT = "run .ci/build-knative to build it into that dir"
NAMESPACE = "knative-serving"
WEBHOOK_SERVICE = "webhook"
SKIPPED = {("Certificate", "routing-serving-certs")}
# Registries whose tags the controller must not resolve (all the images our Pods name).
NO_TAG_RESOLVING = "ghcr.io,docker.io,index.docker.io,kserve,kind.local,ko.local,dev.local"


def _required(serving: Path, module: str) -> Path:
    """The directory of ``module`` at the version Knative Serving's go.mod requires."""
    found = re.search(rf"^\s*{re.escape(module)} (\S+)$", (serving / "go.mod").read_text(), re.M)
    if found is None:
        raise MissingService(f"{module} is not required by {serving}")
    path = serving.parent.parent / f"{module}@{found.group(1)}"
    if not path.is_dir():
        raise MissingService(f"{module}@{found.group(1)} is not downloaded (go mod download it)")
    return path


def _documents(*paths: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            documents += [d for d in yaml.safe_load_all(file.read_text()) if d]
    return documents


def serving_manifests(queue_image: str) -> list[dict[str, Any]]:
    """Knative Serving's core objects, its networking and caching CRDs, configured for here."""
    try:
        serving = go_module("knative.dev/serving", "KNATIVE_SERVING_VERSION")
    except MissingService as exc:
        raise MissingService(f"Knative Serving's manifests: {exc}") from None
    networking = _required(serving, "knative.dev/networking") / "config"
    caching = _required(serving, "knative.dev/caching") / "config"
    core = serving / "config" / "core"
    documents = _documents(
        core / "100-namespace.yaml",
        core / "200-serviceaccount.yaml",
        core / "200-roles",
        core / "300-resources",
        networking / "ingress.yaml",
        networking / "serverlessservice.yaml",
        networking / "certificate.yaml",
        networking / "domain-claim.yaml",
        networking / "config-network.yaml",
        caching / "image.yaml",
        core / "999-cache.yaml",
        core / "configmaps",
        core / "webhooks",
    )
    wanted = []
    for document in documents:
        if (document["kind"], document["metadata"]["name"]) in SKIPPED:
            continue
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "config-deployment":
            document["data"]["queue-sidecar-image"] = queue_image
            document["data"]["registries-skipping-tag-resolving"] = NO_TAG_RESOLVING
        if document["kind"] == "Image":
            document["spec"]["image"] = queue_image
        wanted.append(document)
    return wanted


@dataclass
class KnativeServing:
    processes: list[ServerProcess]
    base_dir: Path

    def log(self, name: str) -> Path:
        return self.base_dir / f"knative-{name}.log"

    def errors(self, limit: int = 10) -> str:
        """The last errors the controller and webhook logged."""
        lines: list[str] = []
        for name in ("controller", "webhook"):
            path = self.log(name)
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                lines += [f"{name}: {line[:400]}" for line in text if '"severity":"ERROR"' in line]
        return "\n".join(lines[-limit:])


def _apply(cluster: KubeCluster, documents: list[dict[str, Any]]) -> None:
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in documents if d["kind"] != "CustomResourceDefinition"]
    for batch in (crds, rest):
        if batch:
            kubectl(
                cluster.kubeconfig,
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}),
            )
    if crds:
        kubectl(
            cluster.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{d['metadata']['name']}" for d in crds],
        )


def install_serving_crds(cluster: KubeCluster) -> None:
    """Only Knative Serving's own CRDs (Service, Route, Revision, ...), no controller.

    KServe's manager looks for them once, when it starts, to decide whether it
    reconciles Serverless InferenceServices; Standard ones never touch them.
    """
    try:
        serving = go_module("knative.dev/serving", "KNATIVE_SERVING_VERSION")
    except MissingService as exc:
        raise MissingService(f"Knative Serving's CRDs: {exc}") from None
    _apply(cluster, _documents(serving / "config" / "core" / "300-resources"))


def start_knative_serving(cluster: KubeCluster, queue_image: str) -> KnativeServing:
    """Install Knative Serving's core objects, then run its webhook and controller."""
    binaries = {
        name: find_binary(f"knative-{name}", hint=KNATIVE_HINT)
        for name in ("controller", "webhook")
    }
    base = Path(tempfile.mkdtemp(prefix="knative-", dir=cluster.base_dir))
    _apply(cluster, serving_manifests(queue_image))
    address, webhook_port = host_address(), free_port()
    api = cluster.admin_client()
    try:
        route_service_to_host(api, NAMESPACE, WEBHOOK_SERVICE, webhook_port, address)
    finally:
        api.close()
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "SYSTEM_NAMESPACE": NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
        "METRICS_DOMAIN": "knative.dev/internal/serving",
    }
    processes = []
    for name, extra in (
        ("webhook", {"WEBHOOK_NAME": WEBHOOK_SERVICE, "WEBHOOK_PORT": str(webhook_port)}),
        ("controller", {}),
    ):
        env = common | extra | {"POD_NAME": f"{name}-0", "PROFILING_PORT": str(free_port())}
        process = ServerProcess(
            name=f"knative-{name}",
            argv=[binaries[name], f"--kubeconfig={cluster.kubeconfig}"],
            log_path=base / f"knative-{name}.log",
            env=env,
            cwd=base,
        ).start()
        cluster.processes.append(process)
        processes.append(process)
        if name == "webhook":
            process.wait_ready(lambda: port_open(webhook_port, address), timeout=120)
    serving = KnativeServing(processes, base)
    _wait_for_webhook_ca(cluster)
    return serving


def _wait_for_webhook_ca(cluster: KubeCluster, timeout: float = 120) -> None:
    """Until the webhook has injected its CA into its configurations (it makes its own)."""
    ctx = cluster.ssl_context()
    url = f"{cluster.url}/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.get(f"{url}/webhook.serving.knative.dev", verify=ctx, timeout=5)
        if found.status_code == 200 and all(
            hook.get("clientConfig", {}).get("caBundle") for hook in found.json()["webhooks"]
        ):
            return
        time.sleep(0.5)
    raise MissingService("Knative's webhook did not inject its CA bundle")
