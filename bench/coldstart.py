"""Cold start: ``POST /serve`` -> first token through the gateway, against the runtime's floor.

The embedded stack (``modelserve up``, in-process) with a generated GGUF in its
local catalog, mirrored once before the clock runs. Then, round by round,
interleaved, for each preset (``small``, ~200 MB, and ``medium``, ~600 MB):

- ``serve``: ``POST /serve``, ``GET /servers/<uuid>`` every 10 ms until it is
  ``loading`` or ``ready`` (from then on the gateway waits for the runtime
  itself), then a streamed completion through the gateway; the clock stops at
  the first token. The server is deleted (and its process gone) afterwards.
- ``floor``: the same runtime command on the same file, started by hand
  (``python -m modelserve runtime --model <the stored GGUF>``), its readiness
  polled every 10 ms, then the same streamed completion sent to it directly.
- ``wake``: a server that was served and used, then scaled to zero by the
  local backend (its ModelServe's ``idleTimeoutSeconds`` lowered to 1 s, as an
  operator would edit it); the clock runs from the request through the gateway,
  which wakes it, to the first token.

The differences: the pipeline, the backend's start (which also checks the
file's sha256 before loading, the floor does not), the polling, the gateway hop.

    .venv/bin/python bench/coldstart.py            # BENCH_FULL=1: more rounds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import (
    MODELS,
    EmbeddedStack,
    Row,
    full_mode,
    interleaved,
    median,
    quiet_werkzeug,
    row,
    write_results,
)

from modelserve.shared.gguf_synth import PRESETS, write_synthetic_gguf
from modelserve.shared.net import free_port

POLL = 0.01
BODY = {"prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True}


def first_token(http: httpx.Client, base: str, model: str, headers: dict[str, str]) -> float:
    """Send the streamed completion; perf_counter() at its first text chunk."""
    body = {**BODY, "model": model}
    with http.stream("POST", f"{base}/v1/completions", json=body, headers=headers) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("text") is not None:
                    return time.perf_counter()
    raise RuntimeError(f"{base}: the stream ended without a token")


class ColdStart:
    def __init__(self, info: Any, data_dir: Path) -> None:
        self.url, self.data_dir = info.url, data_dir
        self.auth = {"Authorization": f"Bearer {info.admin_token}"}
        self.http = httpx.Client(timeout=300)

    def status(self, server: str) -> str:
        reply = self.http.get(f"{self.url}/servers/{server}", headers=self.auth)
        if reply.status_code == 404:
            return "deleted"
        reply.raise_for_status()
        return str(reply.json()["status"])

    def until(self, server: str, wanted: set[str], timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.status(server)) not in wanted:
            if status == "failed" or time.monotonic() > deadline:
                detail = self.http.get(f"{self.url}/servers/{server}", headers=self.auth).text
                raise RuntimeError(f"server {server} is {status}, wanted {wanted}: {detail}")
            time.sleep(POLL)
        return status

    def serve(self, model: str) -> str:
        reply = self.http.post(f"{self.url}/serve", json={"model": model}, headers=self.auth)
        reply.raise_for_status()
        return str(reply.json()["server_uuid"])

    def delete(self, server: str) -> None:
        self.http.delete(f"{self.url}/servers/{server}", headers=self.auth).raise_for_status()
        self.until(server, {"deleted"}, timeout=60)

    def manifest(self, server: str) -> Path:
        for path in (self.data_dir / "modelserves").glob("*/*.json"):
            if json.loads(path.read_text())["spec"]["serverUuid"] == server:
                return path
        raise RuntimeError(f"no ModelServe for {server}")

    def stored_file(self, model: str) -> Path:
        """Mirror ``model`` once (a serve, deleted when ready); the GGUF the backend runs."""
        server = self.serve(model)
        self.until(server, {"ready"})
        uri = json.loads(self.manifest(server).read_text())["spec"]["storageUri"]
        self.delete(server)
        return Path(uri.removeprefix("file://"))

    def serve_to_token(self, model: str) -> float:
        started = time.perf_counter()
        server = self.serve(model)
        self.until(server, {"loading", "ready"})
        took = first_token(self.http, f"{self.url}/{server}", model, self.auth) - started
        self.delete(server)
        return took

    def wake_to_token(self, model: str) -> float:
        server = self.serve(model)
        self.until(server, {"ready"})
        first_token(self.http, f"{self.url}/{server}", model, self.auth)  # it was used
        path = self.manifest(server)
        manifest = json.loads(path.read_text())
        manifest["spec"]["idleTimeoutSeconds"] = 1
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps(manifest))
        staging.replace(path)  # whole, never half-written: the backend rereads it each pass
        self.until(server, {"idle"}, timeout=60)
        started = time.perf_counter()
        took = first_token(self.http, f"{self.url}/{server}", model, self.auth) - started
        self.delete(server)
        return took


def floor(model: str, path: Path, logs: Path) -> float:
    """The runtime started by hand on the stored file, asked directly."""
    port = free_port()
    argv = [sys.executable, "-m", "modelserve", "runtime", "--model", str(path)]
    argv += ["--model-name", model, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    log = (logs / f"floor-{model}.log").open("ab")
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(timeout=300) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the runtime exited {process.returncode}; see {logs}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                        break
                time.sleep(POLL)
            return first_token(http, base, model, {}) - started
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)


def model_file(preset: str) -> Path:
    path = MODELS / f"{preset}.gguf"
    if not path.exists():
        write_synthetic_gguf(path, preset)
    return path


def table_rows(samples: dict[str, dict[str, list[float]]], sizes: dict[str, int]) -> list[Row]:
    rows: list[Row] = []
    for preset, sides in samples.items():
        base = median(sides["floor"])
        n = len(sides["floor"])
        size = f"{preset} ({sizes[preset] / 2**20:.0f} MiB)"
        rows.append(
            row(
                f"cold start {size}: POST /serve -> first token vs runtime by hand",
                median(sides["serve"]),
                base,
                "s",
                f"embedded stack, mirrored model, status polled every {POLL * 1e3:.0f} ms; "
                f"medians of {n} interleaved rounds",
                goal="<= 1.3x",
            )
        )
        rows.append(
            row(
                f"wake from idle {size}: request -> first token vs runtime by hand",
                median(sides["wake"]),
                base,
                "s",
                "the local backend stopped it as idle (idleTimeoutSeconds 1); the gateway "
                f"wakes it; medians of {n}",
                goal="<= 1.3x",
            )
        )
    return rows


def main() -> None:
    quiet_werkzeug()
    full = full_mode()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small,medium")
    parser.add_argument("--rounds", type=int, default=5 if full else 3)
    args = parser.parse_args()
    presets = args.presets.split(",")
    for preset in presets:
        if preset not in PRESETS:
            raise SystemExit(f"unknown preset {preset}")
    samples: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-coldstart-") as tmp:
        data_dir, logs = Path(tmp) / "data", Path(tmp) / "logs"
        logs.mkdir()
        with EmbeddedStack(data_dir) as info:
            bench = ColdStart(info, data_dir)
            for preset in presets:
                name = f"bench-{preset}"
                catalog = data_dir / "catalog" / f"{name}.gguf"
                catalog.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(model_file(preset), catalog)
                sizes[preset] = catalog.stat().st_size
                stored = bench.stored_file(name)
                floor(name, stored, logs)  # warm-up: the page cache holds the file for all
                sides: dict[str, Callable[[], float]] = {
                    "serve": lambda name=name: bench.serve_to_token(name),  # type: ignore[misc]
                    "floor": lambda name=name, stored=stored: floor(name, stored, logs),  # type: ignore[misc]
                    "wake": lambda name=name: bench.wake_to_token(name),  # type: ignore[misc]
                }
                samples[preset] = interleaved(args.rounds, sides)
                print(
                    f"{preset}: "
                    + ", ".join(f"{k} {median(v):.2f} s" for k, v in samples[preset].items()),
                    flush=True,
                )
    rows = table_rows(samples, sizes)
    out = write_results(
        "coldstart",
        rows,
        settings={"presets": presets, "rounds": args.rounds, "poll_s": POLL, "full": full},
        samples=samples,
        models={p: {"shape": PRESETS[p].__dict__, "bytes": sizes[p]} for p in presets},
    )
    for item in rows:
        print(f"{item['row']}: {item['ours']:.2f} vs {item['baseline']:.2f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
