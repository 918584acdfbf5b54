"""Users, for admins: list them, disable one (or enable again).

Disabling takes effect at every door, not at token expiry: this replica drops
the user from its credential cache at once, the others within the cache's TTL.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import UserOut, UserPatch
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["users"])
    admin = deps.role(Role.ADMIN)

    @api.get("/users", response_model=list[UserOut])
    async def users(claims: Claims = admin) -> list[UserOut]:
        async with deps.sessions() as session:
            return [UserOut.of(u) for u in await repo.list_users(session)]

    @api.patch("/users/{username}", response_model=UserOut)
    async def patch_user(username: str, body: UserPatch, claims: Claims = admin) -> UserOut:
        """``{"disabled": true}`` refuses every token and key of the user from now on;
        ``{"tokens_per_day": N}`` sets their daily budget (``null`` lifts it)."""
        if body.disabled and username == claims.subject:
            raise HTTPException(409, "an admin cannot disable themselves")
        async with deps.sessions.begin() as session:
            try:
                if body.disabled is not None:
                    await repo.set_user_disabled(session, username, body.disabled)
                if "tokens_per_day" in body.model_fields_set:
                    await repo.set_user_budget(session, username, body.tokens_per_day)
                user = await repo.get_user(session, username)
                if user is None:
                    raise repo.NotFound(username)
                answer = UserOut.of(user)
            except repo.NotFound:
                raise HTTPException(404, f"no user {username!r}") from None
        deps.guard.invalidate_user(username)
        return answer

    return api
