"""An S3/MinIO upstream bucket as the catalog: ``<prefix><name>.gguf``, presigned."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from minio import Minio
from minio.error import S3Error

from modelserve.functions.catalog.base import (
    Catalog,
    CatalogEntry,
    CatalogError,
    ModelNotInCatalog,
    SignedModel,
    origin,
)
from modelserve.functions.ingest import is_model_name


class S3Catalog(Catalog):
    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        prefix: str = "",
        ttl: dt.timedelta,
        endpoint_url: str,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.ttl = ttl
        self._origin = origin(endpoint_url)

    def _key(self, model: str) -> str:
        if not is_model_name(model):
            raise ModelNotInCatalog(f"{model!r} is not a valid model name")
        return f"{self.prefix}{model}.gguf"

    async def sign(self, model: str) -> SignedModel:
        key = self._key(model)
        try:
            stat: Any = await asyncio.to_thread(self._client.stat_object, self.bucket, key)
            url = await asyncio.to_thread(
                self._client.presigned_get_object, self.bucket, key, expires=self.ttl
            )
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                raise ModelNotInCatalog(f"model {model!r} is not in bucket {self.bucket}") from None
            raise CatalogError(f"upstream bucket refused: {exc.code}") from exc
        except OSError as exc:
            raise CatalogError(f"upstream bucket unreachable: {exc}") from exc
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        return SignedModel(
            catalog_id=key,
            url=url,
            expires_at=time.time() + self.ttl.total_seconds(),
            sha256=meta.get("x-amz-meta-sha256"),
            size_bytes=stat.size,
        )

    async def entries(self) -> list[CatalogEntry]:
        objects = await asyncio.to_thread(
            lambda: list(self._client.list_objects(self.bucket, prefix=self.prefix))
        )
        return [
            CatalogEntry(o.object_name[len(self.prefix) : -len(".gguf")], o.size)
            for o in objects
            if o.object_name.endswith(".gguf")
        ]

    def allowed_origins(self) -> set[str]:
        return {self._origin}
