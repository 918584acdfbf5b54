"""Install CRDs into the real API server and wait until they serve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException


def install(api: client.ApiClient, path: Path) -> list[str]:
    """Create (or keep) every CRD in ``path``; wait for Established. Returns their names."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
        names.append(doc["metadata"]["name"])
    deadline = time.monotonic() + 30
    for name in names:
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} never became Established")
            time.sleep(0.1)
    return names


def schema_of(path: Path, version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of the (first) CRD in ``path``."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            for v in doc["spec"]["versions"]:
                if version is None or v["name"] == version:
                    return dict(v["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD schema in {path}")
