"""Run the operator: kopf with our registry, settings and credentials."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from modelserve.operator.admission import AdmissionDeps, register_admission
from modelserve.operator.handlers import OperatorDeps, build_registry, sweep_deletions
from modelserve.operator.login import connection_from_kubeconfig
from modelserve.shared.auth.tokens import TokenVerifier
from modelserve.shared.contract import load_contract
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.kube import api_client
from modelserve.shared.settings import Settings


def kopf_settings(
    *, post_events: bool = True, webhook: kopf.WebhookServer | None = None
) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    if webhook is not None:
        # The webhook configurations ship in config/operator/webhooks.yaml, with the
        # CA bundle and the serving certificate from config/secrets/ (see
        # config/kustomization.yaml), so kopf does not manage them.
        settings.admission.server = webhook
    settings.posting.enabled = post_events
    settings.watching.server_timeout = 60
    settings.persistence.finalizer = "modelserve.dev/operator"
    settings.execution.max_workers = 8
    return settings


async def operate(
    settings: Settings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    post_events: bool = True,
    metrics_interval: float = 30.0,
    webhook: kopf.WebhookServer | None = None,
    metrics_address: tuple[str, int] | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Migrate the database, then run until ``stop_flag`` is set (or the process is signalled).

    With ``metrics_address`` (host, port) the reconciles' metrics are served there
    at ``/metrics`` for Prometheus (a small HTTP server on its own thread).
    ``liveness_endpoint`` (``http://0.0.0.0:8081/healthz``): kopf's health server,
    which answers only once the schema is migrated and the operator is running,
    so the Deployment's probes see a started operator, not merely a process.

    On Kubernetes the operator is the one long-running process with a single
    replica (Recreate strategy), so it brings the schema to head before it
    reconciles anything; a fresh database needs no separate migration step.
    """
    engine = make_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    deps = OperatorDeps(
        api=api_client(settings),
        sessions=make_sessionmaker(engine),
        public_base_url=str(settings.public_base_url),
        metrics_interval=metrics_interval,
        deployment_mode=settings.kserve_deployment_mode,
    )
    registry = build_registry(deps)
    if webhook is not None:
        register_admission(
            registry,
            AdmissionDeps(
                verifier=TokenVerifier.from_settings(settings),
                contract=load_contract(settings.contract_file),
                sessions=deps.sessions,
                auth_cache_ttl=settings.auth_cache_ttl_seconds,
                bucket=settings.bucket,
            ),
        )
    kubeconfig = settings.kubeconfig

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig is not None:
            return connection_from_kubeconfig(Path(kubeconfig))
        return kopf.login_with_service_account(**_)

    scrape = (
        start_http_server(metrics_address[1], metrics_address[0], registry=deps.metrics.registry)[0]
        if metrics_address is not None
        else None
    )
    sweeper = asyncio.create_task(sweep_deletions(deps))
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(post_events=post_events, webhook=webhook),
            clusterwide=True,
            standalone=True,
            liveness_endpoint=liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        if scrape is not None:
            scrape.shutdown()
            scrape.server_close()
        deps.api.close()
        await engine.dispose()
