"""The key format and the credential cache's rules, without a database."""

from __future__ import annotations

import asyncio

import pytest

from modelserve.shared.auth import apikeys
from modelserve.shared.cache import TtlCache


def test_a_new_key_is_prefixed_random_and_kept_only_as_a_hash() -> None:
    made = apikeys.new_key()
    assert made.plaintext.startswith(f"msk_{made.key_id}_")
    assert made.plaintext not in repr(made)
    parsed = apikeys.parse(made.plaintext)
    assert parsed is not None and parsed[0] == made.key_id
    secret = parsed[1]
    assert secret not in made.secret_hash and len(made.secret_hash) == 64
    assert apikeys.secret_matches(made.secret_hash, secret)
    assert not apikeys.secret_matches(made.secret_hash, secret[:-1] + "x")
    assert len({apikeys.new_key().plaintext for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "token",
    ["", "msk_", "msk_0123456789ab", "msk_0123456789ab_short", "msk_XYZ456789abc_" + "a" * 43],
)
def test_malformed_keys_do_not_parse(token: str) -> None:
    assert apikeys.parse(token) is None


def test_a_jwt_never_looks_like_a_key() -> None:
    assert apikeys.looks_like_key("msk_anything")
    assert not apikeys.looks_like_key("eyJhbGciOiJIUzI1NiJ9.e30.sig")
    assert not apikeys.looks_like_key(None)


async def test_the_cache_loads_once_per_ttl_and_once_for_concurrent_misses() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(1.0, lambda: now[0])
    loads: list[str] = []

    async def load(key: str) -> int:
        loads.append(key)
        await asyncio.sleep(0.01)
        return len(loads)

    assert await asyncio.gather(*(cache.get("a", load) for _ in range(10))) == [1] * 10
    now[0] = 0.99
    assert await cache.get("a", load) == 1
    now[0] = 1.0
    assert await cache.get("a", load) == 2  # expired: read again
    cache.invalidate("a")
    assert await cache.get("a", load) == 3
    cache.invalidate_where(lambda value: value == 3)
    assert await cache.get("a", load) == 4
    assert loads == ["a"] * 4


async def test_a_failed_load_is_not_cached() -> None:
    cache: TtlCache[str, int] = TtlCache(10.0, lambda: 0.0)
    calls = 0

    async def flaky(key: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        return 7

    with pytest.raises(ConnectionError):
        await cache.get("k", flaky)
    assert await cache.get("k", flaky) == 7
