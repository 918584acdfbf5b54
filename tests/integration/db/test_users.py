"""Sign-in and first-admin bootstrap on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.auth.users import authenticate, create_user, ensure_admin
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from modelserve.shared.settings import SettingsError, load_settings

Sessions = async_sessionmaker[AsyncSession]
SECRET = "s" * 40


async def test_authenticate(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await create_user(session, "alice", "correct horse battery", Role.OPERATOR)
    async with sessions() as session:
        user = await authenticate(session, "alice", "correct horse battery")
        assert user is not None and user.role == "operator"
        assert user.password_hash.startswith("$argon2id$")
        assert await authenticate(session, "alice", "wrong password!!") is None
        assert await authenticate(session, "nobody", "correct horse battery") is None


async def test_short_passwords_are_refused(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        with pytest.raises(ValueError, match="at least 12 characters"):
            await create_user(session, "bob", "short", Role.VIEWER)


async def test_first_admin_outside_dev_needs_a_password(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        with pytest.raises(SettingsError, match="no admin user exists") as missing:
            await ensure_admin(session, load_settings(jwt_secret=SECRET))
        assert missing.value.env == "MODELSERVE_ADMIN_PASSWORD"
        assert await repo.count_users(session) == 0


async def test_first_admin_from_settings_then_left_alone(sessions: Sessions) -> None:
    settings = load_settings(
        jwt_secret=SECRET, admin_username="root", admin_password="a-long-enough-password"
    )
    async with sessions.begin() as session:
        assert await ensure_admin(session, settings) is None
    async with sessions.begin() as session:
        changed = load_settings(
            jwt_secret=SECRET, admin_username="root", admin_password="another-long-password"
        )
        assert await ensure_admin(session, changed) is None
    async with sessions() as session:
        assert await authenticate(session, "root", "a-long-enough-password") is not None
        assert await authenticate(session, "root", "another-long-password") is None


async def test_dev_mode_generates_a_random_admin_password(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        generated = await ensure_admin(session, load_settings(dev=True))
    assert generated is not None and len(generated) >= 20
    async with sessions() as session:
        user = await authenticate(session, "admin", generated)
        assert user is not None and user.role == "admin"
