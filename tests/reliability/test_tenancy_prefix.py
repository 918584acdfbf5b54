"""Tenancy in the runtime: one caller's prompts never show in another's usage.

A reused prefix shows in ``cached_tokens`` (and in the time to first token), so
a shared prefix cache would tell a caller whether someone else's prompt began
the same way. The gateway sends each request's scope (a hash of its credential,
``shared/cache_scope.py``); the engine reuses kept and running sequences only
within one scope. Checked in-process on a generated model, against the same
requests in one scope as the control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelserve.shared.cache_scope import CACHE_SCOPE_HEADER, cache_scope
from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.engine import cached, in_process
from support.records import new_server
from support.reliability import Recorder
from support.spy_upstream import spy_upstream

pytestmark = pytest.mark.reliability("tenancy")
SECRET = [1, *range(30, 90)]  # someone's system prompt, 61 tokens
PROBE = [*SECRET, 100, 101]  # another caller guessing it


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_gguf(tmp_path_factory.mktemp("models") / "margin.gguf", "margin")


def test_a_kept_prefix_is_reused_only_by_its_own_caller(model: Path, reliability: Recorder) -> None:
    alice, mallory = cache_scope("key", "alice-key"), cache_scope("key", "mallory-key")
    reliability.case(
        "prefix cache across callers",
        injected="a second caller sends a prompt starting with the first caller's kept one",
        checked="cached_tokens 0 for the other caller; the owner's own repeat is reused",
    )
    with in_process(model, n_ctx=512, n_parallel=2, prefix_cache=4) as run:
        run.complete(SECRET, 4, scope=alice)
        probed = run.complete(PROBE, 4, scope=mallory)
        own = run.complete(PROBE, 4, scope=alice)
    assert cached(probed) == 0
    assert cached(own) >= len(SECRET) - 1  # the control: the same request, its owner's


def test_a_running_prompt_is_ridden_only_by_its_own_caller(
    model: Path, reliability: Recorder
) -> None:
    alice, mallory = cache_scope("user", "alice"), cache_scope("user", "mallory")
    reliability.case(
        "riding across callers",
        injected="two callers send prompts sharing 61 tokens at the same moment",
        checked="neither copies the other's cells; the same pair in one scope does",
    )

    def burst(scopes: list[str]) -> list[int]:
        prompts: list[str | list[int]] = [[*SECRET, 110 + n] for n in range(len(scopes))]
        with in_process(model, n_ctx=512, n_parallel=4, prefix_cache=0) as run:
            return [cached(r) for r in run.together(prompts, 4, scopes)]

    assert sum(burst([alice, mallory])) == 0
    assert sum(burst([alice, alice])) > 0  # the control: one caller's burst shares


async def test_the_gateway_sends_each_callers_own_scope(stack: Any, reliability: Recorder) -> None:
    """The runtime trusts the scope because only the gateway reaches it: the gateway
    must set it from the verified credential, over whatever the client sent."""
    reliability.case(
        "forged cache scope",
        injected="a client sends another caller's scope header with its own token",
        checked="the runtime sees the scope of the client's own credential",
    )
    seen: list[dict[str, str]] = []
    async with spy_upstream(seen) as (url, _):
        async with stack.sessions.begin() as session:
            server = await new_server(session, status="ready", owner="alice", internal_url=url)
        body = {"model": "demo", "prompt": "hi", "max_tokens": 1}
        forged = cache_scope("user", "bob")
        for user in ("alice", "root"):
            answer = await stack.http.post(
                f"{stack.gateway}/{server}/v1/completions",
                headers={**stack.auth(user), CACHE_SCOPE_HEADER: forged},
                json=body,
            )
            assert answer.status_code == 200, answer.text
    scopes = [h.get(CACHE_SCOPE_HEADER) for h in seen]
    assert scopes[0] == cache_scope("access", "alice")
    assert scopes[1] == cache_scope("access", "root")
    assert forged not in scopes
