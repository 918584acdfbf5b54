"""Build the configured object store from settings (the one place that chooses)."""

from __future__ import annotations

from modelserve.shared.settings import Settings
from modelserve.shared.store.base import ObjectStore
from modelserve.shared.store.local import LocalStore
from modelserve.shared.store.minio_store import MinioStore, make_minio_client


def make_store(settings: Settings) -> ObjectStore:
    if settings.store_backend == "minio":
        if settings.minio_access_key is None or settings.minio_secret_key is None:
            raise ValueError(
                "MODELSERVE_MINIO_ACCESS_KEY and MODELSERVE_MINIO_SECRET_KEY are required "
                "with MODELSERVE_STORE_BACKEND=minio"
            )
        client = make_minio_client(
            settings.minio_endpoint,
            settings.minio_access_key.get_secret_value(),
            settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
            region=settings.minio_region,
        )
        return MinioStore(client, settings.bucket)
    key = settings.store_signing_key or settings.jwt_secret
    if key is None:
        raise ValueError("MODELSERVE_STORE_SIGNING_KEY (or MODELSERVE_JWT_SECRET) is required")
    return LocalStore(
        settings.resolved_store_dir / settings.bucket,
        key.get_secret_value().encode(),
        str(settings.public_base_url),
    )
