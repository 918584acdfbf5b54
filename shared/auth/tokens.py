"""JWT issue and verification: one pinned algorithm, every registered claim checked.

Three kinds of token share one key set and differ in audience:

- access tokens for people and services (audience = ``jwt_audience``, with a role);
- internal pipeline tokens carried by CloudEvents (audience ``modelserve-pipeline``),
  short-lived, bound to one server UUID, the requester (``sub``) and their role;
- server-scoped tokens whose audience is one server UUID: they open that server's
  gateway endpoint and nothing else.

The verifier only ever accepts the configured algorithm, so ``alg: none`` and
HS256/RS256 key confusion are refused before any key is used.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt

from modelserve.shared.auth.errors import (
    AuthError,
    ExpiredToken,
    Forbidden,
    InvalidToken,
    MissingToken,
    NotYetValidToken,
    WrongAudience,
    WrongIssuer,
)
from modelserve.shared.auth.jwks import JwksKeys
from modelserve.shared.db.models import Role
from modelserve.shared.settings import Settings

PIPELINE_AUDIENCE = "modelserve-pipeline"
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "kind")


class TokenKind(enum.StrEnum):
    ACCESS = "access"
    PIPELINE = "pipeline"
    SERVER = "server"


@dataclass(frozen=True)
class KeySet:
    """Key material for the one algorithm in use (secrets never printed)."""

    algorithm: str
    signing_key: str | bytes | None = field(default=None, repr=False)
    verification_key: str | bytes | None = field(default=None, repr=False)
    jwks_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KeySet:
        if settings.jwt_algorithm == "HS256":
            if settings.jwt_secret is None:
                raise ValueError("MODELSERVE_JWT_SECRET is required for HS256")
            secret = settings.jwt_secret.get_secret_value()
            return cls("HS256", secret, secret)
        private = (
            settings.jwt_private_key_file.read_bytes() if settings.jwt_private_key_file else None
        )
        public = settings.jwt_public_key_file.read_bytes() if settings.jwt_public_key_file else None
        jwks = str(settings.jwks_url) if settings.jwks_url else None
        return cls(settings.jwt_algorithm, private, public, jwks)


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    kind: TokenKind
    audience: str
    role: Role | None
    server_uuid: uuid.UUID | None
    expires_at: dt.datetime
    raw: dict[str, Any]


def public_jwks(keys: KeySet, kid: str = "modelserve") -> dict[str, Any]:
    """The verification key as a JWKS document (for Istio/Envoy JWT checks at the ingress).

    Empty for HS256: a shared secret is never published.
    """
    if keys.algorithm == "HS256" or keys.verification_key is None:
        return {"keys": []}
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(
        keys.verification_key
        if isinstance(keys.verification_key, bytes)
        else keys.verification_key.encode()
    )
    algorithm = (
        jwt.algorithms.RSAAlgorithm if keys.algorithm == "RS256" else (jwt.algorithms.ECAlgorithm)
    )
    jwk = json.loads(algorithm.to_jwk(public))  # type: ignore[arg-type]
    jwk.update({"kid": kid, "use": "sig", "alg": keys.algorithm})
    return {"keys": [jwk]}


class TokenIssuer:
    """Signs tokens; only the API (and the pipeline's entry) holds a signing key."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        access_ttl: dt.timedelta = dt.timedelta(hours=1),
        pipeline_ttl: dt.timedelta = dt.timedelta(minutes=10),
    ) -> None:
        if keys.signing_key is None:
            raise ValueError(f"no signing key configured for {keys.algorithm}")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = access_ttl
        self._pipeline_ttl = pipeline_ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer:
        return cls(
            KeySet.from_settings(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=dt.timedelta(seconds=settings.access_token_ttl_seconds),
            pipeline_ttl=dt.timedelta(seconds=settings.pipeline_token_ttl_seconds),
        )

    def _sign(
        self, subject: str, audience: str, kind: TokenKind, ttl: dt.timedelta, **extra: Any
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        claims = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience,
            "kind": kind.value,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
            **extra,
        }
        assert self._keys.signing_key is not None
        return jwt.encode(claims, self._keys.signing_key, algorithm=self._keys.algorithm)

    def access_token(self, username: str, role: Role, ttl: dt.timedelta | None = None) -> str:
        return self._sign(
            username,
            self._audience,
            TokenKind.ACCESS,
            ttl or self._access_ttl,
            role=Role(role).value,
        )

    def pipeline_token(self, server_uuid: uuid.UUID, *, subject: str, role: Role) -> str:
        """An internal token for one server's pipeline, bound to who asked for it
        (``sub``) and their role: the steps and the admission webhook read both from
        here, never from the event's data."""
        return self._sign(
            subject,
            PIPELINE_AUDIENCE,
            TokenKind.PIPELINE,
            self._pipeline_ttl,
            sid=str(server_uuid),
            role=Role(role).value,
        )

    def server_token(
        self, server_uuid: uuid.UUID, subject: str, ttl: dt.timedelta | None = None
    ) -> str:
        return self._sign(
            subject,
            str(server_uuid),
            TokenKind.SERVER,
            ttl or self._access_ttl,
            sid=str(server_uuid),
        )


class TokenVerifier:
    """Verifies signature, algorithm, exp/nbf/iat, issuer and audience on every call."""

    def __init__(self, keys: KeySet, *, issuer: str, audience: str, leeway: float = 0) -> None:
        if keys.verification_key is None and keys.jwks_url is None:
            raise ValueError(f"no verification key configured for {keys.algorithm}")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._jwks = JwksKeys(keys.jwks_url) if keys.jwks_url else None

    def wait_for_keys(self, timeout: float = 10.0) -> None:
        """Wait for a JWKS fetch under way (start-up and tests; never a request)."""
        if self._jwks is not None:
            self._jwks.wait(timeout)

    @property
    def audience(self) -> str:
        """The audience of user access tokens."""
        return self._audience

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            KeySet.from_settings(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._keys.verification_key
        return self._jwks.key(token)  # never fetches on the request's path

    def decode(self, token: str | None, audience: str | list[str]) -> Claims:
        """Verify ``token`` for one of ``audience``; raises an :class:`AuthError`."""
        if not token:
            raise MissingToken("a bearer token is required")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidToken("the token is not a well-formed JWT") from None
        if header.get("alg") != self._keys.algorithm:
            raise InvalidToken(
                f"token algorithm {header.get('alg')!r} is not accepted; "
                f"only {self._keys.algorithm} is"
            )
        try:
            raw = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[self._keys.algorithm],
                audience=audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": False},
            )
        except AuthError:
            raise
        except jwt.ExpiredSignatureError:
            raise ExpiredToken("the token has expired") from None
        except jwt.ImmatureSignatureError as exc:
            raise NotYetValidToken(f"the token is not valid yet ({exc})") from None
        except jwt.InvalidAudienceError:
            raise WrongAudience("the token was issued for another audience") from None
        except jwt.InvalidIssuerError:
            raise WrongIssuer("the token was issued by an issuer that is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the required {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token signature does not verify") from None
        except (jwt.InvalidTokenError, jwt.exceptions.InvalidKeyError) as exc:
            raise InvalidToken(f"the token is invalid: {exc}") from None
        return _claims(raw)

    def verify_access(self, token: str | None, required: Role = Role.VIEWER) -> Claims:
        """A user access token with at least the ``required`` role."""
        claims = self.decode(token, self._audience)
        if claims.kind is not TokenKind.ACCESS or claims.role is None:
            raise InvalidToken("an access token is required")
        if not claims.role.allows(required):
            raise Forbidden(f"role {claims.role.value!r} may not do this; needs {required.value!r}")
        return claims

    def verify_pipeline(self, token: str | None, server_uuid: uuid.UUID | None = None) -> Claims:
        """An internal pipeline token, bound to ``server_uuid`` when one is given."""
        claims = self.decode(token, PIPELINE_AUDIENCE)
        if claims.kind is not TokenKind.PIPELINE:
            raise InvalidToken("a pipeline token is required")
        if claims.role is None or claims.server_uuid is None:
            raise InvalidToken("a pipeline token binds a server and the requester's role")
        if server_uuid is not None and claims.server_uuid != server_uuid:
            raise Forbidden(f"the pipeline token belongs to another server, not {server_uuid}")
        return claims

    def verify_for_server(
        self, token: str | None, server_uuid: uuid.UUID, required: Role = Role.VIEWER
    ) -> Claims:
        """Either an access token with a role, or a token scoped to exactly this server."""
        claims = self.decode(token, [self._audience, str(server_uuid)])
        if claims.kind is TokenKind.SERVER:
            if claims.server_uuid != server_uuid or claims.audience != str(server_uuid):
                raise Forbidden(f"the token is scoped to another server, not {server_uuid}")
            return claims
        if claims.kind is TokenKind.ACCESS and claims.role is not None:
            if not claims.role.allows(required):
                raise Forbidden(
                    f"role {claims.role.value!r} may not do this; needs {required.value!r}"
                )
            return claims
        raise InvalidToken("an access token or a server-scoped token is required")


def _claims(raw: dict[str, Any]) -> Claims:
    try:
        kind = TokenKind(raw["kind"])
        role = Role(raw["role"]) if "role" in raw else None
        sid = uuid.UUID(raw["sid"]) if "sid" in raw else None
    except (ValueError, TypeError) as exc:
        raise InvalidToken(f"the token has a malformed claim: {exc}") from None
    aud = raw["aud"]
    return Claims(
        subject=str(raw["sub"]),
        kind=kind,
        audience=aud if isinstance(aud, str) else ",".join(aud),
        role=role,
        server_uuid=sid,
        expires_at=dt.datetime.fromtimestamp(raw["exp"], dt.UTC),
        raw=raw,
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
