"""Tenancy at the runtime: a server's runtime answers its gateway and nobody else.

Each runtime checks the gateway's internal credential on every request but its
probes and /metrics (runtime/internal_auth.py), so a runtime reached around the
gateway (a published Knative route, a NetworkPolicy not applied, another user on
the same machine) serves nothing, and keys, revocation, budgets and metering
cannot be skipped.

- the real ``modelserve runtime`` process, given a token: requests without it,
  with a wrong one, or with a user's bearer token are 401 on every API family;
  the probes and /metrics still answer; the right token is served;
- ``modelserve up``: the runtime the local backend started refuses a request sent
  straight to its loopback port, the gateway still serves, and the token is in
  no process's argv.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from modelserve.shared.net import free_port
from modelserve.shared.runtime_params import env_name
from support.reliability import Recorder
from support.runtime import start_runtime
from support.stack import stack

pytestmark = pytest.mark.reliability("tenancy")
TOKEN_ENV = env_name("internal_token")
COMPLETION = {"model": "demo", "prompt": "hi", "max_tokens": 2}
# One door of each API family the runtime serves: OpenAI's (both prefixes), KServe's v1/v2.
DOORS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/completions", COMPLETION),
    ("POST", "/openai/v1/completions", COMPLETION),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "demo", "messages": [{"role": "user", "content": "x"}]},
    ),
    ("POST", "/v1/tokenize", {"model": "demo", "prompt": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", "/v2/models", None),
    ("GET", "/v2/models/demo", None),
    ("POST", "/v2/models/demo/infer", {"inputs": []}),
]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return found


async def test_a_runtime_serves_only_the_internal_credential(
    tiny_model: Path, reliability: Recorder
) -> None:
    token = secrets.token_hex(32)
    wrong = {
        "none": {},
        "wrong token": {"Authorization": f"Bearer {secrets.token_hex(32)}"},
        "the token, another scheme": {"Authorization": f"Basic {token}"},
        "the token, no scheme": {"Authorization": token},
        "a prefix of the token": {"Authorization": f"Bearer {token[:-1]}"},
        "a user's JWT": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"},
    }
    for name in wrong:
        reliability.case(
            f"runtime direct, credential: {name}",
            injected=f"every API family of a real runtime, Authorization {name}",
            checked="401 on each; the request never reaches the model",
            outcome="refused",
        )
    reliability.case(
        "runtime direct: probes and /metrics",
        injected="GET /v2/health/live, /v2/health/ready, /metrics with no credential",
        checked="200: the kubelet's and Knative's probes and Prometheus carry no secret",
        outcome="survived",
    )
    runtime = await asyncio.to_thread(
        start_runtime, tiny_model, "--model-name", "demo", env={TOKEN_ENV: token}
    )
    try:
        async with httpx.AsyncClient(base_url=runtime.url, timeout=30) as http:
            for name, headers in wrong.items():
                for method, path, body in DOORS:
                    answer = await http.request(method, path, json=body, headers=headers)
                    assert answer.status_code == 401, (name, method, path, answer.text)
            for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                assert (await http.get(path)).status_code == 200, path
            served = await http.post(
                "/v1/completions", json=COMPLETION, headers={"Authorization": f"Bearer {token}"}
            )
            assert served.status_code == 200, served.text
            assert served.json()["usage"]["completion_tokens"] >= 1
    finally:
        runtime.stop()


def test_under_modelserve_up_a_runtime_refuses_everyone_but_the_gateway(
    tmp_path: Path, reliability: Recorder
) -> None:
    reliability.case(
        "local runtime reached on its loopback port",
        injected="a completion sent straight to the runtime the local backend started",
        checked="401; the same request through the gateway is served",
        outcome="refused",
    )
    reliability.case(
        "local runtime credential in argv",
        injected="ps: every process's command line",
        checked="the runtime's credential appears in none (it is in the environment)",
        outcome="refused",
    )
    with stack(tmp_path / "data", free_port()) as up:
        http = httpx.Client(
            base_url=up.url, headers={"Authorization": f"Bearer {up.token}"}, timeout=60
        )
        accepted = http.post("/serve", json={"model": "demo", "runtime_params": {"n_ctx": 512}})
        assert accepted.status_code == 202, accepted.text
        server = accepted.json()["server_uuid"]
        wait_for("ready", lambda: http.get(f"/servers/{server}").json()["status"] == "ready", 120)
        (runtime,) = [
            c
            for c in psutil.Process(up.process.pid).children(recursive=True)
            if "runtime" in " ".join(c.cmdline())
        ]
        argv = runtime.cmdline()
        port = argv[argv.index("--port") + 1]
        token = runtime.environ().get(TOKEN_ENV)
        assert token, "the local backend gave its runtime no credential"
        assert not [line for line in _command_lines() if token in line]
        direct = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=COMPLETION, timeout=30)
        assert direct.status_code == 401, direct.text
        through = http.post(f"/{server}/v1/completions", json=COMPLETION)
        assert through.status_code == 200, through.text
        http.close()


def _command_lines() -> list[str]:
    """Every process's command line that ``ps`` shows (what any local user can read)."""
    lines = []
    for process in psutil.process_iter():
        try:
            lines.append(" ".join(process.cmdline()))
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return lines
