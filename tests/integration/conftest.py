"""Kubernetes fixtures shared by the integration tests: CRDs and config/'s RBAC installed.

The tests log in as the ServiceAccounts of ``config/`` (tokens minted by the API
server), so what RBAC in ``config/`` allows is what the code under test may do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from support.crds import install
from support.kube import KubeCluster
from support.kubectl import KubeconfigFor, kubectl, service_account_kubeconfig
from support.procs import MissingService
from support.services import unavailable
from support.toolchain import ROOT, go_module

CONFIG = ROOT / "config"
NAMESPACE = "modelserve"  # config/namespace.yaml


@pytest.fixture(scope="session")
def kube_admin(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    """A client as cluster admin (``system:masters``): plays the cluster admin's part."""
    api = kube_cluster.admin_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def modelserve_crds(kube_admin: client.ApiClient) -> client.ApiClient:
    """The ModelServe CRD of config/ and KServe's InferenceService CRD (pinned) installed."""
    try:
        kserve = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    install(kube_admin, CONFIG / "crd" / "modelserve.yaml")
    install(
        kube_admin, kserve / "config" / "crd" / "full" / "serving.kserve.io_inferenceservices.yaml"
    )
    return kube_admin


@pytest.fixture(scope="session")
def config_rbac(kube_cluster: KubeCluster) -> None:
    """config/'s namespace, ServiceAccounts, Roles and bindings, applied as an admin would."""
    kubectl(
        kube_cluster.kubeconfig,
        "apply",
        "--server-side",
        f"--filename={CONFIG / 'namespace.yaml'}",
        f"--filename={CONFIG / 'operator' / 'rbac.yaml'}",
        f"--filename={CONFIG / 'pipeline' / 'rbac.yaml'}",
    )


@pytest.fixture(scope="session")
def kubeconfig_for(
    kube_cluster: KubeCluster, config_rbac: None, tmp_path_factory: pytest.TempPathFactory
) -> KubeconfigFor:
    """``kubeconfig_for("modelserve-operator")``: log in as that ServiceAccount of config/."""
    directory = tmp_path_factory.mktemp("kubeconfigs")

    def make(service_account: str) -> Path:
        return service_account_kubeconfig(kube_cluster, directory, NAMESPACE, service_account)

    return make
