"""The serve pipeline as it runs on one machine: functions over HTTP, the embedded broker.

Each step is the real functions-framework app for its target, served by a
werkzeug server on a loopback port; the broker reads config/pipeline/'s real
Trigger manifests and delivers to them over HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import functions_framework
import httpx
from werkzeug.serving import BaseWSGIServer, make_server

from modelserve.functions import host
from modelserve.functions.broker import triggers
from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.context_factory import build_context
from modelserve.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "modelserve-availability": "availability",
    "modelserve-signed-url": "signed_url",
    "modelserve-mirror": "mirror",
    "modelserve-contract": "contract",
    "modelserve-apply": "apply",
    "modelserve-dead-letter": "dead_letter",
}


@dataclass
class Functions:
    urls: dict[str, str]
    servers: list[BaseWSGIServer]


@contextmanager
def running_functions(settings: Settings) -> Iterator[Functions]:
    """Every pipeline function, served on its own loopback port for this settings."""
    host.start(lambda: build_context(settings))
    servers, urls = [], {}
    try:
        for service, target in TARGETS.items():
            app = functions_framework.create_app(  # type: ignore[no-untyped-call]
                target=target, source=str(ROOT / "functions" / "main.py"), signature_type="http"
            )
            server = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            urls[service] = f"http://127.0.0.1:{server.server_port}/"
        yield Functions(urls, servers)
    finally:
        for server in servers:
            server.shutdown()
        host.stop()


def make_broker(functions: Functions, http: httpx.AsyncClient, **options: object) -> EmbeddedBroker:
    rules = triggers.load(
        [
            ROOT / "config" / "pipeline" / "broker.yaml",
            ROOT / "config" / "pipeline" / "triggers.yaml",
        ],
        "modelserve",
    )
    return EmbeddedBroker(rules, lambda name: functions.urls[name], http, **options)  # type: ignore[arg-type]
