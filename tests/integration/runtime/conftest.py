"""A generated tiny model and real runtime processes serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.runtime import RuntimeServer, start_runtime


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo", "--embeddings", "--max-queue", "4")
    yield server
    server.stop()
