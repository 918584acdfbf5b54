"""Pinned external schemas (.ci/versions), found in the Go module cache."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from support.procs import MissingService

ROOT = Path(__file__).resolve().parents[2]


@cache
def versions() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".ci" / "versions").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


@cache
def go_module(module: str, version_key: str) -> Path:
    """The downloaded module's directory (``.ci/run`` fetches it with go mod download)."""
    go = shutil.which("go")
    if go is None:
        raise MissingService("go is not installed; it fetches the pinned Knative schemas")
    cache_dir = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(cache_dir) / f"{module}@{versions()[version_key]}"
    if not path.is_dir():
        raise MissingService(
            f"{module}@{versions()[version_key]} is not in {cache_dir}; .ci/run downloads it"
        )
    return path
