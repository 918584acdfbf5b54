"""Every way a bearer token can be wrong, for the doors that take user or pipeline tokens.

The forged ones carry otherwise perfect claims (right issuer, audience, times,
a powerful role), so a door that skips one check lets exactly that case in.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelserve.shared.auth.tokens import PIPELINE_AUDIENCE, TokenIssuer
from modelserve.shared.db.models import Role
from modelserve.shared.settings import Settings


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hostile_tokens(
    settings: Settings,
    issuer: TokenIssuer,
    server: uuid.UUID,
    door: Literal["user", "pipeline"] = "user",
) -> dict[str, str | None]:
    """Case name -> token (None: no header). ``door`` picks the claims being forged."""
    assert settings.jwt_secret is not None, "the forgeries are HS256, like the stack's tokens"
    secret = settings.jwt_secret.get_secret_value()
    now = dt.datetime.now(dt.UTC)
    good: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "sub": "eve",
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    if door == "user":
        good.update(aud=settings.jwt_audience, kind="access", role="admin")
    else:
        good.update(aud=PIPELINE_AUDIENCE, kind="pipeline", sid=str(server), role="admin")

    def signed(key: Any = secret, alg: str = "HS256", **change: Any) -> str:
        return jwt.encode({**good, **change}, key, algorithm=alg)

    claims = {k: int(v.timestamp()) if isinstance(v, dt.datetime) else v for k, v in good.items()}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    confused = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    tokens: dict[str, str | None] = {
        "missing": None,
        "malformed": "not.a-jwt",
        "expired": signed(exp=now - dt.timedelta(seconds=5)),
        "not-yet-valid": signed(nbf=now + dt.timedelta(minutes=5)),
        "bad-signature": signed(key="x" * 48),
        "alg-none": f"{b64(json.dumps({'alg': 'none'}).encode())}.{payload}.",
        "rs256-token": signed(key=rsa_key, alg="RS256"),
        "hs-rs-confusion": f"{header}.{payload}.{b64(confused)}",
        "wrong-audience": signed(aud="someone-else"),
        "wrong-issuer": signed(iss="evil"),
    }
    if door == "user":
        tokens["pipeline-token"] = issuer.pipeline_token(
            server, subject="alice", role=Role.OPERATOR
        )
        tokens["other-server"] = issuer.server_token(uuid.uuid4(), "eve")
    else:
        tokens["access-token"] = issuer.access_token("root", Role.ADMIN)
        tokens["other-server"] = issuer.pipeline_token(
            uuid.uuid4(), subject="alice", role=Role.OPERATOR
        )
        tokens["server-scoped"] = issuer.server_token(server, "eve")
    return tokens


USER_DOOR_CASES = [
    "missing",
    "malformed",
    "expired",
    "not-yet-valid",
    "bad-signature",
    "alg-none",
    "rs256-token",
    "hs-rs-confusion",
    "wrong-audience",
    "wrong-issuer",
    "pipeline-token",
    "other-server",
]
PIPELINE_DOOR_CASES = [*USER_DOOR_CASES[:10], "access-token", "other-server", "server-scoped"]
