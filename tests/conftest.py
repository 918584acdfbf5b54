"""Session-scoped real servers: Postgres, MinIO, a Kubernetes control plane.

Each starts on 127.0.0.1 on a free port with a temp data dir, once per test
session and only when a test asks for it, and is stopped at the end.

The Kubernetes fixtures install config/'s CRD and RBAC: tests log in as the
ServiceAccounts of ``config/`` (tokens minted by the API server), so what RBAC in
``config/`` allows is what the code under test may do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.crds import install
from support.databases import create_postgres_database, drop_postgres_database, sqlite_url
from support.engine import gemma_gguf
from support.kube import KubeCluster, start_kube_cluster
from support.kubectl import KubeconfigFor, kubectl, service_account_kubeconfig
from support.minio_server import MinioServer, start_minio
from support.postgres import PostgresServer, start_postgres
from support.procs import MissingService
from support.services import start_or_skip, unavailable
from support.toolchain import ROOT, go_module

CONFIG = ROOT / "config"
NAMESPACE = "modelserve"  # config/namespace.yaml


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated tiny llama GGUF (about 0.5 MB) that most tests serve or inspect."""
    return write_synthetic_gguf(tmp_path_factory.mktemp("models") / "demo.gguf", "tiny")


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (253 MB; base model, sliding-window attention)."""
    return start_or_skip(gemma_gguf)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_or_skip(start_postgres)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def minio_server() -> Iterator[MinioServer]:
    server = start_or_skip(start_minio)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, controller-manager, scheduler, a kwok node (support/kube.py)."""
    cluster = start_or_skip(start_kube_cluster)
    yield cluster
    cluster.stop()


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


@pytest.fixture(params=["sqlite", "postgres"])
async def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A freshly migrated database on each engine: SQLite file, then real Postgres."""
    server: PostgresServer | None = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        url = await create_postgres_database(server)
    else:
        url = sqlite_url(tmp_path)
    engine = make_engine(url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
    if server is not None:
        await drop_postgres_database(server, url)


@pytest.fixture
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(db_engine)
