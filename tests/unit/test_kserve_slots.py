"""Knative sees the runtime's slots: concurrency and the autoscaling target follow n_parallel."""

from __future__ import annotations

import uuid

from modelserve.kserve.inference_service import (
    TARGET_UTILIZATION,
    ServerSpec,
    build_inference_service,
)


def spec(**extra: object) -> ServerSpec:
    return ServerSpec(
        server_uuid=uuid.uuid4(),
        namespace="models",
        model_name="demo",
        storage_uri="s3://models/demo.gguf",
        **extra,  # type: ignore[arg-type]
    )


def predictor(manifest: dict[str, object]) -> dict[str, object]:
    return manifest["spec"]["predictor"]  # type: ignore[index,no-any-return]


def test_cpu_default_is_four_slots_scaled_at_full_use() -> None:
    manifest = build_inference_service(spec())
    assert predictor(manifest)["containerConcurrency"] == 4
    assert predictor(manifest)["scaleTarget"] == 4
    assert predictor(manifest)["scaleMetric"] == "concurrency"
    assert manifest["metadata"]["annotations"][TARGET_UTILIZATION] == "100"


def test_gpu_default_and_explicit_n_parallel() -> None:
    assert predictor(build_inference_service(spec(gpus=1)))["containerConcurrency"] == 16
    manifest = build_inference_service(spec(runtime_args={"n_parallel": 6}))
    assert predictor(manifest)["containerConcurrency"] == 6
    env = {e["name"]: e.get("value") for e in predictor(manifest)["model"]["env"]}  # type: ignore[index]
    assert env["MODELSERVE_RUNTIME_N_PARALLEL"] == "6"  # the runtime gets the same number
