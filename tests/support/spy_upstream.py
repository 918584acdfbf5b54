"""A stand-in runtime that only counts what reaches it: any request there is business code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from support.asgi import serving


@asynccontextmanager
async def spy_upstream(
    headers: list[dict[str, str]] | None = None,
) -> AsyncIterator[tuple[str, list[str]]]:
    """(its URL, the requests it saw as ``METHOD /path``), served on loopback; each
    request's headers go to ``headers`` when given."""
    hits: list[str] = []
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request) -> dict[str, Any]:
        hits.append(f"{request.method} /{path}")
        if headers is not None:
            headers.append(dict(request.headers))
        await request.body()
        return {"object": "list", "data": [{"id": "demo", "object": "model"}]}

    async with serving(app) as url:
        yield url, hits
