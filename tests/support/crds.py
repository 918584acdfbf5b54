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


def schema_of(path: Path, version: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD in ``path`` (the one for ``kind`` in a multi-CRD file)."""
    for doc in yaml.safe_load_all(path.read_text()):
        if (
            doc
            and doc.get("kind") == "CustomResourceDefinition"
            and (kind is None or doc["spec"]["names"]["kind"] == kind)
        ):
            for v in doc["spec"]["versions"]:
                if version is None or v["name"] == version:
                    return dict(v["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD schema in {path}")


ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def openapi_problems(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``value`` its CRD schema does not name, and values of the wrong type.

    Stricter than the API server: a key outside ``properties`` is reported even
    where the schema preserves unknown fields (Knative does that at spec level).
    """
    where = path or "(root)"
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an int or a string"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        found: list[str] = []
        properties = schema.get("properties")
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if not path and key in ROOT_FIELDS:  # every object has them, named or not
                continue
            if properties is not None:
                if key not in properties:
                    found.append(f"{child}: not a field of the schema")
                else:
                    found += openapi_problems(item, properties[key], child)
            elif isinstance(schema.get("additionalProperties"), dict):
                found += openapi_problems(item, schema["additionalProperties"], child)
        return found
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array"]
        return [
            p
            for i, item in enumerate(value)
            for p in openapi_problems(item, schema.get("items", {}), f"{path}[{i}]")
        ]
    checks = {"string": str, "boolean": bool, "number": int | float}
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if kind in checks and not isinstance(value, checks[kind]):
        return [f"{where}: expected a {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    return []
