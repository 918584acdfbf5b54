"""Tenancy: who may use a server, bind a key to it, or claim a model name.

The rule (README, "Who may use a server"): a server's owner, an admin, or a
credential issued for exactly that server (a key its owner bound to it, a
server-scoped token). Everyone else is refused at every door (the gateway, the
ingress's ``/auth``) before anything runs: a spy runtime sees no request and an
idle server is not woken. Each refusal follows a control that shows the same
door open for the owner.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from modelserve.shared.db.models import ModelRecord
from modelserve.shared.lifecycle import ServerStatus
from support.records import new_server
from support.reliability import Recorder
from support.spy_upstream import spy_upstream

pytestmark = pytest.mark.reliability("tenancy")
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_key(stack: Any, user: str, server: uuid.UUID | None = None) -> httpx.Response:
    body: dict[str, Any] = {"name": f"k{uuid.uuid4().hex[:6]}"}
    if server is not None:
        body["server_uuid"] = str(server)
    answer: httpx.Response = await stack.http.post(
        f"{stack.api}/keys", headers=stack.auth(user), json=body
    )
    return answer


async def doors(stack: Any, server: uuid.UUID, token: str) -> dict[str, int]:
    """The status each door gives ``token`` for ``server``."""
    gateway = await stack.http.post(
        f"{stack.gateway}/{server}/v1/chat/completions", headers=bearer(token), json=CHAT
    )
    models = await stack.http.get(f"{stack.gateway}/{server}/v1/models", headers=bearer(token))
    auth = await stack.http.get(
        f"{stack.api}/auth",
        headers={**bearer(token), "X-Forwarded-Uri": f"/{server}/v1/chat/completions"},
    )
    return {
        "gateway chat": gateway.status_code,
        "gateway models": models.status_code,
        "auth": auth.status_code,
    }


async def test_only_the_owner_an_admin_or_a_bound_credential_use_a_server(
    stack: Any, reliability: Recorder
) -> None:
    async with spy_upstream() as (url, hits):
        async with stack.sessions.begin() as session:
            server = await new_server(session, status="ready", owner="alice", internal_url=url)
            ownerless = await new_server(session, status="ready", internal_url=url)
        alice_key = (await make_key(stack, "alice")).json()["key"]
        bound = (await make_key(stack, "alice", server)).json()["key"]
        allowed = {
            "owner's token": stack.token("alice"),
            "owner's unscoped key": alice_key,
            "a key the owner bound to it": bound,
            "an admin's token": stack.token("root"),
            "a server-scoped token": stack.issuer.server_token(server, "ci-bot"),
        }
        for case, token in allowed.items():  # the controls: every door opens
            assert set((await doors(stack, server, token)).values()) == {200}, case
        assert len(hits) == 2 * len(allowed)
        bob_key = (await make_key(stack, "bob")).json()["key"]
        vic_key = (await make_key(stack, "vic")).json()["key"]
        refused = {
            "a viewer's token": (server, stack.token("vic")),
            "another operator's token": (server, stack.token("bob")),
            "another user's unscoped key": (server, bob_key),
            "a viewer's unscoped key": (server, vic_key),
            "an operator's token on a server nobody owns": (ownerless, stack.token("alice")),
        }
        for case, (target, token) in refused.items():
            reliability.case(
                f"use another's server: {case}",
                injected=f"{case} at the gateway (chat, models) and /auth",
                checked="403 at every door; the runtime saw nothing",
            )
            before = len(hits)
            answers = await doors(stack, target, token)
            assert set(answers.values()) == {403}, (case, answers)
            assert len(hits) == before, case
        admin_on_ownerless = await doors(stack, ownerless, stack.token("root"))
        assert set(admin_on_ownerless.values()) == {200}


async def test_a_key_is_bound_only_to_a_server_its_maker_owns(
    stack: Any, reliability: Recorder
) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(session, status="ready", owner="alice")
    assert (await make_key(stack, "alice", server)).status_code == 201  # the control
    assert (await make_key(stack, "root", server)).status_code == 201  # an admin may
    for user in ("bob", "vic"):
        reliability.case(
            f"bind a key to another's server: {user}",
            injected=f"POST /keys {{server_uuid: alice's}} as {user}",
            checked="403; no key made",
        )
        before = len((await stack.http.get(f"{stack.api}/keys", headers=stack.auth(user))).json())
        made = await make_key(stack, user, server)
        assert made.status_code == 403, made.text
        after = len((await stack.http.get(f"{stack.api}/keys", headers=stack.auth(user))).json())
        assert after == before


async def test_another_users_token_does_not_wake_a_server(
    stack_factory: Any, reliability: Recorder
) -> None:
    async with spy_upstream() as (url, hits):

        async def wake(server: uuid.UUID) -> str:
            return url

        stack = await stack_factory(wake=wake)
        async with stack.sessions.begin() as session:
            server = await new_server(session, status=ServerStatus.IDLE, owner="alice")
        reliability.case(
            "wake another's idle server",
            injected="a viewer's and another operator's token on alice's idle server",
            checked="403; the backend was not asked to start it",
        )
        for user in ("vic", "bob"):
            answer = await stack.http.post(
                f"{stack.gateway}/{server}/v1/chat/completions", headers=stack.auth(user), json=CHAT
            )
            assert answer.status_code == 403, answer.text
        assert stack.wakes == [] and hits == []
        woken = await stack.http.post(
            f"{stack.gateway}/{server}/v1/chat/completions", headers=stack.auth("alice"), json=CHAT
        )
        assert woken.status_code == 200 and stack.wakes == [server]  # the control


async def test_an_upload_cannot_claim_a_catalog_name(
    stack: Any, tiny_model: Path, reliability: Recorder
) -> None:
    content = await asyncio.to_thread(tiny_model.read_bytes)
    reliability.case(
        "upload under a catalog name not yet mirrored",
        injected="PUT /models/demo (the catalog offers demo; not mirrored) as an operator",
        checked="409; no model recorded, so serving demo later mirrors the catalog's file",
    )
    claimed = await stack.http.put(
        f"{stack.api}/models/demo", headers=stack.auth("bob"), content=content
    )
    assert claimed.status_code == 409, claimed.text
    async with stack.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ModelRecord)) == 0
    own = await stack.http.put(
        f"{stack.api}/models/bobs-demo", headers=stack.auth("bob"), content=content
    )
    assert own.status_code == 201, own.text  # the control: a name of one's own


async def test_anonymous_metrics_name_nobody(stack_factory: Any, reliability: Recorder) -> None:
    stack = await stack_factory(metrics_token="scrape-secret-0123456789")
    async with spy_upstream() as (url, _):
        async with stack.sessions.begin() as session:
            server = await new_server(session, status="ready", owner="alice", internal_url=url)
        made = (await make_key(stack, "alice")).json()
        used = await stack.http.post(
            f"{stack.gateway}/{server}/v1/chat/completions", headers=bearer(made["key"]), json=CHAT
        )
        assert used.status_code == 200, used.text
    await stack.http.get(f"{stack.api}/servers/{server}", headers=stack.auth("alice"))
    identities = (str(server), made["key_id"], 'user="alice"')
    for door in ("gateway", "api"):
        url = f"{getattr(stack, door)}/metrics"
        full = await stack.http.get(url, headers=bearer("scrape-secret-0123456789"))
        admin = await stack.http.get(url, headers=stack.auth("root"))
        assert full.status_code == admin.status_code == 200 and full.text.count("\n") > 5
        if door == "gateway":  # the control: the scraper and an admin see who
            assert all(i in full.text and i in admin.text for i in identities)
        for who, headers in (
            ("anonymous", {}),
            ("a viewer", stack.auth("vic")),
            ("a wrong scrape token", bearer("scrape-secret-wrong")),
        ):
            reliability.case(
                f"{door} /metrics as {who}",
                injected=f"GET /metrics of the {door} as {who}",
                checked="200, the same families, no server UUID, user name or key id",
            )
            answer = await stack.http.get(url, headers=headers)
            assert answer.status_code == 200
            assert not any(i in answer.text for i in identities), (door, who)
            assert "alice" not in answer.text, (door, who)
            if door == "gateway":
                assert "modelserve_gateway_requests_total" in answer.text
