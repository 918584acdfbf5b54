"""The local backend: ModelServes as runtime processes on one machine.

It reads the ModelServe documents the pipeline's local applier writes
(``<data_dir>/modelserves/<namespace>/<name>.json``) and keeps one
``modelserve runtime`` process per server:

- start, then wait for KServe's readiness endpoint (bounded);
- restart a crashed process with exponential backoff, and give up (failed, with
  the process's last output) after too many crashes in a row;
- stop a server nobody used for its idle timeout (scale to zero: "idle") and
  start it again when the gateway asks for it (``ensure_running``);
- copy memory and CPU of the process into the server record;
- stop the process when its ModelServe is deleted.

Each server's runtime output (stdout and stderr, every start appended) is kept
in ``<log_dir>/<server-uuid>.log``; ``log_tail`` reads its end for the API.

Every runtime gets the backend's ``runtime_token`` (the gateway's) in its
environment and answers nothing without it (runtime/internal_auth.py).

Starting a server continues the serve's trace (the ModelServe's traceparent
annotation): a "runtime start" span, whose traceparent the runtime gets in
``TRACEPARENT`` for its own "load" span.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import lifecycle, tracing
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.metrics import BackendMetrics
from modelserve.shared.net import free_port
from modelserve.shared.runtime_params import env_name

log = logging.getLogger(__name__)


class ServerUnavailable(RuntimeError):
    """The server could not be brought up (or is not known); the message says why."""


USAGE_ERROR = 2  # the runtime's exit code for invalid parameters (see modelserve runtime)
TAIL_BYTES = 1 << 20  # how far from a log's end a tail reads at most


def last_lines(path: Path, count: int, since: int = 0) -> list[str]:
    """The last ``count`` lines of ``path`` after byte ``since``, reading no more than
    ``TAIL_BYTES`` from its end (a runtime's log grows for as long as it serves)."""
    try:
        with path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = max(since, end - TAIL_BYTES)
            handle.seek(start)
            data = handle.read(end - start)
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if start > since and lines:  # began mid-line
        lines = lines[1:]
    return lines[-count:] if count > 0 else []


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGTERM when the thread that started it dies.

    A clean stop terminates runtimes itself; this covers the stack being killed or
    interrupted twice mid-shutdown, which would otherwise leave orphans.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A runtime in its own process group (so stopping it stops its children too).

    Called on the event loop's thread, not a worker thread: the parent-death
    signal fires when the starting *thread* exits.
    """
    with log_path.open("ab") as output:
        return subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl: safe between fork and exec
            env=env,
        )


@dataclass
class Supervised:
    spec: ms.ModelServeSpec
    path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int | None = None
    log_path: Path | None = None
    log_offset: int = 0  # where this start's output begins in the (appended) log
    ready: bool = False
    stopping: bool = False
    idle: bool = False
    failed: str | None = None
    crashes: int = 0
    next_start: float = 0.0
    last_used: float = field(default_factory=time.monotonic)
    memory_max_mb: float = 0.0
    usage_at: float = float("-inf")
    watched: dict[int, psutil.Process] = field(default_factory=dict)
    starting: asyncio.Task[None] | None = None
    traceparent: str | None = None  # the serve's trace, until the first start is ready

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port else None


@dataclass
class LocalBackend:
    root: Path
    sessions: async_sessionmaker[AsyncSession]
    log_dir: Path
    runtime_command: list[str] = field(
        default_factory=lambda: [sys.executable, "-m", "modelserve", "runtime"]
    )
    startup_timeout: float = 120.0
    tick: float = 0.5
    max_crashes: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    usage_interval: float = 2.0
    env: dict[str, str] = field(default_factory=dict)
    # The runtimes' internal credential (the gateway's runtime_token): each runtime
    # refuses any request without it, so another local user reaching its loopback
    # port gets nothing. In the environment, never in argv (ps shows argv to everyone).
    runtime_token: str | None = None
    clock: Callable[[], float] = time.monotonic
    servers: dict[uuid.UUID, Supervised] = field(default_factory=dict)
    # What is scraped; a field (not made in __post_init__), so replace() keeps it.
    metrics: BackendMetrics = field(default_factory=lambda: BackendMetrics(CollectorRegistry()))

    def __post_init__(self) -> None:
        self.metrics.running.set_function(self._running)

    def running_urls(self) -> dict[uuid.UUID, str]:
        """Each ready runtime's URL (what the embedded stack's charts scrape)."""
        return {s: i.url for s, i in self.servers.items() if i.ready and i.url is not None}

    def _running(self) -> int:
        return sum(1 for i in self.servers.values() if i.process and i.process.poll() is None)

    # --- the desired state ----------------------------------------------------------

    def _desired(self) -> dict[uuid.UUID, tuple[ms.ModelServeSpec, Path, str | None]]:
        """Each ModelServe's spec, file and traceparent annotation."""
        found: dict[uuid.UUID, tuple[ms.ModelServeSpec, Path, str | None]] = {}
        for path in sorted(self.root.glob("*/*.json")):
            try:
                obj = json.loads(path.read_text())
                spec = ms.spec_of(obj)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable ModelServe %s: %s", path, exc)
                continue
            found[spec.server_uuid] = (spec, path, ms.traceparent_of(obj))
        return found

    async def _move(self, server: uuid.UUID, status: ServerStatus, **fields: Any) -> bool:
        """Move the record; False when the lifecycle refuses (the server is gone or
        moved on), and True when there is no record (a ModelServe written by hand)."""
        try:
            moved = await lifecycle.move(self.sessions, server, status, **fields)
        except repo.NotFound:
            return True
        if not moved:
            log.info("server %s is %s; not moving it to %s", server, moved.status, status)
        return moved.ok

    async def _status(self, server: uuid.UUID) -> ServerStatus | None:
        async with self.sessions() as session:
            try:
                return ServerStatus((await repo.get_server(session, server)).status)
            except repo.NotFound:
                return None

    # --- processes ---------------------------------------------------------------------

    def _argv(self, item: Supervised) -> list[str]:
        spec = item.spec
        model = (
            spec.storage_uri.removeprefix("file://")
            if spec.storage_uri.startswith("file://")
            else spec.storage_uri
        )
        argv = [
            *self.runtime_command,
            "--model",
            model,
            "--model-name",
            spec.model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(item.port),
        ]
        if spec.sha256:
            argv += ["--sha256", spec.sha256]
        for key, value in spec.runtime.as_runtime_args().items():
            flag = f"--{key.replace('_', '-')}"
            if isinstance(value, bool):
                argv += [flag] if value else []
            else:
                argv += [flag, str(value)]
        return argv

    async def _start(self, item: Supervised) -> None:
        """Start the runtime and wait until it is ready, in the serve's trace (until a
        start got there: a later restart or wake is a trace of its own)."""
        with tracing.continued(
            "runtime start",
            item.traceparent,
            SpanKind.INTERNAL,
            server_uuid=str(item.spec.server_uuid),
        ):
            await self._start_traced(item)

    async def _start_traced(self, item: Supervised) -> None:
        item.port = free_port()
        item.log_path = self.log_path(item.spec.server_uuid)
        item.log_path.parent.mkdir(parents=True, exist_ok=True)
        item.log_offset = item.log_path.stat().st_size if item.log_path.exists() else 0
        item.ready, item.idle, item.stopping, item.failed = False, False, False, None
        if not await self._move(
            item.spec.server_uuid,
            ServerStatus.LOADING,
            status_message="starting the runtime",
            internal_url=item.url,
        ):  # deleted or failed meanwhile: start nothing
            item.failed = "the server is gone"
            return
        env = {**os.environ, **self.env}
        env.pop(env_name("internal_token"), None)  # only ever the one this backend holds
        if self.runtime_token is not None:
            env[env_name("internal_token")] = self.runtime_token
        if traceparent := tracing.current_traceparent():  # the runtime's load span's parent
            env[tracing.TRACEPARENT_ENV] = traceparent
        item.process = _spawn(self._argv(item), item.log_path, env)
        self.metrics.starts.inc()
        item.last_used = self.clock()
        deadline = self.clock() + self.startup_timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while self.clock() < deadline:
                if item.process.poll() is not None:
                    await self._crashed(item)
                    return
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{item.url}/v2/health/ready")).status_code == 200:
                        item.ready, item.crashes = True, 0
                        await self._ready(item)
                        return
                await asyncio.sleep(0.2)
        await self._stop(item, "timeout")
        await self._give_up(item, f"not ready within {self.startup_timeout:.0f}s")

    async def _ready(self, item: Supervised) -> None:
        assert item.process is not None
        item.last_used = self.clock()  # whoever woke it is about to use it
        item.traceparent = None
        if not await self._move(
            item.spec.server_uuid,
            ServerStatus.READY,
            status_message="ready",
            internal_url=item.url,
            pod_names=[f"pid-{item.process.pid}"],
            service_name=f"runtime-{item.spec.server_uuid}",
        ):  # deleted while it started: the next pass stops it
            item.ready = False
            await self._stop(item, "deleted")
            item.failed = "the server is gone"

    def _tail(self, item: Supervised, lines: int = 8) -> str:
        """This start's last output, for a status message."""
        if item.log_path is None:
            return ""
        text = [line for line in last_lines(item.log_path, lines, item.log_offset) if line.strip()]
        return " | ".join(text)

    def log_path(self, server: uuid.UUID) -> Path:
        return self.log_dir / f"{server}.log"

    async def log_tail(self, server: uuid.UUID, lines: int) -> list[str]:
        """The last ``lines`` lines the server's runtime wrote, over all its starts
        (none when it never ran here): what the dashboard shows an admin."""
        return await asyncio.to_thread(last_lines, self.log_path(server), lines)

    async def _crashed(self, item: Supervised) -> None:
        code = item.process.returncode if item.process else None
        item.process, item.ready = None, False
        self.metrics.exits.labels("crashed").inc()
        item.crashes += 1
        if code == USAGE_ERROR:  # bad parameters fail the same way every time
            await self._give_up(item, f"the runtime refused its parameters: {self._tail(item)}")
            return
        if item.crashes >= self.max_crashes:
            await self._give_up(
                item,
                f"the runtime exited {item.crashes} times (last exit {code}): {self._tail(item)}",
            )
            return
        delay = min(self.backoff * 2 ** (item.crashes - 1), self.max_backoff)
        item.next_start = self.clock() + delay
        if not await self._move(
            item.spec.server_uuid,
            ServerStatus.LOADING,
            internal_url=None,
            status_message=f"the runtime exited ({code}); restarting in "
            f"{delay:.0f}s: {self._tail(item, 3)}",
        ):
            item.failed = "the server is gone"

    async def _give_up(self, item: Supervised, reason: str) -> None:
        item.failed = reason
        await self._move(
            item.spec.server_uuid, ServerStatus.FAILED, status_message=reason, internal_url=None
        )

    async def _stop(self, item: Supervised, reason: str) -> None:
        """Stop the runtime; ``reason`` is the exit's label in the metrics."""
        process = item.process
        item.stopping, item.ready = True, False
        if process is None or process.poll() is not None:
            item.process = None
            return
        self.metrics.exits.labels(reason).inc()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        for _ in range(100):
            if process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        item.process = None

    def _usage(self, item: Supervised) -> tuple[float, float] | None:
        """RSS and CPU % of the runtime's process tree since the last sample.

        psutil measures CPU between two calls on the *same* Process object (a new
        one always says 0.0), so the objects are kept from one sample to the next.
        """
        if item.process is None:
            return None
        try:
            root = item.watched.get(item.process.pid) or psutil.Process(item.process.pid)
            family = [root, *root.children(recursive=True)]
            watched = {p.pid: item.watched.get(p.pid, p) for p in family}
            rss = sum(p.memory_info().rss for p in watched.values())
            cpu = sum(p.cpu_percent(interval=None) for p in watched.values())
        except psutil.Error:
            return None
        item.watched = watched
        return rss / 2**20, cpu

    # --- the loop ----------------------------------------------------------------------

    def _begin(self, item: Supervised) -> None:
        if item.starting is None or item.starting.done():
            item.starting = asyncio.create_task(self._start(item))

    async def reconcile(self) -> None:
        """One pass: start new servers, restart crashed ones, stop idle and deleted ones."""
        desired = self._desired()
        for server, (spec, path, traceparent) in desired.items():
            item = self.servers.get(server)
            if item is None:
                item = self.servers[server] = Supervised(spec, path, traceparent=traceparent)
                # After a restart: an idle server stays stopped until a request wakes it,
                # a failed or deleted one stays down; everything else starts again.
                status = await self._status(server)
                if status is ServerStatus.IDLE:
                    item.idle = True
                elif status in lifecycle.GONE:
                    item.failed = f"the server is {status}"
                else:
                    self._begin(item)
                continue
            if item.failed or item.idle or (item.starting and not item.starting.done()):
                continue
            if item.process is None and self.clock() >= item.next_start:
                self._begin(item)
            elif item.process is not None and item.process.poll() is not None:
                await self._crashed(item)
            elif item.ready and self.clock() - item.last_used > spec.idle_timeout_seconds:
                await self._stop(item, "idle")
                item.idle = True
                await self._move(
                    server,
                    ServerStatus.IDLE,
                    internal_url=None,
                    status_message="stopped after being idle; starts on demand",
                )
            elif item.ready:
                await self._sample_usage(item)
        for server in set(self.servers) - set(desired):
            item = self.servers.pop(server)
            if item.starting is not None:
                item.starting.cancel()
                await asyncio.gather(item.starting, return_exceptions=True)
            await self._stop(item, "deleted")
            with contextlib.suppress(repo.NotFound):
                await lifecycle.finish_deletion(self.sessions, server, "ModelServe deleted")
        await lifecycle.sweep_deletions(self.sessions, set(desired) | set(self.servers))

    async def _sample_usage(self, item: Supervised) -> None:
        """Memory and CPU of the runtime's process tree into the record, every
        ``usage_interval`` seconds (the dashboard's live figures)."""
        now = self.clock()
        if now - item.usage_at < self.usage_interval:
            return
        usage = self._usage(item)
        if usage is None:
            return
        item.usage_at = now
        memory, cpu = usage
        item.memory_max_mb = max(item.memory_max_mb, memory)
        with contextlib.suppress(repo.NotFound):
            async with self.sessions.begin() as session:
                await repo.update_server(
                    session,
                    item.spec.server_uuid,
                    memory_current_mb=round(memory, 1),
                    memory_max_mb=round(item.memory_max_mb, 1),
                    cpu_usage_percent=round(cpu, 1),
                )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick)
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for item in self.servers.values():
            if item.starting is not None:
                item.starting.cancel()
            await self._stop(item, "shutdown")

    # --- for the gateway ---------------------------------------------------------------------

    async def ensure_running(self, server: uuid.UUID, wait_seconds: float = 120.0) -> str:
        """The server's URL, starting it first when it is idle (bounded wait)."""
        item = self.servers.get(server)
        if item is None:
            raise ServerUnavailable(f"no server {server}")
        if item.failed:
            raise ServerUnavailable(f"server {server} failed: {item.failed}")
        item.last_used = self.clock()
        if item.ready and item.url:
            return item.url
        if item.process is None or item.idle:
            item.idle = False
            self._begin(item)
        deadline = self.clock() + wait_seconds
        while self.clock() < deadline:
            if item.ready and item.url:
                return item.url
            if item.failed:
                raise ServerUnavailable(f"server {server} failed: {item.failed}")
            await asyncio.sleep(0.1)
        raise ServerUnavailable(f"server {server} did not become ready within {wait_seconds:.0f}s")
