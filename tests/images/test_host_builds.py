"""What ``make images`` puts in the images from the host rather than fetching it again.

The host's wheelhouse (``.ci/wheelhouse``: the dependencies at the versions of
``.venv``, the generic llama-cpp-python build among them) and its built
dashboard go into the build context; these tests check that the images carry
exactly those, so the images run what the host's tests ran.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

import pytest

from support.containers import docker, manifest_container
from support.toolchain import ROOT

pytestmark = [pytest.mark.docker]
RUNTIME = manifest_container(
    ROOT / "kserve" / "cluster-serving-runtime.yaml", "modelserve-llamacpp"
)
FUNCTIONS = manifest_container(
    ROOT / "config" / "pipeline" / "functions.yaml", "modelserve-availability"
)
# The virtualenv's own pip and setuptools come from the base image's Python.
PACKAGING = ("pip", "setuptools", "wheel")
VERSIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
)


def run_in(image: str, *argv: str) -> str:
    """The stdout of ``argv`` run in a throwaway container of ``image``, with no network."""
    out = subprocess.run(
        [docker(), "run", "--rm", "--network=none", "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def libraries(record: str) -> set[str]:
    """The shared libraries of a RECORD, each with its hash."""
    return {line for line in record.splitlines() if ".so" in line.split(",")[0]}


def test_runtime_image_carries_the_hosts_llama_cpp_build(images: Path) -> None:
    """Compiled again in the image, llama.cpp's libraries would hash differently."""
    record = (
        "import importlib.metadata as m; "
        "print(m.distribution('llama_cpp_python').read_text('RECORD'))"
    )
    inside = libraries(run_in(RUNTIME["image"], "python", "-c", record))
    host = libraries(importlib.metadata.distribution("llama_cpp_python").read_text("RECORD") or "")
    assert inside and inside == host


@pytest.mark.parametrize("image", [RUNTIME["image"], FUNCTIONS["image"]])
def test_images_install_the_dependencies_at_the_hosts_versions(images: Path, image: str) -> None:
    """From the package index they would be whatever is newest the day of the build."""
    inside: dict[str, str] = json.loads(run_in(image, "python", "-c", VERSIONS))
    host = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    for own in ("modelserve", *PACKAGING):
        inside.pop(own, None)
    differ = {
        name: (version, host.get(name))
        for name, version in inside.items()
        if host.get(name) != version
    }
    assert not differ, f"image version, host version: {differ}"


def test_functions_image_carries_the_hosts_dashboard_build(images: Path) -> None:
    """Every file of dashboard/dist, unchanged (Vite's build is reproducible, so a
    build of the same sources inside the image would match too: this checks what
    the image serves, not which way it came)."""
    dist = ROOT / "dashboard" / "dist"
    listing = "cd /app/dashboard && find . -type f -exec sha256sum {} +"
    inside = {}
    for line in run_in(FUNCTIONS["image"], "sh", "-c", listing).splitlines():
        digest, path = line.split(maxsplit=1)
        inside[path] = digest
    host = {
        f"./{path.relative_to(dist)}": hashlib.sha256(path.read_bytes()).hexdigest()
        for path in dist.rglob("*")
        if path.is_file()
    }
    assert inside == host
