"""The broker's HTTP ingress: POST a CloudEvent (binary or structured mode), get 202.

In local mode this is what ``K_SINK`` / ``MODELSERVE_BROKER_URL`` point at, so
functions publish events outside their replies (mirror progress) the same way
they would to a Knative Broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cloudevents.http import CloudEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from modelserve.shared import events as ev


def make_ingress(publish: Callable[[CloudEvent], Awaitable[None]]) -> Starlette:
    async def receive(request: Request) -> Response:
        try:
            event = ev.decode(dict(request.headers), await request.body())
        except ev.EventError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        await publish(event)
        return Response(status_code=202)

    return Starlette(routes=[Route("/", receive, methods=["POST"])])
