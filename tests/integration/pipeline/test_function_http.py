"""A step's HTTP surface: what Knative Eventing sees (status codes, binary replies)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloudevents.http import CloudEvent

from modelserve.shared import events as ev
from modelserve.shared import logs
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.metrics import documented_names
from modelserve.shared.settings import Settings, load_settings
from support.pipeline import Functions, running_functions
from support.records import new_server
from support.scrape import exposed_names, fetch, value

REQUEST = ev.ServeRequest(model="nothing-here", requested_by="alice", role="operator")


@pytest.fixture
def local_pipeline(tmp_path: Path) -> Iterator[tuple[Settings, Functions]]:
    settings = load_settings(mode="local", data_dir=tmp_path, jwt_secret=secrets.token_hex(24))
    engine = make_engine(settings.resolved_database_url)
    asyncio.run(upgrade(engine))
    asyncio.run(engine.dispose())
    with running_functions(settings) as functions:
        yield settings, functions


def post(
    functions: Functions, service: str, event: CloudEvent | None = None, **override: str
) -> httpx.Response:
    headers, body = ev.encode_binary(event) if event is not None else ({}, b"{}")
    headers.update(override)
    return httpx.post(functions.urls[service], headers=headers, content=body, timeout=30)


def requested(issuer: TokenIssuer, server: uuid.UUID, token: str | None = "auto") -> CloudEvent:
    return ev.make_event(
        ev.SERVE_REQUESTED,
        ev.ServeRequested(request=REQUEST),
        source="/tests",
        subject=server,
        token=issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR)
        if token == "auto"
        else token,
    )


def record_server(settings: Settings) -> uuid.UUID:
    """What ``POST /serve`` does before it publishes: the server record."""

    async def create() -> uuid.UUID:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                return await new_server(session, model_name=REQUEST.model)
        finally:
            await engine.dispose()

    return asyncio.run(create())


def test_reply_is_a_binary_cloudevent(local_pipeline: tuple[Settings, Functions]) -> None:
    settings, functions = local_pipeline
    issuer = TokenIssuer.from_settings(settings)
    server = record_server(settings)
    event = requested(issuer, server)
    response = post(functions, "modelserve-availability", event)
    assert response.status_code == 200
    assert response.headers["ce-type"] == ev.MODEL_MISSING
    assert response.headers["ce-subject"] == str(server)
    assert response.headers["ce-id"] == ev.reply_id(event, ev.MODEL_MISSING)
    reply = ev.decode(dict(response.headers), response.content)
    # The reply carries a fresh pipeline token, bound to the same server.
    assert ev.verify_event(reply, TokenVerifier.from_settings(settings)).server_uuid == server
    # The same event again gets the same answer, from the ledger.
    again = post(functions, "modelserve-availability", event)
    assert (again.status_code, again.headers["ce-id"]) == (200, response.headers["ce-id"])


def test_a_server_never_requested_is_400(local_pipeline: tuple[Settings, Functions]) -> None:
    settings, functions = local_pipeline
    event = requested(TokenIssuer.from_settings(settings), uuid.uuid4())
    response = post(functions, "modelserve-availability", event)
    assert response.status_code == 400 and "was requested through the API" in response.text


@pytest.mark.parametrize("case", ["missing", "other-server", "user-token", "wrong-key"])
def test_bad_tokens_are_refused(local_pipeline: tuple[Settings, Functions], case: str) -> None:
    settings, functions = local_pipeline
    issuer = TokenIssuer.from_settings(settings)
    server = uuid.uuid4()
    token = {
        "missing": None,
        "other-server": issuer.pipeline_token(uuid.uuid4(), subject="alice", role=Role.OPERATOR),
        "user-token": issuer.access_token("alice", Role.ADMIN),
        "wrong-key": TokenIssuer.from_settings(
            load_settings(jwt_secret=secrets.token_hex(24))
        ).pipeline_token(server, subject="alice", role=Role.OPERATOR),
    }[case]
    response = post(functions, "modelserve-availability", requested(issuer, server, token))
    assert response.status_code in (401, 403), response.text
    assert response.text  # the reason is in the body


def test_wrong_type_and_garbage_are_400(local_pipeline: tuple[Settings, Functions]) -> None:
    settings, functions = local_pipeline
    issuer = TokenIssuer.from_settings(settings)
    wrong = post(functions, "modelserve-mirror", requested(issuer, uuid.uuid4()))
    assert wrong.status_code == 400 and "mirror handles" in wrong.text
    garbage = post(functions, "modelserve-availability", None, **{"content-type": "text/plain"})
    assert garbage.status_code == 400 and "not a CloudEvent" in garbage.text


def test_a_steps_log_lines_name_the_server_event_and_trace(
    local_pipeline: tuple[Settings, Functions], caplog: pytest.LogCaptureFixture
) -> None:
    logs.install_context()
    settings, functions = local_pipeline
    server = record_server(settings)
    event = requested(TokenIssuer.from_settings(settings), server)
    with caplog.at_level(logging.INFO, logger="modelserve.functions.steps.runner"):
        assert post(functions, "modelserve-availability", event).status_code == 200
        assert post(functions, "modelserve-availability", event).status_code == 200
    (again,) = [r for r in caplog.records if "handled before" in r.getMessage()]
    assert getattr(again, "server_uuid", None) == str(server)
    assert getattr(again, "event_id", None) == event["id"]
    assert getattr(again, "trace_id", None) == event["traceparent"].split("-")[1]


def test_a_function_serves_its_steps_metrics(local_pipeline: tuple[Settings, Functions]) -> None:
    settings, functions = local_pipeline
    issuer = TokenIssuer.from_settings(settings)
    event = requested(issuer, record_server(settings))
    assert post(functions, "modelserve-availability", event).status_code == 200
    assert post(functions, "modelserve-availability", event).status_code == 200
    refused = post(functions, "modelserve-availability", requested(issuer, uuid.uuid4(), None))
    assert refused.status_code == 401

    # Prometheus scrapes the function's own port (Knative's user-port) at /metrics.
    text = fetch(functions.urls["modelserve-availability"] + "metrics")
    assert exposed_names(text) == documented_names("steps")
    events = "modelserve_step_events_total"
    assert value(text, events, step="availability", outcome="ok") == 1
    assert value(text, events, step="availability", outcome="duplicate") == 1
    assert value(text, events, step="availability", outcome="refused") == 1
    assert value(text, "modelserve_step_duration_seconds_count", step="availability") == 3
