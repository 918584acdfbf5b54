"""A real MinIO server per test session (built by ``go install github.com/minio/minio``).

Credentials are random per session: no sample secret is ever used, even in tests.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from minio import Minio

from modelserve.shared.net import free_port
from support.procs import ServerProcess, find_binary

INSTALL_HINT = "go install github.com/minio/minio@latest into that dir (.ci/run does)"


@dataclass
class MinioServer:
    """A running MinIO; ``client()`` returns a ``minio.Minio`` bound to it."""

    host: str
    port: int
    access_key: str
    secret_key: str
    process: ServerProcess
    base_dir: Path

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the process, keeping its data and port (a fault: ``resume`` brings it back)."""
        self.process.stop()

    def resume(self) -> None:
        self.process.start()
        self.process.wait_ready(self.ready, timeout=60)

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/minio/health/ready", timeout=1).status_code == 200


def start_minio() -> MinioServer:
    """Start MinIO on a free loopback port with a fresh data dir."""
    binary = find_binary("minio", hint=INSTALL_HINT)
    base = Path(tempfile.mkdtemp(prefix="modelserve-minio-"))
    port, console = free_port(), free_port()
    access, secret = "test-" + secrets.token_hex(6), secrets.token_urlsafe(24)
    proc = ServerProcess(
        name="minio",
        argv=[
            binary,
            "server",
            str(base / "data"),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
            "--quiet",
        ],
        log_path=base / "minio.log",
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(base),
            "MINIO_ROOT_USER": access,
            "MINIO_ROOT_PASSWORD": secret,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        },
    ).start()
    server = MinioServer("127.0.0.1", port, access, secret, proc, base)
    proc.wait_ready(server.ready, timeout=60)
    return server
