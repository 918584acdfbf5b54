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

``run_init_containers``/``start_container``/``report_ready`` are the steps, for a
test that takes them one by one; :class:`PodExecutor` takes every matching Pod
through them as the kubelet would (probes at their periods), and
:class:`PodNetwork` gives each Pod an address whose ports lead to its processes
(read by support/cluster_network.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from modelserve.shared.net import free_port
from support.procs import ServerProcess
from support.toolchain import go_module

STORAGE_INITIALIZER = "kserve/storage-initializer"
RUNTIME_IMAGE = "ghcr.io/modelserve/runtime:"
POD_IP = "10.244.0.100"  # in kwok's pod CIDR; nothing dials it (no pod network here)
POD_NETWORK = "10.244.1."  # executed Pods' addresses (kwok hands out 10.244.0.x)


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


def report_ready(api: client.ApiClient, pod: Any, ready: bool = True, pod_ip: str = POD_IP) -> None:
    """Write the Pod's status as a kubelet would once its containers run (and pass probes).

    Only for Pods kwok leaves alone (support/kube.py's ``executed_label``). The
    endpoint-slice controller turns ``pod_ip`` and the Ready condition into the
    Pod's Service endpoints.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = "True" if ready else "False"
    status = {
        "phase": "Running",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "hostIP": "10.244.0.1",  # kwok's node address (support/kube.py)
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


class PodNetwork:
    """The pod network, as far as this host has one: (pod IP, containerPort) -> host port.

    Each executed Pod gets its own address (reported in its status, so the
    endpoint-slice controller puts it in its Service's EndpointSlice) while its
    containers really listen on free loopback ports; this table is the only link,
    and support/cluster_network.py is the only reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, int], int] = {}
        self._next = 2

    def attach(self, ports: dict[int, int]) -> str:
        """A fresh pod IP whose containerPorts lead to ``ports``' host ports."""
        with self._lock:
            address = f"{POD_NETWORK}{self._next}"
            self._next += 1
            for container_port, host_port in ports.items():
                self._routes[(address, container_port)] = host_port
            return address

    def detach(self, address: str) -> None:
        with self._lock:
            self._routes = {k: v for k, v in self._routes.items() if k[0] != address}

    def host_port(self, address: str, port: int) -> int | None:
        with self._lock:
            return self._routes.get((address, port))


@dataclass
class ExecutedPod:
    """One Pod the executor took on: what ran, the running container, its address."""

    name: str
    uid: str
    run: PodRun | None = None
    container: RunningContainer | None = None
    address: str | None = None
    ready: bool = False
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> str:
        lines = [f"pod {self.name}: ready={self.ready} address={self.address} error={self.error}"]
        for done in self.run.runs if self.run else []:
            lines.append(f"  init {done.name} -> {done.returncode}: {done.output[-1500:]}")
        if self.container is not None:
            lines.append(f"  {self.container.name}:\n{self.container.process.log_tail(30)}")
        return "\n".join(lines)


def _probe(container: RunningContainer, probe: Any) -> bool:
    try:
        return httpx.get(container.probe_url(probe), timeout=probe.timeout_seconds or 1).is_success
    except httpx.HTTPError:
        return False


class PodExecutor:
    """Plays the kubelet's container part for the Pods kwok leaves alone (``selector``).

    Every Pod scheduled onto a node and matching ``selector`` in ``namespace`` is
    run as its spec says (init containers in order, then ``container``), given an
    address on ``network``, and reported through its status: Running at once,
    Ready only once its startup probe and then its readiness probe pass (polled at
    the probes' own periods). A liveness probe failing ``failureThreshold`` times
    stops the container and reports it not ready. A Pod being deleted has its
    processes stopped; kwok's pod-delete stage then removes the object.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        base: Path,
        network: PodNetwork,
        container: str = "kserve-container",
    ) -> None:
        self.api, self.namespace, self.selector = api, namespace, selector
        self.base, self.network, self.container = base, network, container
        self.pods: dict[str, ExecutedPod] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher = threading.Thread(target=self._watch, name="pod-executor", daemon=True)

    def __enter__(self) -> PodExecutor:
        self._watcher.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for pod in self.pods.values():
            pod.stop.set()
        self._watcher.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=15)
        for pod in self.pods.values():
            if pod.container is not None:
                pod.container.process.stop()

    def describe(self) -> str:
        """What ran so far, for a failing test's message."""
        return "\n".join(pod.describe() for pod in self.pods.values()) or "no pod executed"

    def _watch(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self._stop.wait(0.3):
            try:
                listed = core.list_namespaced_pod(self.namespace, label_selector=self.selector)
            except Exception:  # noqa: S112 - the API server is busy; the next round lists again
                continue
            present = set()
            for pod in listed.items:
                uid = pod.metadata.uid
                present.add(uid)
                executed = self.pods.get(uid)
                if pod.metadata.deletion_timestamp is not None:
                    if executed is not None:
                        executed.stop.set()
                elif executed is None and pod.spec.node_name:
                    executed = self.pods[uid] = ExecutedPod(pod.metadata.name, uid)
                    thread = threading.Thread(
                        target=self._execute, args=(pod, executed), daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
            for uid, executed in self.pods.items():
                if uid not in present:
                    executed.stop.set()

    def _execute(self, pod: Any, executed: ExecutedPod) -> None:
        base = self.base / pod.metadata.name
        base.mkdir(parents=True, exist_ok=True)
        try:
            executed.run = run_init_containers(self.api, pod, base)
            failed = [r for r in executed.run.runs if r.returncode != 0]
            if failed:
                executed.error = f"init container {failed[0].name} exited {failed[0].returncode}"
                return
            running = start_container(self.api, pod, self.container, executed.run, base)
            executed.container = running
            executed.address = self.network.attach(running.ports)
            (spec,) = [c for c in pod.spec.containers if c.name == self.container]
            report_ready(self.api, pod, ready=False, pod_ip=executed.address)
            self._probe_loop(pod, spec, running, executed)
        except Exception as exc:
            executed.error = f"{type(exc).__name__}: {exc}"
        finally:
            if executed.container is not None:
                executed.container.process.stop()
            if executed.address is not None:
                self.network.detach(executed.address)

    def _probe_loop(
        self, pod: Any, spec: Any, running: RunningContainer, executed: ExecutedPod
    ) -> None:
        startup, readiness, liveness = spec.startup_probe, spec.readiness_probe, spec.liveness_probe
        started = startup is None
        failures = 0
        while not executed.stop.is_set():
            process = running.process.proc
            if process is not None and process.poll() is not None:
                executed.error = f"{self.container} exited with {process.returncode}"
                if executed.ready:
                    report_ready(self.api, pod, ready=False, pod_ip=executed.address or POD_IP)
                return
            if not started:
                started = _probe(running, startup)
                period = startup.period_seconds or 10
            else:
                ready = readiness is None or _probe(running, readiness)
                if ready != executed.ready:
                    report_ready(self.api, pod, ready=ready, pod_ip=executed.address or POD_IP)
                    executed.ready = ready
                period = (readiness.period_seconds if readiness else None) or 10
                if liveness is not None:
                    failures = 0 if _probe(running, liveness) else failures + 1
                    if failures >= (liveness.failure_threshold or 3):
                        executed.error = f"{self.container} failed its liveness probe"
                        report_ready(self.api, pod, ready=False, pod_ip=executed.address or POD_IP)
                        return
            executed.stop.wait(period)
