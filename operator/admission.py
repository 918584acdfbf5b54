"""Admission webhooks for ModelServe, served by kopf's webhook server.

- mutating: fills the spec's defaults and the server-UUID label, so every stored
  ModelServe is complete;
- validating: a ModelServe must carry a valid JWT in its auth annotation (the
  pipeline's token for this server, or a user token with at least the operator
  role, of a user who still exists and is not disabled) and must keep to the
  resource contract for that role (GPUs included), judged with the mirrored
  model's GGUF facts;
- it must belong where it claims to: named for its server, in the namespace the
  server's record names, for a server the token's user owns (an admin's may
  serve anyone's), and serving exactly the model its ``modelUuid`` names (that
  model's object and sha256). A chat template that reads a file (``@path``) is
  never a resource's to ask for.

Updates that leave the spec alone (finalizers, kopf's own annotations, status)
are let through without a token: the one the resource was created with may
have expired by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import modelserve as ms
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import Claims, TokenKind, TokenVerifier
from modelserve.shared.contract import ResourceContract, ResourceRequest, check
from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord, Role, ServerRecord
from modelserve.shared.gguf_inspect import info_from_facts

VALIDATE_ID = "validate-modelserve"
MUTATE_ID = "default-modelserve"


@dataclass
class AdmissionDeps:
    verifier: TokenVerifier
    contract: ResourceContract
    sessions: async_sessionmaker[AsyncSession]
    auth_cache_ttl: float = 1.0  # how stale a user's enabled state may be (settings)
    bucket: str = "models"  # settings.bucket: where mirrored models are (s3://<bucket>/<key>)


def _refuse(message: str, code: int = 403) -> kopf.AdmissionError:
    return kopf.AdmissionError(message, code=code)


def _check_owner(
    spec: ms.ModelServeSpec, name: str, namespace: str, claims: Claims, record: ServerRecord | None
) -> None:
    """The ModelServe is the one its server's owner asked for, where the pipeline put it.

    One name per server and the record's namespace: a second ModelServe for a server
    (another namespace, another name) would make a second InferenceService for it,
    or patch the real one, and steer the server's traffic.
    """
    if name != ms.resource_name(spec.server_uuid):
        raise _refuse(
            f"a ModelServe for {spec.server_uuid} is named {ms.resource_name(spec.server_uuid)}"
        )
    if record is None:
        return  # nobody's server (a ModelServe made by hand): nothing to take over
    if record.namespace is not None and record.namespace != namespace:
        raise _refuse(f"server {spec.server_uuid} runs in namespace {record.namespace}")
    if claims.role is Role.ADMIN and claims.kind is TokenKind.ACCESS:
        return
    if record.owner != claims.subject:
        raise _refuse(f"server {spec.server_uuid} is not {claims.subject}'s")


def _check_model(spec: ms.ModelServeSpec, record: ModelRecord, bucket: str) -> None:
    """What the pod pulls and verifies is the model the contract was judged for."""
    if spec.storage_uri != f"s3://{bucket}/{record.object_path}":
        raise _refuse(
            f"spec.storageUri is not model {record.model_uuid}'s object "
            f"(s3://{bucket}/{record.object_path})",
            422,
        )
    if spec.sha256 != record.sha256:
        raise _refuse(f"spec.sha256 is not model {record.model_uuid}'s sha256", 422)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _defaults(given: dict[str, Any], full: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The parts of ``full`` missing from ``given``, as a nested patch."""
    patch: dict[str, Any] = {}
    for key, value in full.items():
        if key not in given:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(given[key], dict):
            nested = _defaults(given[key], value, (*path, key))
            if nested:
                patch[key] = nested
    return patch


def register_admission(registry: kopf.OperatorRegistry, deps: AdmissionDeps) -> None:
    guard = AccessGuard(deps.verifier, deps.sessions, ttl=deps.auth_cache_ttl)

    @kopf.on.mutate(
        ms.GROUP,
        ms.VERSION,
        ms.PLURAL,
        id=MUTATE_ID,
        registry=registry,
        operations=["CREATE", "UPDATE"],
    )
    async def default(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        given = dict(body.get("spec") or {})
        try:
            spec = ms.ModelServeSpec.model_validate(given)
        except ValidationError:
            return  # the validating webhook explains what is wrong
        full = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key, value in _defaults(given, full, ()).items():
            patch.spec[key] = value
        if body.metadata.labels.get(ms.SERVER_LABEL) != str(spec.server_uuid):
            patch.metadata.setdefault("labels", {})[ms.SERVER_LABEL] = str(spec.server_uuid)

    @kopf.on.validate(
        ms.GROUP,
        ms.VERSION,
        ms.PLURAL,
        id=VALIDATE_ID,
        registry=registry,
        operations=["CREATE", "UPDATE"],
    )
    async def validate(*, body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
        # kopf passes these too, though its WebhookFn protocol does not list them.
        operation: str | None = kwargs.get("operation")
        old: Any = kwargs.get("old")
        try:
            spec = ms.ModelServeSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            raise kopf.AdmissionError(f"invalid ModelServe: {_problems(exc)}", code=422) from None
        if operation == "UPDATE" and old is not None:
            old_spec = dict(old.get("spec") or {})
            if old_spec == dict(body.get("spec") or {}):
                return  # metadata or status only
            if old_spec.get("serverUuid") != str(spec.server_uuid):
                raise kopf.AdmissionError("spec.serverUuid is immutable", code=422)
        token = body.metadata.annotations.get(ms.AUTH_ANNOTATION)
        try:
            claims = deps.verifier.decode(token, [deps.verifier.audience, "modelserve-pipeline"])
            if claims.kind is TokenKind.PIPELINE:
                claims = deps.verifier.verify_pipeline(token, spec.server_uuid)
            else:  # a user's: refused once the user is disabled or deleted
                claims = await guard.access(token, Role.OPERATOR)
        except AuthError as exc:
            raise kopf.AdmissionError(
                f"{ms.AUTH_ANNOTATION}: {exc.message}", code=exc.status
            ) from None
        if claims.role is None:  # a pipeline token binds the requester's role, always
            raise kopf.AdmissionError(f"{ms.AUTH_ANNOTATION}: the token names no role", 403)
        role = claims.role
        template = spec.runtime.chat_template
        if template is not None and template.startswith("@"):
            raise kopf.AdmissionError(
                "spec.runtime.chatTemplate: '@path' reads a file on the runtime's host; give"
                " the template itself",
                code=422,
            )
        if spec.model_uuid is None:
            raise kopf.AdmissionError("spec.modelUuid is required to check the contract", 422)
        async with deps.sessions() as session:
            try:
                server = await repo.get_server(session, spec.server_uuid)
            except repo.NotFound:
                server = None
            try:
                record = await repo.get_model(session, spec.model_uuid)
            except repo.NotFound:
                raise kopf.AdmissionError(
                    f"model {spec.model_uuid} is not a mirrored model", code=422
                ) from None
        _check_owner(spec, body.metadata.name or "", namespace or "", claims, server)
        _check_model(spec, record, deps.bucket)
        if not record.gguf:
            raise kopf.AdmissionError(f"model {record.model_name} has no GGUF facts", code=422)
        request = ResourceRequest.model_validate(
            {
                "role": role,
                "namespace": namespace or "",
                "replicas": spec.replicas.min,
                "max_replicas": spec.replicas.max,
                "cpu": spec.resources.cpu,
                "memory": spec.resources.memory,
                "context_length": spec.runtime.n_ctx,
                "gpus": spec.resources.gpus,
            }
        )
        violations = check(deps.contract, request, info_from_facts(record.object_path, record.gguf))
        if violations:
            raise kopf.AdmissionError(
                "the ModelServe breaks the resource contract: "
                + "; ".join(str(v) for v in violations),
                code=422,
            )
