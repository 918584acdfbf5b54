"""Run steps from synchronous HTTP servers (functions-framework is Flask).

The steps are async (SQLAlchemy async, the object store); one event loop per
process runs on a background thread and every request's step is submitted to
it, so engines, pools and clients are created once and reused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.serving import BaseWSGIServer, make_server

from modelserve.functions.steps.context import StepContext
from modelserve.functions.steps.registry import DEAD_LETTER, STEPS, lookup
from modelserve.functions.steps.runner import Outcome, run_step
from modelserve.shared import events as ev


class StepHost:
    """A background event loop and the StepContext that lives on it."""

    def __init__(self, build: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="modelserve-steps"
        )
        self._thread.start()
        self.context: StepContext = self._call(self._build(build))

    @staticmethod
    async def _build(build: Any) -> StepContext:
        context: StepContext = build()
        await context.store.ensure_ready()
        return context

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def handle(
        self, step: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request in, one HTTP answer out (status, headers, body)."""
        try:
            event = ev.decode(headers, body)
        except ev.EventError as exc:
            return 400, {"content-type": "text/plain"}, str(exc).encode()
        spec = lookup(step)
        if spec.handles is not None and event["type"] != spec.handles:
            message = f"{step} handles {spec.handles}, not {event['type']}"
            return 400, {"content-type": "text/plain"}, message.encode()
        outcome: Outcome = self._call(run_step(step, spec.handler, event, self.context))
        if outcome.reply is None:
            text = outcome.message.encode()
            return outcome.status, {"content-type": "text/plain"}, text
        reply_headers, reply_body = ev.encode_binary(outcome.reply)
        return outcome.status, reply_headers, reply_body

    def metrics(self) -> tuple[bytes, str]:
        """The steps' metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.context.metrics.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        async def shutdown() -> None:
            await self.context.http.aclose()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


_host: StepHost | None = None
_lock = threading.Lock()


def start(build: Any) -> StepHost:
    """Create the process's host (the Knative func ``start(cfg)`` hook)."""
    global _host
    with _lock:
        if _host is None:
            _host = StepHost(build)
        return _host


def stop() -> None:
    global _host
    with _lock:
        if _host is not None:
            _host.close()
            _host = None


MAIN = Path(__file__).with_name("main.py")


def targets() -> dict[str, str]:
    """Knative Service name -> functions-framework target in main.py, for every step."""
    return {s.service: s.name.replace("-", "_") for s in (*STEPS.values(), DEAD_LETTER)}


def serve_functions() -> tuple[dict[str, str], list[BaseWSGIServer]]:
    """Serve every target (the real functions-framework apps) on its own loopback port.

    The process's host must be started first; returns service -> URL and the servers.
    """
    import functions_framework

    from modelserve.shared.net import free_port

    urls, servers = {}, []
    for service, target in targets().items():
        app = functions_framework.create_app(  # type: ignore[no-untyped-call]
            target=target, source=str(MAIN), signature_type="http"
        )
        server = make_server("127.0.0.1", free_port(), app, threaded=True)
        threading.Thread(
            target=server.serve_forever, daemon=True, name=f"function-{target}"
        ).start()
        servers.append(server)
        urls[service] = f"http://127.0.0.1:{server.server_port}/"
    return urls, servers


def current() -> StepHost:
    """The host, created from the environment's settings on first use."""
    if _host is not None:
        return _host
    from modelserve.functions.context_factory import build_context
    from modelserve.shared import logs, tracing
    from modelserve.shared.settings import load_settings

    logs.configure()
    tracing.configure()  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    return start(lambda: build_context(load_settings()))
