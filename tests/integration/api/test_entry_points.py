"""The API and gateway entry points built from MODELSERVE_* at start."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelserve.functions import http_main
from modelserve.shared.db.engine import make_engine
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.settings import SettingsError


def test_api_creates_the_first_admin_or_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELSERVE_JWT_SECRET", secrets.token_hex(24))
    monkeypatch.setenv("MODELSERVE_BROKER_URL", "http://127.0.0.1:9/")
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'modelserve.db'}")
    asyncio.run(upgrade(engine))
    asyncio.run(engine.dispose())

    with (
        pytest.raises(SettingsError, match="MODELSERVE_ADMIN_PASSWORD"),
        TestClient(http_main.api()),
    ):
        pass

    monkeypatch.setenv("MODELSERVE_ADMIN_PASSWORD", "first-admin-password")
    with TestClient(http_main.api()) as client:
        signed_in = client.post(
            "/auth/token", data={"username": "admin", "password": "first-admin-password"}
        )
        assert signed_in.status_code == 200
    assert http_main.gateway().title == "modelserve gateway"


def test_api_needs_a_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELSERVE_JWT_SECRET", secrets.token_hex(24))
    monkeypatch.delenv("MODELSERVE_BROKER_URL", raising=False)
    monkeypatch.delenv("K_SINK", raising=False)
    with pytest.raises(ValueError, match="needs a broker"):
        http_main.api()
