"""kserve/: manifests and built InferenceServices match the SDKs' model classes."""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from modelserve.cli import app
from modelserve.kserve.inference_service import ServerSpec, build_inference_service, isvc_name
from modelserve.kserve.schema import check, problems
from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.internal_auth import OPEN_PATHS

KSERVE_DIR = Path(__file__).resolve().parents[2] / "kserve"
KINDS = {
    "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
    "InferenceService": "V1beta1InferenceService",
    "Secret": "V1Secret",
    "ServiceAccount": "V1ServiceAccount",
}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KSERVE_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((f"{path.name}:{doc['kind']}", doc))
    return found


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[w for w, _ in manifests()])
def test_manifest_names_only_real_fields(where: str, doc: dict[str, Any]) -> None:
    assert problems(doc, KINDS[doc["kind"]]) == []


def test_kustomization_lists_every_runtime_file() -> None:
    listed = yaml.safe_load((KSERVE_DIR / "kustomization.yaml").read_text())["resources"]
    for name in listed:
        assert (KSERVE_DIR / name).is_file()
    assert "cluster-serving-runtime.yaml" in listed
    assert "cluster-serving-runtime-gpu.yaml" in listed


def test_a_misspelt_field_is_reported_with_its_path() -> None:
    doc = dict(manifests())["cluster-serving-runtime.yaml:ClusterServingRuntime"]
    broken = copy.deepcopy(doc)
    broken["spec"]["containers"][0]["resourcs"] = broken["spec"]["containers"][0].pop("resources")
    broken["spec"]["supportedModelFormats"][0]["autoselect"] = True
    found = problems(broken, "V1alpha1ClusterServingRuntime")
    assert "spec.containers[0].resourcs: not a field of V1Container" in found
    assert (
        "spec.supportedModelFormats[0].autoselect: not a field of V1alpha1SupportedModelFormat"
        in found
    )
    broken = copy.deepcopy(doc)
    broken["spec"]["containers"][0]["env"][1]["value"] = 4096
    with pytest.raises(ValueError, match=r"env\[1\]\.value: expected a string"):
        check(broken, "V1alpha1ClusterServingRuntime")


def runtime_containers() -> list[dict[str, Any]]:
    docs = dict(manifests())
    return [
        docs[f"{name}:ClusterServingRuntime"]["spec"]["containers"][0]
        for name in ("cluster-serving-runtime.yaml", "cluster-serving-runtime-gpu.yaml")
    ]


@pytest.mark.parametrize("container", runtime_containers(), ids=["cpu", "gpu"])
def test_runtime_args_and_env_exist_in_the_runtime(container: dict[str, Any]) -> None:
    assert container["command"] == ["modelserve", "runtime"]
    help_text = CliRunner().invoke(app, ["runtime", "--help"], terminal_width=200).output
    for flag in (a for a in container["args"] if a.startswith("--")):
        assert flag in help_text, f"{flag} is not an option of `modelserve runtime`"
    fields = set(RuntimeConfig.model_fields)
    for env in container["env"]:
        assert env["name"].startswith("MODELSERVE_RUNTIME_")
        assert env["name"].removeprefix("MODELSERVE_RUNTIME_").lower() in fields
    probes = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert probes == {"/v2/health/ready", "/v2/health/live"}
    # The probes carry no credential: the runtime lets exactly these through.
    assert probes <= OPEN_PATHS


def test_both_runtimes_run_locked_down() -> None:
    """Read-only root, no capabilities, no escalation, not root: the GPU one as the CPU one."""
    cpu, gpu = runtime_containers()
    assert cpu["securityContext"] == gpu["securityContext"]
    assert gpu["securityContext"]["readOnlyRootFilesystem"] is True
    assert gpu["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert gpu["securityContext"]["allowPrivilegeEscalation"] is False


def test_gpu_runtime_offloads_every_layer_to_a_gpu() -> None:
    _, gpu = runtime_containers()
    env = {e["name"]: e["value"] for e in gpu["env"]}
    assert env["MODELSERVE_RUNTIME_N_GPU_LAYERS"] == "-1"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_storage_secret_carries_kserve_s3_annotations() -> None:
    docs = dict(manifests())
    secret = docs["storage.yaml:Secret"]
    annotations = secret["metadata"]["annotations"]
    for key in ("s3-endpoint", "s3-usehttps", "s3-verifyssl", "s3-region"):
        assert f"serving.kserve.io/{key}" in annotations
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(v == "" for v in secret["stringData"].values()), "no sample secret ships"
    account = docs["storage.yaml:ServiceAccount"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]


def test_built_inference_service() -> None:
    server = uuid.UUID("0f0c7c52-8d1e-4d9b-9a57-2f3f6f1f0a11")  # starts with a digit
    isvc = build_inference_service(
        ServerSpec(
            server_uuid=server,
            namespace="team-a",
            model_name="demo",
            storage_uri="s3://models/demo/demo.gguf",
            cpu="2",
            memory="4Gi",
            min_replicas=0,
            max_replicas=3,
            sha256="a" * 64,
            runtime_args={"n_ctx": 4096},
        )
    )
    meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
    assert DNS_1035.match(meta["name"]) and len(meta["name"]) <= 63
    assert meta["name"] == isvc_name(server) == f"ms-{server}"
    assert meta["labels"]["modelserve.dev/server-uuid"] == str(server)
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 3)
    assert predictor["serviceAccountName"] == "modelserve-models"
    model = predictor["model"]
    assert model["runtime"] == "modelserve-llamacpp"
    assert model["modelFormat"] == {"name": "gguf"}
    assert model["storageUri"] == "s3://models/demo/demo.gguf"
    assert model["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert env == {
        "MODELSERVE_RUNTIME_MODEL_NAME": "demo",
        "MODELSERVE_RUNTIME_INTERNAL_TOKEN": None,  # from the Secret, never in the spec
        "MODELSERVE_RUNTIME_SHA256": "a" * 64,
        "MODELSERVE_RUNTIME_N_CTX": "4096",
    }
    (token,) = [e for e in model["env"] if e["name"] == "MODELSERVE_RUNTIME_INTERNAL_TOKEN"]
    assert token["valueFrom"] == {
        "secretKeyRef": {"name": "modelserve-runtime-token", "key": "token", "optional": False}
    }
    # Reachable only inside the cluster, in both of KServe's deployment modes.
    assert meta["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert meta["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    assert problems(isvc, "V1beta1InferenceService") == []


def test_the_runtime_token_secret_ships_empty_and_names_what_the_isvc_reads() -> None:
    secret = dict(manifests())["runtime-token.yaml:Secret"]
    assert secret["metadata"]["name"] == "modelserve-runtime-token"
    assert secret["stringData"] == {"token": ""}, "no sample secret ships"


@pytest.mark.parametrize(
    ("mode", "annotation"),
    [("Serverless", "Knative"), ("Standard", "Standard"), ("RawDeployment", "Standard")],
)
def test_the_deployment_mode_annotation_uses_kserve_016s_names(mode: str, annotation: str) -> None:
    """KServe 0.16 records Knative/Standard in the status and refuses any update whose
    annotation still says Serverless/RawDeployment, its own finalizer's included."""
    isvc = build_inference_service(
        ServerSpec(
            server_uuid=uuid.uuid4(),
            namespace="n",
            model_name="m",
            storage_uri="s3://b/m.gguf",
            deployment_mode=mode,
        )
    )
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == annotation


def test_gpu_servers_use_the_gpu_runtime() -> None:
    isvc = build_inference_service(
        ServerSpec(
            server_uuid=uuid.uuid4(),
            namespace="n",
            model_name="m",
            storage_uri="s3://b/m.gguf",
            gpus=1,
        )
    )
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "modelserve-llamacpp-gpu"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
