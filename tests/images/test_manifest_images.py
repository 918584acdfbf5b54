"""Every image config/ and kserve/ name is one `make images` built (and tagged so)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.containers import docker
from support.toolchain import ROOT

pytestmark = [pytest.mark.docker]


def images_in(value: Any) -> Iterator[str]:
    """Every container's ``image`` anywhere in a manifest."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                yield item
            else:
                yield from images_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from images_in(item)


def test_every_image_the_manifests_name_is_built(images: Path) -> None:
    named = {
        image
        for folder in ("config", "kserve")
        for path in sorted((ROOT / folder).rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        for image in images_in(doc)
    }
    assert {name.rsplit(":", 1)[0] for name in named} == {
        "ghcr.io/modelserve/functions",
        "ghcr.io/modelserve/runtime",
    }
    log = images.read_text()
    for image in sorted(named):
        found = subprocess.run(
            [docker(), "image", "inspect", image], capture_output=True, timeout=30, check=False
        )
        # The CUDA image needs bases that cannot always be pulled; make images says so.
        assert found.returncode == 0 or f"not building {image}:" in log, f"{image} was not built"
