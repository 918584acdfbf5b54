"""The API and gateway entry points built from MODELSERVE_* at start."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient

from modelserve.functions import http_main
from modelserve.shared.db.engine import make_engine
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.settings import SettingsError

PUBLIC_ADDRESS = ["--host", "0.0.0.0", "--port", "8080"]  # noqa: S104 (a pod's, in config/)


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


def test_the_kubernetes_entry_points_keep_idle_connections_as_the_stack_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config/'s Knative Services run ``main``, which gives uvicorn the public servers'
    keep-alive (uvicorn's own 5 s would race the queue-proxy's 90 s idle connections)."""
    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options))
    http_main.main(["gateway", "--port", "9"])
    assert ran["timeout_keep_alive"] == http_main.PUBLIC_KEEPALIVE_SECONDS > 90
    assert (ran["factory"], ran["port"]) == (True, 9)
    root = Path(__file__).resolve().parents[3]
    commands = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["command"]
        for d in yaml.safe_load_all((root / "config" / "ingress" / "services.yaml").read_text())
        if d and d["kind"] == "Service" and d["apiVersion"].startswith("serving.knative.dev/")
    }
    assert commands == {
        f"modelserve-{app}": ["python", "-m", http_main.__name__, app, *PUBLIC_ADDRESS]
        for app in ("api", "gateway")
    }
