"""A private Postgres cluster per test session (Debian ``postgresql``: initdb + postgres).

Postgres refuses to run as root, so when the tests run as root (CI does) the
cluster belongs to the ``postgres`` system user (or ``nobody``) and lives in its
own directory under the system temp dir, outside pytest's root-only tree.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelserve.shared.net import free_port
from support.procs import ServerProcess, ServiceFailed, find_binary

PG_GLOBS = ("/usr/lib/postgresql/*/bin/{name}",)
INSTALL_HINT = "install Debian's postgresql package (.ci/run does)"


@dataclass
class PostgresServer:
    """A running cluster; ``dsn`` reaches its superuser over TCP on loopback."""

    host: str
    port: int
    user: str
    process: ServerProcess
    base_dir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def sqlalchemy_url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server, keeping its cluster and port (a fault: ``resume`` restarts it)."""
        self.process.stop()

    def resume(self) -> None:
        self.process.start()
        self.process.wait_ready(self.accepting, timeout=60)

    def accepting(self) -> bool:
        # pg_isready needs no event loop: this may run inside an async fixture.
        argv = [_pg_binary("pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        return subprocess.run([*argv, "-U", "postgres"], check=False).returncode == 0


def _pg_binary(name: str) -> str:
    return find_binary(name, [g.format(name=name) for g in PG_GLOBS], INSTALL_HINT)


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for candidate in ("postgres", "nobody"):
        try:
            pwd.getpwnam(candidate)
        except KeyError:
            continue
        return candidate
    raise ServiceFailed("running as root and neither a 'postgres' nor a 'nobody' user exists")


def start_postgres() -> PostgresServer:
    """initdb a fresh cluster and start it on a free loopback port."""
    initdb = _pg_binary("initdb")
    postgres = _pg_binary("postgres")
    user = _run_as_user()
    base = Path(tempfile.mkdtemp(prefix="modelserve-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (base, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    init = subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"],
        capture_output=True,
        text=True,
        user=user,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise ServiceFailed(f"initdb failed ({init.returncode}): {init.stderr.strip()}")
    port = free_port()
    proc = ServerProcess(
        name="postgres",
        argv=[
            postgres,
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        log_path=base / "postgres.log",
        user=user,
        stop_signal=signal.SIGINT,  # "fast" shutdown: don't wait for clients to leave
    ).start()
    server = PostgresServer("127.0.0.1", port, "postgres", proc, base)
    proc.wait_ready(server.accepting, timeout=60)
    return server
