"""A real Prometheus (Debian's ``prometheus``) scraping given targets, per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from modelserve.shared.net import free_port
from support.procs import ServerProcess, find_binary

INSTALL_HINT = "apt-get install prometheus (.ci/run does)"


@dataclass
class PrometheusServer:
    url: str
    process: ServerProcess
    base_dir: Path

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_prometheus(
    targets: Mapping[str, dict[str, str]],
    port: int | None = None,
    interval: str = "1s",
    bearer: str | None = None,
) -> PrometheusServer:
    """Prometheus on ``port`` (a free loopback one when None) scraping each
    ``host:port`` in ``targets`` at ``/metrics`` with those target labels (what a
    PodMonitor's relabelling gives); ``bearer``: the scrape token it sends, as the
    platform PodMonitor sends MODELSERVE_METRICS_TOKEN."""
    binary = find_binary("prometheus", hint=INSTALL_HINT)
    base = Path(tempfile.mkdtemp(prefix="modelserve-prometheus-"))
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "modelserve",
                **({"authorization": {"type": "Bearer", "credentials": bearer}} if bearer else {}),
                "static_configs": [
                    {"targets": [target], "labels": dict(labels)}
                    for target, labels in targets.items()
                ],
            }
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = port or free_port()
    process = ServerProcess(
        name="prometheus",
        argv=[
            binary,
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=base / "prometheus.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200)
    return PrometheusServer(url, process, base)


def promtool() -> str:
    return find_binary("promtool", hint=INSTALL_HINT)
