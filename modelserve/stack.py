"""The embedded stack: the whole product on one machine, in one process tree.

API and gateway share the public port (a path whose first segment is a server
UUID goes to the gateway); the broker's ingress and the five pipeline functions
(the real functions-framework apps) listen on other loopback ports; the local
backend runs servers as runtime processes. SQLite and a directory store live
under the data directory, so state survives a restart.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry
from werkzeug.serving import BaseWSGIServer

from modelserve import resources
from modelserve.functions import host
from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.api.series import MemorySeries, PrometheusSeries, Series, sample_forever
from modelserve.functions.appliers import LocalApplier
from modelserve.functions.broker import triggers
from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.broker.ingress import make_ingress
from modelserve.functions.catalog.local import LocalCatalog
from modelserve.functions.context_factory import build_context
from modelserve.functions.gateway import GatewayDeps, create_gateway, upstream_client
from modelserve.functions.http_main import PUBLIC_KEEPALIVE_SECONDS
from modelserve.operator.local_backend import LocalBackend
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import ensure_admin
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_synth import write_synthetic_gguf
from modelserve.shared.metrics import BackendMetrics
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings
from modelserve.shared.store.factory import make_store

GRACEFUL_SHUTDOWN_SECONDS = 3


def secret_file(data_dir: Path) -> Path:
    return data_dir / "jwt-secret"


def stack_settings(data_dir: Path, host_: str, port: int, *, dev: bool) -> Settings:
    """Settings for the embedded stack; the JWT secret is made once and kept in data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_path = secret_file(data_dir)
    if not secret_path.exists():
        secret_path.write_text(secrets.token_hex(32))
        secret_path.chmod(0o600)
    overrides: dict[str, Any] = {
        "mode": "local",
        "dev": dev,
        "data_dir": data_dir,
        "public_base_url": f"http://{host_}:{port}",
    }
    if not os.environ.get("MODELSERVE_JWT_SECRET"):
        overrides["jwt_secret"] = secret_path.read_text().strip()
    return load_settings(**overrides)


class Router:
    """One public port: ``/<server-uuid>/...`` to the gateway, the rest to the API."""

    def __init__(self, api: Any, gateway: Any) -> None:
        self.api, self.gateway = api, gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            first = scope["path"].lstrip("/").split("/", 1)[0]
            try:
                uuid.UUID(first)
            except ValueError:
                pass
            else:
                await self.gateway(scope, receive, send)
                return
        await self.api(scope, receive, send)


@dataclass
class StackInfo:
    url: str
    admin_token: str
    admin_password: str | None
    data_dir: Path
    admin_username: str = "admin"


def _serve_functions(
    settings: Settings, registry: CollectorRegistry
) -> tuple[dict[str, str], list[BaseWSGIServer]]:
    host.start(lambda: build_context(settings, registry))
    return host.serve_functions()


async def run_stack(
    data_dir: Path,
    host_: str = "127.0.0.1",
    port: int = 8080,
    *,
    dev: bool = True,
    on_ready: Callable[[StackInfo], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run everything until ``stop`` is set or the process is interrupted."""
    ingress_port = free_port()
    settings = stack_settings(data_dir, host_, port, dev=dev).model_copy(
        update={"broker_url": f"http://127.0.0.1:{ingress_port}/"}
    )
    engine = make_engine(settings.resolved_database_url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        generated = await ensure_admin(session, settings)
        admin = await repo.get_user(session, settings.admin_username)
    assert admin is not None
    catalog_dir = settings.resolved_catalog_dir
    if not (catalog_dir / "demo.gguf").exists():
        write_synthetic_gguf(catalog_dir / "demo.gguf", "tiny", name="demo")

    # One registry for the whole process: the public /metrics shows the API, the
    # gateway, the steps and the local backend together.
    registry = CollectorRegistry()
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    function_urls, function_servers = await asyncio.to_thread(_serve_functions, settings, registry)
    rules = triggers.pipeline_rules(resources.config_dir())
    broker = EmbeddedBroker(rules, function_urls.__getitem__, http)
    # The runtimes' internal credential, new at every start: only this stack's gateway
    # holds it, so a runtime's loopback port serves no one else on the machine.
    runtime_token = secrets.token_hex(32)
    backend = LocalBackend(
        root=settings.data_dir / "modelserves",
        sessions=sessions,
        log_dir=settings.data_dir / "logs",
        metrics=BackendMetrics(registry),
        runtime_token=runtime_token,
    )
    # The charts: Prometheus when one is named, else an hour of the stack's own samples.
    memory = MemorySeries()
    series: Series = (
        PrometheusSeries(str(settings.prometheus_url), http) if settings.prometheus_url else memory
    )
    issuer, verifier = TokenIssuer.from_settings(settings), TokenVerifier.from_settings(settings)
    # One credential cache for both: a revocation through the API is seen at once.
    guard = AccessGuard(verifier, sessions, ttl=settings.auth_cache_ttl_seconds)
    api = create_app(
        ApiDeps(
            settings,
            sessions,
            issuer,
            verifier,
            broker.publish,
            LocalCatalog(catalog_dir),
            LocalApplier(settings.data_dir / "modelserves"),
            make_store(settings),
            settings.dashboard_dir or resources.dashboard_dir(),
            access_guard=guard,
            registry=registry,
            series=series,
            runtime_logs=backend.log_tail,
        )
    )

    async def wake(server: uuid.UUID) -> str:
        return await backend.ensure_running(server)

    upstream = upstream_client()  # the proxy hop's own pool, apart from the broker's
    gateway_deps = GatewayDeps(
        verifier,
        sessions,
        upstream,
        wake,
        access_guard=guard,
        max_body_bytes=settings.max_body_bytes,
        registry=registry,
        metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        runtime_token=runtime_token,
    )
    gateway = create_gateway(gateway_deps)
    public = uvicorn.Server(
        uvicorn.Config(
            Router(api, gateway),
            host=host_,
            port=port,
            lifespan="off",
            log_level="warning",
            # An open dashboard holds /events (and maybe a chat stream) forever: Ctrl-C
            # must not wait for the browser to hang up.
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # The Kubernetes entry points' too: longer than clients keep idle ones.
            timeout_keep_alive=PUBLIC_KEEPALIVE_SECONDS,
        )
    )
    ingress = uvicorn.Server(
        uvicorn.Config(
            make_ingress(broker.publish), host="127.0.0.1", port=ingress_port, log_level="warning"
        )
    )
    backend_stop = stop or asyncio.Event()
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(ingress.serve()),
        asyncio.create_task(backend.run(backend_stop)),
    ]
    if series is memory:
        tasks.append(
            asyncio.create_task(
                sample_forever(memory, backend.running_urls, http, backend_stop, registry)
            )
        )
    serving = asyncio.create_task(public.serve())
    try:
        while not public.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        if on_ready is not None:
            on_ready(
                StackInfo(
                    f"http://{host_}:{port}",
                    issuer.access_token(admin.username, Role(admin.role)),
                    generated,
                    settings.data_dir,
                    admin.username,
                )
            )
        if stop is not None:
            tasks.append(asyncio.create_task(_exit_on(stop, public)))
        await serving
    finally:
        public.should_exit = True
        ingress.should_exit = True
        backend_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in function_servers:
            server.shutdown()
        host.stop()
        await http.aclose()
        await guard.flush()  # lifespan is off here: the last batch of last-used times
        await gateway_deps.recorder.close()  # and of usage
        await upstream.aclose()
        await engine.dispose()


async def _exit_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
