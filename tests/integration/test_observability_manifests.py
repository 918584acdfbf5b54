"""config/observability/ against the Prometheus Operator's own CRDs in a real API server.

The CRDs come from the pinned Go module (``PROMETHEUS_OPERATOR_VERSION`` in
.ci/versions); the kustomization passes a server-side dry run with strict field
validation, so a misspelt field or a wrong type is refused as Prometheus
Operator would refuse it. Then a PodMonitor is made and mangled to show the
schema is really enforced.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelserve.functions.api.series import promql
from support.crds import install
from support.kube import KubeCluster, ensure_namespace
from support.kubectl import kubectl
from support.procs import MissingService
from support.prometheus_server import promtool, start_prometheus
from support.services import start_or_skip, unavailable
from support.toolchain import ROOT, go_module

pytestmark = pytest.mark.kube
OBSERVABILITY = ROOT / "config" / "observability"
KINDS = ("podmonitors", "servicemonitors", "prometheusrules")


@pytest.fixture(scope="module")
def with_prometheus_crds(kube_cluster: KubeCluster, kube_admin: client.ApiClient) -> KubeCluster:
    try:
        module = go_module(
            "github.com/prometheus-operator/prometheus-operator", "PROMETHEUS_OPERATOR_VERSION"
        )
    except MissingService as exc:
        unavailable(str(exc))
    for kind in KINDS:
        install(
            kube_admin,
            module / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{kind}.yaml",
        )
    ensure_namespace(kube_admin, "modelserve")
    return kube_cluster


def rendered(cluster: KubeCluster) -> list[dict[str, Any]]:
    out = kubectl(cluster.kubeconfig, "kustomize", str(OBSERVABILITY)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_observability_kustomization_passes_a_strict_server_side_dry_run(
    with_prometheus_crds: KubeCluster,
) -> None:
    kinds = sorted(d["kind"] for d in rendered(with_prometheus_crds))
    assert kinds == ["ConfigMap", "PodMonitor", "PodMonitor", "PodMonitor", "PrometheusRule"]
    result = kubectl(
        with_prometheus_crds.kubeconfig,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-k",
        str(OBSERVABILITY),
    )
    assert result.stdout.count("(server dry run)") == len(kinds), result.stdout


def test_the_crd_schema_refuses_a_broken_pod_monitor(
    with_prometheus_crds: KubeCluster, kube_admin: client.ApiClient
) -> None:
    """The dry run above means something: the same schema refuses a wrong field type."""
    (monitor, *_) = [d for d in rendered(with_prometheus_crds) if d["kind"] == "PodMonitor"]
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["portNumber"] = "eight thousand"
    objects = client.CustomObjectsApi(kube_admin)
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            "monitoring.coreos.com", "v1", "modelserve", "podmonitors", broken, dry_run="All"
        )
    assert refused.value.status == 422
    assert "portNumber" in str(refused.value.body)


def test_the_alerts_pass_promtool(tmp_path: Path) -> None:
    """Prometheus' own checker on the PrometheusRule's groups (PromQL, templates, fields)."""
    tool = start_or_skip(promtool)
    (rule,) = [d for d in yaml.safe_load_all((OBSERVABILITY / "rules.yaml").read_text()) if d]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [tool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_dashboard_and_api_query_parses_in_a_real_prometheus() -> None:
    """The Grafana panels' and the API's PromQL, asked of a real Prometheus (Grafana's
    ``$__rate_interval`` and the server variable filled in as Grafana would)."""
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += list(promql(uuid.uuid4()).values())
    prometheus = start_or_skip(lambda: start_prometheus({}))
    try:
        for query in queries:
            filled = query.replace("$__rate_interval", "1m").replace("$server", ".*")
            answer = httpx.get(
                f"{prometheus.url}/api/v1/query", params={"query": filled}, timeout=10
            ).json()
            assert answer["status"] == "success", (filled, answer.get("error"))
    finally:
        prometheus.stop()
