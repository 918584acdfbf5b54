"""Check a manifest (a plain dict) against the kserve SDK's and Kubernetes' model classes.

The SDKs' own deserializers drop unknown keys silently, and kserve's cannot
resolve the Kubernetes types it nests (V1Container, V1ObjectMeta, ...). This
walks both libraries' ``openapi_types`` / ``attribute_map`` so that a misspelt
field anywhere in an InferenceService or ServingRuntime is reported by its path.
"""

from __future__ import annotations

import re
from typing import Any

from modelserve.shared.kserve_sdk import import_kserve

# Both generators' spellings: kserve's "list[X]" / "dict(str, X)" and the newer
# kubernetes client's "List[X]" / "Dict[str, X]".
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
_PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "bytes": (str,),
    # Quantities ("2Gi", 4) and KServe's URLs are strings or numbers on the wire.
    "ResourceQuantity": (str, int, float),
    "KnativeURL": (str,),
}


def _model_class(name: str) -> Any:
    import kubernetes.client.models as k8s_models

    kserve_models = import_kserve().models
    for module in (kserve_models, k8s_models):
        klass = getattr(module, name, None)
        if klass is not None:
            return klass
    raise LookupError(f"no model class {name}")


def problems(data: Any, type_name: str, path: str = "") -> list[str]:
    """Every field of ``data`` that ``type_name`` does not have, or that has the wrong type."""
    where = path or "(root)"
    if data is None:
        return []
    if match := _LIST.match(type_name):
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(data) for p in problems(item, match[1], f"{path}[{i}]")]
    if match := _DICT.match(type_name):
        if not isinstance(data, dict):
            return [f"{where}: expected a mapping"]
        value_type = match[1] or match[2]
        return [p for k, v in data.items() for p in problems(v, value_type, f"{path}.{k}")]
    if type_name in _PRIMITIVES:
        if type_name == "str" and isinstance(data, int | float) and not isinstance(data, bool):
            return [f"{where}: expected a string, got {data!r} (quote it)"]
        ok = isinstance(data, _PRIMITIVES[type_name])
        if type_name == "int" and isinstance(data, bool):
            ok = False
        return [] if ok else [f"{where}: expected {type_name}, got {type(data).__name__}"]
    klass = _model_class(type_name)
    if not isinstance(data, dict):
        return [f"{where}: expected a {type_name} mapping"]
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    found: list[str] = []
    for key, value in data.items():
        attr = by_json.get(key)
        if attr is None:
            found.append(f"{path + '.' if path else ''}{key}: not a field of {type_name}")
            continue
        found += problems(value, klass.openapi_types[attr], f"{path + '.' if path else ''}{key}")
    return found


def check(manifest: dict[str, Any], type_name: str) -> None:
    """Raise ValueError listing every problem of ``manifest`` as ``type_name``."""
    found = problems(manifest, type_name)
    if found:
        raise ValueError(f"invalid {type_name}: " + "; ".join(found))
