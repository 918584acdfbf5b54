"""Kubernetes mode end to end with the real KServe controller (Standard mode).

``POST /serve`` on the API (in process) -> the pipeline functions
(functions-framework over HTTP, the embedded broker with config/'s Triggers) ->
a ModelServe, applied as config/'s ``modelserve-functions`` -> our operator
(kopf, as ``modelserve-operator``) -> an InferenceService -> KServe v0.16.0
renders the predictor Deployment and Service -> the ReplicaSet's Pod is
scheduled onto the kwok node -> the pod executor runs it as its spec says
(KServe's storage initializer pulls the GGUF from the real MinIO, then our
runtime container) and reports it Ready only once its probes pass -> KServe sets
the InferenceService Ready -> the operator records the server ``ready`` with the
predictor's cluster-local URL -> the real ``openai`` client streams a chat
through our gateway. Then deleting the server leaves nothing behind.

Nobody but KServe writes the InferenceService's status. What stands in for the
cluster: kwok (the kubelet's bookkeeping), the pod executor (the container
runtime) and support/cluster_network.py (cluster DNS, kube-proxy and the pod
network, which this host does not have).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.context_factory import make_applier, make_catalog
from modelserve.functions.gateway import GatewayDeps, create_gateway, upstream_client
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db.models import Role
from modelserve.shared.settings import load_settings
from modelserve.shared.store.factory import make_store
from support.asgi import serving
from support.cluster_network import ClusterNetwork
from support.kserve_controller import KServeController
from support.kube import KubeCluster
from support.kubectl import KubeconfigFor
from support.operator_harness import running_operator
from support.pod_executor import PodExecutor, PodNetwork
from support.records import wait_for_status
from support.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]
NAMESPACE = "modelserve"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
ISVC_LABEL = "serving.kserve.io/inferenceservice"
PUBLIC = "https://models.example.test"


def _missing(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


async def test_post_serve_runs_the_runtime_kserve_rendered_and_the_gateway_streams_from_it(
    pipeline_factory: Any,
    tiny_gguf: bytes,
    installed: client.ApiClient,
    login_as: KubeconfigFor,
    kserve_cluster: tuple[KubeCluster, KServeController],
    tmp_path: Path,
) -> None:
    _, controller = kserve_cluster
    pipe = await pipeline_factory(
        mode="kubernetes",
        kubeconfig=login_as("modelserve-functions"),
        public_base_url=PUBLIC,
        kserve_deployment_mode="Standard",
    )
    settings = pipe.settings
    pipe.upload_upstream("demo", tiny_gguf)
    broker = pipe.broker()
    async with pipe.sessions.begin() as session:
        await create_user(session, "alice", "alice-password-1", Role.OPERATOR)
    api = create_app(
        ApiDeps(
            settings,
            pipe.sessions,
            pipe.issuer,
            TokenVerifier.from_settings(settings),
            broker.publish,
            make_catalog(settings),
            make_applier(settings),
            make_store(settings),
            None,
        )
    )
    network = PodNetwork()
    gateway = create_gateway(
        GatewayDeps(
            TokenVerifier.from_settings(settings),
            pipe.sessions,
            upstream_client(lambda pool: ClusterNetwork(installed, network, pool)),
        )
    )
    operator_settings = load_settings(
        mode="kubernetes",
        database_url=settings.database_url,
        kubeconfig=login_as("modelserve-operator"),
        jwt_secret=settings.jwt_secret,
        public_base_url=PUBLIC,
        kserve_deployment_mode="Standard",
    )
    objects = client.CustomObjectsApi(installed)
    core, apps = client.CoreV1Api(installed), client.AppsV1Api(installed)
    token = pipe.issuer.access_token("alice", Role.OPERATOR)
    auth = {"Authorization": f"Bearer {token}"}
    executor = PodExecutor(installed, NAMESPACE, ISVC_LABEL, tmp_path / "pods", network)

    def isvc_status(name: str) -> dict[str, Any]:
        try:
            found = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
        except ApiException as exc:
            return {"missing": exc.status}
        return dict(found.get("status") or {})

    def manager_errors() -> str:
        lines = controller.log.read_text(errors="replace").splitlines()
        return "\n".join([line[:400] for line in lines if '"level":"error"' in line][-10:])

    async with serving(api) as api_url, serving(gateway) as gateway_url:
        with running_operator(operator_settings), executor:
            answer = await pipe.http.post(f"{api_url}/serve", json={"model": "demo"}, headers=auth)
            assert answer.status_code == 202, answer.text
            server = uuid.UUID(answer.json()["server_uuid"])
            name = ms.resource_name(server)
            async with asyncio.timeout(120):
                await broker.drain()
            assert not broker.dead

            try:
                record = await wait_for_status(pipe.sessions, server, "ready", within=300)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}\nInferenceService status: {isvc_status(name)}\n"
                    f"{executor.describe()}\n{manager_errors()}"
                ) from None
            # KServe (nobody else) set it Ready, from the Deployment the Pod made available.
            status = isvc_status(name)
            conditions = {c["type"]: c["status"] for c in status["conditions"]}
            assert conditions["Ready"] == "True", status
            assert conditions["PredictorReady"] == "True", status
            assert status["deploymentMode"] == "Standard"
            # The predictor's Service, which the gateway reaches inside the cluster.
            assert record.internal_url == f"http://{name}-predictor.{NAMESPACE}.svc.cluster.local"
            (pod,) = [p for p in executor.pods.values() if p.ready]
            assert pod.run is not None and [(r.name, r.returncode) for r in pod.run.runs] == [
                ("storage-initializer", 0)
            ]
            served = objects.get_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, name
            )
            assert served["status"]["phase"] == "Ready"

            chat = openai.AsyncOpenAI(
                base_url=f"{gateway_url}/{server}/v1", api_key=token, max_retries=0
            )
            assert [m.id for m in (await chat.models.list()).data] == ["demo"]
            stream = await chat.chat.completions.create(
                model="demo",
                messages=[{"role": "user", "content": "stream"}],
                max_tokens=12,
                stream=True,
                logit_bias={"2": -100},  # never </s>: all 12 tokens come
            )
            pieces: list[str] = []
            finish: list[str | None] = []
            async for chunk in stream:
                pieces.extend(c.delta.content or "" for c in chunk.choices)
                finish.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
            assert len([p for p in pieces if p]) >= 2, pieces  # streamed, not one piece
            assert finish == ["length"]
            await chat.close()

            deleted = await pipe.http.delete(f"{api_url}/servers/{server}", headers=auth)
            assert deleted.status_code == 200, deleted.text
            await wait_for_status(pipe.sessions, server, "deleted", within=120)

            def nothing_left() -> bool:
                selector = f"{ISVC_LABEL}={name}"
                return (
                    _missing(
                        objects.get_namespaced_custom_object,
                        ms.GROUP,
                        ms.VERSION,
                        NAMESPACE,
                        ms.PLURAL,
                        name,
                    )
                    and _missing(
                        objects.get_namespaced_custom_object, *ISVC[:2], NAMESPACE, ISVC[2], name
                    )
                    and _missing(apps.read_namespaced_deployment, f"{name}-predictor", NAMESPACE)
                    and not apps.list_namespaced_replica_set(
                        NAMESPACE, label_selector=selector
                    ).items
                    and not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                )

            await eventually(nothing_left, within=120, explain=manager_errors)
            # And the runtime the Pod was is no longer running.
            assert pod.container is not None
            await eventually(lambda: pod.stop.is_set(), within=30)
            await eventually(
                lambda: (
                    pod.container is not None
                    and pod.container.process.proc is not None
                    and pod.container.process.proc.poll() is not None
                ),
                within=30,
            )
