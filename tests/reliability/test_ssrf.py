"""SSRF: a catalog answer pointing anywhere but the configured upstream is never fetched.

A stand-in catalog (the old quantisation service's API) answers each model with
a hostile URL: another loopback port, a redirect to it, ``file://``, link-local
metadata, IPv6 loopback, numeric spellings of loopback, a userinfo trick. The
real signed-url and mirror steps run behind functions-framework on the HTTP
catalog; a trap server counts every request it gets (must stay 0), and after
each serve the step has answered serve.failed with the reason, and neither the
store nor the scratch space holds anything.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from modelserve.functions.steps import registry
from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.db.models import Role
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.settings import load_settings
from modelserve.shared.store.factory import make_store
from support.asgi import serving
from support.pipeline import running_functions
from support.records import new_server
from support.reliability import Recorder
from support.spy_upstream import spy_upstream

pytestmark = pytest.mark.reliability("ssrf")


def hostile_urls(catalog: str, trap: str) -> dict[str, str]:
    trap_port = httpx.URL(trap).port
    catalog_host = httpx.URL(catalog).host
    return {
        "another loopback port": f"{trap}/models/x.gguf",
        "redirect to another host": f"{catalog}/redirect",
        "file:// on the step's disk": "file:///etc/passwd",
        "link-local metadata": "http://169.254.169.254/latest/meta-data/",
        "IPv6 loopback": f"http://[::1]:{trap_port}/x.gguf",
        "loopback as localhost": f"http://localhost:{trap_port}/x.gguf",
        "loopback in hex": f"http://0x7f000001:{trap_port}/x.gguf",
        "loopback as 127.1": f"http://127.1:{trap_port}/x.gguf",
        "userinfo trick": f"http://{catalog_host}@127.0.0.1:{trap_port}/x.gguf",
        "gopher scheme": f"gopher://127.0.0.1:{trap_port}/x",
        "port out of range": f"http://{catalog_host}:99999/x.gguf",
        "same host, https": f"https://{catalog_host}:{trap_port}/x.gguf",
        "no scheme": f"//127.0.0.1:{trap_port}/x.gguf",
    }


@asynccontextmanager
async def stand_in_catalog(good: bytes) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The catalog API; ``urls`` (model -> URL) is filled in once the URLs are known."""
    urls: dict[str, str] = {}
    app = FastAPI()

    @app.get("/download-url/{model}")
    async def sign(model: str) -> dict[str, Any]:
        return {"url": urls[model], "expires_in": 600, "model_id": model}

    @app.get("/redirect")
    async def redirect() -> RedirectResponse:
        return RedirectResponse(urls["redirect target"], status_code=302)

    @app.get("/files/good.gguf")
    async def file() -> Response:
        return Response(good, media_type="application/octet-stream")

    async with serving(app) as url:
        yield url, urls


async def test_catalog_answers_outside_the_upstream_are_never_fetched(
    tmp_path: Path, tiny_model: Path, reliability: Recorder
) -> None:
    good = await asyncio.to_thread(tiny_model.read_bytes)
    async with spy_upstream() as (trap, hits), stand_in_catalog(good) as (catalog, urls):
        cases = hostile_urls(catalog, trap)
        models = {case: f"ssrf-{n}" for n, case in enumerate(cases)}
        urls.update({models[case]: url for case, url in cases.items()})
        urls["redirect target"] = f"{trap}/models/x.gguf"
        urls["good"] = f"{catalog}/files/good.gguf"
        settings = load_settings(
            mode="local",
            data_dir=tmp_path,
            jwt_secret=secrets.token_hex(24),
            catalog_backend="http",
            catalog_url=catalog,
        )
        engine = make_engine(settings.resolved_database_url)
        await upgrade(engine)
        await engine.dispose()
        await asyncio.to_thread(mirror_each, settings, models, reliability, cases)
        assert hits == [], f"the trap was reached: {hits}"
    objects = [o.key for o in await make_store(settings).list()]
    assert len(objects) == 1, objects  # the control's model only
    scratch = settings.resolved_work_dir
    leftovers = [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []
    assert leftovers == []


def mirror_each(
    settings: Any, models: dict[str, str], reliability: Recorder, cases: dict[str, str]
) -> None:
    """signed-url then mirror for each model, over HTTP, as the broker would deliver."""
    issuer = TokenIssuer.from_settings(settings)
    with running_functions(settings) as functions:
        for case, model in [*models.items(), ("good", "good")]:
            if model != "good":
                reliability.case(
                    case,
                    injected=f"the catalog signs {model!r} as {cases[case][:60]}",
                    checked="serve.failed naming the reason; trap untouched; no object, no file",
                )
            server = asyncio.run(record(settings, model))
            event = ev.make_event(
                ev.MODEL_MISSING,
                ev.ModelMissing(
                    request=ev.ServeRequest(model=model, requested_by="alice", role="operator")
                ),
                source="/reliability",
                subject=server,
                token=issuer.pipeline_token(server, subject="alice", role=Role.OPERATOR),
            )
            reply = deliver(functions.urls, "signed-url", event)
            if reply["type"] == ev.MODEL_URL_SIGNED:
                started = time.monotonic()
                reply = deliver(functions.urls, "mirror", reply)
                assert time.monotonic() - started < 20, model
            if model == "good":  # the control: the downloader does fetch from the upstream
                assert reply["type"] == ev.MODEL_AVAILABLE, reply.get_data()
                continue
            assert reply["type"] == ev.SERVE_FAILED, (case, reply["type"], reply.get_data())
            reason = str(reply.get_data())
            assert any(w in reason for w in ("origin", "HTTP 302", "refusing")), (case, reason)


def deliver(urls: dict[str, str], step: str, event: Any) -> Any:
    headers, body = ev.encode_binary(event)
    answer = httpx.post(
        urls[registry.STEPS[step].service], headers=headers, content=body, timeout=60
    )
    assert answer.status_code == 200, (step, answer.status_code, answer.text)
    return ev.decode(dict(answer.headers), answer.content)


async def record(settings: Any, model: str) -> uuid.UUID:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await new_server(session, model_name=model, status=ServerStatus.CHECKING)
    finally:
        await engine.dispose()
