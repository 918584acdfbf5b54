"""Credentials that cost the platform: unknown JWKS kids, random API keys, stale roles, floods.

Each attack is one a stranger (or a holder of one old token) can run; each is
refused without a network fetch on the request's path, without a database read
per request, or with the role the user has now, not the one their token says.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, update

from modelserve.shared.auth import apikeys
from modelserve.shared.auth.errors import InvalidToken
from modelserve.shared.auth.guard import UNINDEXED_LOOKUPS
from modelserve.shared.auth.tokens import KeySet, TokenVerifier
from modelserve.shared.auth.users import create_user
from modelserve.shared.db.models import Role, User
from support.records import new_server
from support.reliability import Recorder

pytestmark = pytest.mark.reliability("tokens")


class SlowJwks:
    """A JWKS endpoint that answers only when ``release`` is set, counting requests."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update({"kid": "known", "use": "sig", "alg": "RS256"})
        body = json.dumps({"keys": [jwk]}).encode()
        self.release = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                outer.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def token(self, kid: str) -> str:
        now = int(__import__("time").time())
        claims = {
            "iss": "iss",
            "aud": "aud",
            "sub": "alice",
            "kind": "access",
            "role": "viewer",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def slow_jwks() -> Iterator[SlowJwks]:
    served = SlowJwks()
    yield served
    served.release.set()
    served.server.shutdown()


def test_an_unknown_kid_never_waits_for_the_jwks(
    slow_jwks: SlowJwks, reliability: Recorder
) -> None:
    reliability.case(
        "JWKS: unknown kid",
        injected="50 tokens with made-up kids while the JWKS endpoint hangs",
        checked="each refused (401) without waiting for the fetch; one fetch in all",
    )
    verifier = TokenVerifier(KeySet("RS256", jwks_url=slow_jwks.url), issuer="iss", audience="aud")
    outcomes: list[str] = []

    def verify_all() -> None:
        for n in range(50):
            try:
                verifier.verify_access(slow_jwks.token(f"made-up-{n}"))
                outcomes.append("accepted")
            except InvalidToken:
                outcomes.append("refused")

    worker = threading.Thread(target=verify_all, daemon=True)
    worker.start()
    worker.join(20)  # the JWKS answers nothing until released: a fetch would hang here
    finished = not worker.is_alive()
    slow_jwks.release.set()
    assert finished, "a request waited for the JWKS fetch"
    assert outcomes == ["refused"] * 50
    assert slow_jwks.requests <= 1  # the start-up fetch; made-up kids add none while it runs
    verifier.wait_for_keys()
    assert verifier.verify_access(slow_jwks.token("known")).subject == "alice"  # the control


async def test_random_api_keys_cost_no_query_each(stack: Any, reliability: Recorder) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(session, status="ready", owner="alice")
    made = await stack.http.post(
        f"{stack.api}/keys", headers=stack.auth("alice"), json={"name": "real"}
    )
    real = made.json()["key"]
    guard = stack.gateway_guard
    answer = await stack.http.get(
        f"{stack.gateway}/{server}/v1/models", headers={"Authorization": f"Bearer {real}"}
    )
    assert answer.status_code == 503  # the control: the real key passes auth (no runtime yet)
    loads = guard.loads + guard.index_loads
    reliability.case(
        "random well-formed API keys",
        injected="300 random msk_<12 hex>_<43> keys at the gateway",
        checked=f"401 each; at most {UNINDEXED_LOOKUPS} + 1 database reads per cache TTL, "
        "and the real key's cache entry survives",
    )
    for _ in range(300):
        fake = apikeys.new_key().plaintext
        refused = await stack.http.get(
            f"{stack.gateway}/{server}/v1/models", headers={"Authorization": f"Bearer {fake}"}
        )
        assert refused.status_code == 401
    reads = guard.loads + guard.index_loads - loads
    assert reads <= 3 * (UNINDEXED_LOOKUPS + 1), reads  # a few TTLs may pass on a slow machine
    before = guard.loads
    again = await stack.http.get(
        f"{stack.gateway}/{server}/v1/models", headers={"Authorization": f"Bearer {real}"}
    )
    assert again.status_code == 503 and guard.loads - before <= 1


async def test_roles_come_from_the_user_record(stack: Any, reliability: Recorder) -> None:
    old = stack.token("bob")  # an operator's token
    served = await stack.http.post(
        f"{stack.api}/serve", headers={"Authorization": f"Bearer {old}"}, json={"model": "demo"}
    )
    assert served.status_code == 202, served.text  # the control
    reliability.case(
        "a demoted user's old token",
        injected="bob demoted to viewer; his operator token POSTs /serve",
        checked="403: the role is read from the record, not the token",
    )
    async with stack.sessions.begin() as session:
        await session.execute(update(User).where(User.username == "bob").values(role="viewer"))
    for guard in (stack.api_guard, stack.gateway_guard):
        guard.invalidate_user("bob")  # what the replica that changed it does
    demoted = await stack.http.post(
        f"{stack.api}/serve", headers={"Authorization": f"Bearer {old}"}, json={"model": "demo"}
    )
    assert demoted.status_code == 403, demoted.text
    reliability.case(
        "a re-created user's old token",
        injected="root deleted and created again as a viewer; an old admin token lists users",
        checked="401: the token was issued before the user existed",
    )
    admin_token = stack.token("root")
    await asyncio.sleep(1.1)  # iat has whole seconds: the new user is strictly newer
    async with stack.sessions.begin() as session:
        await session.execute(delete(User).where(User.username == "root"))
    async with stack.sessions.begin() as session:
        await create_user(session, "root", "another-root-password", Role.ADMIN)
    for guard in (stack.api_guard, stack.gateway_guard):
        guard.invalidate_user("root")
    listed = await stack.http.get(
        f"{stack.api}/users", headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert listed.status_code == 401, listed.text


async def test_event_streams_are_bounded_per_user(
    stack_factory: Any, reliability: Recorder
) -> None:
    stack = await stack_factory(events_streams_per_user=3)
    reliability.case(
        "event stream flood",
        injected="a 4th concurrent GET /events by one user (limit 3)",
        checked="429 with Retry-After; another user still gets a stream",
    )
    streams = []
    try:
        for _ in range(3):
            request = stack.http.build_request(
                "GET", f"{stack.api}/events", headers=stack.auth("vic")
            )
            opened = await stack.http.send(request, stream=True)
            assert opened.status_code == 200
            streams.append(opened)
        extra = await stack.http.get(f"{stack.api}/events", headers=stack.auth("vic"))
        assert extra.status_code == 429 and int(extra.headers["retry-after"]) >= 1
        other = await stack.http.send(
            stack.http.build_request("GET", f"{stack.api}/events", headers=stack.auth("alice")),
            stream=True,
        )
        assert other.status_code == 200
        streams.append(other)
    finally:
        for opened in streams:
            await opened.aclose()
