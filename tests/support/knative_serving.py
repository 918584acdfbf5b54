"""Knative Serving v0.50.0 (webhook, controller, autoscaler, activator; .ci/build-knative).

Installed as ``config/core/`` of Knative Serving's own module installs it, less
what cannot run here: the Deployments and Services (the binaries run as
processes here: see :func:`start_knative_serving` for where each runs; the
webhook's Service is routed to this host, support/webhook_route.py, and the
activator's and autoscaler's Services are selectorless with Endpoints naming
this host, from the Services of the module's own Deployments files) and the
``routing-serving-certs`` Certificate (no cert-manager). The networking CRDs
(KIngress, ServerlessService, Certificate) come from ``knative.dev/networking``
and the caching ``Image`` CRD from ``knative.dev/caching``, at the versions
Serving's ``go.mod`` requires. ``config-deployment`` skips tag resolution for
every registry: the controller would otherwise resolve image tags to digests
over the network, which this host cannot reach. ``config-autoscaler`` gets the
shortest windows Knative accepts (scale to zero in seconds) and
``config-network`` no mesh (Pods are dialled at their own addresses).

The webhook makes its own serving certificate (into the ``webhook-certs``
Secret) and injects its CA into its webhook configurations, as in a cluster.
The binaries log in as cluster admin: the ServiceAccounts and roles of
``config/core/`` are installed but not what they run as. ``install_serving_crds``
alone is what a cluster needs before KServe's manager starts (it looks for the
Knative Service CRD once, at start). No networking layer can be built here, so
:class:`KIngressStandIn` marks KIngresses ready (test infrastructure: the only
piece of Kubernetes the tests stand in for).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelserve.shared.net import free_port
from support.cluster_network import INGRESS_HOST, KINGRESS, ClusterProxy
from support.kube import KubeCluster
from support.kubectl import kubectl
from support.pod_executor import POD_CIDR, LoopbackRelay, PodNetwork, PodSandbox
from support.procs import MissingService, ServerProcess, ServiceFailed, find_binary, port_open
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
    """Knative Serving's processes, and the test's stand-ins they rely on."""

    processes: list[ServerProcess]
    base_dir: Path
    network: PodNetwork
    controller_pod: PodSandbox
    relays: list[LoopbackRelay]
    proxy: ClusterProxy
    ingress: KIngressStandIn

    def log(self, name: str) -> Path:
        return self.base_dir / f"knative-{name}.log"

    def errors(self, limit: int = 10) -> str:
        """The last errors Knative's processes logged."""
        lines: list[str] = []
        for name in ("controller", "webhook", "autoscaler", "activator"):
            path = self.log(name)
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                lines += [f"{name}: {line[:400]}" for line in text if '"severity":"ERROR"' in line]
        return "\n".join(lines[-limit:])

    def stop(self) -> None:
        """Stop everything; the processes at once (the activator and queue-proxy-like
        drains sleep for tens of seconds on SIGTERM, and each is killed after 15 s)."""
        self.ingress.stop()
        stopping = [threading.Thread(target=p.stop) for p in self.processes]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        for relay in self.relays:
            relay.close()
        self.proxy.close()
        self.network.detach(self.controller_pod)


def _apply(cluster: KubeCluster, documents: list[dict[str, Any]]) -> None:
    """Apply ``documents``: the CRDs first, and the rest once those are Established."""
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in documents if d["kind"] != "CustomResourceDefinition"]
    for batch in (crds, rest):
        if not batch:
            continue
        kubectl(
            cluster.kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}),
        )
        if batch is crds:
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


def start_knative_serving(
    cluster: KubeCluster, queue_image: str, network: PodNetwork
) -> KnativeServing:
    """Install Knative Serving and run its webhook, controller, autoscaler and activator.

    Where each runs, and why: every one binds fixed ports on every address
    (the controller's health probes :8080, the autoscaler's stats :8080, the
    activator :8012/:8013), so two of them cannot share this host's network.
    The webhook, the autoscaler and the activator run on the host (the activator
    and the autoscaler dial Pods at their addresses); the controller, which
    dials nothing but the API server, gets a Pod's network namespace from
    ``network``, with the API server's loopback port relayed into it. Cluster
    names for host processes: the activator reaches the autoscaler's Service
    through a private ``/etc/hosts`` (a mount namespace), and the autoscaler
    probes the activator through a revision's Service by way of
    support/cluster_network.py's :class:`ClusterProxy` (``HTTP_PROXY``).
    Then :class:`KIngressStandIn` plays the networking layer.
    """
    binaries = {
        name: find_binary(f"knative-{name}", hint=KNATIVE_HINT)
        for name in ("controller", "webhook", "autoscaler", "activator")
    }
    address = host_address()
    for port in (AUTOSCALER_PORT, *ACTIVATOR_PORTS):
        if port_open(port, address):
            raise ServiceFailed(
                f"port {port} is taken on this host; Knative's autoscaler and activator bind "
                f"{AUTOSCALER_PORT}, {ACTIVATOR_PORTS} on every address (is another run going?)"
            )
    base = Path(tempfile.mkdtemp(prefix="knative-", dir=cluster.base_dir))
    _apply(cluster, serving_manifests(queue_image))
    _configure(cluster)
    webhook_port = free_port()
    api = cluster.admin_client()
    try:
        route_service_to_host(api, NAMESPACE, WEBHOOK_SERVICE, webhook_port, address)
    finally:
        api.close()
    activator = _service_of("activator.yaml", "activator-service")
    autoscaler = _service_of("autoscaler.yaml", "autoscaler")
    _apply(
        cluster,
        [
            activator,
            autoscaler,
            _endpoints_to(activator, address),
            _endpoints_to(autoscaler, address),
        ],
    )
    hosts = base / "hosts"
    hosts.write_text(
        Path("/etc/hosts").read_text() + f"\n{address} autoscaler.{NAMESPACE}.svc.cluster.local\n"
    )
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "SYSTEM_NAMESPACE": NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
        "METRICS_DOMAIN": "knative.dev/internal/serving",
    }
    controller_pod = network.attach()
    relays = [LoopbackRelay(controller_pod, int(cluster.url.rsplit(":", 1)[1]))]
    proxy = ClusterProxy(cluster.admin_client())
    processes: list[ServerProcess] = []
    serving = KnativeServing(
        processes, base, network, controller_pod, relays, proxy, KIngressStandIn(cluster)
    )
    kubeconfig = f"--kubeconfig={cluster.kubeconfig}"
    # Go's proxy rules never proxy loopback; pods and the activator are dialled directly.
    proxied = {"HTTP_PROXY": proxy.url, "NO_PROXY": f"{POD_CIDR},{address}"}
    wrap_hosts = [
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && exec "$@"',
    ]
    plan: list[tuple[str, list[str], dict[str, str], Any]] = [
        (
            "webhook",
            [binaries["webhook"], kubeconfig],
            {"WEBHOOK_NAME": WEBHOOK_SERVICE, "WEBHOOK_PORT": str(webhook_port)},
            lambda: port_open(webhook_port, address),
        ),
        (
            "controller",
            controller_pod.wrap([binaries["controller"], kubeconfig]),
            {},
            None,
        ),
        (
            "autoscaler",
            [binaries["autoscaler"], kubeconfig],
            {"POD_IP": address} | proxied,
            lambda: port_open(AUTOSCALER_PORT, address),
        ),
        (
            "activator",
            [*wrap_hosts, str(hosts), binaries["activator"], kubeconfig],
            {"POD_IP": address},
            lambda: (
                httpx.get(
                    f"http://{address}:{ACTIVATOR_PORTS[0]}/",
                    headers={"K-Kubelet-Probe": "true"},
                    timeout=2,
                ).is_success
            ),
        ),
    ]
    try:
        for name, argv, extra, ready in plan:
            env = common | extra | {"POD_NAME": f"{name}-0", "PROFILING_PORT": str(free_port())}
            process = ServerProcess(
                name=f"knative-{name}",
                argv=argv,
                log_path=base / f"knative-{name}.log",
                env=env,
                cwd=base,
            ).start()
            cluster.processes.append(process)
            processes.append(process)
            if ready is not None:
                process.wait_ready(ready, timeout=120)
        _wait_for_webhook_ca(cluster)
    except BaseException:
        serving.stop()
        raise
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


# --- The data plane: activator, autoscaler, and the stand-in for a networking layer.

AUTOSCALER_PORT = 8080  # cmd/autoscaler: the stats websocket, fixed
ACTIVATOR_PORTS = (8012, 8013)  # networking.BackendHTTPPort, BackendHTTP2Port
# Scale to zero in seconds, not minutes: the shortest windows Knative accepts.
FAST_AUTOSCALER = {
    "stable-window": "6s",
    "scale-to-zero-grace-period": "6s",
    "scale-to-zero-pod-retention-period": "0s",
}


class KIngressStandIn:
    """Marks every KIngress ready, as a networking layer (Kourier, net-istio) would.

    Test infrastructure, and the only piece of Kubernetes the tests stand in for:
    no networking layer can be built here. It programs nothing; the routing a
    real layer would program from the KIngress's rules is done per request by
    support/cluster_network.py, reading the same rules.
    """

    def __init__(self, cluster: KubeCluster) -> None:
        from kubernetes import client

        self.api = api = cluster.admin_client()
        self.objects = client.CustomObjectsApi(api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kingress-stand-in", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                listed = self.objects.list_cluster_custom_object(*KINGRESS)
                for ingress in listed["items"]:
                    self._mark(ingress)

    def _mark(self, ingress: dict[str, Any]) -> None:
        meta, status = ingress["metadata"], ingress.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("observedGeneration") == meta["generation"]:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        balancer = {"ingress": [{"domainInternal": INGRESS_HOST}]}
        body = {
            "status": {
                "observedGeneration": meta["generation"],
                "conditions": [
                    {"type": kind, "status": "True", "lastTransitionTime": now}
                    for kind in ("LoadBalancerReady", "NetworkConfigured", "Ready")
                ],
                "privateLoadBalancer": balancer,
                "publicLoadBalancer": balancer,
            }
        }
        self.objects.patch_namespaced_custom_object_status(
            *KINGRESS[:2], meta["namespace"], KINGRESS[2], meta["name"], body
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.api.close()


def _service_of(deployment_file: str, name: str) -> dict[str, Any]:
    """Service ``name`` of ``config/core/deployments/<file>``, less its selector (no Pods)."""
    serving = go_module("knative.dev/serving", "KNATIVE_SERVING_VERSION")
    for document in _documents(serving / "config" / "core" / "deployments" / deployment_file):
        if document["kind"] == "Service" and document["metadata"]["name"] == name:
            document["spec"].pop("selector", None)
            return document
    raise MissingService(f"no Service {name} in Knative's {deployment_file}")


def _endpoints_to(service: dict[str, Any], address: str) -> dict[str, Any]:
    """v1 Endpoints of ``service`` at ``address`` (the SKS controller copies the activator's)."""
    ports = [
        {"name": p["name"], "port": p["targetPort"], "protocol": "TCP"}
        for p in service["spec"]["ports"]
    ]
    meta = service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "subsets": [{"addresses": [{"ip": address}], "ports": ports}],
    }


def _configure(cluster: KubeCluster) -> None:
    """Fast autoscaling windows, and no mesh: pods are dialled at their own addresses."""
    api = cluster.admin_client()
    from kubernetes import client

    try:
        core = client.CoreV1Api(api)
        core.patch_namespaced_config_map("config-autoscaler", NAMESPACE, {"data": FAST_AUTOSCALER})
        core.patch_namespaced_config_map(
            "config-network", NAMESPACE, {"data": {"mesh-compatibility-mode": "disabled"}}
        )
    finally:
        api.close()
