"""kopf handlers: ModelServe -> KServe InferenceService, status back to both records.

Handlers are registered on an explicit registry built from their dependencies
(no module-level globals), so tests and the CLI run the same operator with
their own settings.

An InferenceService's status is trusted only from the one the operator made: in
the ModelServe's namespace, named for its server, controlled (ownerReference uid)
by that ModelServe, in the namespace the server's record names. Labels alone are
anyone's to write.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import kopf
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.kserve.inference_service import ServerSpec, build_inference_service
from modelserve.operator.status import Observed, observe
from modelserve.shared import lifecycle, tracing
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.metrics import OperatorMetrics
from modelserve.shared.quantity import cpu_cores, memory_bytes

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
MANAGED_BY = "modelserve.dev/modelserve"
OWNERS_INDEX = "modelserves_by_server"
log = logging.getLogger(__name__)


@dataclass
class OperatorDeps:
    api: Any  # kubernetes.client.ApiClient
    sessions: async_sessionmaker[AsyncSession]
    public_base_url: str
    metrics_interval: float = 30.0
    deployment_mode: str = "Serverless"  # Settings.kserve_deployment_mode
    # What is scraped; a field (not made in __post_init__), so replace() keeps it.
    metrics: OperatorMetrics = field(default_factory=lambda: OperatorMetrics(CollectorRegistry()))


def server_spec(
    spec: ms.ModelServeSpec, name: str, namespace: str, deployment_mode: str = "Serverless"
) -> ServerSpec:
    return ServerSpec(
        server_uuid=spec.server_uuid,
        namespace=namespace,
        model_name=spec.model_name,
        storage_uri=spec.storage_uri,
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        gpus=spec.resources.gpus,
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        sha256=spec.sha256,
        runtime_args=spec.runtime.as_runtime_args(),
        labels={MANAGED_BY: name},
        deployment_mode=deployment_mode,
    )


async def _move(
    deps: OperatorDeps, server: uuid.UUID, status: ServerStatus, **fields: Any
) -> lifecycle.Moved | None:
    """Move the server record; None when there is none (a ModelServe made by hand)."""
    try:
        moved = await lifecycle.move(deps.sessions, server, status, **fields)
    except repo.NotFound:
        log.info("no server record for %s; status only on the resource", server)
        return None
    if not moved:
        log.info("server %s is %s; not moving it to %s", server, moved.status, status)
    elif status is ServerStatus.FAILED:
        deps.metrics.servers_failed.inc()
    return moved


async def _namespace_of(deps: OperatorDeps, server: uuid.UUID) -> str | None:
    """The namespace the server's record says it runs in (the apply step wrote it)."""
    async with deps.sessions() as session:
        try:
            return (await repo.get_server(session, server)).namespace
        except repo.NotFound:
            return None


async def _status_of(deps: OperatorDeps, server: uuid.UUID) -> ServerStatus | None:
    async with deps.sessions() as session:
        try:
            return ServerStatus((await repo.get_server(session, server)).status)
        except repo.NotFound:
            return None


def build_registry(deps: OperatorDeps) -> kopf.OperatorRegistry:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    registry = kopf.OperatorRegistry()
    objects = client.CustomObjectsApi(deps.api)

    def apply_isvc(isvc: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Create, or patch to the wanted spec: (created, the object as the API has it)."""
        namespace, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        try:
            made = objects.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], isvc)
            return True, dict(made)
        except ApiException as exc:
            if exc.status != 409:
                raise
        patched = objects.patch_namespaced_custom_object(
            *ISVC[:2],
            namespace,
            ISVC[2],
            name,
            {
                "metadata": {
                    "labels": isvc["metadata"]["labels"],
                    "ownerReferences": isvc["metadata"]["ownerReferences"],
                },
                "spec": isvc["spec"],
            },
        )
        return False, dict(patched)

    @kopf.on.resume(ms.GROUP, ms.VERSION, ms.PLURAL, registry=registry)
    @kopf.on.create(ms.GROUP, ms.VERSION, ms.PLURAL, registry=registry)
    @kopf.on.update(ms.GROUP, ms.VERSION, ms.PLURAL, field="spec", registry=registry)
    async def reconcile(
        *, body: kopf.Body, name: str, namespace: str | None, patch: kopf.Patch, **_: Any
    ) -> None:
        with (
            deps.metrics.track("reconcile", kopf.TemporaryError),
            tracing.continued(  # the serve's trace, from the apply step's annotation
                "operator reconcile", ms.traceparent_of(dict(body)), SpanKind.INTERNAL
            ),
        ):
            await _reconcile(body, name, namespace, patch)

    async def _reconcile(
        body: kopf.Body, name: str, namespace: str | None, patch: kopf.Patch
    ) -> None:
        assert namespace is not None  # ModelServe is namespaced
        spec = ms.spec_of(dict(body))
        if await _status_of(deps, spec.server_uuid) in lifecycle.GONE - {ServerStatus.FAILED}:
            log.info("%s/%s: server is being deleted; no InferenceService", namespace, name)
            return
        home = await _namespace_of(deps, spec.server_uuid)
        if home is not None and home != namespace:
            # Another namespace's ModelServe naming this server (the admission webhook
            # refuses it; this holds where the webhook is not installed): no
            # InferenceService, and the server's record is not touched.
            log.warning("%s/%s: server %s runs in %s", namespace, name, spec.server_uuid, home)
            patch.status["phase"] = "Failed"
            patch.status["message"] = f"server {spec.server_uuid} runs in namespace {home}"
            return
        isvc = build_inference_service(server_spec(spec, name, namespace, deps.deployment_mode))
        kopf.adopt(isvc, owner=body)
        try:
            created, current = await asyncio.to_thread(apply_isvc, isvc)
        except ApiException as exc:
            raise kopf.TemporaryError(
                f"InferenceService not applied: {exc.status} {exc.reason}", delay=10
            ) from None
        isvc_name = isvc["metadata"]["name"]
        # What the InferenceService says now, not "loading": after a restart (resume) a
        # ready one must read ready without waiting for it to change.
        seen = observe(dict(current.get("status") or {}))
        if seen.phase != "Ready":
            patch.status["phase"] = "Pending"
            patch.status["message"] = f"InferenceService {isvc_name} applied"
        patch.status["observedGeneration"] = body.metadata.get("generation")
        patch.status["gatewayUrl"] = ms.gateway_url(deps.public_base_url, spec.server_uuid)
        await _move(
            deps,
            spec.server_uuid,
            seen.server_status,
            namespace=namespace,
            inference_service=isvc_name,
            status_message=seen.message
            or f"InferenceService {isvc_name} {'created' if created else 'up to date'}",
            **({"internal_url": seen.internal_url} if seen.phase == "Ready" else {}),
        )
        log.info(
            "%s/%s: InferenceService %s %s",
            namespace,
            name,
            isvc_name,
            "created" if created else "up to date",
        )

    # An explicit id: kopf names a nested function's index by its qualified name, and
    # passes each index to the handlers as a kwarg of that name.
    @kopf.index(ms.GROUP, ms.VERSION, ms.PLURAL, id=OWNERS_INDEX, registry=registry)
    def modelserves_by_server(
        *, body: kopf.Body, name: str, namespace: str | None, uid: str, **_: Any
    ) -> dict[str, Owner]:
        """server UUID -> the ModelServes naming it, from the watch (kopf fills every
        index before any handler runs, so a restarted operator knows them all)."""
        try:
            server = uuid.UUID(str((body.get("spec") or {}).get("serverUuid")))
        except ValueError:
            return {}  # an empty dict: nothing indexed (None would be a value)
        if namespace is None:
            return {}
        return {str(server): Owner(namespace, name, uid)}

    @kopf.on.event(*ISVC, labels={MANAGED_BY: kopf.PRESENT}, registry=registry)
    async def inference_service_changed(
        *, type: str, body: kopf.Body, namespace: str | None, **kwargs: Any
    ) -> None:
        # kopf passes every index as a kwarg named after it (not in its WatchingFn protocol).
        owners: kopf.Index[str, Owner] = kwargs[OWNERS_INDEX]
        with deps.metrics.track("inference_service_changed", kopf.TemporaryError):
            await _inference_service_changed(type, body, namespace, owners)

    async def _inference_service_changed(
        type: str, body: kopf.Body, namespace: str | None, owners: kopf.Index[str, Owner]
    ) -> None:
        # type None is kopf's initial listing (after a restart): as good as a change.
        if type == "DELETED" or namespace is None:
            return
        owner = body.metadata.labels.get(MANAGED_BY)
        server = body.metadata.labels.get(ms.SERVER_LABEL)
        if not owner or not server:
            return
        why_not = await _not_ours(deps, body, namespace, owner, server, owners)
        if why_not is not None:
            # Labels are anyone's to write: trusting them let any namespace reroute a
            # server's traffic (its address into internal_url) or fail it for good.
            log.warning(
                "ignoring InferenceService %s/%s: %s", namespace, body.metadata.name, why_not
            )
            return
        seen = observe(dict(body.get("status") or {}))
        await asyncio.to_thread(_patch_owner_status, objects, namespace, owner, seen)
        await _move(
            deps,
            uuid.UUID(server),
            seen.server_status,
            status_message=seen.message,
            internal_url=seen.internal_url,
            service_name=seen.revision,
        )

    @kopf.on.delete(ms.GROUP, ms.VERSION, ms.PLURAL, registry=registry)
    async def deleted(*, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
        with deps.metrics.track("deleted", kopf.TemporaryError):
            await _deleted(body, name, namespace)

    async def _deleted(body: kopf.Body, name: str, namespace: str | None) -> None:
        assert namespace is not None
        spec = ms.spec_of(dict(body))
        isvc_name = ms.resource_name(spec.server_uuid)
        home = await _namespace_of(deps, spec.server_uuid)
        if home is not None and home != namespace:
            return  # another namespace's ModelServe for this server: it made nothing
        await _move(
            deps,
            spec.server_uuid,
            ServerStatus.DELETING,
            status_message="deleting the InferenceService",
        )
        try:
            group, version, plural = ISVC
            await asyncio.to_thread(
                objects.delete_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                isvc_name,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise kopf.TemporaryError(
                    f"InferenceService not deleted: {exc.status}", delay=5
                ) from None
        await _move(
            deps,
            spec.server_uuid,
            ServerStatus.DELETED,
            status_message=f"ModelServe {namespace}/{name} deleted",
            internal_url=None,
        )

    @kopf.timer(ms.GROUP, ms.VERSION, ms.PLURAL, interval=deps.metrics_interval, registry=registry)
    async def usage(*, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        """Memory and CPU from metrics.k8s.io when the cluster has it; unset otherwise."""
        with deps.metrics.track("usage", kopf.TemporaryError):
            await _usage(body, namespace)

    async def _usage(body: kopf.Body, namespace: str | None) -> None:
        if namespace is None:
            return
        spec = ms.spec_of(dict(body))
        if await _namespace_of(deps, spec.server_uuid) not in (None, namespace):
            return  # not this server's pods
        sample = await asyncio.to_thread(
            _pod_usage, deps.api, namespace, ms.resource_name(spec.server_uuid)
        )
        if sample is None:
            return
        cores, memory = sample
        async with deps.sessions() as session:
            try:
                record = await repo.get_server(session, spec.server_uuid)
            except repo.NotFound:
                return
        mb = memory / 2**20
        async with deps.sessions.begin() as session:
            await repo.update_server(
                session,
                spec.server_uuid,
                memory_current_mb=mb,
                memory_max_mb=max(mb, record.memory_max_mb or 0.0),
                cpu_usage_percent=cores * 100,
            )

    return registry


class Owner(NamedTuple):
    """A ModelServe as the index keeps it: where it is and which object it is."""

    namespace: str
    name: str
    uid: str


async def _not_ours(
    deps: OperatorDeps,
    body: kopf.Body,
    namespace: str,
    owner: str,
    server: str,
    owners: kopf.Index[str, Owner],
) -> str | None:
    """Why this InferenceService is not the one the operator made for ``server``, or None.

    Ours means: named for the server, in the namespace of a ModelServe that names the
    server and carries the ``owner`` label's name, with that ModelServe (by uid) as its
    controlling owner, and in the namespace the server's record says it runs in.
    """
    try:
        server_uuid = uuid.UUID(server)
    except ValueError:
        return f"its {ms.SERVER_LABEL} label is not a UUID"
    if body.metadata.name != ms.resource_name(server_uuid):
        return f"it is not named {ms.resource_name(server_uuid)}"
    claimed = [o for o in owners.get(str(server_uuid), []) if o.namespace == namespace]
    modelserve = next((o for o in claimed if o.name == owner), None)
    if modelserve is None:
        return f"no ModelServe {namespace}/{owner} serves {server_uuid}"
    controllers = [
        ref
        for ref in body.get("metadata", {}).get("ownerReferences") or []
        if ref.get("controller") and ref.get("kind") == ms.KIND
    ]
    if [ref.get("uid") for ref in controllers] != [modelserve.uid]:
        return f"it is not controlled by ModelServe {namespace}/{owner} ({modelserve.uid})"
    home = await _namespace_of(deps, server_uuid)  # None: no record, or not applied yet
    if home is not None and home != namespace:
        return f"server {server_uuid} runs in namespace {home}"
    return None


async def sweep_deletions(deps: OperatorDeps, every: float = 10.0) -> None:
    """Finish deletions nobody else will: a ModelServe removed before the operator
    ever saw it (so no finalizer, no delete handler) leaves its record ``deleting``."""
    from kubernetes import client

    objects = client.CustomObjectsApi(deps.api)
    while True:
        try:
            listed = await asyncio.to_thread(
                objects.list_cluster_custom_object, ms.GROUP, ms.VERSION, ms.PLURAL
            )
            present = {ms.spec_of(item).server_uuid for item in listed.get("items", [])}
            for server in await lifecycle.sweep_deletions(deps.sessions, present):
                log.info("server %s: nothing left in the cluster; deleted", server)
        except Exception as exc:  # the next round tries again
            log.warning("deletion sweep failed: %s", exc)
        await asyncio.sleep(every)


def _patch_owner_status(objects: Any, namespace: str, owner: str, seen: Observed) -> None:
    from kubernetes.client.rest import ApiException

    status: dict[str, Any] = {"phase": seen.phase, "conditions": seen.conditions}
    for key, value in (
        ("url", seen.url),
        ("message", seen.message),
        ("predictorRevision", seen.revision),
    ):
        if value:
            status[key] = value
    try:
        objects.patch_namespaced_custom_object_status(
            ms.GROUP, ms.VERSION, namespace, ms.PLURAL, owner, {"status": status}
        )
    except ApiException as exc:
        if exc.status != 404:  # the owner is being deleted
            raise


def _pod_usage(api: Any, namespace: str, isvc: str) -> tuple[float, int] | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        result = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "metrics.k8s.io",
            "v1beta1",
            namespace,
            "pods",
            label_selector=f"serving.kserve.io/inferenceservice={isvc}",
        )
    except ApiException as exc:
        if exc.status in (403, 404, 503):  # no metrics API in this cluster
            return None
        raise
    cores, memory = 0.0, 0
    for pod in result.get("items", []):
        for container in pod.get("containers", []):
            usage = container.get("usage", {})
            cores += cpu_cores(usage.get("cpu", "0"))
            memory += memory_bytes(usage.get("memory", "0"))
    return (cores, memory) if result.get("items") else None
