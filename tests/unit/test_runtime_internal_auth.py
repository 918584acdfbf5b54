"""The runtime's internal credential: required beyond loopback, checked on every route."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from modelserve.runtime.config import RuntimeConfigError, build_config
from modelserve.runtime.internal_auth import OPEN_PATHS, InternalCredential
from modelserve.shared.settings import SettingsError, load_settings

TOKEN = secrets.token_hex(32)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.7", "::", "runtime.local"])  # noqa: S104
@pytest.mark.parametrize("token", [None, ""])
def test_a_runtime_beyond_loopback_refuses_to_start_without_a_token(
    host: str, token: str | None
) -> None:
    with pytest.raises(RuntimeConfigError, match="internal_token is required"):
        build_config(model="m.gguf", host=host, internal_token=token)


def test_a_short_token_is_refused_and_a_good_one_is_never_printed() -> None:
    with pytest.raises(RuntimeConfigError, match="internal_token"):
        build_config(model="m.gguf", host="0.0.0.0", internal_token="short")  # noqa: S104
    config = build_config(model="m.gguf", host="0.0.0.0", internal_token=TOKEN)  # noqa: S104
    assert config.internal_token == TOKEN
    assert TOKEN not in repr(config)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_on_loopback_the_token_is_optional(host: str) -> None:
    assert build_config(model="m.gguf", host=host).internal_token is None


def test_the_gateway_setting_is_at_least_32_bytes_even_in_dev_mode() -> None:
    with pytest.raises(SettingsError, match="MODELSERVE_INTERNAL_TOKEN"):
        load_settings(dev=True, jwt_secret="x" * 32, internal_token="short")
    settings = load_settings(dev=True, jwt_secret="x" * 32, internal_token=TOKEN)
    assert settings.internal_token is not None
    assert settings.internal_token.get_secret_value() == TOKEN


def _app() -> Any:
    async def ok(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    paths = ["/v1/completions", "/x", *OPEN_PATHS]
    app = Starlette(routes=[Route(p, ok, methods=["GET", "POST"]) for p in paths])
    app.add_middleware(InternalCredential, token=TOKEN)
    return app


def test_every_route_but_the_probes_needs_the_token() -> None:
    http = TestClient(_app())
    assert http.post("/v1/completions").status_code == 401
    assert http.get("/x", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert http.post("/v1/completions", headers={"Authorization": f"Bearer {TOKEN}"}).text == "ok"
    for path in OPEN_PATHS:
        assert http.get(path).status_code == 200
        assert http.post(path).status_code == 401  # only GET is open
    assert http.get("/nowhere").status_code == 401  # not even a 404 to a stranger


def test_an_empty_token_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="empty"):
        InternalCredential(_app(), "")
