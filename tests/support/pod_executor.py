"""Run a rendered Pod as host processes, exactly as its spec says, and report it Ready.

kwok plays the kubelet but runs no containers, and there is no container engine
here. This runs what a Pod spec says on this host instead: each init container's
image is mapped to the program that image runs (only images this project's Pods
use are known; any other one is an error), with the container's own args and env
(``valueFrom`` Secret references resolved through the API), and every volume an
empty temp folder that each ``mountPath`` in the args and env is mapped to. It
adds nothing the spec does not say, so a wrong argument, env var, path or
credential rendered from kserve/ fails the test that uses it.

Known images:
- KServe's storage initializer (``kserve/storage-initializer``): its entrypoint
  script from the pinned KServe module (``python/storage-initializer/scripts/
  initializer-entrypoint``), run by this interpreter, which has ``kserve-storage``.
- our runtime (``ghcr.io/modelserve/runtime``): the container's own command,
  found in this interpreter's environment, where ``modelserve`` is installed.
  The pod's network is this host's loopback: ``0.0.0.0`` becomes 127.0.0.1 and
  each containerPort a free port wherever an arg or env value is exactly that.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from modelserve.shared.net import free_port
from support.procs import ServerProcess
from support.toolchain import go_module

STORAGE_INITIALIZER = "kserve/storage-initializer"
RUNTIME_IMAGE = "ghcr.io/modelserve/runtime:"
POD_IP = "10.244.0.100"  # in kwok's pod CIDR; nothing dials it (no pod network here)


class UnknownImage(RuntimeError):
    """A container whose image this executor does not know how to run."""


@dataclass
class ContainerRun:
    name: str
    argv: list[str]
    returncode: int
    output: str


@dataclass
class PodRun:
    """What ran, and the temp folder of each volume (by volume name)."""

    volumes: dict[str, Path]
    runs: list[ContainerRun] = field(default_factory=list)


def _entrypoint(image: str) -> list[str]:
    repository = image.rsplit(":", 1)[0]
    if repository == STORAGE_INITIALIZER:
        module = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
        script = module / "python" / "storage-initializer" / "scripts" / "initializer-entrypoint"
        return [sys.executable, str(script)]
    raise UnknownImage(f"no host program for image {image}")


def _secret_value(core: client.CoreV1Api, namespace: str, ref: Any) -> str:
    secret = core.read_namespaced_secret(ref.name, namespace)
    return base64.b64decode((secret.data or {})[ref.key]).decode()


def _mapped(value: str, mounts: dict[str, Path]) -> str:
    """``value`` with a leading mount path replaced by the volume's temp folder."""
    for mount_path, folder in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + value[len(mount_path.rstrip("/")) :]
    return value


def run_init_containers(
    api: client.ApiClient, pod: Any, base: Path, timeout: float = 120
) -> PodRun:
    """Run ``pod``'s init containers in order, volumes under ``base``; stop at a failure."""
    core = client.CoreV1Api(api)
    namespace = pod.metadata.namespace
    volumes: dict[str, Path] = {}
    for volume in pod.spec.volumes or []:
        if volume.empty_dir is not None:
            volumes[volume.name] = base / "volumes" / volume.name
            volumes[volume.name].mkdir(parents=True)
    result = PodRun(volumes)
    for container in pod.spec.init_containers or []:
        mounts = {
            m.mount_path: volumes[m.name]
            for m in container.volume_mounts or []
            if m.name in volumes
        }
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base)}
        for var in container.env or []:
            if var.value_from is not None and var.value_from.secret_key_ref is not None:
                env[var.name] = _secret_value(core, namespace, var.value_from.secret_key_ref)
            elif var.value_from is None:
                env[var.name] = _mapped(var.value or "", mounts)
            else:
                raise UnknownImage(f"{container.name}: env {var.name} has an unsupported source")
        program = list(container.command or []) or _entrypoint(container.image)
        argv = program + [_mapped(arg, mounts) for arg in container.args or []]
        done = subprocess.run(
            argv,
            env=env,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result.runs.append(
            ContainerRun(container.name, argv, done.returncode, done.stdout + done.stderr)
        )
        if done.returncode != 0:
            break
    return result


@dataclass
class RunningContainer:
    """A container started as a host process; ``ports`` maps containerPort -> host port."""

    name: str
    process: ServerProcess
    ports: dict[int, int]

    def probe_url(self, probe: Any) -> str:
        """The URL of an ``httpGet`` probe of this container (numeric port), on its host port."""
        return f"http://127.0.0.1:{self.ports[int(probe.http_get.port)]}{probe.http_get.path}"


def _networked(value: str, ports: dict[int, int]) -> str:
    """The pod's network is this host's loopback: every address, and each port, mapped."""
    if value == "0.0.0.0":  # noqa: S104 - the pod's wildcard becomes loopback here
        return "127.0.0.1"
    if value.isdigit() and int(value) in ports:
        return str(ports[int(value)])
    return value


def start_container(
    api: client.ApiClient, pod: Any, name: str, run: PodRun, base: Path
) -> RunningContainer:
    """Start container ``name`` of ``pod`` as a host process, with ``run``'s volumes.

    Its command runs from this interpreter's environment (where the runtime
    image's ``modelserve`` is installed); args and env are the spec's, with
    mount paths mapped to the volumes' folders, ``0.0.0.0`` to 127.0.0.1 and
    each containerPort to a free port (the pod's network namespace, here).
    """
    core = client.CoreV1Api(api)
    (container,) = [c for c in pod.spec.containers if c.name == name]
    if not container.image.startswith(RUNTIME_IMAGE):
        raise UnknownImage(f"no host program for image {container.image}")
    mounts = {
        m.mount_path: run.volumes[m.name]
        for m in container.volume_mounts or []
        if m.name in run.volumes
    }
    ports = {p.container_port: free_port() for p in container.ports or []}
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(base),
    }
    for var in container.env or []:
        if var.value_from is not None and var.value_from.secret_key_ref is not None:
            env[var.name] = _secret_value(
                core, pod.metadata.namespace, var.value_from.secret_key_ref
            )
        elif var.value_from is None:
            env[var.name] = _networked(_mapped(var.value or "", mounts), ports)
    argv = list(container.command or []) + [
        _networked(_mapped(arg, mounts), ports) for arg in container.args or []
    ]
    process = ServerProcess(
        name=f"{pod.metadata.name}/{name}",
        argv=argv,
        log_path=base / f"{name}.log",
        env=env,
        cwd=base,
    ).start()
    return RunningContainer(name, process, ports)


def report_ready(api: client.ApiClient, pod: Any, ready: bool = True) -> None:
    """Write the Pod's status as a kubelet would once its containers run (and pass probes).

    Only for Pods kwok leaves alone (support/kube.py's ``executed_label``).
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = "True" if ready else "False"
    status = {
        "phase": "Running",
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "hostIP": POD_IP,
        "startTime": now,
        "conditions": [
            {"type": kind, "status": value, "lastTransitionTime": now}
            for kind, value in (
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", state),
                ("Ready", state),
            )
        ],
        "initContainerStatuses": [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }
            for c in pod.spec.init_containers or []
        ],
        "containerStatuses": [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod.spec.containers
        ],
    }
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod.metadata.name, pod.metadata.namespace, {"status": status}
    )
