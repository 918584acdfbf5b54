"""Let kopf discover resources on the CRD-only API server.

kopf lists ``/api`` and ``/apis`` at start-up. The standalone apiextensions-apiserver
serves neither (root discovery normally comes from kube-aggregator; there is no
core API), only each group's own discovery. This reads those instead; watching,
patching, finalizers and status updates all still go to the real server.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from kopf._cogs.clients import api, errors, scanning
from kopf._cogs.structs import references


async def _scan_groups(
    *, settings: Any, logger: Any, groups: Collection[str] | None = None
) -> Collection[references.Resource]:
    resources: set[references.Resource] = set()
    if groups is None:  # "everything": every group the server has, i.e. CRDs' groups
        crds = await api.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            settings=settings,
            logger=logger,
        )
        groups = {"apiextensions.k8s.io", *(c["spec"]["group"] for c in crds["items"])}
    if "" in groups:
        # kopf waits for the core "namespaces" resource to be discovered even when it
        # runs cluster-wide (and then never lists namespaces); this server has no core
        # API, so it is only named here.
        resources.add(
            references.Resource(
                group="",
                version="v1",
                plural="namespaces",
                kind="Namespace",
                singular="namespace",
                namespaced=False,
                preferred=True,
                verbs=frozenset({"get", "list", "watch"}),
            )
        )
    for group in sorted(g for g in groups if g):
        try:
            document = await api.get(f"/apis/{group}", settings=settings, logger=logger)
        except errors.APINotFoundError:
            continue  # e.g. kopf's own peering group, not installed here
        preferred = document["preferredVersion"]["version"]
        for version in document["versions"]:
            resources.update(
                await scanning._read_version(
                    url=f"/apis/{group}/{version['version']}",
                    group=group,
                    version=version["version"],
                    preferred=version["version"] == preferred,
                    settings=settings,
                    logger=logger,
                )
            )
    return resources


@contextmanager
def group_discovery() -> Iterator[None]:
    original = scanning.scan_resources
    scanning.scan_resources = _scan_groups
    try:
        yield
    finally:
        scanning.scan_resources = original
