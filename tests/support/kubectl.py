"""Run the pinned ``kubectl`` and mint ServiceAccount tokens, as a cluster admin would.

Tests that check what a ServiceAccount may do log in with a token the API server
minted for it (the TokenRequest API, what a pod's projected token is), never
with the admin certificate, so RBAC decides exactly as in a cluster.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes import client

from support.kube import KUBE_HINT, KubeCluster
from support.procs import find_binary

# A fixture's factory: ServiceAccount name in config/'s namespace -> its kubeconfig.
KubeconfigFor = Callable[[str], Path]


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl --kubeconfig KUBECONFIG ARGS``; a failure raises with kubectl's stderr."""
    result = subprocess.run(
        [find_binary("kubectl", hint=KUBE_HINT), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stderr}\n{result.stdout}"
        )
    return result


def mint_token(api: client.ApiClient, namespace: str, service_account: str) -> str:
    """A one-hour token for ``namespace/service_account`` from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(
        service_account, namespace, request
    )
    return str(answer.status.token)


def service_account_kubeconfig(
    cluster: KubeCluster, directory: Path, namespace: str, service_account: str
) -> Path:
    """A kubeconfig that logs in as ``system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT``."""
    api = cluster.admin_client()
    try:
        token = mint_token(api, namespace, service_account)
    finally:
        api.close()
    return cluster.token_kubeconfig(directory / f"{service_account}.kubeconfig", token)


def service_account_mount(
    cluster: KubeCluster, directory: Path, namespace: str, service_account: str
) -> tuple[Path, dict[str, str]]:
    """What a pod of ``service_account`` gets to log in with: a folder and two env values.

    The folder holds ``token``, ``ca.crt`` and ``namespace``, as the kubelet
    mounts them at /var/run/secrets/kubernetes.io/serviceaccount; the env is the
    ``KUBERNETES_SERVICE_HOST``/``PORT`` the kubelet sets. In-cluster clients
    (kopf, the kubernetes package) read exactly these. World-readable, for
    containers that run as a non-root user.
    """
    api = cluster.admin_client()
    try:
        token = mint_token(api, namespace, service_account)
    finally:
        api.close()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(cluster.pki.ca_cert.read_bytes())
    (directory / "namespace").write_text(namespace)
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    url = urlsplit(cluster.url)
    return directory, {
        "KUBERNETES_SERVICE_HOST": str(url.hostname),
        "KUBERNETES_SERVICE_PORT": str(url.port),
    }
