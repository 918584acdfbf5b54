"""A directory of GGUF files as the catalog: the embedded default.

``<root>/<name>.gguf`` is model ``name``. URLs are ``file://`` paths inside the
root; the mirror reads nothing outside it.
"""

from __future__ import annotations

import time
from pathlib import Path

from modelserve.functions.catalog.base import Catalog, CatalogEntry, ModelNotInCatalog, SignedModel
from modelserve.functions.ingest import NAME_CHARS, is_model_name


class LocalCatalog(Catalog):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, model: str) -> Path:
        if not is_model_name(model):
            raise ModelNotInCatalog(f"{model!r} is not a valid model name")
        return self.root / f"{model}.gguf"

    async def sign(self, model: str) -> SignedModel:
        path = self._path(model)
        if not path.is_file():
            raise ModelNotInCatalog(f"model {model!r} is not in the catalog at {self.root}")
        return SignedModel(
            catalog_id=model,
            url=path.as_uri(),
            expires_at=time.time() + 3600,
            size_bytes=path.stat().st_size,
        )

    async def entries(self) -> list[CatalogEntry]:
        if not self.root.is_dir():
            return []
        return [
            CatalogEntry(p.stem, p.stat().st_size)
            for p in sorted(self.root.glob("*.gguf"))
            if set(p.stem) <= NAME_CHARS
        ]

    def allowed_origins(self) -> set[str]:
        return {"file://"}

    def allows(self, url: str) -> bool:
        """Only files inside the catalog's own directory."""
        if not url.startswith("file://"):
            return False
        return Path(url.removeprefix("file://")).resolve().is_relative_to(self.root)
