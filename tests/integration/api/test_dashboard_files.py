"""The API serves the built dashboard at ``/``, locked to its own origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import Stack


def _dist(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text('<!doctype html><script src="./assets/app.js"></script>')
    (dist / "assets" / "app.js").write_text("console.log('modelserve')")
    return dist


async def test_dashboard_is_served_with_a_strict_policy(stack_factory: Any, tmp_path: Path) -> None:
    stack: Stack = await stack_factory(dashboard_dir=_dist(tmp_path))
    page = await stack.http.get(f"{stack.api}/")
    assert page.status_code == 200 and "assets/app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["cache-control"] == "no-cache"
    script = await stack.http.get(f"{stack.api}/assets/app.js")
    assert script.status_code == 200 and "modelserve" in script.text
    # The API's own routes still win over the static files.
    assert (await stack.http.get(f"{stack.api}/healthz")).json() == {"status": "ok"}
    assert (await stack.http.get(f"{stack.api}/servers")).status_code == 401
    assert (await stack.http.get(f"{stack.api}/../../etc/passwd")).status_code == 404


async def test_a_missing_build_says_how_to_build_it(stack: Stack) -> None:
    page = await stack.http.get(f"{stack.api}/")
    assert page.status_code == 503
    assert "make install" in page.text
