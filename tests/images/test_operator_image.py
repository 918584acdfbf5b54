"""The operator runs from the functions image and reports healthy.

The container is config/operator/'s Deployment (image, command, env,
securityContext, the webhook's certificate mounted at /certs) with what its pod
gets from the cluster: the Secret ``modelserve-config`` as env (real Postgres),
the ``modelserve-operator`` ServiceAccount's in-cluster credentials for the real
API server, with config/'s CRD and RBAC installed. Its health check answers only
once the operator has migrated the database and kopf is watching.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from kubernetes import client

from modelserve.shared.net import free_port
from support.containers import Platform, manifest_pod, run_container
from support.kube import KubeCluster
from support.kubectl import service_account_mount
from support.pki import make_serving_pair
from support.procs import ServiceFailed
from support.toolchain import ROOT
from support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.kube, pytest.mark.timeout(3600)]
DEPLOYMENT = ROOT / "config" / "operator" / "deployment.yaml"
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


async def test_operator_image_starts_and_reports_healthy(
    images: Path,
    platform: Platform,
    kube_cluster: KubeCluster,
    modelserve_crds: client.ApiClient,
    config_rbac: None,
    tmp_path: Path,
) -> None:
    pod = manifest_pod(DEPLOYMENT, "modelserve-operator")
    spec = pod["containers"][0]
    credentials, kube_env = service_account_mount(
        kube_cluster, tmp_path / "serviceaccount", "modelserve", "modelserve-operator"
    )
    certs = tmp_path / "certs"
    make_serving_pair(certs, ["modelserve-operator-webhook.modelserve.svc"])
    for path in [certs, *certs.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    # The host network stands in for the pod's: the manifest's ports move to free ones.
    webhook, health = free_port(), free_port()
    container = run_container(
        pod,
        env={**platform.env, **kube_env},
        replace={"9443": str(webhook), "8081": str(health)},
        volumes=[(credentials, SERVICE_ACCOUNT), (certs, "/certs")],
        network="host",
    )
    try:
        probe = spec["livenessProbe"]["httpGet"]["path"]

        def healthy() -> bool:
            if not container.running():
                raise ServiceFailed(f"the operator container exited:\n{container.logs()}")
            try:
                return httpx.get(f"http://127.0.0.1:{health}{probe}", timeout=2).is_success
            except httpx.HTTPError:
                return False

        await eventually(healthy, 120, explain=container.logs)
        container.check_confined(spec)
    finally:
        container.stop()
