"""Run a rendered Pod as host processes, exactly as its spec says, and report it Ready.

kwok plays the kubelet but runs no containers, and there is no container engine
here. This runs what a Pod spec says on this host instead: each container's
image is mapped to the program that image runs (only images this project's Pods
use are known; any other one is an error), with the container's own args and env
(``valueFrom`` Secret references and the downward API's fields resolved), and
every volume an empty temp folder that each ``mountPath`` in the args and env is
mapped to. It adds nothing the spec does not say, so a wrong argument, env var,
path, port or credential rendered from kserve/ (or by Knative) fails the test.

Known images:
- KServe's storage initializer (``kserve/storage-initializer``): its entrypoint
  script from the pinned KServe module (``python/storage-initializer/scripts/
  initializer-entrypoint``), run by this interpreter, which has ``kserve-storage``.
- our runtime (``ghcr.io/modelserve/runtime``): the container's own command,
  found in this interpreter's environment, where ``modelserve`` is installed.
- Knative's queue-proxy (``ko.local/knative-queue``, the name Knative gives a
  local build): the ``knative-queue`` binary ``.ci/build-knative`` built.

The pod network (:class:`PodNetwork`): each Pod gets a network namespace of its
own with one routable address (a veth pair; the host routes the address to it),
so its containers listen on the spec's own ports and addresses, share
``localhost`` as containers of a Pod do, and are reached from this host (the
gateway, Knative's activator and autoscaler) at the Pod IP reported in its
status, as in a cluster. Init containers run in the host's network: the MinIO
they pull from listens on this host's loopback. That needs root with
CAP_NET_ADMIN and CAP_SYS_ADMIN; without them :func:`check_pod_network` says so.

``run_init_containers``/``start_container``/``report_ready`` are the steps, for a
test that takes them one by one; :class:`PodExecutor` takes every matching Pod
through them as the kubelet would (probes at their periods, and the Pod's Ready
condition set back when another writer changed it).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from support.procs import MissingService, ServerProcess, find_binary
from support.toolchain import go_module

STORAGE_INITIALIZER = "kserve/storage-initializer"
RUNTIME_IMAGE = "ghcr.io/modelserve/runtime:"
QUEUE_IMAGE = "ko.local/knative-queue:"  # support/knative_serving.py configures it
QUEUE_BINARY = "knative-queue"
POD_IP = "10.244.0.100"  # in kwok's pod CIDR; for Pods nothing dials (no sandbox)
# Executed Pods' addresses: outside kwok's 10.244.0.0/16 and the Service CIDR.
POD_CIDR = ipaddress.ip_network("10.245.0.0/16")
# The pods' next hop (Calico's choice): link-local, answered by proxy ARP on the host side.
GATEWAY = "169.254.1.1"
STATUS_SYNC = 2.0  # seconds between checks that the Pod's reported status still holds
KUBELET_PROBE_AGENT = "kube-probe/1.37"  # what a kubelet's probes send (Knative checks it)


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
    """What an image runs when the container names no command."""
    repository = image.rsplit(":", 1)[0]
    if repository == STORAGE_INITIALIZER:
        module = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
        script = module / "python" / "storage-initializer" / "scripts" / "initializer-entrypoint"
        return [sys.executable, str(script)]
    if image.startswith(QUEUE_IMAGE):
        return [find_binary(QUEUE_BINARY, hint="run .ci/build-knative to build it")]
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


def _field(pod: Any, path: str, address: str | None) -> str:
    """The downward API's ``fieldRef`` values a kubelet fills in."""
    fields = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": "10.244.0.1",  # kwok's node address (support/kube.py)
    }
    if address is not None:
        fields["status.podIP"] = address
    if path not in fields:
        raise UnknownImage(f"fieldRef {path} is not one this executor fills in")
    return str(fields[path])


def _resource(container: Any, ref: Any) -> str:
    """A ``resourceFieldRef`` (limits.cpu, limits.memory, requests.*), as a kubelet rounds it."""
    kind, _, name = ref.resource.partition(".")
    resources = container.resources
    values = (getattr(resources, kind, None) or {}) if resources is not None else {}
    quantity = values.get(name)
    if quantity is None:
        raise UnknownImage(f"resourceFieldRef {ref.resource} has no value in the spec")
    from kubernetes.utils import parse_quantity

    divisor = parse_quantity(ref.divisor or "1")
    return str(math.ceil(parse_quantity(quantity) / divisor))  # rounded up, as the kubelet does


def _env(
    core: client.CoreV1Api,
    pod: Any,
    container: Any,
    mounts: dict[str, Path],
    base: Path,
    address: str | None,
) -> dict[str, str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(base),
    }
    for var in container.env or []:
        source = var.value_from
        if source is None:
            env[var.name] = _mapped(var.value or "", mounts)
        elif source.secret_key_ref is not None:
            env[var.name] = _secret_value(core, pod.metadata.namespace, source.secret_key_ref)
        elif source.field_ref is not None:
            env[var.name] = _field(pod, source.field_ref.field_path, address)
        elif source.resource_field_ref is not None:
            env[var.name] = _resource(container, source.resource_field_ref)
        else:
            raise UnknownImage(f"{container.name}: env {var.name} has an unsupported source")
    return env


def run_init_containers(
    api: client.ApiClient, pod: Any, base: Path, timeout: float = 120
) -> PodRun:
    """Run ``pod``'s init containers in order, volumes under ``base``; stop at a failure.

    They run in this host's network (the MinIO they pull from is on its loopback).
    """
    core = client.CoreV1Api(api)
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
        env = _env(core, pod, container, mounts, base, None)
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


class PodNetworkUnavailable(MissingService):
    """This host cannot give Pods network namespaces (not root, or no CAP_NET_ADMIN)."""


def _ip(*args: str) -> None:
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            raise PodNetworkUnavailable(f"{tool} is not installed (iproute2, util-linux)")
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PodNetworkUnavailable(
            f"`ip {' '.join(args)}` failed ({done.stderr.strip()}): executed Pods get a "
            "network namespace and a routable address each, which needs root with "
            "CAP_NET_ADMIN and CAP_SYS_ADMIN (docker run --cap-add NET_ADMIN --cap-add SYS_ADMIN)"
        )


NETNS_PREFIX = "modelserve-pod-"  # then the test process's pid: a dead one's are swept


def _sweep_dead_runs() -> None:
    """Remove the namespaces (and so the veths and routes) a killed test run left behind."""
    for path in Path("/run/netns").glob(f"{NETNS_PREFIX}*"):
        pid = path.name[len(NETNS_PREFIX) :].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True, check=False)


@dataclass(frozen=True)
class PodSandbox:
    """One Pod's network: namespace ``netns`` (in /run/netns) holding ``address``."""

    address: str
    netns: str

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this Pod's network namespace (nsenter execs it in place)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]


class PodNetwork:
    """Network namespaces with routable addresses, one per executed Pod.

    The host side of each veth pair routes the Pod's /32 to it and answers ARP
    for the Pods' next hop, so the host reaches every Pod at its address and each
    Pod reaches the host. Addresses come from :data:`POD_CIDR`, at random, so two
    test runs on one host do not take the same one (a taken one is skipped).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sandboxes: dict[str, PodSandbox] = {}
        _sweep_dead_runs()

    def attach(self) -> PodSandbox:
        """A fresh namespace and address; :meth:`detach` removes both."""
        tag = secrets.token_hex(4)
        netns, host_side = f"{NETNS_PREFIX}{os.getpid()}-{tag}", f"msp{tag}"
        _ip("netns", "add", netns)
        try:
            _ip("link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("link", "set", host_side, "up")
            Path(f"/proc/sys/net/ipv4/conf/{host_side}/proxy_arp").write_text("1")
            address = self._route(host_side)
            _ip("-n", netns, "addr", "add", f"{address}/32", "dev", "eth0")
            _ip("-n", netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
            _ip("-n", netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        except BaseException:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
            raise
        sandbox = PodSandbox(address, netns)
        with self._lock:
            self._sandboxes[netns] = sandbox
        return sandbox

    def _route(self, device: str) -> str:
        """Route a free address of :data:`POD_CIDR` to ``device`` (the kernel knows which are)."""
        for _ in range(64):
            address = str(POD_CIDR[secrets.randbelow(POD_CIDR.num_addresses - 2) + 1])
            done = subprocess.run(
                ["ip", "route", "add", f"{address}/32", "dev", device],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                return address
            if "File exists" not in done.stderr:
                _ip("route", "add", f"{address}/32", "dev", device)  # raises with the reason
        raise PodNetworkUnavailable(f"no free address in {POD_CIDR}")

    def detach(self, sandbox: PodSandbox) -> None:
        """Remove the namespace; its veth pair and the route go with it."""
        with self._lock:
            self._sandboxes.pop(sandbox.netns, None)
        subprocess.run(["ip", "netns", "del", sandbox.netns], capture_output=True, check=False)

    def close(self) -> None:
        with self._lock:
            left = list(self._sandboxes.values())
        for sandbox in left:
            self.detach(sandbox)


CLONE_NEWNET = 0x40000000


def _listener_in(netns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` inside ``netns`` (made by a thread that enters it).

    setns(2) moves only the calling thread; the socket keeps the namespace it was made in.
    """
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            made.append(listener)
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=make, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise PodNetworkUnavailable(f"cannot listen inside {netns}: {made[0]}")
    return made[0]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class LoopbackRelay:
    """The host's 127.0.0.1:``port`` also at 127.0.0.1:``port`` inside a Pod's namespace.

    For a control-plane process run as a Pod (Knative's autoscaler) whose
    kubeconfig names the API server on the host's loopback: in a cluster it
    would dial the API server's Service instead.
    """

    def __init__(self, sandbox: PodSandbox, port: int) -> None:
        self.port = port
        self._listener = _listener_in(sandbox.netns, port)
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name=f"relay-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                inside, _ = self._listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            self._open += [inside, outside]
            for source, sink in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


def check_pod_network() -> None:
    """Raise :class:`PodNetworkUnavailable`, naming what is missing, unless Pods can get one."""
    network = PodNetwork()
    network.detach(network.attach())


@dataclass
class RunningContainer:
    """A container of a Pod, started as a host process in the Pod's network namespace."""

    name: str
    process: ServerProcess
    spec: Any
    address: str

    def url(self, port: int | str, path: str = "/") -> str:
        """``http://<pod IP>:<port><path>``, a named port resolved from the container's ports."""
        return f"http://{self.address}:{self.port(port)}{path}"

    def port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in self.spec.ports or []:
            if declared.name == port:
                return int(declared.container_port)
        raise UnknownImage(f"{self.name} has no port named {port}")

    def probe_url(self, probe: Any) -> str:
        """The URL of an ``httpGet`` probe of this container, at the Pod's address."""
        return self.url(probe.http_get.port, probe.http_get.path or "/")


def _image_program(container: Any) -> list[str]:
    if container.image.startswith(RUNTIME_IMAGE):
        if not container.command:
            raise UnknownImage(f"{container.name}: the runtime image needs the spec's command")
        return list(container.command)
    return list(container.command or []) or _entrypoint(container.image)


def start_container(
    api: client.ApiClient, pod: Any, name: str, run: PodRun, base: Path, sandbox: PodSandbox
) -> RunningContainer:
    """Start container ``name`` of ``pod`` in ``sandbox``, with ``run``'s volumes.

    The runtime's command runs from this interpreter's environment (where the
    runtime image's ``modelserve`` is installed); args and env are the spec's,
    mount paths mapped to the volumes' folders. Addresses and ports are the
    spec's own: the Pod has its network namespace.
    """
    core = client.CoreV1Api(api)
    (container,) = [c for c in pod.spec.containers if c.name == name]
    program = _image_program(container)
    mounts = {
        m.mount_path: run.volumes[m.name]
        for m in container.volume_mounts or []
        if m.name in run.volumes
    }
    env = _env(core, pod, container, mounts, base, sandbox.address)
    argv = program + [_mapped(arg, mounts) for arg in container.args or []]
    process = ServerProcess(
        name=f"{pod.metadata.name}/{name}",
        argv=sandbox.wrap(argv),
        log_path=base / f"{name}.log",
        env=env,
        cwd=base,
    ).start()
    return RunningContainer(name, process, container, sandbox.address)


def report_ready(
    api: client.ApiClient,
    pod: Any,
    ready: bool = True,
    pod_ip: str = POD_IP,
    ready_containers: set[str] | None = None,
) -> None:
    """Write the Pod's status as a kubelet would once its containers run (and pass probes).

    Only for Pods kwok leaves alone (support/kube.py's ``executed_label``). The
    endpoint-slice controller turns ``pod_ip`` and the Ready condition into the
    Pod's Service endpoints. ``ready_containers`` (default: all when ``ready``)
    are the containers whose probes passed.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = "True" if ready else "False"
    if ready_containers is None:
        ready_containers = {c.name for c in pod.spec.containers} if ready else set()
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
                "ready": c.name in ready_containers,
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


@dataclass
class ExecutedPod:
    """One Pod the executor took on: what ran, its running containers, its address."""

    name: str
    uid: str
    run: PodRun | None = None
    containers: dict[str, RunningContainer] = field(default_factory=dict)
    address: str | None = None
    ready: bool = False
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def container(self) -> RunningContainer | None:
        """The model server's container (KServe's name for it)."""
        return self.containers.get("kserve-container")

    def stopped(self) -> bool:
        """Every container's process has exited and the sandbox is gone."""
        return self.done.is_set() and all(
            c.process.proc is None or c.process.proc.poll() is not None
            for c in self.containers.values()
        )

    def describe(self) -> str:
        lines = [f"pod {self.name}: ready={self.ready} address={self.address} error={self.error}"]
        for done in self.run.runs if self.run else []:
            lines.append(f"  init {done.name} -> {done.returncode}: {done.output[-1500:]}")
        for running in self.containers.values():
            lines.append(f"  {running.name}:\n{running.process.log_tail(20)}")
        return "\n".join(lines)


def _probe(container: RunningContainer, probe: Any) -> bool:
    """One probe, as the kubelet makes it: httpGet (with its headers) or tcpSocket."""
    timeout = probe.timeout_seconds or 1
    if probe.http_get is not None:
        headers = {"User-Agent": KUBELET_PROBE_AGENT}
        headers |= {h.name: h.value for h in probe.http_get.http_headers or []}
        try:
            url = container.probe_url(probe)
            return 200 <= httpx.get(url, headers=headers, timeout=timeout).status_code < 400
        except httpx.HTTPError:
            return False
    if probe.tcp_socket is not None:
        port = container.port(probe.tcp_socket.port)
        with (
            contextlib.suppress(OSError),
            socket.create_connection((container.address, port), timeout=timeout),
        ):
            return True
        return False
    raise UnknownImage(f"{container.name}: a probe this executor cannot make")


@dataclass
class _Prober:
    """A container's probes and how far they are."""

    running: RunningContainer
    started: bool = False
    ready: bool = False
    failures: int = 0
    due: float = 0.0


class PodExecutor:
    """Plays the kubelet's container part for the Pods kwok leaves alone (``selector``).

    Every Pod scheduled onto a node and matching ``selector`` in ``namespace`` is
    run as its spec says (init containers in order, then every container in a
    network namespace of its own from ``network``), and reported through its
    status: Running at once, Ready only once each container's startup probe and
    then its readiness probe pass (polled at the probes' own periods). A liveness
    probe failing ``failureThreshold`` times stops the Pod and reports it not
    ready. A Pod being deleted has its processes stopped and its namespace
    removed; kwok's pod-delete stage then removes the object.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        base: Path,
        network: PodNetwork,
    ) -> None:
        self.api, self.namespace, self.selector = api, namespace, selector
        self.base, self.network = base, network
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
            thread.join(timeout=20)
        for pod in self.pods.values():
            for running in pod.containers.values():
                running.process.stop()

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
        sandbox: PodSandbox | None = None
        try:
            executed.run = run_init_containers(self.api, pod, base)
            failed = [r for r in executed.run.runs if r.returncode != 0]
            if failed:
                executed.error = f"init container {failed[0].name} exited {failed[0].returncode}"
                return
            sandbox = self.network.attach()
            executed.address = sandbox.address
            for spec in pod.spec.containers:
                executed.containers[spec.name] = start_container(
                    self.api, pod, spec.name, executed.run, base, sandbox
                )
            report_ready(self.api, pod, ready=False, pod_ip=sandbox.address)
            self._probe_loop(pod, executed)
        except Exception as exc:
            executed.error = f"{type(exc).__name__}: {exc}"
        finally:
            # All at once, as a kubelet does (queue-proxy drains for 30 s on SIGTERM).
            stopping = [
                threading.Thread(target=r.process.stop) for r in executed.containers.values()
            ]
            for thread in stopping:
                thread.start()
            for thread in stopping:
                thread.join()
            if sandbox is not None:
                self.network.detach(sandbox)
            executed.done.set()

    def _probe_loop(self, pod: Any, executed: ExecutedPod) -> None:
        address = executed.address or POD_IP
        probers = [_Prober(running) for running in executed.containers.values()]
        synced = time.monotonic()
        while not executed.stop.is_set():
            now = time.monotonic()
            for prober in probers:
                running, spec = prober.running, prober.running.spec
                process = running.process.proc
                if process is not None and process.poll() is not None:
                    executed.error = f"{running.name} exited with {process.returncode}"
                    if executed.ready:
                        report_ready(self.api, pod, ready=False, pod_ip=address)
                    return
                if now < prober.due:
                    continue
                if not prober.started:
                    probe = spec.startup_probe
                    prober.started = probe is None or _probe(running, probe)
                    prober.due = now + ((probe.period_seconds or 10) if probe else 0)
                    continue
                readiness, liveness = spec.readiness_probe, spec.liveness_probe
                prober.ready = readiness is None or _probe(running, readiness)
                if liveness is not None:
                    prober.failures = 0 if _probe(running, liveness) else prober.failures + 1
                    if prober.failures >= (liveness.failure_threshold or 3):
                        executed.error = f"{running.name} failed its liveness probe"
                        report_ready(self.api, pod, ready=False, pod_ip=address)
                        return
                prober.due = now + ((readiness.period_seconds if readiness else None) or 10)
            ready = all(p.ready for p in probers)
            if ready != executed.ready or (
                now >= synced + STATUS_SYNC and self._drifted(pod, ready)
            ):
                ready_names = {p.running.name for p in probers if p.ready}
                report_ready(
                    self.api, pod, ready=ready, pod_ip=address, ready_containers=ready_names
                )
                executed.ready = ready
            if now >= synced + STATUS_SYNC:
                synced = now
            executed.stop.wait(0.2)

    def _drifted(self, pod: Any, ready: bool) -> bool:
        """Whether the Pod's Ready condition in the API says otherwise than its probes.

        Another writer may change it: the node lifecycle controller marks every Pod
        of a node not ready when the node's lease is late (kwok's, on a loaded
        host), and, as for a kubelet, it is this executor's job to set it back.
        """
        try:
            found = client.CoreV1Api(self.api).read_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace
            )
        except Exception:  # the API server is busy: the next sync looks again
            return False
        conditions = {c.type: c.status for c in found.status.conditions or []}
        return conditions.get("Ready") != ("True" if ready else "False")
