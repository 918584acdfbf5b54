"""Start the model server: KServe's ModelServer and REST server, our OpenAI routes."""

from __future__ import annotations

import asyncio
import logging

from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.metrics import default_metrics
from modelserve.runtime.model import LlamaCppModel
from modelserve.runtime.openai_api import OpenAIRoutes
from modelserve.shared.kserve_sdk import import_kserve

log = logging.getLogger(__name__)


def serve(config: RuntimeConfig) -> None:
    """Load the model (failing fast with a clear message), then serve until signalled."""
    import_kserve()
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    model = LlamaCppModel(config, default_metrics())
    model.load()
    assert model.engine is not None

    server = ModelServer(http_port=config.port, enable_grpc=False, workers=1)
    server.register_model(model)
    # Registered before KServe adds its own routes at start, so ours answer
    # /v1/models (OpenAI's shape, with KServe's fields alongside).
    app.include_router(OpenAIRoutes(model.engine, config.model_name).router())
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        config.port,
        grace_period=10,
    )
    # KServe binds 0.0.0.0; locally a server must stay on the interface it was given.
    rest.config.host = config.host
    log.info("serving %s on http://%s:%d", config.model_name, config.host, config.port)
    try:
        asyncio.run(rest.start())
    finally:
        model.stop()
