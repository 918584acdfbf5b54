"""Start the model server: KServe's ModelServer and REST server, our OpenAI routes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry.trace import SpanKind

from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.engine import LlamaEngine
from modelserve.runtime.internal_auth import InternalCredential
from modelserve.runtime.metrics import default_metrics
from modelserve.runtime.model import LlamaCppModel
from modelserve.runtime.openai_api import OpenAIRoutes
from modelserve.shared import tracing
from modelserve.shared.kserve_sdk import import_kserve

log = logging.getLogger(__name__)
GRACE_SECONDS = 10  # how long a stop waits for running requests
SHUTTING_DOWN = "the server is shutting down"


async def _stop_gracefully(server: Any, engine: LlamaEngine) -> None:
    """On SIGINT/SIGTERM: queued requests get a 503 at once (uvicorn would hold them and
    answer a bare 500 when its grace runs out); running streams get to finish, and
    those still going just before the grace ends get an error event saying why."""
    while not server.should_exit:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.1)
    log.info("stopping: refusing the queue, %d s for running requests", GRACE_SECONDS)
    engine.refuse_queued(SHUTTING_DOWN)
    await asyncio.sleep(GRACE_SECONDS - 1)
    engine.fail_running(SHUTTING_DOWN)


def serve(config: RuntimeConfig, traceparent: str | None = None) -> None:
    """Load the model (failing fast with a clear message), then serve until signalled.

    ``traceparent``: the span that started this process (the local backend's), so
    the load is part of the serve's trace."""
    import_kserve()
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    model = LlamaCppModel(config, default_metrics())
    with tracing.continued("load", traceparent, SpanKind.INTERNAL, model=config.model_name):
        model.load()
    assert model.engine is not None

    server = ModelServer(http_port=config.port, enable_grpc=False, workers=1)
    server.register_model(model)
    # Registered before KServe adds its own routes at start, so ours answer
    # /v1/models (OpenAI's shape, with KServe's fields alongside).
    app.include_router(OpenAIRoutes(model.engine, config.model_name).router())
    if config.internal_token is not None:  # every route but the probes: the gateway's only
        app.add_middleware(InternalCredential, token=config.internal_token)
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        config.port,
        grace_period=GRACE_SECONDS,
    )
    # KServe binds 0.0.0.0; locally a server must stay on the interface it was given.
    rest.config.host = config.host
    log.info("serving %s on http://%s:%d", config.model_name, config.host, config.port)
    engine = model.engine

    async def run() -> None:
        # KServe keeps its uvicorn server private; its should_exit flag is the signal.
        stopper = asyncio.create_task(_stop_gracefully(rest._server, engine))
        try:
            await rest.start()
        finally:
            stopper.cancel()

    try:
        asyncio.run(run())
    finally:
        model.stop()
