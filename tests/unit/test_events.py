"""CloudEvents: encoding both ways, deterministic replies, tracing, tokens."""

from __future__ import annotations

import uuid

import pytest
from cloudevents.http import CloudEvent

from modelserve.shared import events as ev
from modelserve.shared.auth.errors import Forbidden, MissingToken
from modelserve.shared.auth.tokens import KeySet, TokenIssuer, TokenVerifier
from modelserve.shared.db.models import Role

KEYS = KeySet("HS256", "k" * 40, "k" * 40)
ISSUER = TokenIssuer(KEYS, issuer="ms", audience="modelserve")
VERIFIER = TokenVerifier(KEYS, issuer="ms", audience="modelserve")
REQUEST = ev.ServeRequest(
    model="demo", requested_by="alice", role="operator", runtime_params={"n_ctx": 512}
)


def requested(server: uuid.UUID) -> CloudEvent:
    return ev.make_event(
        ev.SERVE_REQUESTED,
        ev.ServeRequested(request=REQUEST),
        source="/api",
        subject=server,
        token=ISSUER.pipeline_token(server, subject="alice", role=Role.OPERATOR),
    )


@pytest.mark.parametrize("encode", [ev.encode_binary, ev.encode_structured])
def test_round_trip(encode: object) -> None:
    server = uuid.uuid4()
    event = requested(server)
    headers, body = encode(event)  # type: ignore[operator]
    decoded = ev.decode(headers, body)
    assert decoded["id"] == event["id"]
    assert decoded["type"] == ev.SERVE_REQUESTED
    assert ev.subject_uuid(decoded) == server
    assert decoded[ev.TOKEN_ATTRIBUTE] == event[ev.TOKEN_ATTRIBUTE]
    assert decoded[ev.TRACEPARENT_ATTRIBUTE] == event[ev.TRACEPARENT_ATTRIBUTE]
    assert ev.payload(decoded, ev.ServeRequested).request == REQUEST


def test_binary_mode_puts_attributes_in_headers() -> None:
    headers, body = ev.encode_binary(requested(uuid.uuid4()))
    assert headers["ce-type"] == ev.SERVE_REQUESTED
    assert "ce-modelservetoken" in headers
    assert b'"model":"demo"' in body.replace(b" ", b"")


def test_replies_have_deterministic_ids_and_continue_the_trace() -> None:
    parent = requested(uuid.uuid4())
    missing = ev.ModelMissing(request=REQUEST)
    first = ev.make_event(
        ev.MODEL_MISSING,
        missing,
        source="/availability",
        subject=ev.subject_uuid(parent),
        parent=parent,
    )
    again = ev.make_event(
        ev.MODEL_MISSING,
        missing,
        source="/availability",
        subject=ev.subject_uuid(parent),
        parent=parent,
    )
    failed = ev.make_event(
        ev.SERVE_FAILED,
        ev.ServeFailed(step="availability", reason="x"),
        source="/availability",
        subject=ev.subject_uuid(parent),
        parent=parent,
    )
    assert first["id"] == again["id"] != failed["id"]
    assert first["id"] != parent["id"]
    trace = parent[ev.TRACEPARENT_ATTRIBUTE].split("-")
    child = first[ev.TRACEPARENT_ATTRIBUTE].split("-")
    assert child[1] == trace[1] and child[2] != trace[2]


def test_malformed_traceparent_starts_a_new_trace() -> None:
    assert ev.child_traceparent("garbage").startswith("00-")
    assert ev.child_traceparent(None) != ev.child_traceparent(None)


def test_bad_requests_are_event_errors() -> None:
    with pytest.raises(ev.EventError, match="not a CloudEvent"):
        ev.decode({"content-type": "application/json"}, b'{"hello": 1}')
    event = requested(uuid.uuid4())
    with pytest.raises(ev.EventError, match="expected a ModelAvailable event"):
        ev.payload(event, ev.ModelAvailable)
    headers, _ = ev.encode_binary(event)
    broken = ev.decode(headers, b'{"request": {"model": "", "role": "x"}}')
    with pytest.raises(
        ev.EventError,
        match=r"request\.model: .*at least 1 character.*"
        r"request\.requested_by: Field required",
    ):
        ev.payload(broken, ev.ServeRequested)
    headers["ce-subject"] = "not-a-uuid"
    with pytest.raises(ev.EventError, match="not a server UUID"):
        ev.subject_uuid(ev.decode(headers, b"{}"))
    with pytest.raises(TypeError, match="carries ModelMissing"):
        ev.make_event(
            ev.MODEL_MISSING, ev.ServeRequested(request=REQUEST), source="/x", subject=uuid.uuid4()
        )


def test_event_tokens_are_bound_to_the_server() -> None:
    server = uuid.uuid4()
    assert ev.verify_event(requested(server), VERIFIER).server_uuid == server
    stolen = requested(server)
    stolen["subject"] = str(uuid.uuid4())
    with pytest.raises(Forbidden, match="another server"):
        ev.verify_event(stolen, VERIFIER)
    bare = ev.make_event(
        ev.SERVE_REQUESTED, ev.ServeRequested(request=REQUEST), source="/api", subject=server
    )
    with pytest.raises(MissingToken):
        ev.verify_event(bare, VERIFIER)
    user_token = requested(server)
    user_token[ev.TOKEN_ATTRIBUTE] = ISSUER.access_token("alice", Role.ADMIN)
    with pytest.raises(Exception, match="another audience"):
        ev.verify_event(user_token, VERIFIER)


def test_mirror_progress_percent() -> None:
    assert ev.MirrorProgress(model="m", bytes_done=50, bytes_total=200).percent == 25.0
    assert ev.MirrorProgress(model="m", bytes_done=50).percent is None
