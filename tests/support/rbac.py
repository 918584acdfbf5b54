"""What a ServiceAccount may do (``kubectl auth can-i --list``) and what it did (audit log).

Both are reduced to ``(resource, verb)`` pairs, the resource written as
``kubectl auth can-i --list`` writes it (``plural[/subresource][.group]``), so a
test can ask that the granted set is exactly the used set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support.kubectl import kubectl

Permission = tuple[str, str]
_ROW = re.compile(
    r"^(?P<resource>\S+)?\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$"
)


def granted(kubeconfig: Path, namespace: str) -> set[Permission]:
    """Resource permissions of the kubeconfig's user in ``namespace`` (cluster-wide ones too)."""
    listing = kubectl(kubeconfig, "auth", "can-i", "--list", f"--namespace={namespace}").stdout
    found: set[Permission] = set()
    for line in listing.splitlines()[1:]:
        row = _ROW.match(line)
        if row is None:
            raise AssertionError(f"unexpected `kubectl auth can-i --list` row: {line!r}")
        if row["resource"] and not row["names"]:
            found.update((row["resource"], verb) for verb in row["verbs"].split())
    return found


def resource_of(ref: dict[str, Any]) -> str:
    """An audit event's objectRef, written the way ``kubectl auth can-i --list`` does."""
    name = ref.get("resource", "")
    if ref.get("apiGroup"):
        name = f"{name}.{ref['apiGroup']}"
    if ref.get("subresource"):
        name = f"{name}/{ref['subresource']}"
    return str(name)


def used(events: Iterable[dict[str, Any]]) -> set[Permission]:
    """The resource permissions the audited requests were authorized with."""
    return {
        (resource_of(e["objectRef"]), e["verb"])
        for e in events
        if "objectRef" in e
        and e.get("annotations", {}).get("authorization.k8s.io/decision") == "allow"
    }


def forbidden(events: Iterable[dict[str, Any]]) -> list[str]:
    """Requests refused with 403 (by RBAC or by an admission plugin), one line each."""
    return [
        f"{e['verb']} {e.get('requestURI')}: {e.get('responseStatus', {}).get('message', '')}"
        for e in events
        if e.get("responseStatus", {}).get("code") == 403
    ]
