"""The built dashboard at ``/``: static files with a strict Content-Security-Policy.

The dashboard is bundled by Vite into ``dashboard/dist``; nothing it needs comes
from elsewhere, so the policy allows only this origin. When the build is
missing, ``/`` says how to build it instead of answering a bare 404.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MISSING = """<!doctype html><meta charset="utf-8"><title>modelserve</title>
<h1>modelserve</h1><p>The dashboard is not built. Run <code>make install</code>
(or just the dashboard: <code>make dashboard</code>).
The API is here: <a href="docs">/docs</a>.</p>"""


class DashboardFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        if str(full_path).endswith(".html"):  # assets are content-hashed, the page is not
            response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI, directory: Path | None) -> None:
    """Serve the dashboard after every API route (routes match first)."""
    if directory is not None and (directory / "index.html").is_file():
        app.mount("/", DashboardFiles(directory=directory, html=True), name="dashboard")
        return

    @app.get("/", include_in_schema=False)
    async def not_built() -> Any:
        return HTMLResponse(MISSING, status_code=503, headers=HEADERS)
