"""The component folders map into one namespace and never shadow real modules."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("shared", "functions", "runtime", "kserve", "operator")


@pytest.mark.parametrize("flags", [[], ["-S"]], ids=["site", "no-site"])
def test_stdlib_operator_is_not_shadowed_from_the_repo_root(flags: list[str]) -> None:
    # With -S nothing preloads `operator`, so only the layout itself can keep
    # the repository's operator/ folder from shadowing the standard library.
    out = subprocess.run(
        [
            sys.executable,
            *flags,
            "-c",
            "import operator; print(operator.add(1, 2), operator.__spec__.origin)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "3"
    assert not out[1].startswith(str(ROOT))


def test_kserve_sdk_is_not_shadowed_from_the_repo_root() -> None:
    origin = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('kserve').origin)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert "site-packages" in origin, origin


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_imports_under_modelserve(component: str) -> None:
    module = importlib.import_module(f"modelserve.{component}")
    paths = [Path(p).resolve() for p in module.__path__]
    assert ROOT / component in paths


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_folder_is_a_namespace_portion(component: str) -> None:
    # A regular package (with __init__.py) at the repo root would shadow the
    # stdlib/SDK module of the same name whenever the repo root is on sys.path.
    assert not (ROOT / component / "__init__.py").exists()


def test_import_contracts_hold() -> None:
    # The dependency rule (pyproject's [tool.importlinter]) is part of the suite,
    # not only of `make lint`.
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
