"""Admission webhooks for ModelServe, served by kopf's webhook server.

- mutating: fills the spec's defaults and the server-UUID label, so every stored
  ModelServe is complete;
- validating: a ModelServe must carry a valid JWT in its auth annotation (the
  pipeline's token for this server, or a user token with at least the operator
  role, of a user who still exists and is not disabled) and must keep to the
  resource contract for that role, judged with the mirrored model's GGUF facts.

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
from modelserve.shared.auth.tokens import TokenKind, TokenVerifier
from modelserve.shared.contract import ResourceContract, ResourceRequest, check
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import info_from_facts

VALIDATE_ID = "validate-modelserve"
MUTATE_ID = "default-modelserve"


@dataclass
class AdmissionDeps:
    verifier: TokenVerifier
    contract: ResourceContract
    sessions: async_sessionmaker[AsyncSession]
    auth_cache_ttl: float = 1.0  # how stale a user's enabled state may be (settings)


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
        role = claims.role or Role.OPERATOR
        if spec.model_uuid is None:
            raise kopf.AdmissionError("spec.modelUuid is required to check the contract", 422)
        async with deps.sessions() as session:
            try:
                record = await repo.get_model(session, spec.model_uuid)
            except repo.NotFound:
                raise kopf.AdmissionError(
                    f"model {spec.model_uuid} is not a mirrored model", code=422
                ) from None
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
            }
        )
        violations = check(deps.contract, request, info_from_facts(record.object_path, record.gguf))
        if violations:
            raise kopf.AdmissionError(
                "the ModelServe breaks the resource contract: "
                + "; ".join(str(v) for v in violations),
                code=422,
            )
