"""CloudEvents of the serve pipeline: types, payloads, encoding, tracing, dedupe.

Uses the cloudevents 1.x API (functions-framework 3.10 and kserve 0.21 pin it).
Every event carries the server UUID as ``subject``, a W3C ``traceparent``, and a
short-lived internal JWT in the ``modelservetoken`` extension attribute.

Delivery is at least once. A reply's id is derived from the event it answers
(``reply_id``), so a step that handles a redelivered event emits a reply with
the same (source, id) as the first time, and the next step's ledger drops it.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from modelserve.shared import tracing
from modelserve.shared.auth.tokens import Claims, TokenVerifier
from modelserve.shared.db import repo

TYPE_PREFIX = "dev.modelserve."
SERVE_REQUESTED = TYPE_PREFIX + "serve.requested"
MODEL_AVAILABLE = TYPE_PREFIX + "model.available"
MODEL_MISSING = TYPE_PREFIX + "model.missing"
MODEL_URL_SIGNED = TYPE_PREFIX + "model.url-signed"
MIRROR_PROGRESS = TYPE_PREFIX + "mirror.progress"
CONTRACT_APPROVED = TYPE_PREFIX + "contract.approved"
SERVER_APPLIED = TYPE_PREFIX + "server.applied"
SERVE_FAILED = TYPE_PREFIX + "serve.failed"

TOKEN_ATTRIBUTE = "modelservetoken"  # noqa: S105 - an attribute name, not a secret
TRACEPARENT_ATTRIBUTE = "traceparent"
_REPLY_NAMESPACE = uuid.UUID("6f1d1c52-6a8e-4d53-9d4e-7b1de0f2b4c1")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class EventError(ValueError):
    """The request is not a usable pipeline event (answered with 400: not retried)."""


# --- payloads -------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServeRequest(_Payload):
    """What the user asked for; carried unchanged through every step."""

    model: str = Field(min_length=1, max_length=255)
    replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100)
    runtime_params: dict[str, Any] = Field(default_factory=dict)
    cpu: str = "1"
    memory: str | None = None
    requested_by: str
    role: str
    namespace: str | None = None


class ModelRef(_Payload):
    """A model that is in our object store."""

    model_uuid: uuid.UUID
    model_name: str
    object_path: str
    sha256: str
    size_bytes: int
    architecture: str | None = None
    file_type: str | None = None
    parameter_count: int | None = None
    context_length: int | None = None


class ServeRequested(_Payload):
    request: ServeRequest


class ModelMissing(_Payload):
    request: ServeRequest


class ModelUrlSigned(_Payload):
    request: ServeRequest
    url: str
    expires_at: float
    sha256: str | None = None
    size_bytes: int | None = None
    file_type: str | None = None
    catalog_id: str


class MirrorProgress(_Payload):
    model: str
    bytes_done: int
    bytes_total: int | None = None

    @property
    def percent(self) -> float | None:
        if not self.bytes_total:
            return None
        return round(100.0 * self.bytes_done / self.bytes_total, 1)


class ModelAvailable(_Payload):
    request: ServeRequest
    model: ModelRef


class ContractApproved(_Payload):
    request: ServeRequest
    model: ModelRef
    memory_bytes: int


class ServerApplied(_Payload):
    request: ServeRequest
    model: ModelRef
    resource: str  # "<namespace>/<ModelServe name>" or "local/<server uuid>"


class ServeFailed(_Payload):
    request: ServeRequest | None = None
    step: str
    reason: str
    violations: list[str] = Field(default_factory=list)


PAYLOADS: dict[str, type[_Payload]] = {
    SERVE_REQUESTED: ServeRequested,
    MODEL_MISSING: ModelMissing,
    MODEL_URL_SIGNED: ModelUrlSigned,
    MIRROR_PROGRESS: MirrorProgress,
    MODEL_AVAILABLE: ModelAvailable,
    CONTRACT_APPROVED: ContractApproved,
    SERVER_APPLIED: ServerApplied,
    SERVE_FAILED: ServeFailed,
}
P = TypeVar("P", bound=_Payload)


# --- tracing --------------------------------------------------------------------


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span; a missing or malformed parent starts a new trace."""
    match = _TRACEPARENT.match(parent or "")
    if match is None:
        return new_traceparent()
    trace_id, _, flags = match.groups()
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


# --- building and encoding --------------------------------------------------------


def reply_id(parent: CloudEvent, reply_type: str) -> str:
    """Deterministic id of the reply of ``reply_type`` to ``parent``."""
    return str(uuid.uuid5(_REPLY_NAMESPACE, f"{parent['source']}\n{parent['id']}\n{reply_type}"))


def make_event(
    event_type: str,
    data: _Payload,
    *,
    source: str,
    subject: uuid.UUID,
    token: str | None = None,
    parent: CloudEvent | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """Build an event; with ``parent`` its id and trace follow from the parent's."""
    if not isinstance(data, PAYLOADS[event_type]):
        raise TypeError(f"{event_type} carries {PAYLOADS[event_type].__name__}")
    attributes: dict[str, Any] = {
        "type": event_type,
        "source": source,
        "subject": str(subject),
        "datacontenttype": "application/json",
        # The span making the event is its parent when tracing is on (one connected
        # trace per serve); otherwise a new span id in the parent's trace.
        TRACEPARENT_ATTRIBUTE: tracing.current_traceparent()
        or child_traceparent(
            traceparent or (parent.get(TRACEPARENT_ATTRIBUTE) if parent else None)
        ),
    }
    if parent is not None:
        attributes["id"] = reply_id(parent, event_type)
    if token is not None:
        attributes[TOKEN_ATTRIBUTE] = token
    return CloudEvent(attributes, data.model_dump(mode="json"))


def encode_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(event)
    return dict(headers), body or b""


def encode_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = to_structured(event)
    return dict(headers), body or b""


def decode(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Parse an HTTP request in binary or structured mode; EventError if it is none."""
    try:
        event = from_http(dict(headers), body)
    except Exception as exc:  # the binding raises several unrelated exception types
        raise EventError(f"not a CloudEvent: {exc}") from None
    for attribute in ("id", "source", "type", "specversion"):
        if not event.get(attribute):
            raise EventError(f"the CloudEvent has no {attribute!r}")
    return event


def payload(event: CloudEvent, expected: type[P]) -> P:
    """The event's data as ``expected``; EventError names what is wrong."""
    event_type = event["type"]
    if PAYLOADS.get(event_type) is not expected:
        raise EventError(f"expected a {expected.__name__} event, got type {event_type!r}")
    try:
        return expected.model_validate(event.get_data())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise EventError(f"invalid {event_type} data: {problems}") from None


def subject_uuid(event: CloudEvent) -> uuid.UUID:
    try:
        return uuid.UUID(str(event.get("subject")))
    except ValueError:
        raise EventError(f"subject {event.get('subject')!r} is not a server UUID") from None


def verify_event(event: CloudEvent, verifier: TokenVerifier) -> Claims:
    """The internal token must be valid and bound to the event's server UUID."""
    return verifier.verify_pipeline(event.get(TOKEN_ATTRIBUTE), subject_uuid(event))


async def first_delivery(session: AsyncSession, event: CloudEvent) -> bool:
    """Record the event in the ledger; False when this (source, id) was handled before."""
    return await repo.mark_event_processed(
        session, event["source"], event["id"], event["type"], event.get("subject")
    )
