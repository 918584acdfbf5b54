"""Run the real model server (`modelserve runtime`) as a subprocess on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelserve.shared.net import free_port
from support.procs import ServerProcess


@dataclass
class RuntimeServer:
    url: str
    process: ServerProcess

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.process.stop()


def runtime_argv(model: str | Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelserve", "runtime", "--model", str(model), *extra]


def start_runtime(
    model: str | Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 120
) -> RuntimeServer:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="modelserve-runtime-")) / "runtime.log"
    process = ServerProcess(
        name="modelserve runtime",
        argv=runtime_argv(model, "--host", "127.0.0.1", "--port", str(port), *extra),
        log_path=log,
        env={**os.environ, **(env or {})},
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(
        lambda: httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200, timeout
    )
    return RuntimeServer(url, process)


def run_runtime_to_failure(
    model: str | Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a runtime that is expected to refuse to start; returns its exit and output."""
    return subprocess.run(
        runtime_argv(model, "--port", str(free_port()), *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
