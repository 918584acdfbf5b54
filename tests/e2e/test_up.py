"""`modelserve up` as a new user meets it: serve the demo model, chat, restart, still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from modelserve.shared.net import free_port

pytestmark = pytest.mark.e2e


@contextmanager
def stack(data_dir: Path, port: int) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelserve",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    token: str | None = None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while token is None:
        assert time.monotonic() < deadline, "\n".join(lines[-20:])
        line = process.stdout.readline()
        assert line or process.poll() is None, "\n".join(lines[-20:])
        lines.append(line.rstrip())
        if line.startswith("admin token: "):
            token = line.split(": ", 1)[1].strip()
    try:
        yield f"http://127.0.0.1:{port}", token, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(60)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_up_serve_chat_restart(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with stack(data, port) as (url, token, process):
        auth = {"Authorization": f"Bearer {token}"}
        accepted = httpx.post(
            f"{url}/serve",
            headers=auth,
            timeout=30,
            json={"model": "demo", "runtime_params": {"n_ctx": 512}},
        )
        assert accepted.status_code == 202, accepted.text
        server = uuid.UUID(accepted.json()["server_uuid"])
        deadline = time.monotonic() + 120
        while True:
            record = httpx.get(f"{url}/servers/{server}", headers=auth, timeout=10).json()
            if record["status"] in ("ready", "failed"):
                break
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
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

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        assert process.wait(60) == 0
        assert not [c for c in children if c.is_running() and c.status() != "zombie"], (
            "orphan processes after Ctrl-C"
        )

    with stack(data, free_port()) as (url, token, _):
        auth = {"Authorization": f"Bearer {token}"}
        again = httpx.get(f"{url}/servers/{server}", headers=auth, timeout=10)
        assert again.status_code == 200 and again.json()["model_name"] == "demo"
        models = httpx.get(f"{url}/models", headers=auth, timeout=10).json()
        assert [m["model_name"] for m in models["mirrored"]] == ["demo"]
