"""A real Kubernetes control plane for tests: etcd, kube-apiserver, controllers, kwok.

- etcd (Debian ``etcd-server``) on a free loopback port with a temp data dir;
- ``kube-apiserver`` with RBAC, the default admission plugins plus
  ``OwnerReferencesPermissionEnforcement`` (what hardened clusters and OpenShift
  run, so a missing ``<kind>/finalizers`` grant fails here as it would there),
  service-account token signing, aggregator routing (webhooks served by host
  processes are reached through a Service's EndpointSlice) and an audit log of
  every request made by the modelserve ServiceAccounts;
- ``kube-controller-manager`` (garbage collection, ReplicaSets, ServiceAccounts,
  EndpointSlices, namespace deletion) and ``kube-scheduler``;
- kwok, which plays the kubelet for one fake node with CPU, memory and a GPU
  resource: pods scheduled there become Running and Ready, with no containers.

All are built by ``.ci/run`` from the versions pinned in ``.ci/versions``.
Everything listens on 127.0.0.1 except what the API server only reads about
(its advertised address is not a listener).
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelserve.shared.net import free_port
from support.pki import SERVICE_CIDR, Pki, make_pki
from support.procs import MissingService, ServerProcess, ServiceFailed, find_binary
from support.toolchain import go_module

KUBE_HINT = "run .ci/build-kube (from .ci/run) to build it into that dir"
KWOK_HINT = "go install sigs.k8s.io/kwok/cmd/kwok@<pinned> into that dir (.ci/run does)"
ETCD_HINT = "install Debian's etcd-server package (.ci/run does)"
# The namespace config/ installs into; its ServiceAccounts' requests are audited.
AUDITED_GROUP = "system:serviceaccounts:modelserve"
FAKE_NODE = "kwok-node-0"
GPU_RESOURCE = "nvidia.com/gpu"
FAKE_NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", GPU_RESOURCE: "2"}
# kwok's stage files: nodes become Ready and keep a lease; pods become Ready,
# complete and are deleted like a kubelet would.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    context: str = "modelserve-test",
) -> Path:
    """A kubeconfig that verifies the server and logs in with a certificate or a token."""
    user: dict[str, str] = {}
    if client_cert is not None and client_key is not None:
        user = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    if token is not None:
        user = {"token": token}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": context, "cluster": {"server": server, "certificate-authority": str(ca_cert)}}
        ],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def _audit_policy(path: Path) -> Path:
    """Metadata for the modelserve ServiceAccounts' requests, nothing for anyone else."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": [AUDITED_GROUP]},
            {"level": "None"},
        ],
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@dataclass
class KubeCluster:
    """The running control plane and the admin kubeconfig (``system:masters``) for it."""

    url: str
    kubeconfig: Path
    pki: Pki
    base_dir: Path
    audit_log: Path
    processes: list[ServerProcess] = field(default_factory=list)

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS (admin certificate) for plain HTTP clients talking to the API server."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return ctx

    def admin_client(self) -> client.ApiClient:
        """A kubernetes client as cluster admin; close it when done."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig for this cluster that logs in with a bearer token."""
        return write_kubeconfig(path, self.url, self.pki.ca_cert, token=token)

    def audit_mark(self) -> int:
        """How many audit lines there are now: pass it to :meth:`audit_events` as ``since``."""
        if not self.audit_log.exists():
            return 0
        return len(self.audit_log.read_text().splitlines())

    def audit_events(self, username: str, since: int = 0) -> Iterator[dict[str, Any]]:
        """Audit events (stage ResponseComplete) of the requests ``username`` made."""
        if not self.audit_log.exists():
            return
        for line in self.audit_log.read_text().splitlines()[since:]:
            event = json.loads(line)
            if (
                event.get("stage") == "ResponseComplete"
                and event.get("user", {}).get("username") == username
            ):
                yield event

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_etcd(base: Path) -> tuple[ServerProcess, str]:
    """Single-member etcd on free loopback ports with a temp data dir."""
    binary = find_binary("etcd", hint=ETCD_HINT)
    client_port, peer_port = free_port(), free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    proc = ServerProcess(
        name="etcd",
        argv=[
            binary,
            "--name",
            "default",
            "--data-dir",
            str(base / "etcd"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
        log_path=base / "etcd.log",
    ).start()
    proc.wait_ready(
        lambda: httpx.get(f"{client_url}/health", timeout=1).json().get("health") == "true",
        timeout=30,
    )
    return proc, client_url


def _apiserver(base: Path, pki: Pki, etcd_url: str, port: int, audit_log: Path) -> ServerProcess:
    return ServerProcess(
        name="kube-apiserver",
        argv=[
            find_binary("kube-apiserver", hint=KUBE_HINT),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # No kubelet-facing `kubernetes` Endpoints: nothing here dials the
            # API server through its ClusterIP, and loopback is not allowed there.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--enable-aggregator-routing=true",
            f"--audit-policy-file={_audit_policy(base / 'audit-policy.yaml')}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={base / 'certs'}",
        ],
        log_path=base / "kube-apiserver.log",
    )


def _controller_manager(base: Path, pki: Pki, kubeconfig: Path) -> ServerProcess:
    return ServerProcess(
        name="kube-controller-manager",
        argv=[
            find_binary("kube-controller-manager", hint=KUBE_HINT),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.service_account_key}",
            "--use-service-account-credentials=false",
            "--profiling=false",
        ],
        log_path=base / "kube-controller-manager.log",
    )


def _scheduler(base: Path, kubeconfig: Path) -> ServerProcess:
    return ServerProcess(
        name="kube-scheduler",
        argv=[
            find_binary("kube-scheduler", hint=KUBE_HINT),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        log_path=base / "kube-scheduler.log",
    )


def _pod_ready_stage(stages: Path, base: Path, executed_label: str) -> Path:
    """kwok's pod-ready stage, less the pods labelled ``executed_label``.

    Those are run (and reported Ready) by a test's pod executor instead, so a Pod
    reads Ready only when what its spec says really runs.
    """
    stage = yaml.safe_load((stages / "pod/fast/pod-ready.yaml").read_text())
    stage["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.labels["{executed_label}"]', "operator": "DoesNotExist"}
    )
    path = base / "pod-ready.yaml"
    path.write_text(yaml.safe_dump(stage))
    return path


def _kwok(base: Path, kubeconfig: Path, executed_label: str | None = None) -> ServerProcess:
    try:
        stages = go_module("sigs.k8s.io/kwok", "KWOK_VERSION") / "kustomize" / "stage"
    except MissingService as exc:
        raise MissingService(f"kwok's stage files: {exc}") from None
    argv = [
        find_binary("kwok", hint=KWOK_HINT),
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.244.0.1",
        "--node-lease-duration-seconds=40",
    ]
    for stage in KWOK_STAGES:
        if executed_label is not None and stage == "pod/fast/pod-ready.yaml":
            argv.append(f"--config={_pod_ready_stage(stages, base, executed_label)}")
        else:
            argv.append(f"--config={stages / stage}")
    return ServerProcess(name="kwok", argv=argv, log_path=base / "kwok.log", cwd=base)


def fake_node() -> dict[str, Any]:
    """The one node, managed by kwok: 16 CPUs, 64 GiB and two GPUs to schedule onto."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": FAKE_NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": FAKE_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {"capacity": FAKE_NODE_CAPACITY, "allocatable": FAKE_NODE_CAPACITY},
    }


def _node_ready(api: client.ApiClient) -> bool:
    node = client.CoreV1Api(api).read_node(FAKE_NODE)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _default_service_account(api: client.ApiClient) -> bool:
    # The controller-manager's ServiceAccount controller makes it: pods need it.
    client.CoreV1Api(api).read_namespaced_service_account("default", "default")
    return True


def start_kube_cluster(executed_label: str | None = None) -> KubeCluster:
    """Start the whole control plane and a Ready fake node; stop all of it on failure.

    kwok makes every Pod Ready, except those labelled ``executed_label``: a test's
    pod executor runs those and reports their readiness.
    """
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        find_binary(name, hint=KUBE_HINT)
    find_binary("kwok", hint=KWOK_HINT)
    find_binary("etcd", hint=ETCD_HINT)
    go_module("sigs.k8s.io/kwok", "KWOK_VERSION")
    base = Path(tempfile.mkdtemp(prefix="modelserve-kube-"))
    pki = make_pki(base / "pki")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    kubeconfig = write_kubeconfig(
        base / "admin.kubeconfig",
        url,
        pki.ca_cert,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
    )
    cluster = KubeCluster(url, kubeconfig, pki, base, audit_log=base / "audit.log")
    try:
        etcd, etcd_url = start_etcd(base)
        cluster.processes.append(etcd)
        apiserver = _apiserver(base, pki, etcd_url, port, cluster.audit_log).start()
        cluster.processes.append(apiserver)
        ctx = cluster.ssl_context()
        apiserver.wait_ready(
            lambda: httpx.get(f"{url}/readyz", verify=ctx, timeout=2).status_code == 200,
            timeout=90,
        )
        for proc in (
            _controller_manager(base, pki, kubeconfig),
            _scheduler(base, kubeconfig),
            _kwok(base, kubeconfig, executed_label),
        ):
            cluster.processes.append(proc.start())
        api = cluster.admin_client()
        try:
            client.CoreV1Api(api).create_node(fake_node())
            _wait(cluster, lambda: _node_ready(api), "the fake node to be Ready")
            _wait(cluster, lambda: _default_service_account(api), "the default ServiceAccount")
        finally:
            api.close()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(cluster: KubeCluster, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``check``; fail with every component's log tail if one died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.processes:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise ServiceFailed(
                    f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_tail()}"
                )
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not there yet; retried until the deadline
            pass
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in cluster.processes)
    raise ServiceFailed(f"timed out waiting for {what}:\n{tails}")


def ensure_namespace(api: client.ApiClient, name: str, timeout: float = 30) -> str:
    """Create namespace ``name`` unless it exists, and wait for its default ServiceAccount.

    A real API server refuses objects in a namespace that does not exist, and pods
    in one whose ``default`` ServiceAccount the controller-manager has not made yet.
    """
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)
