"""Where the apply step puts a ModelServe: the Kubernetes API, or the local backend's folder.

Both are idempotent: applying a resource that already exists returns it
unchanged, so a redelivered event never makes a second ModelServe.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

from modelserve.shared import modelserve as ms


class ApplyError(RuntimeError):
    """The resource could not be written; the message says why."""


class Applier(abc.ABC):
    @abc.abstractmethod
    async def apply(self, manifest: dict[str, Any]) -> tuple[str, bool]:
        """Create the ModelServe unless it exists; returns ("namespace/name", created)."""

    @abc.abstractmethod
    async def delete(self, namespace: str, name: str) -> bool:
        """Delete the ModelServe; False when it was not there."""


class KubernetesApplier(Applier):
    """Creates ModelServe custom resources through the Kubernetes API."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._objects = client.CustomObjectsApi(api_client)

    def _create(self, manifest: dict[str, Any]) -> bool:
        from kubernetes.client.rest import ApiException

        namespace = manifest["metadata"]["namespace"]
        try:
            self._objects.create_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, manifest
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            reason = exc.body if isinstance(exc.body, str) else exc.reason
            raise ApplyError(
                f"the Kubernetes API refused the ModelServe: {exc.status} {reason}"
            ) from None
        return True

    async def apply(self, manifest: dict[str, Any]) -> tuple[str, bool]:
        created = await asyncio.to_thread(self._create, manifest)
        meta = manifest["metadata"]
        return f"{meta['namespace']}/{meta['name']}", created

    def _delete(self, namespace: str, name: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self._objects.delete_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise ApplyError(f"the Kubernetes API refused the deletion: {exc.status}") from None
        return True

    async def delete(self, namespace: str, name: str) -> bool:
        return await asyncio.to_thread(self._delete, namespace, name)


class LocalApplier(Applier):
    """Writes ``<root>/<namespace>/<name>.json``; the local backend reads that folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _create(self, manifest: dict[str, Any]) -> bool:
        meta = manifest["metadata"]
        folder = self.root / meta["namespace"]
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{meta['name']}.json"
        staging = folder / f".{meta['name']}.{uuid.uuid4().hex}.tmp"
        staging.write_text(json.dumps(manifest, indent=2))
        try:
            os.link(staging, final)  # atomic, and fails if the resource exists
        except FileExistsError:
            return False
        finally:
            staging.unlink(missing_ok=True)
        return True

    async def apply(self, manifest: dict[str, Any]) -> tuple[str, bool]:
        created = await asyncio.to_thread(self._create, manifest)
        meta = manifest["metadata"]
        return f"{meta['namespace']}/{meta['name']}", created

    async def delete(self, namespace: str, name: str) -> bool:
        path = self.root / namespace / f"{name}.json"
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = self.root / namespace / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None
