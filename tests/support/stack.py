"""`modelserve up` as a subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Up:
    url: str
    token: str
    process: subprocess.Popen[str]
    admin_password: str | None  # printed on the first start only
    log: deque[str]  # the last lines it printed


@contextmanager
def stack(
    data_dir: Path,
    port: int,
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Up]:
    """``modelserve up`` with ``python`` (another venv's, to test an installed wheel);
    ``env`` adds variables to the stack's environment (and so its runtimes')."""
    process = subprocess.Popen(
        [
            python,
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
        cwd=cwd,
        env={**os.environ, **env} if env else None,
    )
    token: str | None = None
    password: str | None = None
    lines: deque[str] = deque(maxlen=200)
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while token is None:
        assert time.monotonic() < deadline, "\n".join(lines)
        line = process.stdout.readline()
        assert line or process.poll() is None, "\n".join(lines)
        lines.append(line.rstrip())
        if line.startswith("admin password (shown once): "):
            password = line.split(": ", 1)[1].strip()
        if line.startswith("admin token: "):
            token = line.split(": ", 1)[1].strip()
    # Keep reading: a full pipe would block the stack's logging, and so the stack.
    drain = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    drain.start()
    up = Up(f"http://127.0.0.1:{port}", token, process, password, lines)
    try:
        yield up
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(60)
        drain.join(10)


def serve_and_wait(up: Up, model: str = "demo", *, within: float = 120) -> dict[str, Any]:
    """``POST /serve`` on the stack and poll the record until it settles; returns the
    record, ``ready`` or not (the caller asserts, so a failure shows the message)."""
    auth = {"Authorization": f"Bearer {up.token}"}
    accepted = httpx.post(
        f"{up.url}/serve",
        headers=auth,
        timeout=30,
        json={"model": model, "runtime_params": {"n_ctx": 512}},
    )
    assert accepted.status_code == 202, accepted.text
    server = accepted.json()["server_uuid"]
    deadline = time.monotonic() + within
    while True:
        record: dict[str, Any] = httpx.get(
            f"{up.url}/servers/{server}", headers=auth, timeout=10
        ).json()
        if record["status"] in ("ready", "failed"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.5)
