"""Kubernetes mode end to end with the real KServe controller, in both deployment modes.

``POST /serve`` on the API (in process) -> the pipeline functions
(functions-framework over HTTP, the embedded broker with config/'s Triggers) ->
a ModelServe, applied as config/'s ``modelserve-functions`` -> our operator
(kopf, as ``modelserve-operator``) -> an InferenceService -> KServe v0.16.0 ->
- Standard: KServe renders the predictor Deployment and Service;
- Serverless (KServe's ``Knative`` mode): KServe renders a Knative Service, and
  Knative Serving v0.50.0 (webhook, controller, autoscaler, activator) makes
  its Revision, the Revision's Deployment (our runtime plus Knative's
  queue-proxy), the ServerlessService and the Route's KIngress;
-> the ReplicaSet's Pod is scheduled onto the kwok node -> the pod executor runs
it as its spec says (KServe's storage initializer pulls the GGUF from the real
MinIO, then every container, the queue-proxy being the ``knative-queue`` binary
with the env Knative rendered, in a network namespace with the Pod's own
address) and reports it Ready only once its probes pass -> KServe sets the
InferenceService Ready -> the operator records the server ``ready`` with the
predictor's cluster-local URL -> the real ``openai`` client streams a chat
through our gateway (Serverless: through the KIngress's rule to the revision's
Service, i.e. Knative's activator or the Pod, as the ServerlessService says).
Serverless then scales to zero on Knative's own decision (no traffic: the
autoscaler scales the Deployment to 0 and the Pod goes) and back on the next
chat (the activator holds it, the autoscaler scales to 1, a new Pod is run,
the activator forwards). Then deleting the server leaves nothing behind.

Nobody but KServe writes the InferenceService's status, and nobody but Knative
the Knative objects' status, except the KIngress's: no networking layer can be
built here, so support/knative_serving.py's stand-in marks it ready (the only
piece of Kubernetes the tests stand in for). What stands in for the cluster
otherwise: kwok (the kubelet's bookkeeping), the pod executor (the container
runtime) and support/cluster_network.py (cluster DNS, kube-proxy and the
networking layer's routing).
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
from support.knative_serving import KnativeServing
from support.kserve_controller import KServeController
from support.kube import KubeCluster
from support.kubectl import KubeconfigFor
from support.operator_harness import running_operator
from support.pod_executor import ExecutedPod, PodExecutor, PodNetwork
from support.records import wait_for_status
from support.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]
NAMESPACE = "modelserve"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
KSVC = ("serving.knative.dev", "v1", "services")
ISVC_LABEL = "serving.kserve.io/inferenceservice"
KSVC_LABEL = "serving.knative.dev/service"
PUBLIC = "https://models.example.test"
QUEUE_IMAGE = "ko.local/knative-queue:v0.50.0"  # conftest.py


def _missing(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


async def _stream_chat(chat: openai.AsyncOpenAI) -> None:
    """A streamed chat of 12 tokens, arriving in pieces, ended by the length limit."""
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


def _stopped(pod: ExecutedPod) -> bool:
    """The executor stopped the Pod: every container's process exited, its namespace gone."""
    return pod.stop.is_set() and pod.stopped()


@pytest.mark.parametrize("mode", ["Standard", "Serverless"])
async def test_post_serve_runs_the_runtime_kserve_rendered_and_the_gateway_streams_from_it(
    mode: str,
    pipeline_factory: Any,
    tiny_gguf: bytes,
    installed: client.ApiClient,
    login_as: KubeconfigFor,
    kserve_cluster: tuple[KubeCluster, KServeController],
    pod_network: PodNetwork,
    runtime_token: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    _, controller = kserve_cluster
    knative: KnativeServing | None = None
    if mode == "Serverless":
        knative = request.getfixturevalue("knative")
    pipe = await pipeline_factory(
        mode="kubernetes",
        kubeconfig=login_as("modelserve-functions"),
        public_base_url=PUBLIC,
        kserve_deployment_mode=mode,
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
    gateway = create_gateway(
        GatewayDeps(
            TokenVerifier.from_settings(settings),
            pipe.sessions,
            upstream_client(lambda pool: ClusterNetwork(installed, pool)),
            runtime_token=runtime_token,  # kserve/runtime-token.yaml, as the admin filled it
        )
    )
    operator_settings = load_settings(
        mode="kubernetes",
        database_url=settings.database_url,
        kubeconfig=login_as("modelserve-operator"),
        jwt_secret=settings.jwt_secret,
        public_base_url=PUBLIC,
        kserve_deployment_mode=mode,
    )
    objects = client.CustomObjectsApi(installed)
    core, apps = client.CoreV1Api(installed), client.AppsV1Api(installed)
    token = pipe.issuer.access_token("alice", Role.OPERATOR)
    auth = {"Authorization": f"Bearer {token}"}
    executor = PodExecutor(installed, NAMESPACE, ISVC_LABEL, tmp_path / "pods", pod_network)

    def isvc_status(name: str) -> dict[str, Any]:
        try:
            found = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
        except ApiException as exc:
            return {"missing": exc.status}
        return dict(found.get("status") or {})

    def manager_errors() -> str:
        lines = controller.log.read_text(errors="replace").splitlines()
        kserve = "\n".join([line[:400] for line in lines if '"level":"error"' in line][-10:])
        return kserve + ("\n" + knative.errors() if knative is not None else "")

    def explain(name: str) -> str:
        return f"InferenceService status: {isvc_status(name)}\n{executor.describe()}\n" + (
            manager_errors()
        )

    async with serving(api) as api_url, serving(gateway) as gateway_url:
        with running_operator(operator_settings), executor:
            # Serverless may scale to zero; Standard keeps one replica (an HPA has no zero).
            body = {"model": "demo", "replicas": 0 if mode == "Serverless" else 1}
            answer = await pipe.http.post(f"{api_url}/serve", json=body, headers=auth)
            assert answer.status_code == 202, answer.text
            server = uuid.UUID(answer.json()["server_uuid"])
            name = ms.resource_name(server)
            predictor = f"{name}-predictor"
            async with asyncio.timeout(120):
                await broker.drain()
            assert not broker.dead

            try:
                record = await wait_for_status(pipe.sessions, server, "ready", within=300)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{explain(name)}") from None
            # KServe (nobody else) set it Ready, from the Deployment the Pod made available.
            status = isvc_status(name)
            conditions = {c["type"]: c["status"] for c in status["conditions"]}
            assert conditions["Ready"] == "True", status
            assert conditions["PredictorReady"] == "True", status
            # KServe 0.16's names: Standard (was RawDeployment), Knative (was Serverless).
            assert status["deploymentMode"] == {"Standard": "Standard"}.get(mode, "Knative")
            # The predictor's Service (Serverless: its Knative Service's cluster-local
            # address, behind the Route's KIngress), which the gateway reaches in the cluster.
            assert record.internal_url == f"http://{predictor}.{NAMESPACE}.svc.cluster.local"
            # The first Pod (Serverless: it may be scaled away already, without traffic).
            pod = next(iter(executor.pods.values()))
            assert pod.run is not None and [(r.name, r.returncode) for r in pod.run.runs] == [
                ("storage-initializer", 0)
            ]
            if mode == "Serverless":
                service = objects.get_namespaced_custom_object(
                    *KSVC[:2], NAMESPACE, KSVC[2], predictor
                )
                # Cluster-local (kserve/inference_service.py): Knative's route
                # controller published the predictor on no public host.
                labels = service["metadata"]["labels"]
                assert labels["networking.knative.dev/visibility"] == "cluster-local"
                kingresses = objects.list_namespaced_custom_object(
                    "networking.internal.knative.dev", "v1alpha1", NAMESPACE, "ingresses"
                )["items"]
                ours = [i for i in kingresses if i["metadata"]["name"].startswith(predictor)]
                visibilities = {r["visibility"] for i in ours for r in i["spec"]["rules"]}
                assert visibilities == {"ClusterLocal"}, ours
                annotations = service["spec"]["template"]["metadata"]["annotations"]
                assert annotations["autoscaling.knative.dev/min-scale"] == "0"
                assert annotations["autoscaling.knative.dev/target-utilization-percentage"] == (
                    "100"
                )
                assert set(pod.containers) == {"kserve-container", "queue-proxy"}
                queue = pod.containers["queue-proxy"].spec
                assert queue.image == QUEUE_IMAGE
                assert {e.name: e.value for e in queue.env}["USER_PORT"] == "8080"
                runtime = pod.containers["kserve-container"].spec
                assert runtime.image == "ghcr.io/modelserve/runtime:0.1.0"  # no digest resolved
            served = objects.get_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, name
            )
            assert served["status"]["phase"] == "Ready"

            chat = openai.AsyncOpenAI(
                base_url=f"{gateway_url}/{server}/v1", api_key=token, max_retries=0
            )
            assert [m.id for m in (await chat.models.list()).data] == ["demo"]
            await _stream_chat(chat)

            if mode == "Serverless":
                # No traffic: Knative's autoscaler scales the revision to zero (its
                # stable window and grace period are the shortest, 6 s each), and
                # the Pod goes (its processes stop while it drains; checked at the end).
                def scaled_to_zero() -> bool:
                    deployment = apps.list_namespaced_deployment(
                        NAMESPACE, label_selector=f"{KSVC_LABEL}={predictor}"
                    ).items[0]
                    pods = core.list_namespaced_pod(
                        NAMESPACE, label_selector=f"{KSVC_LABEL}={predictor}"
                    )
                    return deployment.spec.replicas == 0 and not pods.items

                await eventually(scaled_to_zero, within=180, explain=lambda: explain(name))
                executed = set(executor.pods)
                ready = {c["type"]: c["status"] for c in isvc_status(name)["conditions"]}
                assert ready["Ready"] == "True"  # at zero, and still Ready
                # The next chat wakes it: the activator holds it until a new Pod is Ready.
                await _stream_chat(chat)
                assert len(set(executor.pods) - executed) == 1, executor.describe()
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
                    and _missing(
                        objects.get_namespaced_custom_object,
                        *KSVC[:2],
                        NAMESPACE,
                        KSVC[2],
                        predictor,
                    )
                    and _missing(apps.read_namespaced_deployment, predictor, NAMESPACE)
                    and not apps.list_namespaced_deployment(
                        NAMESPACE, label_selector=selector
                    ).items
                    and not apps.list_namespaced_replica_set(
                        NAMESPACE, label_selector=selector
                    ).items
                    and not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                )

            await eventually(nothing_left, within=120, explain=manager_errors)
            # And no runtime (or queue-proxy) the Pods were is still running.
            pods = list(executor.pods.values())
            await eventually(lambda: all(_stopped(p) for p in pods), within=60)
