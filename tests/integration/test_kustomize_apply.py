"""``kubectl apply -k config/`` and ``-k kserve/`` against a fresh real cluster.

The cluster gets the real CRDs of Knative Serving, Knative Eventing and KServe
(from their pinned Go modules), then the install runs as the README says: the
two Secrets' inputs go into config/secrets/ (the certificate script, the env file
written from the example), the namespace first, a server-side dry run of every
manifest with strict field validation, then the apply.

A cluster of its own: what config/ installs (admission webhooks whose Service
points at the operator's pods) would change every other test's cluster.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from support.crds import install
from support.kube import KubeCluster, start_kube_cluster
from support.kubectl import kubectl
from support.procs import MissingService
from support.services import start_or_skip, unavailable
from support.toolchain import ROOT, go_module

pytestmark = pytest.mark.kube
EXAMPLE_ENV = ROOT / "config" / "secrets" / "modelserve-config.env.example"


def crd_files() -> list[Path]:
    try:
        serving = go_module("knative.dev/serving", "KNATIVE_SERVING_VERSION")
        eventing = go_module("knative.dev/eventing", "KNATIVE_EVENTING_VERSION")
        kserve = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    return [
        *sorted((serving / "config" / "core" / "300-resources").glob("*.yaml")),
        *sorted((eventing / "config" / "core" / "resources").glob("*.yaml")),
        *sorted((kserve / "config" / "crd" / "full").glob("serving.kserve.io_*.yaml")),
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[KubeCluster]:
    fresh = start_or_skip(start_kube_cluster)
    api = fresh.admin_client()
    try:
        for path in crd_files():
            install(api, path)
    finally:
        api.close()
    yield fresh
    fresh.stop()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config/ and kserve/ as an admin has them after the README's two secret steps."""
    root = tmp_path_factory.mktemp("install")
    for folder in ("config", "kserve"):
        shutil.copytree(ROOT / folder, root / folder)
    secrets_dir = root / "config" / "secrets"
    subprocess.run(
        ["sh", str(secrets_dir / "generate-webhook-cert.sh")], check=True, capture_output=True
    )
    env = EXAMPLE_ENV.read_text().replace("CHANGE-ME", secrets.token_hex(16))
    (secrets_dir / "modelserve-config.env").write_text(env)
    return root


def example_keys() -> set[str]:
    return {
        line.split("=", 1)[0]
        for line in EXAMPLE_ENV.read_text().splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture(scope="module")
def applied(cluster: KubeCluster, checkout: Path) -> KubeCluster:
    kubectl(cluster.kubeconfig, "apply", "-f", str(checkout / "config" / "namespace.yaml"))
    for target in ("config", "kserve"):
        kubectl(
            cluster.kubeconfig,
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-k",
            str(checkout / target),
        )
    for target in ("config", "kserve"):
        kubectl(cluster.kubeconfig, "apply", "--validate=strict", "-k", str(checkout / target))
    return cluster


def rendered(cluster: KubeCluster, folder: Path) -> list[dict[str, Any]]:
    """What ``kubectl apply -k folder`` sends: kubectl's own kustomize output."""
    out = kubectl(cluster.kubeconfig, "kustomize", str(folder)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("target", ["config", "kserve"])
def test_every_manifest_is_in_the_cluster(
    applied: KubeCluster, checkout: Path, target: str
) -> None:
    documents = rendered(applied, checkout / target)
    names = kubectl(applied.kubeconfig, "get", "-k", str(checkout / target), "-o", "name")
    assert len(names.stdout.split()) == len(documents)
    assert len(documents) >= (30 if target == "config" else 4)


def test_the_secrets_are_generated_with_every_key(applied: KubeCluster, checkout: Path) -> None:
    api = applied.admin_client()
    try:
        core = client.CoreV1Api(api)
        settings = core.read_namespaced_secret("modelserve-config", "modelserve")
        assert set(settings.data) == example_keys()
        tls = core.read_namespaced_secret("modelserve-webhook-tls", "modelserve")
        assert tls.type == "kubernetes.io/tls"
        assert set(tls.data) == {"ca.crt", "tls.crt", "tls.key"}
        ca = base64.b64encode((checkout / "config" / "secrets" / "ca.crt").read_bytes()).decode()
        assert tls.data["ca.crt"] == ca
        admission = client.AdmissionregistrationV1Api(api)
        hooks = [
            *admission.read_mutating_webhook_configuration("modelserve-defaults").webhooks,
            *admission.read_validating_webhook_configuration("modelserve-validation").webhooks,
        ]
        assert len(hooks) == 2
        for hook in hooks:
            assert hook.client_config.ca_bundle == ca
    finally:
        api.close()


def test_every_secret_a_workload_names_is_installed(applied: KubeCluster, checkout: Path) -> None:
    documents = rendered(applied, checkout / "config")
    shipped = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    refs = {
        ref["secretRef"]["name"] for d in documents for ref in _env_from(d) if "secretRef" in ref
    } | {
        volume["secret"]["secretName"]
        for d in documents
        for volume in _pod_spec(d).get("volumes", [])
        if "secret" in volume
    }
    assert refs, "no workload names a Secret"
    assert refs <= shipped, f"named but not shipped: {refs - shipped}"


def _pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a workload (Deployment, Knative Service); {} otherwise."""
    template = (document.get("spec") or {}).get("template") or {}
    spec: dict[str, Any] = template.get("spec") or {}
    return spec


def _env_from(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        ref
        for container in _pod_spec(document).get("containers", [])
        for ref in container.get("envFrom", [])
    ]


def test_the_operator_deployment_becomes_available(applied: KubeCluster) -> None:
    kubectl(
        applied.kubeconfig,
        "wait",
        "--for=condition=Available",
        "--timeout=60s",
        "--namespace=modelserve",
        "deployment/modelserve-operator",
    )


def test_the_istio_jwt_option_passes_a_server_side_dry_run(applied: KubeCluster) -> None:
    """config/optional/istio-jwt.yaml against Istio's own CRDs (pinned istio.io/api).

    The Kourier option is a patch of Kourier's controller Deployment, whose
    module is not served by the proxy here, so it is not checked.
    """
    try:
        istio = go_module("istio.io/api", "ISTIO_API_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    api = applied.admin_client()
    try:
        install(api, istio / "kubernetes" / "customresourcedefinitions.gen.yaml")
    finally:
        api.close()
    kubectl(
        applied.kubeconfig,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        str(ROOT / "config" / "optional" / "istio-jwt.yaml"),
    )
