"""JWT issue/verify: every way a token can be wrong gets its own error."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelserve.shared.auth.errors import (
    ExpiredToken,
    Forbidden,
    InvalidToken,
    MissingToken,
    NotYetValidToken,
    WrongAudience,
    WrongIssuer,
)
from modelserve.shared.auth.tokens import (
    PIPELINE_AUDIENCE,
    KeySet,
    TokenIssuer,
    TokenVerifier,
    bearer_token,
    public_jwks,
)
from modelserve.shared.db.models import Role

SECRET = "k" * 48
ISS, AUD = "modelserve-test", "modelserve"


def hs_pair(secret: str = SECRET) -> tuple[TokenIssuer, TokenVerifier]:
    keys = KeySet("HS256", secret, secret)
    return (
        TokenIssuer(keys, issuer=ISS, audience=AUD),
        TokenVerifier(keys, issuer=ISS, audience=AUD),
    )


def raw_token(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    now = dt.datetime.now(dt.UTC)
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "kind": "access",
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_access_token_round_trip_and_roles() -> None:
    issuer, verifier = hs_pair()
    token = issuer.access_token("alice", Role.OPERATOR)
    claims = verifier.verify_access(token, Role.OPERATOR)
    assert (claims.subject, claims.role) == ("alice", Role.OPERATOR)
    assert claims.expires_at > dt.datetime.now(dt.UTC)
    with pytest.raises(Forbidden, match="needs 'admin'") as denied:
        verifier.verify_access(token, Role.ADMIN)
    assert denied.value.status == 403


@pytest.mark.parametrize(
    ("token_factory", "error", "message"),
    [
        (lambda: None, MissingToken, "bearer token is required"),
        (lambda: "not-a-jwt", InvalidToken, "not a well-formed JWT"),
        (
            lambda: raw_token({"exp": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)}),
            ExpiredToken,
            "expired",
        ),
        (
            lambda: raw_token({"nbf": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}),
            NotYetValidToken,
            "not valid yet",
        ),
        (
            lambda: raw_token({"iat": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}),
            NotYetValidToken,
            "not valid yet",
        ),
        (lambda: raw_token({}, key="x" * 48), InvalidToken, "signature does not verify"),
        (lambda: raw_token({"aud": "someone-else"}), WrongAudience, "another audience"),
        (lambda: raw_token({"iss": "evil"}), WrongIssuer, "not trusted"),
        (lambda: raw_token({"exp": None}), InvalidToken, "lacks the required 'exp'"),
        (lambda: raw_token({"kind": None}), InvalidToken, "lacks the required 'kind'"),
        (lambda: raw_token({"role": "emperor"}), InvalidToken, "malformed claim"),
        (lambda: raw_token({}, key="k" * 64, alg="HS512"), InvalidToken, "'HS512' is not accepted"),
    ],
    ids=[
        "missing",
        "garbage",
        "expired",
        "nbf-future",
        "iat-future",
        "bad-signature",
        "wrong-audience",
        "wrong-issuer",
        "no-exp",
        "no-kind",
        "bad-role",
        "other-hmac-alg",
    ],
)
def test_bad_access_tokens_are_refused(
    token_factory: Any, error: type[Exception], message: str
) -> None:
    _, verifier = hs_pair()
    with pytest.raises(error, match=message) as refused:
        verifier.verify_access(token_factory())
    assert refused.value.status == 401  # type: ignore[attr-defined]


def forged_segments(alg: str) -> tuple[str, str]:
    """Header and payload of an admin token an attacker writes by hand."""
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims: dict[str, object] = {"iss": ISS, "aud": AUD, "sub": "mallory", "kind": "access"}
    claims.update({"role": "admin", "iat": now, "nbf": now, "exp": now + 300})
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return header, b64(json.dumps(claims).encode())


def test_alg_none_is_refused() -> None:
    _, verifier = hs_pair()
    header, payload = forged_segments("none")
    token = f"{header}.{payload}."
    with pytest.raises(InvalidToken, match="'none' is not accepted"):
        verifier.verify_access(token)


def pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """PEM private (PKCS8) and public (SubjectPublicKeyInfo) of ``key``."""
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def rsa_keys() -> tuple[bytes, bytes]:
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_rs256_round_trip_and_hs256_key_confusion_is_refused() -> None:
    private, public = rsa_keys()
    issuer = TokenIssuer(KeySet("RS256", private, public), issuer=ISS, audience=AUD)
    verifier = TokenVerifier(KeySet("RS256", None, public), issuer=ISS, audience=AUD)
    assert verifier.verify_access(issuer.access_token("bob", Role.VIEWER)).subject == "bob"

    # The classic confusion attack: an HS256 token "signed" with the public key.
    header, payload = forged_segments("HS256")
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    with pytest.raises(InvalidToken, match="'HS256' is not accepted; only RS256"):
        verifier.verify_access(forged)


def test_es256_round_trip() -> None:
    private, public = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    issuer = TokenIssuer(KeySet("ES256", private, public), issuer=ISS, audience=AUD)
    verifier = TokenVerifier(KeySet("ES256", None, public), issuer=ISS, audience=AUD)
    assert verifier.verify_access(issuer.access_token("eve", Role.ADMIN)).role is Role.ADMIN


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, bytes]]:
    """A JWKS document served over loopback HTTP, as an identity provider would."""
    private, public = rsa_keys()
    jwk = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(
            serialization.load_pem_public_key(public)  # type: ignore[arg-type]
        )
    )
    jwk.update({"kid": "test-key", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private
    server.shutdown()


def test_jwks_verification(jwks_server: tuple[str, bytes]) -> None:
    url, private = jwks_server
    verifier = TokenVerifier(KeySet("RS256", jwks_url=url), issuer=ISS, audience=AUD)
    verifier.wait_for_keys()  # fetched in the background (shared/auth/jwks.py)
    good = raw_token({}, key=private.decode(), alg="RS256")
    good = jwt.encode(
        jwt.decode(good, options={"verify_signature": False}),
        private,
        algorithm="RS256",
        headers={"kid": "test-key"},
    )
    assert verifier.verify_access(good).subject == "alice"
    unknown_kid = jwt.encode(
        jwt.decode(good, options={"verify_signature": False}),
        private,
        algorithm="RS256",
        headers={"kid": "other"},
    )
    with pytest.raises(InvalidToken, match="no matching signing key"):
        verifier.verify_access(unknown_kid)


def test_pipeline_tokens_have_their_own_audience_and_server() -> None:
    issuer, verifier = hs_pair()
    server = uuid.uuid4()
    token = issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR)
    assert verifier.verify_pipeline(token, server).audience == PIPELINE_AUDIENCE
    with pytest.raises(Forbidden, match="another server"):
        verifier.verify_pipeline(token, uuid.uuid4())
    # A pipeline token is no access token, and an access token is no pipeline token.
    with pytest.raises(WrongAudience):
        verifier.verify_access(token)
    with pytest.raises(WrongAudience):
        verifier.verify_pipeline(issuer.access_token("alice", Role.ADMIN))


def test_server_scoped_tokens_open_exactly_one_server() -> None:
    issuer, verifier = hs_pair()
    mine, other = uuid.uuid4(), uuid.uuid4()
    token = issuer.server_token(mine, "ci-bot")
    assert verifier.verify_for_server(token, mine).server_uuid == mine
    with pytest.raises(WrongAudience):
        verifier.verify_for_server(token, other)
    with pytest.raises(WrongAudience):
        verifier.verify_access(token)
    # Role tokens open any server, subject to the role.
    viewer = issuer.access_token("vic", Role.VIEWER)
    assert verifier.verify_for_server(viewer, other).role is Role.VIEWER
    with pytest.raises(Forbidden):
        verifier.verify_for_server(viewer, other, Role.OPERATOR)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer_header_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_public_jwks_verifies_issued_tokens_and_never_leaks_a_secret() -> None:
    private, public = rsa_keys()
    issuer = TokenIssuer(KeySet("RS256", private, public), issuer=ISS, audience=AUD)
    document = public_jwks(KeySet("RS256", None, public))
    (key,) = document["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    token = issuer.access_token("ann", Role.VIEWER)
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=AUD)
    assert claims["sub"] == "ann"
    assert public_jwks(KeySet("HS256", SECRET, SECRET)) == {"keys": []}
