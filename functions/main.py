"""functions-framework entry points: one image, ``FUNCTION_TARGET`` picks the step.

    functions-framework --source functions/main.py --target availability

Each target takes the CloudEvent of an HTTP request (binary or structured mode)
and answers with the next event in binary mode, 202 when the chain ends here,
or an error status Knative Eventing understands (see steps/runner.py). A GET of
``/metrics`` on the same port answers with the steps' Prometheus metrics. The
``http`` signature is used because the ``cloud_event`` one discards the return
value, so it could not reply with an event.

A request body over ``MAX_EVENT_BYTES`` is 413 (not retried past Knative's
policy), refused by its Content-Length or cut off after that many bytes: the
pipeline's events are a few kB, and nothing bigger is buffered.
"""

from __future__ import annotations

import flask
import functions_framework

from modelserve.functions import host

MAX_EVENT_BYTES = 256 * 1024


def _too_large() -> flask.Response:
    """413 without reading the rest: functions-framework drains a request before a plain
    response goes out (a 1 GB body would be read); a streamed one it leaves alone."""
    message = f"a CloudEvent here is at most {MAX_EVENT_BYTES} bytes"
    return flask.Response(
        iter([message.encode()]),
        status=413,
        headers={"content-type": "text/plain", "connection": "close"},
    )


def _serve(step: str, request: flask.Request) -> flask.Response:
    if request.method == "GET" and request.path == "/metrics":  # Prometheus' scrape
        text, content_type = host.current().metrics()
        return flask.Response(text, status=200, content_type=content_type)
    length = request.content_length
    if length is not None and length > MAX_EVENT_BYTES:
        return _too_large()
    data = request.stream.read(MAX_EVENT_BYTES + 1)
    if len(data) > MAX_EVENT_BYTES:
        return _too_large()
    status, headers, body = host.current().handle(step, dict(request.headers), data)
    return flask.Response(body, status=status, headers=headers)


@functions_framework.http
def availability(request: flask.Request) -> flask.Response:
    return _serve("availability", request)


@functions_framework.http
def signed_url(request: flask.Request) -> flask.Response:
    return _serve("signed-url", request)


@functions_framework.http
def mirror(request: flask.Request) -> flask.Response:
    return _serve("mirror", request)


@functions_framework.http
def contract(request: flask.Request) -> flask.Response:
    return _serve("contract", request)


@functions_framework.http
def apply(request: flask.Request) -> flask.Response:
    return _serve("apply", request)


@functions_framework.http
def dead_letter(request: flask.Request) -> flask.Response:
    return _serve("dead-letter", request)
