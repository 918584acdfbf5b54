"""The old quantisation service's catalog API: ``GET {base}/download-url/{model_id}``.

The answer is JSON with the presigned URL and what is known of the file; both
spellings the old service used are accepted (``url``/``download_url``,
``size``/``size_bytes``, ``expires_at``/``expires_in``, ``quantization``/``file_type``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from modelserve.functions.catalog.base import (
    Catalog,
    CatalogEntry,
    CatalogError,
    ModelNotInCatalog,
    SignedModel,
    origin,
)


class HttpCatalog(Catalog):
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        file_origins: set[str] | None = None,
        timeout: float = 30,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._origins = {origin(self.base_url), *(origin(o) for o in file_origins or set())}
        self._timeout = timeout

    async def _get(self, path: str) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                return await http.get(f"{self.base_url}{path}", headers=self._headers)
        except httpx.HTTPError as exc:
            raise CatalogError(f"catalog at {self.base_url} unreachable: {exc}") from exc

    async def sign(self, model: str) -> SignedModel:
        response = await self._get(f"/download-url/{quote(model, safe='')}")
        if response.status_code == 404:
            raise ModelNotInCatalog(f"model {model!r} is not in the catalog at {self.base_url}")
        if response.status_code != 200:
            raise CatalogError(f"catalog answered {response.status_code}: {response.text[:200]}")
        try:
            body: dict[str, Any] = response.json()
            url = body.get("url") or body["download_url"]
        except (ValueError, KeyError):
            raise CatalogError("catalog answer has no download URL") from None
        if "expires_at" in body:
            expires = float(body["expires_at"])
        else:
            expires = time.time() + float(body.get("expires_in", 3600))
        size = body.get("size_bytes", body.get("size"))
        return SignedModel(
            catalog_id=str(body.get("model_id", model)),
            url=str(url),
            expires_at=expires,
            sha256=(body.get("sha256") or None),
            size_bytes=int(size) if size is not None else None,
            file_type=body.get("file_type") or body.get("quantization"),
        )

    async def entries(self) -> list[CatalogEntry]:
        response = await self._get("/models")
        if response.status_code != 200:
            return []
        items = response.json()
        items = items.get("models", items) if isinstance(items, dict) else items
        return [
            CatalogEntry(
                str(i.get("model_id") or i.get("name")), i.get("size"), i.get("quantization")
            )
            for i in items
            if isinstance(i, dict)
        ]

    def allowed_origins(self) -> set[str]:
        return set(self._origins)
