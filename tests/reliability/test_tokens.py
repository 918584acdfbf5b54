"""Tokens at every door: the API, the gateway, ``/auth``, each pipeline function over HTTP.

Every hostile token is refused with 401 or 403, and a spy at each door proves no
business code ran: the API published no event and wrote no server record, the
gateway's upstream saw no request, ``/auth`` named nobody, a step's handler was
never called and its ledger stayed empty. Each spy is first shown to fire for a
good token, so a door that is not wired at all cannot pass. The admission
webhook's doors are in test_tokens_admission.py (it needs the control plane).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cloudevents.http import CloudEvent
from sqlalchemy import delete, func, select

from modelserve.functions.steps import registry
from modelserve.functions.steps.context import StepContext
from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import ProcessedEvent, Role, ServerRecord, User
from modelserve.shared.settings import Settings, load_settings
from support.pipeline import Functions, running_functions
from support.records import new_server
from support.reliability import Recorder
from support.spy_upstream import spy_upstream
from support.tokens import PIPELINE_DOOR_CASES, USER_DOOR_CASES, hostile_tokens

pytestmark = pytest.mark.reliability("tokens")
REFUSED = (401, 403)


async def server_rows(stack: Any) -> int:
    async with stack.sessions() as session:
        return int((await session.scalar(select(func.count()).select_from(ServerRecord))) or 0)


@dataclass
class Doors:
    """One call at each user-facing door with ``headers``; the spies' counts after."""

    stack: Any
    server: uuid.UUID
    hits: list[str]

    async def call(self, headers: dict[str, str]) -> dict[str, httpx.Response]:
        http = self.stack.http
        return {
            "api": await http.post(
                f"{self.stack.api}/serve", headers=headers, json={"model": "demo"}
            ),
            "gateway": await http.post(
                f"{self.stack.gateway}/{self.server}/v1/chat/completions",
                headers=headers,
                json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            ),
            "auth": await http.get(
                f"{self.stack.api}/auth",
                headers={**headers, "X-Forwarded-Uri": f"/{self.server}/v1/models"},
            ),
        }

    async def spied(self) -> tuple[int, int, int]:
        """(events published, server records, upstream requests)."""
        return len(self.stack.published), await server_rows(self.stack), len(self.hits)


@pytest.fixture
async def doors(stack: Any) -> AsyncIterator[Doors]:
    async with spy_upstream() as (url, hits):
        async with stack.sessions.begin() as session:
            server = await new_server(session, status="ready", owner="alice", internal_url=url)
        yield Doors(stack, server, hits)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def assert_refused(
    answers: dict[str, httpx.Response], before: tuple[int, ...], after: tuple[int, ...]
) -> None:
    for door, answer in answers.items():
        assert answer.status_code in REFUSED, f"{door}: {answer.status_code} {answer.text}"
        assert "x-auth-subject" not in answer.headers, door
        if answer.status_code == 401:
            assert answer.headers["www-authenticate"].startswith("Bearer"), door
    assert after == before, f"business code ran: (published, records, upstream) {before}->{after}"


async def test_hostile_tokens_at_the_user_doors(doors: Doors, reliability: Recorder) -> None:
    """One stack for every case (building one costs seconds); the control goes first:
    with alice's token each door does its business and its spy sees it."""
    stack = doors.stack
    answers = await doors.call(stack.auth("alice"))
    assert answers["api"].status_code == 202, answers["api"].text
    assert answers["gateway"].status_code == 200, answers["gateway"].text
    assert answers["auth"].headers["x-auth-subject"] == "alice"
    assert (await doors.spied())[0] == 1 and (await doors.spied())[2] == 1
    tokens = hostile_tokens(stack.settings, stack.issuer, doors.server)
    for case in USER_DOOR_CASES:
        for door in ("api", "gateway", "auth"):
            reliability.case(
                f"{door}: {case}",
                injected=f"a {case} bearer token",
                checked="401/403, no event, no record, no upstream request, no identity",
            )
        before = await doors.spied()
        answers = await doors.call(bearer(tokens[case]))
        assert_refused(answers, before, await doors.spied())
    await viewer_and_operator_overreach(doors, reliability)


async def viewer_and_operator_overreach(doors: Doors, reliability: Recorder) -> None:
    stack = doors.stack
    reliability.case(
        "api: viewer serves", injected="POST /serve as a viewer", checked="403, nothing published"
    )
    reliability.case(
        "api: viewer disables a user",
        injected="PATCH /users/alice as a viewer",
        checked="403, alice still enabled",
    )
    reliability.case(
        "api: operator disables a user",
        injected="PATCH /users/vic as an operator",
        checked="403, vic still enabled",
    )
    before = await doors.spied()
    serve = await stack.http.post(
        f"{stack.api}/serve", headers=stack.auth("vic"), json={"model": "demo"}
    )
    assert serve.status_code == 403, serve.text
    for actor, target in (("vic", "alice"), ("alice", "vic")):
        patch = await stack.http.patch(
            f"{stack.api}/users/{target}", headers=stack.auth(actor), json={"disabled": True}
        )
        assert patch.status_code == 403, patch.text
    assert await doors.spied() == before
    async with stack.sessions() as session:
        disabled = await session.scalars(select(User.username).where(User.disabled_at.is_not(None)))
        assert list(disabled) == []


async def test_disabled_and_deleted_users_are_refused_from_the_next_request_on(
    doors: Doors, reliability: Recorder
) -> None:
    """Not at the token's expiry: the API that disabled refuses at once, other replicas'
    caches (the gateway here) within their TTL."""
    stack = doors.stack
    token = stack.auth("alice")
    assert (await doors.call(token))["gateway"].status_code == 200  # cached as enabled
    patch = await stack.http.patch(
        f"{stack.api}/users/alice", headers=stack.auth("root"), json={"disabled": True}
    )
    assert patch.status_code == 200, patch.text
    for door in ("api", "auth", "gateway"):
        reliability.case(
            f"{door}: disabled user",
            injected="alice's unexpired token after an admin disabled alice",
            checked="403 user_disabled (API at once, gateway within the cache TTL), no business",
        )
    before = await doors.spied()
    api = await stack.http.post(f"{stack.api}/serve", headers=token, json={"model": "demo"})
    assert api.status_code == 403 and "disabled" in api.text, api.text
    await asyncio.sleep(stack.settings.auth_cache_ttl_seconds)
    answers = await doors.call(token)
    assert all(a.status_code == 403 for a in answers.values()), {
        d: a.status_code for d, a in answers.items()
    }
    assert_refused(answers, before, await doors.spied())
    await deleted_user(doors, reliability)


async def deleted_user(doors: Doors, reliability: Recorder) -> None:
    stack = doors.stack
    token = stack.auth("root")  # an admin: every door opens for it (the control)
    first = await doors.call(token)
    assert first["api"].status_code == 202 and first["gateway"].status_code == 200
    async with stack.sessions.begin() as session:
        await session.execute(delete(User).where(User.username == "root"))
    for door in ("api", "auth", "gateway"):
        reliability.case(
            f"{door}: deleted user",
            injected="root's unexpired token after root's user row was deleted",
            checked="401 within the cache TTL, no business",
        )
    await asyncio.sleep(stack.settings.auth_cache_ttl_seconds)
    before = await doors.spied()
    answers = await doors.call(token)
    assert_refused(answers, before, await doors.spied())


# --- the pipeline functions, over HTTP -------------------------------------------------


@dataclass
class Steps:
    settings: Settings
    functions: Functions
    calls: list[str]
    server: uuid.UUID

    def post(self, step: str, token: str | None) -> httpx.Response:
        spec = registry.STEPS[step]
        assert spec.handles is not None
        event = ev.make_event(
            ev.SERVE_REQUESTED,
            ev.ServeRequested(
                request=ev.ServeRequest(model="demo", requested_by="alice", role="operator")
            ),
            source="/reliability",
            subject=self.server,
            token=token,
        )
        event["type"] = spec.handles  # the spy reads no data; the door checks the type
        headers, body = ev.encode_binary(event)
        return httpx.post(
            self.functions.urls[spec.service], headers=headers, content=body, timeout=30
        )

    def ledger(self) -> tuple[int, str]:
        """(processed events, the server's status): what a handler would have changed."""

        async def read() -> tuple[int, str]:
            engine = make_engine(self.settings.resolved_database_url)
            try:
                async with make_sessionmaker(engine)() as session:
                    count = await session.scalar(select(func.count()).select_from(ProcessedEvent))
                    status = await session.scalar(
                        select(ServerRecord.status).where(ServerRecord.server_uuid == self.server)
                    )
                    return int(count or 0), str(status)
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steps]:
    """The five steps behind functions-framework, each handler replaced by a spy."""
    data = tmp_path_factory.mktemp("steps")
    settings = load_settings(mode="local", data_dir=data, jwt_secret=secrets.token_hex(24))
    calls: list[str] = []

    async def prepare() -> uuid.UUID:
        engine = make_engine(settings.resolved_database_url)
        await upgrade(engine)
        try:
            async with make_sessionmaker(engine).begin() as session:
                return await new_server(session, model_name="demo")
        finally:
            await engine.dispose()

    server = asyncio.run(prepare())
    saved = dict(registry.STEPS)
    for name, step in saved.items():

        async def spy(event: CloudEvent, ctx: StepContext, name: str = name) -> None:
            calls.append(name)

        registry.STEPS[name] = registry.Step(step.name, step.handles, spy)
    try:
        with running_functions(settings) as functions:
            yield Steps(settings, functions, calls, server)
    finally:
        registry.STEPS.clear()
        registry.STEPS.update(saved)


def test_each_step_runs_for_its_pipeline_token(steps: Steps) -> None:
    """The control: a good token reaches every step's handler (the spy)."""
    issuer = TokenIssuer.from_settings(steps.settings)
    for step in registry.STEPS:
        answer = steps.post(
            step, issuer.pipeline_token(steps.server, subject="alice", role=Role.OPERATOR)
        )
        assert answer.status_code == 202, f"{step}: {answer.status_code} {answer.text}"
    assert steps.calls == list(registry.STEPS)
    steps.calls.clear()


@pytest.mark.parametrize("case", PIPELINE_DOOR_CASES)
def test_hostile_tokens_at_each_pipeline_function(
    steps: Steps, reliability: Recorder, case: str
) -> None:
    issuer = TokenIssuer.from_settings(steps.settings)
    token = hostile_tokens(steps.settings, issuer, steps.server, door="pipeline")[case]
    before = steps.ledger()
    for step in registry.STEPS:
        reliability.case(
            f"{step}: {case}",
            injected=f"a CloudEvent with a {case} pipeline token over HTTP",
            checked="401/403 with a reason, no reply event, handler never ran, ledger unchanged",
        )
        answer = steps.post(step, token)
        assert answer.status_code in REFUSED, f"{step}: {answer.status_code} {answer.text}"
        assert answer.text and "ce-type" not in answer.headers, step
    assert steps.calls == [] and steps.ledger() == before
