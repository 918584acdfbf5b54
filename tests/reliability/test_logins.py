"""Sign-ins: password guessing is throttled, and checking passwords never stalls the API.

Against the real API (argon2id with its real 64 MiB cost, a real database).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from integration.api.conftest import PASSWORDS
from support.reliability import Recorder

pytestmark = pytest.mark.reliability("logins")


async def sign_in(stack: Any, user: str, password: str) -> httpx.Response:
    answer: httpx.Response = await stack.http.post(
        f"{stack.api}/auth/token", data={"username": user, "password": password}
    )
    return answer


async def test_guessing_one_users_password_is_throttled(
    stack_factory: Any, reliability: Recorder
) -> None:
    stack = await stack_factory(login_failures_per_user=3, login_failures_per_address=100)
    assert (await sign_in(stack, "alice", PASSWORDS["alice"])).status_code == 200  # control
    for n in range(3):
        assert (await sign_in(stack, "alice", f"guess-number-{n}")).status_code == 401
    reliability.case(
        "password guessing per user name",
        injected="a 4th sign-in for alice after 3 wrong passwords (even the right one)",
        checked="429 with Retry-After; no token; other users unaffected",
    )
    for password in ("guess-number-4", PASSWORDS["alice"]):
        answer = await sign_in(stack, "alice", password)
        assert answer.status_code == 429, answer.text
        assert int(answer.headers["retry-after"]) >= 1 and "access_token" not in answer.text
    assert (await sign_in(stack, "bob", PASSWORDS["bob"])).status_code == 200


async def test_guessing_from_one_address_is_throttled(
    stack_factory: Any, reliability: Recorder
) -> None:
    stack = await stack_factory(login_failures_per_user=100, login_failures_per_address=4)
    for n in range(4):
        assert (await sign_in(stack, f"nobody-{n}", "not-a-password")).status_code == 401
    reliability.case(
        "password spraying from one address",
        injected="a sign-in after 4 failures for 4 different names from the same address",
        checked="429 with Retry-After, before any password is checked",
    )
    answer = await sign_in(stack, "bob", PASSWORDS["bob"])
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1


async def test_password_checks_do_not_stall_the_api(
    stack_factory: Any, reliability: Recorder
) -> None:
    stack = await stack_factory(
        login_failures_per_user=1000, login_failures_per_address=1000, login_workers=1
    )
    reliability.case(
        "a burst of sign-ins",
        injected="16 concurrent wrong-password sign-ins (argon2id, 64 MiB each)",
        checked="a request beside them is answered before any sign-in finishes; "
        "past 4 waiting per login thread the rest are 429 with Retry-After, not queued",
        outcome="survived",
    )
    finished: list[str] = []

    async def bad(n: int) -> int:
        answer = await sign_in(stack, f"user-{n}", "wrong-password-here")
        finished.append(f"login {n}")
        return answer.status_code

    logins = [asyncio.create_task(bad(n)) for n in range(16)]
    await asyncio.sleep(0)  # every sign-in is on its way before the ping
    ping = await stack.http.get(f"{stack.api}/.well-known/jwks.json")
    finished.append("ping")
    statuses = await asyncio.gather(*logins)
    assert ping.status_code == 200
    assert finished[0] == "ping", finished  # the loop was free while passwords were checked
    assert set(statuses) == {401, 429} and statuses.count(401) >= 4, statuses


async def test_a_disabled_user_gets_no_token(stack: Any, reliability: Recorder) -> None:
    reliability.case(
        "sign-in of a disabled user",
        injected="the right password of a user an admin disabled",
        checked="403, no token",
    )
    disabled = await stack.http.patch(
        f"{stack.api}/users/bob", headers=stack.auth("root"), json={"disabled": True}
    )
    assert disabled.status_code == 200, disabled.text
    answer = await sign_in(stack, "bob", PASSWORDS["bob"])
    assert answer.status_code == 403 and "access_token" not in answer.text
