"""Serverless mode: KServe renders the operator's InferenceService into a Knative Service,
and Knative Serving's own webhook and controller turn it into a Revision's Deployment.

Knative Serving v0.50.0's controller and webhook run against the real control
plane (support/knative_serving.py), started before KServe's manager so that it
finds their CRDs. What is asserted is what KServe and Knative made: the Knative
Service, accepted by Knative's validating webhook, and the Deployment of its
first Revision, with our runtime container and Knative's queue-proxy beside it.
The Pod is not run (its queue-proxy, the activator and the autoscaler need a
pod network this host does not have).
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelserve.shared import modelserve as ms
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.settings import load_settings
from support.databases import create_postgres_database, drop_postgres_database
from support.knative_serving import KnativeServing
from support.kserve_controller import KServeController
from support.kube import KubeCluster
from support.kubectl import KubeconfigFor
from support.operator_harness import running_operator
from support.postgres import PostgresServer
from support.records import new_server
from support.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.postgres]
NAMESPACE = "modelserve"
KSVC = ("serving.knative.dev", "v1", "services")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
QUEUE_IMAGE = "ko.local/knative-queue:v0.50.0"  # conftest.py


async def test_serverless_inference_service_becomes_a_knative_revision_with_our_runtime(
    installed: client.ApiClient,
    login_as: KubeconfigFor,
    postgres_server: PostgresServer,
    kserve_cluster: tuple[KubeCluster, KServeController],
    knative: KnativeServing,
) -> None:
    _, controller = kserve_cluster
    url = await create_postgres_database(postgres_server)
    settings = load_settings(
        mode="kubernetes",
        database_url=url,
        kubeconfig=login_as("modelserve-operator"),
        jwt_secret=secrets.token_hex(24),
        kserve_deployment_mode="Serverless",
    )
    spec = ms.ModelServeSpec(
        server_uuid=uuid.uuid4(),
        model_name="demo",
        model_uuid=uuid.uuid4(),
        storage_uri="s3://models/demo/demo.gguf",
        replicas=ms.Replicas(min=0, max=2),
    )
    name = ms.resource_name(spec.server_uuid)
    objects, apps = client.CustomObjectsApi(installed), client.AppsV1Api(installed)

    def explain() -> str:
        try:
            isvc = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
            status = isvc.get("status")
        except ApiException as exc:
            status = {"missing": exc.status}
        errors = [
            json.loads(line)
            for line in controller.log.read_text(errors="replace").splitlines()
            if '"level":"error"' in line
        ]
        kserve = "\n".join(f"{e.get('msg')}: {str(e.get('error'))[:300]}" for e in errors[-5:])
        return f"InferenceService status: {status}\n{kserve}\n{knative.errors()}"

    def ksvc() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = objects.get_namespaced_custom_object(
                *KSVC[:2], NAMESPACE, KSVC[2], f"{name}-predictor"
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def revision_deployment() -> Any:
        listed = apps.list_namespaced_deployment(
            NAMESPACE, label_selector=f"serving.knative.dev/service={name}-predictor"
        )
        return listed.items[0] if listed.items else None

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        with running_operator(settings):  # it migrates the fresh database
            async with sessions.begin() as session:
                await new_server(session, server_uuid=spec.server_uuid, status="pending")
            objects.create_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, ms.manifest(spec, NAMESPACE)
            )
            service = await eventually(ksvc, within=90, explain=explain)
            annotations = service["spec"]["template"]["metadata"]["annotations"]
            assert annotations["autoscaling.knative.dev/min-scale"] == "0"
            assert annotations["autoscaling.knative.dev/max-scale"] == "2"
            assert annotations["autoscaling.knative.dev/target-utilization-percentage"] == "100"

            # KServe 0.16's name for Serverless, in the annotation and in its status.
            isvc = objects.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
            assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
            assert (isvc.get("status") or {}).get("deploymentMode") in {None, "Knative"}

            deployment = await eventually(revision_deployment, within=90, explain=explain)
            containers = {c.name: c for c in deployment.spec.template.spec.containers}
            assert set(containers) == {"kserve-container", "queue-proxy"}
            runtime = containers["kserve-container"]
            assert runtime.image == "ghcr.io/modelserve/runtime:0.1.0"  # no digest resolved
            assert runtime.command == ["modelserve", "runtime"]
            assert containers["queue-proxy"].image == QUEUE_IMAGE
            queue_env = {e.name: e.value for e in containers["queue-proxy"].env}
            assert queue_env["USER_PORT"] == "8080"  # our runtime's port

            objects.delete_namespaced_custom_object(
                ms.GROUP, ms.VERSION, NAMESPACE, ms.PLURAL, name
            )

            def gone() -> str:
                left = {"ksvc": ksvc() is not None, "deployment": revision_deployment() is not None}
                return "" if not any(left.values()) else f"left: {left}"

            await eventually(lambda: not gone(), within=90, explain=lambda: gone() + explain())
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, url)
