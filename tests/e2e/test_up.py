"""`modelserve up` as a new user meets it: serve the demo model, chat, restart, still there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from modelserve.shared.metrics import documented_names
from modelserve.shared.net import free_port
from support.scrape import exposed_names, fetch, value
from support.stack import serve_and_wait, stack

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_up_serve_chat_restart(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with stack(data, port) as up:
        url, token, process = up.url, up.token, up.process
        auth = {"Authorization": f"Bearer {token}"}
        record = serve_and_wait(up)
        server = uuid.UUID(record["server_uuid"])
        assert record["status"] == "ready", record["status_message"]
        assert record["gateway_url"] == f"{url}/{server}"

        client = openai.OpenAI(base_url=f"{url}/{server}/v1", api_key=token, max_retries=0)
        pieces = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="demo",
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
                max_tokens=16,
            )
            if c.choices
        ]
        assert len(pieces) > 3
        refused = openai.OpenAI(base_url=f"{url}/{server}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            refused.models.list()
        children = descendants(process.pid)
        assert any("runtime" in " ".join(c.cmdline()) for c in children)

        # One /metrics on the public port shows every part of the process.
        text = fetch(f"{url}/metrics", token)  # the admin sees the per-server series
        parts = ("api", "gateway", "usage", "steps", "backend")
        assert exposed_names(text) == set().union(*(documented_names(p) for p in parts))
        assert value(text, "modelserve_gateway_requests_total", server_uuid=str(server)) == 1
        assert value(text, "modelserve_step_events_total", step="apply", outcome="ok") == 1
        assert value(text, "modelserve_local_runtime_starts_total") == 1
        assert value(text, "modelserve_local_runtimes_running") == 1
        served = value(text, "modelserve_api_requests_total", route="/serve", code="202")
        assert served == 1

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        assert process.wait(60) == 0
        assert not [c for c in children if c.is_running() and c.status() != "zombie"], (
            "orphan processes after Ctrl-C"
        )

    with stack(data, free_port()) as up:
        url, token = up.url, up.token
        auth = {"Authorization": f"Bearer {token}"}
        again = httpx.get(f"{url}/servers/{server}", headers=auth, timeout=10)
        assert again.status_code == 200 and again.json()["model_name"] == "demo"
        models = httpx.get(f"{url}/models", headers=auth, timeout=10).json()
        assert [m["model_name"] for m in models["mirrored"]] == ["demo"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_push_serve_list_stop(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    model = tmp_path / "pushed.gguf"
    assert cli("gen-model", str(model), "--preset", "tiny", "--seed", "7").returncode == 0
    with stack(data, port) as up:
        url, token = up.url, up.token
        by_env = {"MODELSERVE_URL": url, "MODELSERVE_TOKEN": token}
        pushed = cli("models", "push", str(model), env=by_env)
        assert pushed.returncode == 0, pushed.stderr
        assert "model pushed" in pushed.stdout

        listed = cli("models", "ls", "--url", url, "--data-dir", str(data))  # token minted
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
        assert rows == {"pushed": "mirrored", "demo": "catalog"}

        served = cli("serve", "pushed", "--param", "n_ctx=256", env=by_env)
        assert served.returncode == 0, served.stdout + served.stderr
        server = served.stdout.split()[1].rstrip(":")
        assert f"ready: OpenAI base_url {url}/{server}/v1" in served.stdout
        assert "loading" in served.stdout  # progress was shown on the way

        table = cli("servers", env=by_env)
        assert server in table.stdout and "ready" in table.stdout

        missing = cli("serve", "no-such-model", env=by_env)
        assert missing.returncode == 1 and "not in the catalog" in missing.stderr
        bad_param = cli("serve", "pushed", "--param", "n_ctx=64", "--param", "n_batch=128")
        assert bad_param.returncode == 2 and "may not exceed n_ctx" in bad_param.stderr
        refused = cli("servers", "--url", url, "--token", "not-a-jwt")
        assert refused.returncode == 1 and "401" in refused.stderr
        corrupt = tmp_path / "corrupt.gguf"
        corrupt.write_bytes(b"GGUF" + b"\0" * 64)
        rejected = cli("models", "push", str(corrupt), env=by_env)
        assert rejected.returncode == 2 and "not a usable GGUF" in rejected.stderr

        stopped = cli("stop", server, env=by_env)
        assert stopped.returncode == 0 and "deleting" in stopped.stdout
        deadline = time.monotonic() + 60
        while True:
            found = cli("servers", "--json", env=by_env)
            status = {s["server_uuid"]: s["status"] for s in json.loads(found.stdout)}[server]
            if status == "deleted":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)


def test_runtimes_die_with_a_killed_stack(tmp_path: Path) -> None:
    with stack(tmp_path / "data", free_port()) as up:
        served = cli("serve", "demo", "--param", "n_ctx=256", "--url", up.url, "--token", up.token)
        assert served.returncode == 0, served.stdout + served.stderr
        runtimes = [c for c in descendants(up.process.pid) if "runtime" in " ".join(c.cmdline())]
        assert runtimes
        up.process.kill()  # SIGKILL: no cleanup code runs in the stack
        up.process.wait(10)
        _gone, alive = psutil.wait_procs(runtimes, timeout=15)
        assert not alive, f"orphan runtimes after the stack was killed: {alive}"
