"""config/observability/: alerts and charts use only documented metric names, the
scrape targets cover every platform service, and the Grafana dashboard fits
Grafana's dashboard types. (The CRs against the Prometheus Operator's own CRD
schemas: tests/integration/test_observability_manifests.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from modelserve.shared.metrics import declared

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "config" / "observability"
METRIC = re.compile(r"\bmodelserve_[a-z0-9_]+\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((OBSERVABILITY / name).read_text()) if d]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return data


def series_names() -> set[str]:
    """Every series name a query may use: counters' and gauges' names, and a
    histogram's ``_bucket``, ``_sum`` and ``_count``."""
    names = set()
    for d in declared():
        if d.kind == "histogram":
            names |= {d.name + suffix for suffix in HISTOGRAM_SERIES}
        else:
            names.add(d.name)
    return names


def rule_expressions() -> dict[str, str]:
    (rule,) = documents("rules.yaml")
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def dashboard_expressions() -> dict[str, str]:
    found = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} {target['refId']}"] = target["expr"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found[f"${variable['name']}"] = variable["query"]["query"]
    return found


def test_alerts_cover_what_the_issue_asks_and_use_documented_names() -> None:
    expressions = rule_expressions()
    assert {
        "ModelServeServerFailed",
        "ModelServeTimeToFirstTokenHigh",
        "ModelServeQueueSaturated",
        "ModelServeMirrorFailures",
    } <= set(expressions)
    known = series_names()
    for alert, expr in expressions.items():
        used = set(METRIC.findall(expr))
        assert used, alert
        assert used <= known, f"{alert} uses undocumented {used - known}"


def test_dashboard_queries_use_documented_names() -> None:
    known = series_names()
    for where, expr in dashboard_expressions().items():
        used = set(METRIC.findall(expr))
        assert used, where
        assert used <= known, f"{where} uses undocumented {used - known}"


def test_the_platform_pod_monitor_scrapes_every_knative_service_of_config() -> None:
    services = {
        d["metadata"]["name"]
        for name in ("pipeline/functions.yaml", "ingress/services.yaml")
        for d in yaml.safe_load_all((ROOT / "config" / name).read_text())
        if d and d["kind"] == "Service" and d["apiVersion"].startswith("serving.knative.dev/")
    }
    monitors = {d["metadata"]["name"]: d for d in documents("podmonitors.yaml")}
    (selected,) = monitors["modelserve-platform"]["spec"]["selector"]["matchExpressions"]
    assert selected["key"] == "serving.knative.dev/service"
    assert set(selected["values"]) == services


def test_the_operator_pod_monitor_names_the_deployment_s_metrics_port() -> None:
    (deployment, *_) = yaml.safe_load_all(
        (ROOT / "config" / "operator" / "deployment.yaml").read_text()
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (
        str(ports["metrics"])
        == container["command"][container["command"].index("--metrics-port") + 1]
    )
    monitor = {d["metadata"]["name"]: d for d in documents("podmonitors.yaml")}[
        "modelserve-operator"
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_the_default_install_leaves_observability_out() -> None:
    # No PodMonitor kind in a cluster without the Prometheus Operator: apply -k
    # config/ must not need it.
    kustomization = yaml.safe_load((ROOT / "config" / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if "observability" in r]
    assert "observability" not in str(kustomization.get("components", []))


def _paths(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _paths(item, f"{prefix}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in _paths(item, f"{prefix}[{i}]").items()
        }
    return {prefix: value}


def _plain(value: Any) -> Any:
    """The SDK's objects as JSON data (its ``to_json`` leaves nested objects in place)."""
    if hasattr(value, "to_json"):
        return _plain(value.to_json())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_the_dashboard_fits_grafana_s_dashboard_types() -> None:
    """Grafana's dashboard schema, as the Grafana Foundation SDK's generated types
    (Grafana 10.1) carry it: a key those types do not know is lost on the way
    through them, so every key must survive the round trip. Value types are not
    checked by the SDK; the structural checks below cover what a person sees."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()  # panel options and queries decode by their type
    data = dashboard()
    again = _plain(Dashboard.from_json(data))
    ours, theirs = _paths(data), _paths(again)
    lost = sorted(set(ours) - set(theirs))
    assert lost == [], f"keys Grafana's dashboard types do not know: {lost}"
    changed = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert changed == {}


def test_the_dashboard_is_laid_out_and_wired_to_a_prometheus_data_source() -> None:
    data = dashboard()
    panels = data["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["fieldConfig"]["defaults"]["unit"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    titles = " ".join(p["title"] for p in panels).lower()
    for chart in ("tokens", "time to first token", "inter-token", "slots", "gateway"):
        assert chart in titles
