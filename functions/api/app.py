"""The public API: one FastAPI app put together from a router per resource.

Roles: a viewer reads; an operator serves and deletes its own servers; an admin
does everything. The routers live in ``routes/`` (auth, servers, models,
events, keys, users, usage); the database queries they make are in ``shared/db/repo.py`` and every
status change in ``shared/lifecycle.py``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from modelserve.functions.api.dashboard import mount_dashboard
from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.routes import auth, events, keys, models, servers, usage, users
from modelserve.functions.limits import BodyLimit, Scope
from modelserve.shared.metrics import ApiInstrumentation
from modelserve.shared.metrics_access import exposition, sees_identities

__all__ = ["ApiDeps", "create_app"]


def _is_upload(scope: Scope) -> bool:
    """``PUT /models/{name}`` streams a GGUF to disk under its own limits (upload.py)."""
    return bool(scope["method"] == "PUT" and scope["path"].startswith("/models/"))


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(
        title="modelserve",
        version="0.1.0",
        description="Serverless serving of GGUF models: serve one by name, get an "
        "OpenAI-compatible endpoint with its own UUID.",
    )

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["meta"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus' scrape: the API's requests (and, embedded, every other part's);
        identities only for the scrape token or an admin (shared/metrics_access.py)."""
        token = deps.settings.metrics_token
        full = await sees_identities(
            request.headers.get("authorization"),
            token.get_secret_value() if token else None,
            deps.guard,
        )
        return Response(
            exposition(deps.metrics_registry, identities=full), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/status", tags=["meta"], include_in_schema=False)
    async def status_alias() -> dict[str, str]:  # the old deployment's health path
        return await healthz()

    app.add_middleware(BodyLimit, limit=deps.settings.max_body_bytes, exempt=_is_upload)
    # /auth notes keys' last use in memory: the last batch is written on the way out.
    app.router.on_shutdown.append(deps.guard.flush)
    for router in (auth, servers, models, keys, users, usage):
        app.include_router(router.router(deps))
    app.state.server_feed = events.Feed(deps.sessions)  # one poll for all /events streams
    app.include_router(events.router(deps, app.state.server_feed))
    mount_dashboard(app, deps.dashboard_dir)  # last: API routes match first
    app.add_middleware(ApiInstrumentation, metrics=deps.metrics)
    return app
