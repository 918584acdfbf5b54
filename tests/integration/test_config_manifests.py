"""config/ and func.yaml: every manifest names only fields that exist, and is accepted."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelserve.functions.broker import triggers
from modelserve.functions.steps.registry import STEPS
from modelserve.kserve.schema import problems
from support.crds import install, openapi_problems, schema_of
from support.kube import KubeCluster, ensure_namespace
from support.procs import MissingService, find_binary
from support.services import unavailable
from support.toolchain import go_module

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
# Keyed on (apiVersion, kind): a core v1 Service is not a Knative Service.
KUBERNETES_KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ): "V1MutatingWebhookConfiguration",
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ): "V1ValidatingWebhookConfiguration",
}


PROMETHEUS_OPERATOR_KINDS = {
    "PodMonitor": "podmonitors",
    "ServiceMonitor": "servicemonitors",
    "PrometheusRule": "prometheusrules",
}


def knative(kind: str) -> Path:
    try:
        serving = go_module("knative.dev/serving", "KNATIVE_SERVING_VERSION")
        eventing = go_module("knative.dev/eventing", "KNATIVE_EVENTING_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    if kind in {"RequestAuthentication", "AuthorizationPolicy"}:
        try:
            istio = go_module("istio.io/api", "ISTIO_API_VERSION")
        except MissingService as exc:
            unavailable(str(exc))
        return istio / "kubernetes" / "customresourcedefinitions.gen.yaml"
    if kind in PROMETHEUS_OPERATOR_KINDS:  # config/observability/
        try:
            operator = go_module(
                "github.com/prometheus-operator/prometheus-operator", "PROMETHEUS_OPERATOR_VERSION"
            )
        except MissingService as exc:
            unavailable(str(exc))
        crds = operator / "example" / "prometheus-operator-crd"
        return crds / f"monitoring.coreos.com_{PROMETHEUS_OPERATOR_KINDS[kind]}.yaml"
    return {
        "Service": serving / "config/core/300-resources/service.yaml",
        "Broker": eventing / "config/core/resources/broker.yaml",
        "Trigger": eventing / "config/core/resources/trigger.yaml",
        "SinkBinding": eventing / "config/core/resources/sinkbindings.yaml",
    }[kind]


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(CONFIG.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append(
                    (f"{path.relative_to(CONFIG)}:{doc['kind']}:{doc['metadata']['name']}", doc)
                )
    return found


DOCS = documents()


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_manifest_names_only_fields_that_exist(where: str, doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    if (doc["apiVersion"], kind) in KUBERNETES_KINDS:
        assert problems(doc, KUBERNETES_KINDS[(doc["apiVersion"], kind)]) == []
    else:
        version = doc["apiVersion"].split("/")[1]
        assert openapi_problems(doc, schema_of(knative(kind), version, kind)) == []


def test_the_walker_catches_a_misspelt_field() -> None:
    doc = next(d for w, d in DOCS if d["kind"] == "Trigger")
    broken = json.loads(json.dumps(doc))
    broken["spec"]["delivery"]["retries"] = broken["spec"]["delivery"].pop("retry")
    assert openapi_problems(broken, schema_of(knative("Trigger"), "v1")) == [
        "spec.delivery.retries: not a field of the schema"
    ]


@pytest.mark.parametrize("folder", [CONFIG, CONFIG / "observability"])
def test_kustomization_lists_every_manifest(folder: Path) -> None:
    """config/ lists everything but the options and observability/ (its own
    kustomization, applied where the Prometheus Operator's CRDs exist)."""
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    files = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*.yaml")
        if not p.relative_to(folder).as_posix().startswith(("optional/", "observability/"))
    }
    files.discard("kustomization.yaml")
    assert files <= set(listed)
    for entry in listed:
        assert (folder / entry).exists(), entry


def test_every_step_has_one_trigger_and_one_service() -> None:
    rules = triggers.pipeline_rules(CONFIG)
    by_type = {r.attributes["type"]: r for r in rules}
    assert len(by_type) == len(rules) == len(STEPS)
    services = {
        d["metadata"]["name"]: d
        for _, d in DOCS
        if d["kind"] == "Service" and d["apiVersion"].startswith("serving.knative.dev")
    }
    for step in STEPS.values():
        assert step.handles is not None
        rule = by_type[step.handles]
        assert rule.subscriber == step.service
        assert rule.delivery.retry > 0 and rule.delivery.dead_letter == "modelserve-dead-letter"
        template = services[step.service]["spec"]["template"]
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert env["FUNCTION_TARGET"] == step.name.replace("-", "_")
        assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert "modelserve-dead-letter" in services


def knative_validation(*paths: Path) -> list[dict[str, str]]:
    """Knative Serving's own defaulting + validation (.ci/knative-validate) of the files."""
    try:
        binary = find_binary("knative-validate", hint=".ci/run builds it")
    except MissingService as exc:
        unavailable(str(exc))
    result = subprocess.run(
        [binary, *map(str, paths)], capture_output=True, text=True, check=True, timeout=60
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


KNATIVE_SERVICE_FILES = sorted(
    {
        CONFIG / where.split(":")[0]
        for where, d in DOCS
        if d["kind"] == "Service" and d["apiVersion"] == "serving.knative.dev/v1"
    }
)


def test_knative_accepts_every_service_with_its_default_config_and_no_warning() -> None:
    results = knative_validation(*KNATIVE_SERVICE_FILES)
    names = {d["metadata"]["name"] for _, d in KNATIVE_DOCS if d["kind"] == "Service"}
    assert {r["name"] for r in results} == names
    assert [r for r in results if r["errors"] or r["warnings"]] == []


def test_knative_validation_catches_a_timeout_over_its_default_ceiling(tmp_path: Path) -> None:
    doc = next(d for _, d in KNATIVE_DOCS if d["metadata"]["name"] == "modelserve-mirror")
    broken = json.loads(json.dumps(doc))
    broken["spec"]["template"]["spec"]["timeoutSeconds"] = 3600
    del broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    (tmp_path / "mirror.yaml").write_text(yaml.safe_dump(broken))
    (result,) = knative_validation(tmp_path / "mirror.yaml")
    assert "expected 0 <= 3600 <= 600: spec.template.spec.timeoutSeconds" in result["errors"]
    assert "securityContext.runAsNonRoot" in result["warnings"]


def test_func_yaml_is_valid_for_knative_func() -> None:
    try:
        func = go_module("knative.dev/func", "KNATIVE_FUNC_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    schema = json.loads((func / "schema" / "func_yaml-schema.json").read_text())
    document = yaml.safe_load((ROOT / "func.yaml").read_text())
    jsonschema.validate(json.loads(json.dumps(document, default=str)), schema)
    assert document["specVersion"] == "0.36.0"
    broken = dict(document, invoke="sometimes")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(broken, default=str)), schema)


@pytest.fixture(scope="module")
def knative_api(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    ensure_namespace(api, "modelserve")
    for kind in ("Service", "Broker", "Trigger", "SinkBinding"):
        install(api, knative(kind))
    yield api
    api.close()


KNATIVE_DOCS = [
    (w, d)
    for w, d in DOCS
    if d["kind"] in {"Service", "Broker", "Trigger", "SinkBinding"}
    and (d["apiVersion"], d["kind"]) not in KUBERNETES_KINDS
]


@pytest.mark.kube
@pytest.mark.parametrize(("where", "doc"), KNATIVE_DOCS, ids=[w for w, _ in KNATIVE_DOCS])
def test_api_server_accepts_knative_manifest(
    knative_api: client.ApiClient, where: str, doc: dict[str, Any]
) -> None:
    group, version = doc["apiVersion"].split("/")
    plural = {
        "Service": "services",
        "Broker": "brokers",
        "Trigger": "triggers",
        "SinkBinding": "sinkbindings",
    }[doc["kind"]]
    try:
        client.CustomObjectsApi(knative_api).create_namespaced_custom_object(
            group, version, doc["metadata"]["namespace"], plural, doc, dry_run="All"
        )
    except ApiException as exc:
        pytest.fail(f"{where} refused: {exc.status} {exc.body}")
