"""The functions image answers a CloudEvent for one pipeline step.

The container is config/'s Knative Service ``modelserve-availability`` (image,
env, securityContext) with what Knative and Kubernetes add to its pod: the
Secret ``modelserve-config`` as env (real Postgres and MinIO), ``PORT``, and the
``modelserve-functions`` ServiceAccount's in-cluster credentials for the real
API server. The host network stands in for the cluster's.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.models import Role
from modelserve.shared.net import free_port
from support.containers import Platform, manifest_pod, run_container
from support.kube import KubeCluster
from support.kubectl import service_account_mount
from support.procs import ServiceFailed
from support.records import new_server, wait_for_status
from support.toolchain import ROOT
from support.waiting import eventually

pytestmark = [
    pytest.mark.docker,
    pytest.mark.postgres,
    pytest.mark.minio,
    pytest.mark.kube,
    pytest.mark.timeout(3600),
]
FUNCTIONS = ROOT / "config" / "pipeline" / "functions.yaml"
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


async def test_availability_function_answers_serve_requested_with_model_missing(
    images: Path,
    platform: Platform,
    kube_cluster: KubeCluster,
    config_rbac: None,
    tmp_path: Path,
) -> None:
    pod = manifest_pod(FUNCTIONS, "modelserve-availability")
    spec = pod["containers"][0]
    credentials, kube_env = service_account_mount(
        kube_cluster, tmp_path / "serviceaccount", "modelserve", "modelserve-functions"
    )
    port = free_port()
    container = run_container(
        pod,
        env={**platform.env, **kube_env, "PORT": str(port)},
        volumes=[(credentials, SERVICE_ACCOUNT)],
        network="host",
    )
    try:
        url = f"http://127.0.0.1:{port}/"

        def listening() -> bool:
            if not container.running():
                raise ServiceFailed(f"the functions container exited:\n{container.logs()}")
            try:
                httpx.get(url, timeout=2)
            except httpx.HTTPError:
                return False
            return True

        await eventually(listening, 120, explain=container.logs)
        async with platform.sessions.begin() as session:
            server = await new_server(session, model_name="nothing-here")
        request = ev.ServeRequest(model="nothing-here", requested_by="alice", role="operator")
        event = ev.make_event(
            ev.SERVE_REQUESTED,
            ev.ServeRequested(request=request),
            source="/tests",
            subject=server,
            token=TokenIssuer.from_settings(platform.settings).pipeline_token(
                server, subject="alice", role=Role.OPERATOR
            ),
        )
        headers, body = ev.encode_binary(event)
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(url, headers=headers, content=body)
        assert response.status_code == 200, f"{response.text}\n{container.logs()}"
        assert response.headers["ce-type"] == ev.MODEL_MISSING
        assert response.headers["ce-subject"] == str(server)
        reply = ev.decode(dict(response.headers), response.content)
        assert ev.payload(reply, ev.ModelMissing).request.model == "nothing-here"
        # The step recorded its progress in the real database, through the container.
        await wait_for_status(platform.sessions, server, "checking", within=10)
        container.check_confined(spec)
    finally:
        container.stop()
