"""Test infrastructure standing in for cluster DNS, kube-proxy and a Knative networking layer.

In a cluster the gateway dials ``http://<service>.<namespace>.svc.cluster.local``
and cluster DNS plus kube-proxy (or a service mesh) carry it to a ready Pod of
that Service. This host has neither, so this httpx transport does their part:
it reads the Service and its EndpointSlices from the real API server (made by
the real endpoint-slice controllers from the Pods' reported status, or mirrored
from the Endpoints Knative writes), picks a ready endpoint for the Service port
asked for, and dials that address and port: executed Pods have routable
addresses of their own (support/pod_executor.py's :class:`PodNetwork`).

A Knative Route's cluster-local Service is an ExternalName naming the address
its KIngress's status gives (support/knative_serving.py's stand-in puts
:data:`INGRESS_HOST` there). What reaches that address is routed as a
networking layer would route it: by the KIngress rule whose hosts hold the
request's Host, to the split's Service and port (percent-weighted), with the
headers the rule appends (``Knative-Serving-Revision``, ...); Knative's
activator or the revision's Pods are behind that Service, as the
ServerlessService controller made them. Any other host is dialled as it is.

:class:`ClusterProxy` offers the same to host processes that speak HTTP to
Services by name (Knative's autoscaler probes the activator through a
revision's Service): an HTTP proxy they are given as ``HTTP_PROXY``.

Nothing here decides where a request goes: a wrong Service port, target port, a
KIngress rule without the host, or a Pod that is not Ready gives a connection
error, as it would in a cluster.
"""

from __future__ import annotations

import asyncio
import http.server
import itertools
import random
import threading
import urllib.parse
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.rest import ApiException

CLUSTER_DOMAIN = "svc.cluster.local"
# Where the stand-in for a networking layer (support/knative_serving.py) says each
# KIngress is served: the route controller points Routes' cluster-local Services here.
INGRESS_HOST = f"knative-local-gateway.knative-serving.{CLUSTER_DOMAIN}"
KINGRESS = ("networking.internal.knative.dev", "v1alpha1", "ingresses")


class ClusterNetwork(httpx.AsyncBaseTransport):
    """An httpx transport that resolves ``*.svc.cluster.local`` through the cluster's objects."""

    def __init__(
        self, api: client.ApiClient, inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.api = api
        self.inner = inner or httpx.AsyncHTTPTransport()
        self._turn = itertools.count()

    def endpoint(self, service: str, namespace: str, port: int) -> tuple[str, int]:
        """``(pod address, target port)`` of a ready endpoint behind ``service:port``."""
        found = self._service(service, namespace)
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

    def _service(self, service: str, namespace: str) -> Any:
        try:
            return client.CoreV1Api(self.api).read_namespaced_service(service, namespace)
        except ApiException as exc:
            raise httpx.ConnectError(f"no Service {namespace}/{service}: {exc.status}") from None

    def ingress_route(self, host: str, path: str) -> tuple[str, str, int, dict[str, str]]:
        """``(service, namespace, port, headers)`` the KIngress rule for ``host`` sends to."""
        listed = client.CustomObjectsApi(self.api).list_cluster_custom_object(*KINGRESS)
        for ingress in listed["items"]:
            for rule in ingress["spec"].get("rules") or []:
                if host not in rule.get("hosts") or []:
                    continue
                for route in (rule.get("http") or {}).get("paths") or []:
                    if not path.startswith(route.get("path") or "/"):
                        continue
                    splits = route["splits"]
                    (split,) = random.choices(splits, [s.get("percent", 100) for s in splits])
                    headers = dict(route.get("appendHeaders") or {})
                    headers |= split.get("appendHeaders") or {}
                    return (
                        split["serviceName"],
                        split["serviceNamespace"],
                        int(split["servicePort"]),
                        headers,
                    )
        raise httpx.ConnectError(f"no KIngress rule routes {host}{path}")

    def resolve(self, host: str, port: int, path: str) -> tuple[str, int, dict[str, str]]:
        """``(address, port, headers to add)`` a request to ``host:port`` goes to."""
        headers: dict[str, str] = {}
        for _ in range(4):  # an ExternalName names at most the ingress, then a Service
            service, namespace = host.split(".")[:2]
            found = self._service(service, namespace)
            if found.spec.type != "ExternalName":
                address, target = self.endpoint(service, namespace, port)
                return address, target, headers
            target_host = found.spec.external_name
            if target_host == INGRESS_HOST:
                service, namespace, port, headers = self.ingress_route(host, path)
                host = f"{service}.{namespace}.{CLUSTER_DOMAIN}"
            elif target_host.endswith(f".{CLUSTER_DOMAIN}"):
                host = target_host
            else:
                return target_host, port, headers
        raise httpx.ConnectError(f"{host}: too many ExternalName hops")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host.endswith(f".{CLUSTER_DOMAIN}"):
            default = 443 if request.url.scheme == "https" else 80
            address, port, headers = await asyncio.to_thread(
                self.resolve, host, request.url.port or default, request.url.path
            )
            # The Host header stays the Service's name, as it would on the wire.
            request.url = request.url.copy_with(host=address, port=port)
            for name, value in headers.items():
                request.headers[name] = value
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class ClusterProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 resolving cluster names as :class:`ClusterNetwork`.

    For short requests (probes): each is answered once its whole response is read.
    """

    def __init__(self, api: client.ApiClient) -> None:
        network = ClusterNetwork(api)
        upstream = httpx.Client(timeout=10)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                host = url.hostname or ""
                port = url.port or 80
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                try:
                    if host.endswith(f".{CLUSTER_DOMAIN}"):
                        address, port, extra = network.resolve(host, port, url.path or "/")
                        headers |= extra
                    else:
                        address = host
                    target = urllib.parse.urlunsplit(
                        ("http", f"{address}:{port}", url.path or "/", url.query, "")
                    )
                    answer = upstream.request(self.command, target, headers=headers, content=body)
                except httpx.HTTPError as exc:
                    self.send_error(502, str(exc)[:200])
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *_: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._upstream = upstream
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._upstream.close()
