"""functions-framework entry points: one image, ``FUNCTION_TARGET`` picks the step.

    functions-framework --source functions/main.py --target availability

Each target takes the CloudEvent of an HTTP request (binary or structured mode)
and answers with the next event in binary mode, 202 when the chain ends here,
or an error status Knative Eventing understands (see steps/runner.py). A GET of
``/metrics`` on the same port answers with the steps' Prometheus metrics. The
``http`` signature is used because the ``cloud_event`` one discards the return
value, so it could not reply with an event.
"""

from __future__ import annotations

import flask
import functions_framework

from modelserve.functions import host


def _serve(step: str, request: flask.Request) -> flask.Response:
    if request.method == "GET" and request.path == "/metrics":  # Prometheus' scrape
        text, content_type = host.current().metrics()
        return flask.Response(text, status=200, content_type=content_type)
    status, headers, body = host.current().handle(step, dict(request.headers), request.get_data())
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
