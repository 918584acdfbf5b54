"""Build a StepContext from settings: the one place that picks backends."""

from __future__ import annotations

import datetime as dt
import os

import httpx
from cloudevents.http import CloudEvent
from prometheus_client import CollectorRegistry

from modelserve.functions.appliers import Applier, KubernetesApplier, LocalApplier
from modelserve.functions.catalog.base import Catalog
from modelserve.functions.catalog.http import HttpCatalog
from modelserve.functions.catalog.local import LocalCatalog
from modelserve.functions.catalog.s3 import S3Catalog
from modelserve.functions.steps.context import Publish, StepContext
from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer, TokenVerifier
from modelserve.shared.contract import load_contract
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.kube import api_client
from modelserve.shared.metrics import StepMetrics
from modelserve.shared.settings import Settings
from modelserve.shared.store.factory import make_store
from modelserve.shared.store.minio_store import make_minio_client


def make_catalog(settings: Settings) -> Catalog:
    if settings.catalog_backend == "local":
        return LocalCatalog(settings.resolved_catalog_dir)
    if not settings.catalog_url:
        raise ValueError(
            f"MODELSERVE_CATALOG_URL is required for the {settings.catalog_backend} catalog"
        )
    if settings.catalog_backend == "http":
        token = settings.catalog_token.get_secret_value() if settings.catalog_token else None
        return HttpCatalog(
            settings.catalog_url, token=token, file_origins=set(settings.catalog_file_origins)
        )
    if settings.catalog_access_key is None or settings.catalog_secret_key is None:
        raise ValueError(
            "MODELSERVE_CATALOG_ACCESS_KEY and MODELSERVE_CATALOG_SECRET_KEY are "
            "required for the s3 catalog"
        )
    endpoint = httpx.URL(settings.catalog_url)
    client = make_minio_client(
        f"{endpoint.host}:{endpoint.port or (443 if endpoint.scheme == 'https' else 80)}",
        settings.catalog_access_key.get_secret_value(),
        settings.catalog_secret_key.get_secret_value(),
        secure=endpoint.scheme == "https",
        region=settings.minio_region,
    )
    return S3Catalog(
        client,
        settings.catalog_bucket,
        prefix=settings.catalog_prefix,
        ttl=dt.timedelta(seconds=settings.catalog_url_ttl_seconds),
        endpoint_url=settings.catalog_url,
    )


def make_applier(settings: Settings) -> Applier:
    if settings.mode == "local":
        return LocalApplier(settings.data_dir / "modelserves")
    return KubernetesApplier(api_client(settings))


def make_publisher(url: str | None, http: httpx.AsyncClient) -> Publish | None:
    """POST events to the broker ingress (binary mode); None when there is no broker."""
    if not url:
        return None

    async def publish(event: CloudEvent) -> None:
        headers, body = ev.encode_binary(event)
        response = await http.post(url, headers=headers, content=body)
        response.raise_for_status()

    return publish


def build_context(settings: Settings, registry: CollectorRegistry | None = None) -> StepContext:
    """The steps' context; ``registry`` is where their metrics go (a new one when None)."""
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), follow_redirects=False)
    issuer = (
        TokenIssuer.from_settings(settings)
        if (settings.jwt_algorithm == "HS256" or settings.jwt_private_key_file)
        else None
    )
    return StepContext(
        settings=settings,
        sessions=sessions,
        store=make_store(settings),
        verifier=TokenVerifier.from_settings(settings),
        issuer=issuer,
        catalog=make_catalog(settings),
        contract=load_contract(settings.contract_file),
        applier=make_applier(settings),
        http=http,
        # Knative's SinkBinding injects K_SINK; this is the edge that reads it.
        publish=make_publisher(settings.broker_url or os.environ.get("K_SINK"), http),
        metrics=StepMetrics(registry or CollectorRegistry()),
    )
