"""Test infrastructure standing in for cluster networking: Service DNS names to Pods.

In a cluster the gateway dials ``http://<service>.<namespace>.svc.cluster.local``
and cluster DNS plus kube-proxy (or a service mesh) carry it to a ready Pod of
that Service. This host has neither, so this httpx transport does their part:
it reads the Service and its EndpointSlices from the real API server (made by
the real endpoint-slice controller from the Pods' reported status), picks a
ready endpoint for the Service port asked for, and dials the host port the pod
executor's :class:`~support.pod_executor.PodNetwork` maps that pod address and
port to. Any other host is dialled as it is.

Nothing here decides where a request goes: a wrong Service port, target port or
a Pod that is not Ready gives a connection error, as it would in a cluster.
"""

from __future__ import annotations

import asyncio
import itertools

import httpx
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.pod_executor import PodNetwork

CLUSTER_DOMAIN = "svc.cluster.local"


class ClusterNetwork(httpx.AsyncBaseTransport):
    """An httpx transport that resolves ``*.svc.cluster.local`` through EndpointSlices."""

    def __init__(
        self,
        api: client.ApiClient,
        pods: PodNetwork,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api, self.pods = api, pods
        self.inner = inner or httpx.AsyncHTTPTransport()
        self._turn = itertools.count()

    def endpoint(self, service: str, namespace: str, port: int) -> tuple[str, int]:
        """``(pod address, target port)`` of a ready endpoint behind ``service:port``."""
        try:
            found = client.CoreV1Api(self.api).read_namespaced_service(service, namespace)
        except ApiException as exc:
            raise httpx.ConnectError(f"no Service {namespace}/{service}: {exc.status}") from None
        names = [p.name for p in found.spec.ports or [] if p.port == port]
        if not names:
            raise httpx.ConnectError(f"Service {namespace}/{service} has no port {port}")
        slices = client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        ready: list[tuple[str, int]] = []
        for piece in slices.items:
            ports = [p.port for p in piece.ports or [] if p.name == names[0]]
            for endpoint in piece.endpoints or []:
                if endpoint.conditions is not None and endpoint.conditions.ready:
                    ready += [(address, p) for address in endpoint.addresses for p in ports]
        if not ready:
            raise httpx.ConnectError(f"Service {namespace}/{service}:{port} has no ready endpoint")
        return ready[next(self._turn) % len(ready)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host.endswith(f".{CLUSTER_DOMAIN}"):
            service, namespace = host.split(".")[:2]
            default = 443 if request.url.scheme == "https" else 80
            address, port = await asyncio.to_thread(
                self.endpoint, service, namespace, request.url.port or default
            )
            host_port = self.pods.host_port(address, port)
            if host_port is None:
                raise httpx.ConnectError(f"nothing listens at pod address {address}:{port}")
            # The Host header stays the Service's name, as it would on the wire.
            request.url = request.url.copy_with(host="127.0.0.1", port=host_port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
