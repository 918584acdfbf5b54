"""Process logging: human-readable by default, one JSON object per line on request.

Each entry point (the CLI commands, the functions' host) calls ``configure`` once
with ``LogSettings`` read at that edge. Code that works for one server or one event
wraps that work in ``bound(...)``; every line logged inside carries those fields
(``server_uuid``, ``event_id``, ``trace_id``), so a log search for a server finds
the API's, the steps' and the operator's lines alike. Fields live in a context
variable, so concurrent requests on one event loop never see each other's.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Receive, Scope, Send

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONTEXT_FIELDS = ("server_uuid", "event_id", "trace_id")

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "modelserve_log_context", default=MappingProxyType({})
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class LogSettings(BaseSettings):
    """``MODELSERVE_LOG_FORMAT`` and ``MODELSERVE_LOG_LEVEL``."""

    model_config = SettingsConfigDict(env_prefix="MODELSERVE_LOG_", extra="ignore")

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


_plain_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Records are made in the context of the logging call, so the bound fields are
    read there, and every handler (a test's capture included) sees them."""
    record = _plain_factory(*args, **kwargs)
    for key, value in _context.get().items():
        setattr(record, key, value)
    return record


def install_context() -> None:
    """Make every record carry the bound fields (``configure`` does this; idempotent)."""
    if logging.getLogRecordFactory() is not _record_with_context:
        logging.setLogRecordFactory(_record_with_context)


def configure(settings: LogSettings | None = None) -> None:
    """Replace the root logger's handlers with one on stderr in the chosen format."""
    settings = settings or LogSettings()
    handler = logging.StreamHandler()
    install_context()
    if settings.format == "json":
        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when it is malformed."""
    match = _TRACE_ID.match(traceparent or "")
    return match.group(1) if match else None


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Lines logged inside carry ``fields`` (None values are left out)."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ServerContext:
    """ASGI middleware for ``/<server-uuid>/...`` routes (the gateway): binds the
    server and the request's trace for everything logged while it is answered,
    its streamed body included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        first = scope.get("path", "/").lstrip("/").split("/", 1)[0]
        headers = dict(scope.get("headers") or [])
        parent = headers.get(b"traceparent", b"").decode("latin-1")
        with bound(server_uuid=first if _UUID.match(first) else None, trace_id=trace_id(parent)):
            await self.app(scope, receive, send)
