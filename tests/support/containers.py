"""Build the project's images (``make images``) and run them as the manifests say.

A container is started from a container spec of ``kserve/`` or ``config/``: its
image, command and args, env, and its securityContext (user, read-only root
filesystem, dropped capabilities, no privilege escalation) become ``docker run``
flags, so a test runs the image the way the cluster would, not a hand-made
variant of it. Only what a pod gets from the platform is added by the test:
volumes, the env from Secrets, the ServiceAccount's credentials, host ports.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.settings import Settings
from support.procs import MissingService, ServiceFailed, find_binary
from support.toolchain import ROOT

DOCKER_HINT = "apt-get install docker.io, then start dockerd (.ci/run does both)"
BUILD_TIMEOUT = 3600.0


def docker() -> str:
    """The docker CLI, if a daemon answers it; else :class:`MissingService`."""
    binary = find_binary("docker", hint=DOCKER_HINT)
    info = subprocess.run(
        [binary, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if info.returncode != 0:
        raise MissingService(f"no docker daemon answers ({info.stderr.strip()}); {DOCKER_HINT}")
    return binary


def build_images() -> Path:
    """``make images`` (cached layers make a repeat cheap); returns its log."""
    binary = docker()
    log = Path(tempfile.mkdtemp(prefix="modelserve-images-")) / "make-images.log"
    with log.open("wb") as out:
        result = subprocess.run(
            ["make", "images", f"DOCKER={binary}"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ServiceFailed(f"make images failed ({result.returncode}), {log}:\n{tail}")
    return log


def manifest_pod(path: Path, name: str) -> dict[str, Any]:
    """The pod spec of the object called ``name`` in the YAML file ``path``.

    Workloads (Deployments, Knative Services) have it at ``spec.template.spec``;
    KServe's ServingRuntimes carry ``containers`` (and ``volumes``) in ``spec``.
    """
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("metadata", {}).get("name") == name:
            spec = doc["spec"]
            pod: dict[str, Any] = spec["template"]["spec"] if "template" in spec else spec
            return pod
    raise AssertionError(f"no object named {name} in {path}")


def manifest_container(path: Path, name: str) -> dict[str, Any]:
    """The first container of the object called ``name`` in ``path``."""
    container: dict[str, Any] = manifest_pod(path, name)["containers"][0]
    return container


def image_user(image: str) -> str:
    """The image's USER (what runs when the pod sets no runAsUser)."""
    out = subprocess.run(
        [docker(), "image", "inspect", "--format", "{{json .Config.User}}", image],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    user: str = json.loads(out.stdout)
    return user


@dataclass
class Container:
    """A running container, removed on :meth:`stop`."""

    id: str
    image: str
    argv: list[str] = field(default_factory=list)

    def logs(self, lines: int = 60) -> str:
        out = subprocess.run(
            [docker(), "logs", "--tail", str(lines), self.id],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout + out.stderr

    def running(self) -> bool:
        out = subprocess.run(
            [docker(), "inspect", "--format", "{{.State.Running}}", self.id],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout.strip() == "true"

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``docker exec``: as the container's user, in its filesystem."""
        return subprocess.run(
            [docker(), "exec", self.id, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def check_confined(self, spec: Mapping[str, Any]) -> None:
        """Assert what the manifest's securityContext promises holds inside the container."""
        context = spec.get("securityContext", {})
        uid = self.exec("id", "-u").stdout.strip()
        if context.get("runAsNonRoot"):
            assert uid.isdigit() and uid != "0", f"runs as uid {uid!r}"
        if "runAsUser" in context:
            assert uid == str(context["runAsUser"])
        if context.get("readOnlyRootFilesystem"):
            probe = self.exec("touch", "/probe", "/tmp/probe")
            assert probe.returncode != 0 and "Read-only file system" in probe.stderr

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(
                [docker(), "rm", "--force", self.id], capture_output=True, timeout=60, check=False
            )


def security_flags(container: Mapping[str, Any]) -> list[str]:
    """``docker run`` flags for what the container's securityContext asks for."""
    context = container.get("securityContext", {})
    flags: list[str] = []
    if "runAsUser" in context:
        flags += ["--user", str(context["runAsUser"])]
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in context.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", "ALL"]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    return flags


def run_container(
    pod: Mapping[str, Any],
    *,
    env: Mapping[str, str] = {},
    replace: Mapping[str, str] = {},
    volumes: Sequence[tuple[Path, str]] = (),
    network: str | None = None,
    publish: Mapping[int, int] = {},
) -> Container:
    """``docker run -d`` the first container of the manifest's ``pod`` spec.

    ``env`` is what the platform adds (Secrets' env, Knative's PORT) and wins over
    the manifest's own values; ``replace`` substitutes whole words in the command,
    args and env values (KServe's ``{{.Name}}`` template, a port the host network
    has taken); ``volumes`` are mounted read-only; ``publish`` maps container
    ports to 127.0.0.1 ports. The pod's emptyDir volumes become tmpfs mounts.
    """
    container: Mapping[str, Any] = pod["containers"][0]

    def sub(text: str) -> str:
        for old, new in replace.items():
            text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, text)
        return text

    image = container["image"]
    values = {item["name"]: sub(str(item.get("value", ""))) for item in container.get("env", [])}
    values |= env
    argv = [docker(), "run", "--detach", *security_flags(container)]
    if network:
        argv += ["--network", network]
    for inside, outside in publish.items():
        argv += ["--publish", f"127.0.0.1:{outside}:{inside}"]
    for source, target in volumes:
        argv += ["--volume", f"{source}:{target}:ro"]
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty:
            argv += ["--tmpfs", mount["mountPath"]]
    for key, value in values.items():
        argv += ["--env", f"{key}={value}"]
    command = [sub(part) for part in container.get("command", [])]
    args = [sub(part) for part in container.get("args", [])]
    if command:
        argv += ["--entrypoint", command[0], image, *command[1:], *args]
    else:
        argv += [image, *args]
    started = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if started.returncode != 0:
        raise ServiceFailed(f"docker run {image} failed: {started.stderr}")
    return Container(started.stdout.strip(), image, argv)


def readable_copy(source: Path, directory: Path) -> Path:
    """Copy ``source`` into a world-readable ``directory`` (the image runs as uid 1000)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    target = directory / source.name
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


@dataclass
class Platform:
    """What config/'s Secret ``modelserve-config`` would hold, on real servers."""

    env: dict[str, str]
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]


def secret_keys() -> list[str]:
    """The keys of the Secret, as config/secrets/modelserve-config.env.example lists them."""
    lines = (ROOT / "config" / "secrets" / "modelserve-config.env.example").read_text()
    return [
        line.split("=", 1)[0] for line in lines.splitlines() if line and not line.startswith("#")
    ]
