"""The ModelServe resource: one served model, written by the pipeline, read by the operator.

Both sides use this model, so the manifest the apply step writes and the one the
operator reads cannot drift apart; the CRD's OpenAPI schema (config/crd/) makes
the Kubernetes API server refuse anything else.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelserve.shared.runtime_params import RuntimeParams

GROUP = "modelserve.dev"
VERSION = "v1alpha1"
KIND = "ModelServe"
PLURAL = "modelserves"
API_VERSION = f"{GROUP}/{VERSION}"
AUTH_ANNOTATION = "modelserve.dev/auth-token"
# The serve's trace (W3C traceparent), so the operator's and the runtime's spans join it.
TRACEPARENT_ANNOTATION = "modelserve.dev/traceparent"
SERVER_LABEL = "modelserve.dev/server-uuid"
__all__ = ["RuntimeParams"]  # the request side of the runtime's parameters, re-exported


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Resources(_Camel):
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = Field(default=0, ge=0)


class Replicas(_Camel):
    min: int = Field(default=0, ge=0)
    max: int = Field(default=1, ge=1)


class ModelServeSpec(_Camel):
    server_uuid: uuid.UUID
    model_name: str = Field(min_length=1)
    model_uuid: uuid.UUID | None = None
    storage_uri: str = Field(pattern=r"^(s3|file)://.+")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    resources: Resources = Field(default_factory=Resources)
    replicas: Replicas = Field(default_factory=Replicas)
    idle_timeout_seconds: int = Field(default=600, ge=0)


def resource_name(server_uuid: uuid.UUID) -> str:
    """DNS-1035 safe name: a UUID may start with a digit, a resource name may not."""
    return f"ms-{server_uuid}"


def gateway_url(public_base_url: object, server_uuid: uuid.UUID) -> str:
    """Where a server answers for its users: ``<gateway>/<server-uuid>``."""
    return f"{str(public_base_url).rstrip('/')}/{server_uuid}"


def manifest(
    spec: ModelServeSpec,
    namespace: str,
    auth_token: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The ModelServe object for ``spec`` as the Kubernetes API takes it."""
    metadata: dict[str, Any] = {
        "name": resource_name(spec.server_uuid),
        "namespace": namespace,
        "labels": {SERVER_LABEL: str(spec.server_uuid)},
    }
    annotations = {AUTH_ANNOTATION: auth_token, TRACEPARENT_ANNOTATION: traceparent}
    if any(annotations.values()):
        metadata["annotations"] = {k: v for k, v in annotations.items() if v}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def spec_of(obj: dict[str, Any]) -> ModelServeSpec:
    return ModelServeSpec.model_validate(obj["spec"])


def traceparent_of(obj: dict[str, Any]) -> str | None:
    """The serve's trace the ModelServe carries, if tracing was on when it was applied."""
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(TRACEPARENT_ANNOTATION)
