"""The serve pipeline as it runs on one machine: functions over HTTP, the embedded broker.

Each step is the real functions-framework app for its target, served by a
werkzeug server on a loopback port; the broker reads config/pipeline/'s real
Trigger manifests and delivers to them over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from werkzeug.serving import BaseWSGIServer

from modelserve.functions import host
from modelserve.functions.broker import triggers
from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.context_factory import build_context
from modelserve.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Functions:
    urls: dict[str, str]
    servers: list[BaseWSGIServer]


@contextmanager
def running_functions(settings: Settings) -> Iterator[Functions]:
    """Every pipeline function, served on its own loopback port for this settings."""
    host.start(lambda: build_context(settings))
    servers: list[BaseWSGIServer] = []
    try:
        urls, servers = host.serve_functions()
        yield Functions(urls, servers)
    finally:
        for server in servers:
            server.shutdown()
        host.stop()


def make_broker(functions: Functions, http: httpx.AsyncClient, **options: object) -> EmbeddedBroker:
    rules = triggers.pipeline_rules(ROOT / "config")
    return EmbeddedBroker(rules, lambda name: functions.urls[name], http, **options)  # type: ignore[arg-type]
