"""Start and stop real server processes for tests: free ports, binaries, readiness.

Every server a test starts listens on 127.0.0.1 only, on a free port, with a
temporary data directory, and is stopped at the end of the session. A binary
that cannot be found raises :class:`MissingService`; the fixture layer turns
that into a skip on a laptop and into an error when
``MODELSERVE_REQUIRE_SERVICES=1`` (CI), so nothing is silently mocked.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelserve.shared.net import free_port  # noqa: F401 - the one helper, re-exported

DEFAULT_TOOLS_DIR = Path.home() / ".cache" / "modelserve" / "bin"


class MissingService(RuntimeError):
    """A real server's binary is not installed on this machine."""


class ServiceFailed(RuntimeError):
    """A real server was found but did not start; the message carries its log tail."""


def tools_dir() -> Path:
    """Where ``.ci/run`` puts the Go-built binaries (MinIO, the API server)."""
    return Path(os.environ.get("MODELSERVE_TOOLS_DIR", str(DEFAULT_TOOLS_DIR)))


def find_binary(name: str, extra_globs: Sequence[str] = (), hint: str = "") -> str:
    """Locate ``name`` in the tools dir, on PATH, or in ``extra_globs`` (newest first)."""
    candidate = tools_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_globs:
        for path in sorted(glob.glob(pattern), reverse=True):
            if os.access(path, os.X_OK):
                return path
    raise MissingService(
        f"{name} not found in {tools_dir()} or on PATH" + (f"; {hint}" if hint else "")
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@dataclass
class ServerProcess:
    """A child process with its log file, stopped on :meth:`stop`."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    user: str | None = None
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            user=self.user,
            start_new_session=True,
        )
        log.close()
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``check`` until it is true; fail with the log tail if the process dies."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceFailed(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.1)
        self.stop()
        raise ServiceFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Send ``stop_signal`` to the process group, then SIGKILL what is left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, self.stop_signal)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
