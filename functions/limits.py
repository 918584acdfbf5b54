"""A request-body limit for the ASGI apps (API, gateway), enforced before the app reads.

A body announced bigger than the limit is answered 413 at once, from its
Content-Length, without reading a byte of it; a streamed (chunked) one is cut
off with 413 as soon as it passes the limit. Either way nothing past the limit
is buffered, so a 1 GB body costs the server nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from starlette.responses import JSONResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


class BodyLimit:
    """Refuse bodies over ``limit`` bytes on every request ``exempt`` does not pass."""

    def __init__(self, app: App, limit: int, exempt: Callable[[Scope], bool] | None = None):
        self.app, self.limit = app, limit
        self.exempt = exempt or (lambda scope: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                answer = JSONResponse({"detail": too_large(self.limit)}, status_code=413)
                await answer(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, too_large(self.limit))
            return message

        await self.app(scope, limited, send)
