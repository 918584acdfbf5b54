"""ASGI entry points of the API and the gateway, built from MODELSERVE_* at start.

    python -m modelserve.functions.http_main api --host 0.0.0.0 --port 8080
    python -m modelserve.functions.http_main gateway --host 0.0.0.0 --port 8080

``main`` runs uvicorn with the public servers' settings, which the embedded stack
uses too (``uvicorn --factory modelserve.functions.http_main:api`` also works, but
with uvicorn's 5 s keep-alive). In Kubernetes the API publishes to the Broker
(``K_SINK`` from a SinkBinding, or MODELSERVE_BROKER_URL). The embedded stack wires
the same factories itself.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import httpx
import uvicorn
from fastapi import FastAPI

from modelserve.functions.api.app import ApiDeps, create_app
from modelserve.functions.api.series import PrometheusSeries
from modelserve.functions.context_factory import make_applier, make_catalog, make_publisher
from modelserve.functions.gateway import GatewayDeps, create_gateway, upstream_client
from modelserve.shared import logs, tracing
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.auth.users import ensure_admin
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.settings import SettingsError, env_name, load_settings
from modelserve.shared.store.factory import make_store

# How long the public servers keep an idle connection: longer than their clients
# keep one (httpx 5 s; Knative's queue-proxy, Go's http.Transport, 90 s), so that a
# client never reuses a connection the server is closing at that very moment (the
# load case's rare reset). Browsers that keep one longer retry on a reset.
PUBLIC_KEEPALIVE_SECONDS = 100


def api() -> FastAPI:
    logs.configure()
    tracing.configure()  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    settings = load_settings()
    http = httpx.AsyncClient(timeout=30)
    publish = make_publisher(settings.broker_url or os.environ.get("K_SINK"), http)
    if publish is None:
        raise ValueError("the API needs a broker: set MODELSERVE_BROKER_URL (or K_SINK)")
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    app = create_app(
        ApiDeps(
            settings=settings,
            sessions=sessions,
            issuer=TokenIssuer.from_settings(settings),
            verifier=TokenVerifier.from_settings(settings),
            publish=publish,
            catalog=make_catalog(settings),
            applier=make_applier(settings),
            store=make_store(settings),
            dashboard_dir=settings.dashboard_dir,
            series=(
                PrometheusSeries(str(settings.prometheus_url), http)
                if settings.prometheus_url
                else None
            ),
        )
    )

    async def first_admin() -> None:
        # MODELSERVE_ADMIN_PASSWORD creates the first admin; without one (outside dev
        # mode) the API refuses to start and says which variable to set.
        async with sessions.begin() as session:
            await ensure_admin(session, settings)

    app.router.on_startup.append(first_admin)
    return app


def gateway() -> FastAPI:
    logs.configure()
    tracing.configure()  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    settings = load_settings()
    if settings.mode == "kubernetes" and settings.internal_token is None:
        # Every runtime refuses a request without it: fail at start, naming the fix.
        raise SettingsError(
            env_name("internal_token"),
            "the gateway needs the runtimes' internal credential (kserve/runtime-token.yaml)",
        )
    return create_gateway(
        GatewayDeps(
            verifier=TokenVerifier.from_settings(settings),
            sessions=make_sessionmaker(make_engine(settings.resolved_database_url)),
            http=upstream_client(),
            auth_cache_ttl=settings.auth_cache_ttl_seconds,
            max_body_bytes=settings.max_body_bytes,
            metrics_token=(
                settings.metrics_token.get_secret_value() if settings.metrics_token else None
            ),
            runtime_token=(
                settings.internal_token.get_secret_value() if settings.internal_token else None
            ),
        )
    )


FACTORIES: dict[str, Callable[[], FastAPI]] = {"api": api, "gateway": gateway}


def main(argv: list[str] | None = None) -> None:
    """Serve the API or the gateway with the public servers' keep-alive."""
    parser = argparse.ArgumentParser(prog="python -m modelserve.functions.http_main")
    parser.add_argument("app", choices=sorted(FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")  # a pod passes 0.0.0.0
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    uvicorn.run(
        FACTORIES[args.app],
        factory=True,
        host=args.host,
        port=args.port,
        timeout_keep_alive=PUBLIC_KEEPALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
