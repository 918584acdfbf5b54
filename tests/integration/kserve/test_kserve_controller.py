"""The real KServe controller accepts kserve/ and renders the operator's InferenceService.

KServe v0.16.0's manager runs against the real control plane with its own CRDs,
``inferenceservice-config`` and webhooks (support/kserve_controller.py). Our
operator (logged in as config/'s ``modelserve-operator``) turns a ModelServe into
an InferenceService in Standard (RawDeployment) mode; everything asserted is what
KServe's webhooks and reconciler made of it: the predictor Deployment and
Service, and the Pod its pod mutator gave the storage initializer.

kwok plays the kubelet but leaves KServe's predictor Pods alone here: the pod
executor (support/pod_executor.py) runs the rendered Pod on this host as its
spec says (KServe's storage initializer pulls the GGUF from a real MinIO, then
our runtime container serves it) and reports it Ready once its readiness probe
passes, so the InferenceService goes Ready only when what KServe rendered works.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.settings import load_settings
from support import waiting
from support.databases import create_postgres_database, drop_postgres_database
from support.kserve_controller import KServeController
from support.kube import KubeCluster, ensure_namespace
from support.kubectl import KubeconfigFor, kubectl
from support.minio_server import MinioServer
from support.operator_harness import running_operator
from support.pod_executor import (
    PodNetwork,
    report_ready,
    run_init_containers,
    start_container,
)
from support.postgres import PostgresServer
from support.records import new_server, wait_for_status
from support.toolchain import ROOT

pytestmark = [pytest.mark.kube, pytest.mark.postgres]
NAMESPACE = "modelserve"
RUNTIME = ("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
STORAGE = ROOT / "kserve" / "storage.yaml"
TOKEN = ROOT / "kserve" / "runtime-token.yaml"
RUNTIME_TOKEN_SECRET = "modelserve-runtime-token"  # kserve/runtime-token.yaml
STORAGE_URI = "s3://models/demo/demo.gguf"
ISVC_LABEL = "serving.kserve.io/inferenceservice"


async def eventually(check: Callable[[], Any], within: float = 60, **how: Any) -> Any:
    """As support.waiting.eventually, with this file's longer default wait."""
    return await waiting.eventually(check, within, **how)


def by_name(items: list[Any]) -> dict[str, Any]:
    return {item.name: item for item in items or []}


def test_kserve_accepts_our_cluster_serving_runtimes(
    installed: client.ApiClient, kserve_cluster: tuple[KubeCluster, KServeController]
) -> None:
    objects = client.CustomObjectsApi(installed)
    names = {
        item["metadata"]["name"] for item in objects.list_cluster_custom_object(*RUNTIME)["items"]
    }
    assert {"modelserve-llamacpp", "modelserve-llamacpp-gpu"} <= names
    # They went through KServe's validating webhook, on the manager.
    _, controller = kserve_cluster
    assert "validate-serving-kserve-io-v1alpha1-clusterservingruntime" in controller.log.read_text()


async def test_the_operators_inference_service_is_rendered_into_our_runtime_pod(
    installed: client.ApiClient,
    login_as: KubeconfigFor,
    postgres_server: PostgresServer,
    minio_server: MinioServer,
    kserve_cluster: tuple[KubeCluster, KServeController],
) -> None:
    url = await create_postgres_database(postgres_server)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=login_as("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        public_base_url="https://models.example.test",
        kserve_deployment_mode="RawDeployment",  # the old name: it becomes Standard
    )
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri=STORAGE_URI,
        sha256="c" * 64,
        runtime=ms.RuntimeParams(n_ctx=1024),
        resources=ms.Resources(cpu="2", memory="3Gi"),
        replicas=ms.Replicas(min=1, max=1),
    )
    name = ms.resource_name(spec.server_uuid)
    _, controller = kserve_cluster

    def manager_errors() -> str:
        """What KServe's manager logged as errors: why it did not reconcile."""
        lines = controller.log.read_text(errors="replace").splitlines()
        return "\n".join([line[:400] for line in lines if '"level":"error"' in line][-10:])

    objects = client.CustomObjectsApi(installed)
    core, apps = client.CoreV1Api(installed), client.AppsV1Api(installed)
    engine = make_engine(url)
    try:
        with running_operator(settings):  # it migrates the fresh database
            sessions = make_sessionmaker(engine)
            async with sessions.begin() as session:
                await new_server(session, server_uuid=spec.server_uuid, status="pending")
            objects.create_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, ms.manifest(spec, NAMESPACE)
            )

            def deployment() -> Any:
                try:
                    return apps.read_namespaced_deployment(f"{name}-predictor", NAMESPACE)
                except ApiException as exc:
                    if exc.status == 404:
                        return None
                    raise

            def pod() -> Any:
                pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"{ISVC_LABEL}={name}")
                return pods.items[0] if pods.items else None

            def isvc_status() -> dict[str, Any]:
                isvc = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
                return dict(isvc.get("status") or {})

            try:
                rendered = await eventually(deployment)
                the_pod = await eventually(pod)
            except AssertionError:
                raise AssertionError(
                    f"KServe rendered nothing; InferenceService status: {isvc_status()}\n"
                    f"{manager_errors()}"
                ) from None

            template = rendered.spec.template.spec
            assert template.service_account_name == "modelserve-models"
            (container,) = [c for c in template.containers if c.name == "kserve-container"]
            assert container.image == "ghcr.io/modelserve/runtime:0.1.0"
            assert container.command == ["modelserve", "runtime"]
            assert container.args == [
                "--model",
                "/mnt/models",
                "--host",
                "0.0.0.0",  # noqa: S104 - the pod's address, in kserve/'s runtime
                "--port",
                "8080",
            ]
            env = {e.name: e.value for e in container.env}
            assert env["MODELSERVE_RUNTIME_MODEL_NAME"] == "demo"
            assert env["MODELSERVE_RUNTIME_N_CTX"] == "1024"  # the ModelServe's, not the runtime's
            assert env["MODELSERVE_RUNTIME_SHA256"] == "c" * 64
            assert env["MODELSERVE_RUNTIME_MAX_QUEUE"] == "16"  # the runtime's default
            assert [(p.container_port, p.protocol) for p in container.ports] == [(8080, "TCP")]
            assert container.resources.limits == {"cpu": "2", "memory": "3Gi"}
            assert container.readiness_probe.http_get.path == "/v2/health/ready"

            # The pod mutator (a webhook on the manager) added the storage initializer.
            pod_spec = the_pod.spec
            (init,) = [c for c in pod_spec.init_containers or [] if c.name == "storage-initializer"]
            assert init.args == [STORAGE_URI, "/mnt/models"]
            init_env = by_name(init.env)
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                ref = init_env[key].value_from.secret_key_ref
                assert (ref.name, ref.key) == ("modelserve-minio", key)
            # kserve/storage.yaml's annotations, as the admin filled them in.
            assert init_env["AWS_ENDPOINT_URL"].value == f"http://{minio_server.endpoint}"
            assert init_env["S3_USE_HTTPS"].value == "0"
            assert init_env["AWS_DEFAULT_REGION"].value == "us-east-1"
            (runtime_container,) = [c for c in pod_spec.containers if c.name == "kserve-container"]
            mounts = {m.mount_path: m.name for m in runtime_container.volume_mounts or []}
            init_mounts = {m.mount_path: m.name for m in init.volume_mounts or []}
            assert mounts["/mnt/models"] == init_mounts["/mnt/models"]
            volumes = by_name(pod_spec.volumes)
            assert volumes[mounts["/mnt/models"]].empty_dir is not None

            service = await eventually(
                lambda: (
                    core.list_namespaced_service(
                        NAMESPACE, label_selector=f"{ISVC_LABEL}={name}"
                    ).items
                )
            )
            ports = [(p.port, p.target_port) for s in service for p in s.spec.ports]
            assert (80, 8080) in ports

            # KServe 0.16 calls RawDeployment "Standard"; the operator asks for that.
            isvc = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
            assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE] == "Standard"
            assert (await eventually(isvc_status)).get("deploymentMode") == "Standard"

            # The operator recorded the InferenceService KServe is reconciling.
            async def recorded() -> Any:
                async with sessions() as session:
                    return await repo.get_server(session, spec.server_uuid)

            deadline = time.monotonic() + 30
            while (record := await recorded()).inference_service != name:
                assert time.monotonic() < deadline, (record.status, record.status_message)
                await asyncio.sleep(0.3)
            assert record.namespace == NAMESPACE

            # A change of the ModelServe reaches the pod template: KServe's validating
            # webhook accepts the operator's update of the InferenceService.
            objects.patch_namespaced_custom_object(
                ms.GROUP,
                ms.VERSION,
                NAMESPACE,
                ms.PLURAL,
                name,
                {"spec": {"runtime": {"nCtx": 2048}}},
            )

            def n_ctx() -> bool:
                (c,) = [
                    c
                    for c in deployment().spec.template.spec.containers
                    if c.name == "kserve-container"
                ]
                env: dict[str, str] = {e.name: e.value for e in c.env}
                return env["MODELSERVE_RUNTIME_N_CTX"] == "2048"

            await eventually(n_ctx, within=60, explain=manager_errors)

            # Deleting the ModelServe deletes the InferenceService (KServe lets its
            # finalizer go) and the garbage collector its Deployment.
            objects.delete_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, name
            )

            def gone() -> bool:
                isvcs = objects.list_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2])
                return not isvcs["items"] and deployment() is None

            await eventually(gone, within=90, explain=manager_errors)
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, url)


def storage_objects(namespace: str, minio: MinioServer, token: str) -> list[dict[str, Any]]:
    """kserve/storage.yaml and runtime-token.yaml in ``namespace``, filled in for the
    test's MinIO and credential as an admin would."""
    documents = [d for f in (STORAGE, TOKEN) for d in yaml.safe_load_all(f.read_text()) if d]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        if document["metadata"]["name"] == RUNTIME_TOKEN_SECRET:
            document["stringData"] = {"token": token}
            continue
        if document["kind"] == "Secret":
            document["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] = minio.endpoint
            document["stringData"] = {
                "AWS_ACCESS_KEY_ID": minio.access_key,
                "AWS_SECRET_ACCESS_KEY": minio.secret_key,
            }
    return documents


@pytest.mark.minio
async def test_the_rendered_storage_initializer_pulls_the_gguf_from_minio(
    installed: client.ApiClient,
    kube: KubeCluster,
    login_as: KubeconfigFor,
    postgres_server: PostgresServer,
    minio_server: MinioServer,
    tiny_model: Path,
    pod_network: PodNetwork,
    runtime_token: str,
    tmp_path: Path,
) -> None:
    """The Pod, run as its spec says, serves the model; only then is the server ``ready``."""
    namespace = ensure_namespace(installed, f"pull-{secrets.token_hex(3)}")
    kubectl(
        kube.kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": storage_objects(namespace, minio_server, runtime_token),
            }
        ),
    )
    store = minio_server.client()
    if not store.bucket_exists("models"):
        store.make_bucket("models")
    store.fput_object("models", "demo/demo.gguf", str(tiny_model))
    url = await create_postgres_database(postgres_server)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=login_as("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        kserve_deployment_mode="Standard",
    )
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri=STORAGE_URI,
        replicas=ms.Replicas(min=1, max=1),
    )
    name = ms.resource_name(spec.server_uuid)
    objects, core = client.CustomObjectsApi(installed), client.CoreV1Api(installed)
    engine = make_engine(url)
    try:
        with running_operator(settings):  # it migrates the fresh database
            sessions = make_sessionmaker(engine)
            async with sessions.begin() as session:
                await new_server(session, server_uuid=spec.server_uuid, status="pending")
            objects.create_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, ms.manifest(spec, namespace)
            )

            def pod() -> Any:
                pods = core.list_namespaced_pod(namespace, label_selector=f"{ISVC_LABEL}={name}")
                return pods.items[0] if pods.items else None

            rendered = await eventually(pod)
            run = await asyncio.to_thread(run_init_containers, installed, rendered, tmp_path)
            assert [(r.name, r.returncode) for r in run.runs] == [("storage-initializer", 0)], [
                r.output[-3000:] for r in run.runs
            ]
            (container,) = rendered.spec.containers
            (mount,) = [m for m in container.volume_mounts if m.mount_path == "/mnt/models"]
            # A single-object storageUri lands at /mnt/models/<basename>.
            pulled = run.volumes[mount.name] / "demo.gguf"
            got, want = await asyncio.gather(
                asyncio.to_thread(pulled.read_bytes), asyncio.to_thread(tiny_model.read_bytes)
            )
            assert got == want

            # Then the runtime container, as its spec says, serves the pulled model.
            sandbox = await asyncio.to_thread(pod_network.attach)
            runtime = await asyncio.to_thread(
                start_container, installed, rendered, "kserve-container", run, tmp_path, sandbox
            )
            try:

                def ready() -> bool:
                    if runtime.process.proc is not None and runtime.process.proc.poll() is not None:
                        raise AssertionError(f"the runtime exited:\n{runtime.process.log_tail()}")
                    try:
                        url = runtime.probe_url(container.readiness_probe)
                        return httpx.get(url, timeout=2).status_code == 200
                    except httpx.HTTPError:
                        return False

                await eventually(ready, within=120, explain=runtime.process.log_tail)
                # At the Pod's own address and the spec's port, as a Service would dial it.
                url = runtime.url(8080, "/v1/models")
                # The runtime answers only the credential the Secret gave it.
                stranger = await asyncio.to_thread(httpx.get, url)
                assert stranger.status_code == 401, stranger.text
                gateway = {"Authorization": f"Bearer {runtime_token}"}
                models = (await asyncio.to_thread(httpx.get, url, headers=gateway)).json()
                assert [m["id"] for m in models["data"]] == ["demo"]

                # Until the Pod reports Ready, KServe (and so the operator) says not ready.
                async with sessions() as session:
                    record = await repo.get_server(session, spec.server_uuid)
                assert record.status == "loading", (record.status, record.status_message)
                await asyncio.to_thread(report_ready, installed, rendered)
                record = await wait_for_status(sessions, spec.server_uuid, "ready", within=60)
                # The predictor's cluster-local Service (status.address), where the
                # gateway, inside the cluster, dials; not the ingress domain's host.
                assert record.internal_url == (
                    f"http://{name}-predictor.{namespace}.svc.cluster.local"
                )
                served = objects.get_namespaced_custom_object(
                    ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name
                )
                assert served["status"]["phase"] == "Ready"
            finally:
                runtime.process.stop()
                pod_network.detach(sandbox)

            objects.delete_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name
            )
            await eventually(lambda: pod() is None, within=90)
            await wait_for_status(sessions, spec.server_uuid, "deleted", within=60)
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, url)
