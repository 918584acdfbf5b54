"""The built wheel, installed in a fresh venv outside the checkout, runs the product.

What a user does: build (or download) the wheel, ``pip install`` it, run
``modelserve up``, serve the demo model and open the dashboard. Nothing may be
read from the checkout: the Trigger manifests, the migrations and the dashboard
come from the installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from modelserve.shared.net import free_port
from support.services import unavailable
from support.stack import serve_and_wait, stack

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CARRIED = (  # read at run time, so the wheel must carry them
    "modelserve/config/pipeline/triggers.yaml",
    "modelserve/config/pipeline/broker.yaml",
    "modelserve/config/crd/modelserve.yaml",
    "modelserve/web/index.html",
    "modelserve/shared/db/migrations/env.py",
    "modelserve/shared/db/migrations/script.py.mako",
    "modelserve/functions/main.py",
)


def run(*argv: str | Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "dashboard" / "dist" / "index.html").is_file():
        unavailable("the dashboard is not built: make install builds dashboard/dist")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, REPO, cwd=out)
    (built,) = out.glob("modelserve-*.whl")
    return built


def test_the_wheel_carries_what_is_read_at_run_time(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in CARRIED if name not in names]
    assert not missing, missing
    assert any(n.startswith("modelserve/web/assets/") and n.endswith(".js") for n in names)
    assert not any("node_modules" in n or n.startswith("tests/") for n in names)


def test_installed_wheel_serves_the_demo_model_and_the_dashboard(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # llama-cpp-python from the machine's one generic build (.ci/llama-wheel, made by
    # `make install`), as the Makefile installs it: naming the wheel makes pip take it
    # for the runtime extra's requirement instead of compiling llama.cpp for minutes.
    llama = subprocess.run(
        [str(REPO / ".ci" / "llama-wheel"), sys.executable],
        capture_output=True, text=True, check=True, timeout=1200,
    ).stdout.strip()  # fmt: skip
    run(
        python, "-m", "pip", "install", "--quiet", "--progress-bar", "off",
        f"{wheel}[functions,operator,runtime]", llama, cwd=tmp_path,
    )  # fmt: skip
    where = subprocess.run(
        [python, "-c", "import modelserve.resources as r; print(r.config_dir())"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), where  # the installed package, not this checkout
    with stack(tmp_path / "data", free_port(), python=str(python), cwd=tmp_path) as up:
        auth = {"Authorization": f"Bearer {up.token}"}
        page = httpx.get(f"{up.url}/", timeout=10)
        assert page.status_code == 200 and '<div id="root">' in page.text, page.text[:300]
        record = serve_and_wait(up, within=180)
        server = uuid.UUID(record["server_uuid"])
        assert record["status"] == "ready", record
        answer = httpx.post(
            f"{up.url}/{server}/v1/completions",
            headers=auth,
            timeout=60,
            json={"model": "demo", "prompt": "Hello", "max_tokens": 4},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["text"] is not None
