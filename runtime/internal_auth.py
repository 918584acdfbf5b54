"""The runtime answers only its gateway: every request carries the internal credential.

The gateway sends ``Authorization: Bearer <internal token>`` on every request it
relays (the client's own Authorization never reaches a runtime). The runtime
refuses anything else with 401, so a runtime reached some other way (a
mis-applied NetworkPolicy, a Knative route published by mistake, another local
user on the machine) answers nothing, and the gateway's keys, revocation,
budgets and metering cannot be bypassed.

Exempt, for GET only: the kubelet's and Knative's probes (``/v2/health/live``,
``/v2/health/ready``), which cannot carry a secret, and Prometheus' scrape of
``/metrics``, which holds counts per model and no identity. They answer whether
the process is up, nothing about any request.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
REFUSAL = json.dumps(
    {
        "error": {
            "message": "this runtime answers only the modelserve gateway",
            "type": "invalid_request_error",
            "code": 401,
        }
    }
).encode()


class InternalCredential:
    """Pure ASGI middleware: a constant-time check of the bearer token on each request."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ValueError("an empty internal token would let anyone in")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    def _allowed(self, scope: dict[str, Any]) -> bool:
        if scope.get("method") in ("GET", "HEAD") and scope.get("path") in OPEN_PATHS:
            return True
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a websocket: the runtime serves none to strangers
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(REFUSAL)).encode()),
                    (b"www-authenticate", b'Bearer realm="modelserve-runtime"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": REFUSAL})
