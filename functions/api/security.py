"""Bearer-credential checks as FastAPI dependencies: 401 for who-are-you, 403 for may-not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import Claims, bearer_token
from modelserve.shared.db.models import Role


def auth_failure(exc: AuthError) -> HTTPException:
    headers = {"WWW-Authenticate": f'Bearer error="{exc.code}"'} if exc.status == 401 else None
    return HTTPException(status_code=exc.status, detail=exc.message, headers=headers)


def requires(guard: AccessGuard, role: Role) -> Callable[[Request], Awaitable[Claims]]:
    """A dependency: the caller's verified claims, with at least ``role``, user enabled."""

    async def dependency(request: Request) -> Claims:
        try:
            return await guard.access(bearer_token(request.headers.get("authorization")), role)
        except AuthError as exc:
            raise auth_failure(exc) from None

    return dependency
