"""Upstream catalogs: where a model that is not in our store can be fetched from.

A catalog turns a model name into a time-limited URL plus what it knows of the
file (sha256, size, quantisation). The mirror only ever fetches from the hosts
the configured catalog names (``allows``), so a catalog answer cannot point the
mirror at an arbitrary address.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from urllib.parse import urlsplit


class CatalogError(RuntimeError):
    """The catalog could not be asked (unreachable, bad answer)."""


class ModelNotInCatalog(CatalogError):
    """The catalog does not offer this model."""


@dataclass(frozen=True)
class SignedModel:
    catalog_id: str
    url: str
    expires_at: float
    sha256: str | None = None
    size_bytes: int | None = None
    file_type: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    size_bytes: int | None = None
    file_type: str | None = None


class Catalog(abc.ABC):
    @abc.abstractmethod
    async def sign(self, model: str) -> SignedModel:
        """A fresh time-limited URL for ``model``; ModelNotInCatalog if it has none."""

    @abc.abstractmethod
    async def entries(self) -> list[CatalogEntry]:
        """What the catalog offers (for listings)."""

    @abc.abstractmethod
    def allowed_origins(self) -> set[str]:
        """``scheme://host:port`` origins its URLs may point at."""

    def allows(self, url: str) -> bool:
        return origin(url) in self.allowed_origins()


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``; one no origin matches when it cannot be parsed
    (a port out of range from a hostile catalog is a refusal, not a crash)."""
    try:
        parts = urlsplit(url)
        explicit = parts.port
    except ValueError:
        return "invalid://"
    if parts.scheme == "file":
        return "file://"
    port = explicit or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
