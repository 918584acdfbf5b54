"""Sign-in and the first admin: created from settings or the CLI, never hard-coded."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from modelserve.shared.auth.passwords import hash_password, verify_password
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role, User
from modelserve.shared.settings import Settings, SettingsError, env_name


async def authenticate(session: AsyncSession, username: str, password: str) -> User | None:
    """The user when the password matches, else None (same cost either way)."""
    user = await repo.get_user(session, username)
    ok = verify_password(user.password_hash if user else None, password)
    return user if ok else None


async def create_user(
    session: AsyncSession, username: str, password: str, role: Role
) -> tuple[User, bool]:
    return await repo.create_user(session, username, hash_password(password), role)


async def ensure_admin(session: AsyncSession, settings: Settings) -> str | None:
    """Make sure an admin exists; returns a generated password (dev mode only) to show once.

    An existing admin is left alone. Otherwise ``MODELSERVE_ADMIN_PASSWORD`` creates
    one; in dev mode a random password is generated; outside dev mode the caller is
    told exactly what to set.
    """
    if await repo.count_users(session, Role.ADMIN) > 0:
        return None
    if settings.admin_password is not None:
        await create_user(
            session, settings.admin_username, settings.admin_password.get_secret_value(), Role.ADMIN
        )
        return None
    if settings.dev:
        generated = secrets.token_urlsafe(18)
        await create_user(session, settings.admin_username, generated, Role.ADMIN)
        return generated
    raise SettingsError(
        env_name("admin_password"),
        "no admin user exists yet; set it to create the first admin "
        "(or create one with the modelserve CLI)",
    )
