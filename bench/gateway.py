"""What the gateway costs: the same runtime called directly and through the gateway.

Runs the embedded stack in-process (``modelserve up`` without the CLI), serves
the demo model, then alternates requests to the runtime's own port and to
``<stack>/<server-uuid>/v1`` so both see the same machine state. Also times
serve -> ready for a fresh server (pipeline + runtime start). Prints a table of
medians and the gateway/direct ratio and writes every sample to
``bench/results/gateway-<time>.json``.

    make bench            # or: .venv/bin/python bench/gateway.py --requests 40
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import Row, row

from modelserve.functions.api.client import ApiClient
from modelserve.functions.api.schemas import ServeBody
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.net import free_port
from modelserve.stack import StackInfo, run_stack, stack_settings

RESULTS = Path(__file__).resolve().parent / "results"


class Stack:
    """The embedded stack on a free port in a background thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.info: StackInfo | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await run_stack(
                self.data_dir, "127.0.0.1", self.port, on_ready=self._on_ready, stop=self._stop
            )

        asyncio.run(main())

    def _on_ready(self, info: StackInfo) -> None:
        self.info = info
        self._ready.set()

    def __enter__(self) -> StackInfo:
        self._thread.start()
        if not self._ready.wait(120) or self.info is None:
            raise RuntimeError("the stack did not start within 120 s")
        return self.info

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def internal_url(data_dir: Path, server: uuid.UUID) -> str:
    settings = stack_settings(data_dir, "127.0.0.1", 8080, dev=True)

    async def lookup() -> str | None:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                return (await repo.get_server(session, server)).internal_url
        finally:
            await engine.dispose()

    url = asyncio.run(lookup())
    if url is None:
        raise RuntimeError(f"server {server} has no runtime URL")
    return url


def completion(http: httpx.Client, base: str, headers: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    response = http.post(
        f"{base}/v1/completions",
        headers=headers,
        json={"model": "demo", "prompt": "Hello", "max_tokens": 8, "temperature": 0},
    )
    response.raise_for_status()
    return {"completion_s": time.perf_counter() - started}


def stream(http: httpx.Client, base: str, headers: dict[str, str]) -> dict[str, float]:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 32,
        "stream": True,
    }
    started, first = time.perf_counter(), None
    with http.stream("POST", f"{base}/v1/chat/completions", headers=headers, json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"first_chunk_s": (first or end) - started, "stream_total_s": end - started}


def side_by_side(
    targets: dict[str, tuple[str, dict[str, str]]],
    calls: list[Callable[[httpx.Client, str, dict[str, str]], dict[str, float]]],
    requests: int,
    warmup: int,
) -> dict[str, dict[str, list[float]]]:
    """Alternate the targets request by request, so drift hits both alike."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in targets}
    with httpx.Client(timeout=60) as http:
        for i in range(warmup + requests):
            for call in calls:
                for name, (base, headers) in targets.items():
                    result = call(http, base, headers)
                    if i >= warmup:
                        for metric, value in result.items():
                            samples[name].setdefault(metric, []).append(value)
    return samples


def serve_to_ready(client: ApiClient, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        accepted = client.serve(ServeBody.model_validate({"model": "demo"}))
        server = client.wait(accepted.server_uuid, lambda s: None, timeout=120, poll=0.05)
        if server.status != "ready":
            raise RuntimeError(f"serve failed: {server.status_message}")
        times.append(time.perf_counter() - started)
        client.delete(accepted.server_uuid)
    return times


def table_rows(
    medians: list[tuple[str, float, float, float, float]], ready_times: list[float], requests: int
) -> list[Row]:
    """The shared row shape (common.py) for ``make bench``'s table: gateway against direct."""
    labels = {
        "completion_s": "gateway: completion, 8 tokens, through the gateway vs direct",
        "first_chunk_s": "gateway: first streamed chunk, through the gateway vs direct",
        "stream_total_s": "gateway: stream of 32 tokens, through the gateway vs direct",
    }
    made = [
        row(
            labels[metric],
            gateway * 1e3,
            direct * 1e3,
            "ms",
            f"demo model, medians of {requests} alternated requests; "
            f"added {(gateway - direct) * 1e3:.2f} ms",
            goal="added <= 1 ms" if metric != "stream_total_s" else "",
        )
        for metric, direct, gateway, _, _ in medians
    ]
    made.append(
        row(
            "gateway: serve -> ready (demo model)",
            statistics.median(ready_times),
            None,
            "s",
            f"pipeline + runtime start, median of {len(ready_times)}; no baseline: context",
        )
    )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="Measured requests per target.")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--serves", type=int, default=3, help="Serve -> ready repetitions.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        with Stack(data_dir) as info, ApiClient(info.url, info.admin_token) as client:
            ready_times = serve_to_ready(client, args.serves)
            accepted = client.serve(ServeBody.model_validate({"model": "demo"}))
            client.wait(accepted.server_uuid, lambda s: None, timeout=120)
            targets = {
                "direct": (internal_url(data_dir, accepted.server_uuid), {}),
                "gateway": (
                    f"{info.url}/{accepted.server_uuid}",
                    {"Authorization": f"Bearer {info.admin_token}"},
                ),
            }
            samples = side_by_side(targets, [completion, stream], args.requests, args.warmup)

    rows = []
    for metric in ("completion_s", "first_chunk_s", "stream_total_s"):
        direct = statistics.median(samples["direct"][metric])
        gateway = statistics.median(samples["gateway"][metric])
        rows.append((metric, direct, gateway, gateway / direct, gateway - direct))
    print(f"\nmedians of {args.requests} requests each, alternated, demo model (tiny GGUF)\n")
    print(f"{'metric':<16}{'direct ms':>12}{'gateway ms':>12}{'ratio':>8}{'added ms':>10}")
    for metric, direct, gateway, ratio, added in rows:
        print(
            f"{metric:<16}{direct * 1e3:>12.2f}{gateway * 1e3:>12.2f}{ratio:>8.2f}"
            f"{added * 1e3:>10.2f}"
        )
    print(f"\nserve -> ready (pipeline + runtime start), median of {args.serves}: ", end="")
    print(f"{statistics.median(ready_times):.2f} s")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"gateway-{stamp}.json"
    report: dict[str, Any] = {
        "benchmark": "gateway",
        "when": stamp,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "requests": args.requests,
        "warmup": args.warmup,
        "medians_s": {
            metric: {"direct": d, "gateway": g, "ratio": r} for metric, d, g, r, _ in rows
        },
        "serve_to_ready_s": ready_times,
        "samples_s": samples,
    }
    report["rows"] = table_rows(rows, ready_times, args.requests)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
