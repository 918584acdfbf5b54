"""Generated models and real runtime processes serving them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.runtime import RuntimeServer, start_runtime


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tiny_model, "--model-name", "demo", "--embeddings", "--max-queue", "4")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def margin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose greedy choices lead by a wide margin (see gguf_synth)."""
    return write_synthetic_gguf(tmp_path_factory.mktemp("models") / "margin.gguf", "margin")
