"""Route a Service in the test cluster to a process on this host.

The API server calls admission webhooks through their Service. With
``--enable-aggregator-routing`` it dials the Service's endpoint directly, so a
selectorless Service plus an EndpointSlice naming this host makes a webhook
server started by the test reachable. EndpointSlices refuse loopback addresses,
so the webhook listens on the host's own non-loopback address (not on 127.0.0.1
like every other test server); it is the one exception.
"""

from __future__ import annotations

import socket
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


def host_address() -> str:
    """This host's non-loopback IPv4 address (the source address of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        raise RuntimeError("this host has no non-loopback IPv4 address for webhooks")
    return address


def _create_or_patch(create: Any, patch: Any, name: str, namespace: str, body: Any) -> None:
    try:
        create(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        patch(name, namespace, body)


def route_service_to_host(
    api: client.ApiClient, namespace: str, name: str, port: int, address: str
) -> None:
    """Service ``namespace/name`` port 443 -> ``address:port`` (selectorless + EndpointSlice)."""
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
    }
    _create_or_patch(
        core.create_namespaced_service, core.patch_namespaced_service, name, namespace, service
    )
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-host",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    _create_or_patch(
        discovery.create_namespaced_endpoint_slice,
        discovery.patch_namespaced_endpoint_slice,
        f"{name}-host",
        namespace,
        endpoints,
    )
