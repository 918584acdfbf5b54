"""A control plane of its own with the real KServe controller, config/ and kserve/ applied.

Not the session's cluster: there the operator's tests play KServe's part by
writing InferenceService status, which a running KServe controller would
overwrite. This one is started for this folder's tests and stopped after them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from support.crds import install
from support.knative_serving import (
    KnativeServing,
    install_serving_crds,
    start_knative_serving,
)
from support.kserve_controller import KServeController, start_kserve
from support.kube import KubeCluster, start_kube_cluster
from support.kubectl import KubeconfigFor, kubectl, service_account_kubeconfig
from support.minio_server import MinioServer
from support.pipeline import pipeline_factory, tiny_gguf
from support.pod_executor import PodNetwork, check_pod_network
from support.services import start_or_skip
from support.toolchain import ROOT

__all__ = ["pipeline_factory", "tiny_gguf"]

CONFIG = ROOT / "config"
NAMESPACE = "modelserve"  # config/namespace.yaml, kserve/storage.yaml
MINIO_SECRET = "modelserve-minio"  # kserve/storage.yaml
RUNTIME_TOKEN_SECRET = "modelserve-runtime-token"  # kserve/runtime-token.yaml
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # on every Pod KServe renders
# The queue-proxy .ci/build-knative builds (ko.local: Knative's name for local builds).
QUEUE_IMAGE = "ko.local/knative-queue:v0.50.0"


@pytest.fixture(scope="package")
def kserve_cluster() -> Iterator[tuple[KubeCluster, KServeController]]:
    """etcd, the control plane, kwok and the KServe manager; all stopped at the end.

    Knative Serving's CRDs go in first (KServe looks for them once, when it starts);
    its controller and webhook only for the tests that ask for ``knative``.
    """
    # kwok leaves KServe's predictor Pods to the tests' pod executor.
    cluster = start_or_skip(lambda: start_kube_cluster(executed_label=ISVC_LABEL))
    try:
        start_or_skip(lambda: install_serving_crds(cluster))
        controller = start_or_skip(lambda: start_kserve(cluster))
        yield cluster, controller
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def pod_network() -> Iterator[PodNetwork]:
    """Network namespaces with routable addresses for the Pods run here (root, CAP_NET_ADMIN)."""
    start_or_skip(check_pod_network)
    network = PodNetwork()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="package")
def knative(
    kserve_cluster: tuple[KubeCluster, KServeController], pod_network: PodNetwork
) -> Iterator[KnativeServing]:
    """Knative Serving (webhook, controller, autoscaler, activator) on that cluster."""
    serving = start_or_skip(
        lambda: start_knative_serving(kserve_cluster[0], QUEUE_IMAGE, pod_network)
    )
    try:
        yield serving
    finally:
        serving.stop()


@pytest.fixture(scope="package")
def kube(kserve_cluster: tuple[KubeCluster, KServeController]) -> KubeCluster:
    return kserve_cluster[0]


@pytest.fixture(scope="package")
def runtime_token() -> str:
    """What the admin fills into kserve/runtime-token.yaml (and the gateway gets)."""
    return secrets.token_hex(32)


@pytest.fixture(scope="package")
def installed(
    kube: KubeCluster, minio_server: MinioServer, runtime_token: str
) -> Iterator[client.ApiClient]:
    """config/'s CRD, namespace and RBAC, then ``kubectl apply -k kserve/`` as an admin would.

    The ClusterServingRuntimes go through KServe's validating webhook here. The
    admin then fills in kserve/storage.yaml's Secret for the MinIO the models are
    in: the test's, on this host (the storage initializer runs here too), and
    kserve/runtime-token.yaml's with the runtimes' credential.
    """
    api = kube.admin_client()
    install(api, CONFIG / "crd" / "modelserve.yaml")
    kubectl(
        kube.kubeconfig,
        "apply",
        "--server-side",
        f"--filename={CONFIG / 'namespace.yaml'}",
        f"--filename={CONFIG / 'operator' / 'rbac.yaml'}",
        f"--filename={CONFIG / 'pipeline' / 'rbac.yaml'}",
    )
    kubectl(kube.kubeconfig, "apply", "-k", str(ROOT / "kserve"))
    client.CoreV1Api(api).patch_namespaced_secret(
        MINIO_SECRET,
        NAMESPACE,
        {
            "metadata": {"annotations": {"serving.kserve.io/s3-endpoint": minio_server.endpoint}},
            "stringData": {
                "AWS_ACCESS_KEY_ID": minio_server.access_key,
                "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
            },
        },
    )
    client.CoreV1Api(api).patch_namespaced_secret(
        RUNTIME_TOKEN_SECRET, NAMESPACE, {"stringData": {"token": runtime_token}}
    )
    yield api
    api.close()


@pytest.fixture(scope="package")
def login_as(
    kube: KubeCluster, installed: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> KubeconfigFor:
    """``login_as("modelserve-operator")``: a kubeconfig for that ServiceAccount of config/."""
    directory = tmp_path_factory.mktemp("kubeconfigs")

    def make(service_account: str) -> Path:
        return service_account_kubeconfig(kube, directory, NAMESPACE, service_account)

    return make
