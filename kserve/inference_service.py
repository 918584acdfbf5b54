"""Build the InferenceService for one server with the kserve SDK's V1beta1 classes.

Built from the SDK's model classes (so a misspelt field fails at construction)
and then serialized to the plain dict the Kubernetes API takes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from modelserve.kserve.schema import check
from modelserve.shared.kserve_sdk import import_kserve
from modelserve.shared.modelserve import resource_name
from modelserve.shared.runtime_params import env_name
from modelserve.shared.slots import n_parallel_of

RUNTIME = "modelserve-llamacpp"
GPU_RUNTIME = "modelserve-llamacpp-gpu"
MODEL_FORMAT = "gguf"
SERVICE_ACCOUNT = "modelserve-models"
API_VERSION = "serving.kserve.io/v1beta1"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
# KServe 0.16 renamed Serverless to Knative (and RawDeployment to Standard), records
# the new name in the InferenceService's status and then refuses every update whose
# annotation differs ("deploymentMode cannot be changed from 'Knative' to
# 'Serverless'"), the operator's patches and KServe's own finalizer removal
# included: the annotation carries the new names.
KSERVE_MODE_NAMES = {"Serverless": "Knative", "RawDeployment": "Standard"}
# Knative scales at 70% of the target by default; the runtime's slots are the
# real capacity, so a replica is added when they are all busy, not before.
TARGET_UTILIZATION = "autoscaling.knative.dev/target-utilization-percentage"
# Only the gateway may reach a runtime. Knative mode: KServe copies the InferenceService's
# labels onto the Knative Service, and Knative then publishes its Route on the
# cluster-local gateway only (KServe's own ingress reconciler skips the external host for
# it too). Standard mode: KServe creates no Ingress or HTTPRoute for the second label.
# Checked against KServe v0.16.0 (pkg/constants: VisibilityLabel, NetworkVisibility).
CLUSTER_LOCAL = {
    "networking.knative.dev/visibility": "cluster-local",
    "networking.kserve.io/visibility": "cluster-local",
}
# The runtime's internal credential (runtime/internal_auth.py): a Secret in the
# server's namespace (kserve/runtime-token.yaml; the gateway gets the same value), read
# into the pod's environment by the kubelet. Not optional: without it the pod does not
# start, and a runtime listening beyond loopback refuses to start without a token.
RUNTIME_TOKEN_SECRET = "modelserve-runtime-token"  # noqa: S105 - a name, not a secret
RUNTIME_TOKEN_KEY = "token"  # noqa: S105 - a key name


def isvc_name(server_uuid: uuid.UUID) -> str:
    """A DNS-1035 name for the server: it must start with a letter, a UUID may not."""
    return resource_name(server_uuid)


@dataclass(frozen=True)
class ServerSpec:
    """What the operator knows about one server when it builds the InferenceService."""

    server_uuid: uuid.UUID
    namespace: str
    model_name: str
    storage_uri: str
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    min_replicas: int = 0
    max_replicas: int = 1
    sha256: str | None = None
    runtime_args: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    service_account: str = SERVICE_ACCOUNT
    deployment_mode: str = "Serverless"


def _env(spec: ServerSpec) -> list[Any]:
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [
        V1EnvVar(name=env_name("model_name"), value=spec.model_name),
        V1EnvVar(
            name=env_name("internal_token"),
            value_from=V1EnvVarSource(
                secret_key_ref=V1SecretKeySelector(
                    name=RUNTIME_TOKEN_SECRET, key=RUNTIME_TOKEN_KEY, optional=False
                )
            ),
        ),
    ]
    if spec.sha256:
        env.append(V1EnvVar(name=env_name("sha256"), value=spec.sha256))
    for key, value in sorted(spec.runtime_args.items()):  # tunables only: never the token
        env.append(V1EnvVar(name=env_name(key), value=str(value)))
    return env


def build_inference_service(spec: ServerSpec) -> dict[str, Any]:
    """The InferenceService manifest for ``spec`` as a plain dict."""
    kserve = import_kserve()
    from kubernetes.client import V1ObjectMeta, V1ResourceRequirements

    slots = n_parallel_of(spec.runtime_args, gpus=spec.gpus)
    resources = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        resources["nvidia.com/gpu"] = str(spec.gpus)
    isvc = kserve.V1beta1InferenceService(
        api_version=API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=isvc_name(spec.server_uuid),
            namespace=spec.namespace,
            labels={
                "modelserve.dev/server-uuid": str(spec.server_uuid),
                **spec.labels,
                **CLUSTER_LOCAL,
            },
            annotations={
                DEPLOYMENT_MODE: KSERVE_MODE_NAMES.get(spec.deployment_mode, spec.deployment_mode),
                TARGET_UTILIZATION: "100",
                **spec.annotations,
            },
        ),
        spec=kserve.V1beta1InferenceServiceSpec(
            predictor=kserve.V1beta1PredictorSpec(
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
                # The runtime decodes `slots` requests together: Knative sends a
                # replica no more than that and scales out when they are all busy.
                container_concurrency=slots,
                scale_metric="concurrency",
                scale_target=slots,
                service_account_name=spec.service_account,
                model=kserve.V1beta1ModelSpec(
                    model_format=kserve.V1beta1ModelFormat(name=MODEL_FORMAT),
                    runtime=GPU_RUNTIME if spec.gpus else RUNTIME,
                    storage_uri=spec.storage_uri,
                    env=_env(spec),
                    resources=V1ResourceRequirements(requests=resources, limits=resources),
                ),
            )
        ),
    )
    manifest: dict[str, Any] = kserve.ApiClient().sanitize_for_serialization(isvc)
    check(manifest, "V1beta1InferenceService")
    return manifest
