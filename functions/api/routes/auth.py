"""Sign-in, the public keys, and the ingress's ext-authz check."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, Response

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.logins import Throttled
from modelserve.functions.api.schemas import Token
from modelserve.functions.api.security import auth_failure
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.passwords import verify_password
from modelserve.shared.auth.tokens import KeySet, bearer_token, public_jwks
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role

# What the ingress lets through with no credential: signing in, the public keys, health.
ANONYMOUS = frozenset({"/auth/token", "/.well-known/jwks.json", "/healthz"})
EXT_AUTHZ_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["auth"])

    @api.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        """Public verification keys (RS256/ES256), for JWT checks at the ingress."""
        return public_jwks(KeySet.from_settings(deps.settings))

    @api.post("/auth/token", response_model=Token)
    async def token(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> Token:
        """An access token for a user name and password; throttled (``logins.py``).

        The password is checked on a login thread, never on the event loop; a
        disabled user gets no token. The token carries the role the user has
        now, and the doors read the role from the user record anyway.
        """
        address = request.client.host if request.client else "unknown"
        try:
            deps.logins.check(username, address)
            async with deps.sessions() as session:
                user = await repo.get_user(session, username)
            ok = await deps.logins.run(
                partial(verify_password, user.password_hash if user else None, password)
            )
        except Throttled as exc:
            raise HTTPException(
                429, str(exc), headers={"Retry-After": str(exc.retry_after)}
            ) from None
        if user is None or not ok:
            deps.logins.failed(username, address)
            raise HTTPException(
                401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
            )
        if user.disabled_at is not None:
            raise HTTPException(403, f"user {username!r} is disabled")
        ttl = deps.settings.access_token_ttl_seconds
        return Token(
            access_token=deps.issuer.access_token(user.username, Role(user.role)), expires_in=ttl
        )

    @api.get("/auth")
    async def ext_authz(request: Request) -> Response:
        """For Traefik ForwardAuth (and Envoy told to ask one fixed path): 200 with identity
        headers, or 401/403, for the path in ``X-Forwarded-Uri`` / ``X-Original-Uri``.

        A server's path takes a JWT or an API key; any other path an access token.
        """
        original = (
            request.headers.get("x-forwarded-uri") or request.headers.get("x-original-uri") or ""
        )
        return await check(request, original)

    @api.api_route("/auth/{path:path}", methods=EXT_AUTHZ_METHODS, include_in_schema=False)
    async def ext_authz_prefixed(path: str, request: Request) -> Response:
        """For Kourier (Envoy's HTTP ext-authz with a path prefix): it asks at ``/auth`` +
        the original path, with the original method, and no body. The same rule as
        ``GET /auth``; routes declared before this one (``POST /auth/token``) win."""
        return await check(request, f"/{path}")

    async def check(request: Request, original: str) -> Response:
        if original.split("?", 1)[0] in ANONYMOUS:
            return Response(status_code=200)  # sign-in, keys, health: no identity to add
        token = bearer_token(request.headers.get("authorization"))
        first = original.lstrip("/").split("/", 1)[0]
        try:
            try:
                server = uuid.UUID(first)
            except ValueError:
                claims = await deps.guard.access(token)
                subject, role, kind, key = claims.subject, claims.role, claims.kind.value, None
            else:
                who = await deps.guard.for_server(token, server)
                subject, role, kind, key = who.subject, who.role, who.kind, who.key_id
        except AuthError as exc:
            raise auth_failure(exc) from None
        headers = {
            "X-Auth-Subject": subject,
            "X-Auth-Role": role.value if role else "",
            "X-Auth-Kind": kind,
        }
        if key is not None:
            headers["X-Auth-Key"] = key
        return Response(status_code=200, headers=headers)

    return api
