"""The serve pipeline: ``serve.requested`` -> ``server.applied``, and what hosting it costs.

For a model already in the store (availability -> contract -> apply), the
embedded broker (functions/broker/, the real Trigger manifests of config/)
delivers every event to the steps in one of three ways, interleaved sample by
sample in one run:

- ``in-process``: the broker calls each step's handler directly (``run_step``,
  what functions-framework would call, without HTTP): the floor;
- ``functions-framework, threads``: every step's functions-framework app on its
  own loopback port in this process (werkzeug), as ``modelserve up`` runs them;
- ``functions-framework, processes``: one ``functions-framework --target <step>``
  process per step (gunicorn, the functions image's command: Knative's path).

Each of them once as is and once with every event delivered twice (the steps
must dedupe; each reply is published twice again, so apply gets 8 deliveries).
A sample is the time from publishing ``serve.requested`` until the chain is
quiet: ``server.applied`` published and every delivery answered, the server
checked ``pending``. (Not the arrival of ``server.applied`` alone: with
duplicates it is sometimes never published, a duplicate of
``contract.approved`` that saw the server already moving records "no reply" first,
and the original then answers as it did; the ModelServe is written all the same.
The rows count how often.) The server record is created before the clock starts
(``POST /serve`` does that before it publishes). All sides share one SQLite
database and directory store (the embedded platform).

    .venv/bin/python bench/pipeline.py            # BENCH_FULL=1: more samples
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cloudevents.http import CloudEvent
from common import (
    REPO,
    Row,
    ainterleaved,
    full_mode,
    median,
    percentile,
    quiet_werkzeug,
    row,
    serve_requested,
    write_results,
)

from modelserve import resources
from modelserve.functions import host
from modelserve.functions.broker import triggers
from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.context_factory import build_context
from modelserve.functions.steps.context import StepContext
from modelserve.functions.steps.registry import DEAD_LETTER, STEPS
from modelserve.functions.steps.runner import run_step
from modelserve.shared import events as ev
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.gguf_synth import write_synthetic_gguf
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings

MODEL = "bench-pipeline"
ENDS = {ev.SERVER_APPLIED, ev.SERVE_FAILED}


class InProcessSteps(httpx.AsyncBaseTransport):
    """The broker's HTTP client, answered by calling the step in this event loop:
    ``http://<service>/`` -> ``run_step`` -> the reply as functions-framework sends it."""

    def __init__(self, context: StepContext) -> None:
        self.context = context
        self.steps = {s.service: s for s in (*STEPS.values(), DEAD_LETTER)}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[request.url.host]
        body = await request.aread()
        event = ev.decode(dict(request.headers), body)
        outcome = await run_step(step.name, step.handler, event, self.context)
        if outcome.reply is None:
            return httpx.Response(outcome.status, content=outcome.message.encode())
        headers, reply = ev.encode_binary(outcome.reply)
        return httpx.Response(outcome.status, headers=headers, content=reply)


@dataclass
class TimedBroker(EmbeddedBroker):
    """The embedded broker, noting when the chain's last event for a server arrives."""

    ends: dict[str, asyncio.Future[tuple[float, str]]] = field(default_factory=dict)

    async def publish(self, event: CloudEvent) -> None:
        if event["type"] in ENDS:
            waiter = self.ends.get(str(event["subject"]))
            if waiter is not None and not waiter.done():
                waiter.set_result((time.perf_counter(), str(event["type"])))
        await super().publish(event)


def settings_for(data_dir: Path) -> Settings:
    """The embedded platform's settings (SQLite, directory store, local catalog)."""
    return load_settings(
        mode="local",
        dev=True,
        data_dir=data_dir,
        jwt_secret=secrets.token_hex(32),
        log_level="WARNING",
    )


def environment(settings: Settings) -> dict[str, str]:
    """The same settings as MODELSERVE_* variables, for the function processes."""
    assert settings.jwt_secret is not None
    return {
        **os.environ,
        "MODELSERVE_MODE": "local",
        "MODELSERVE_DEV": "1",
        "MODELSERVE_DATA_DIR": str(settings.data_dir),
        "MODELSERVE_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "MODELSERVE_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def function_processes(settings: Settings, logs: Path) -> Iterator[dict[str, str]]:
    """One ``functions-framework`` process per step (the image's command); service -> URL."""
    binary = Path(sys.executable).with_name("functions-framework")
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    env = environment(settings)
    try:
        for service, target in host.targets().items():
            port = free_port()
            argv = [str(binary), "--source", str(REPO / "functions" / "main.py")]
            argv += ["--target", target, "--host", "127.0.0.1", "--port", str(port)]
            log = (logs / f"{target}.log").open("wb")
            processes.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            )
            urls[service] = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        for url, process in zip(urls.values(), processes, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{url}: exited {process.returncode}; see {logs}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}metrics", timeout=2).status_code == 200:
                        break  # the host (database, store) is built on this first request
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url}: not up within 120 s; see {logs}")
                time.sleep(0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
        self.issuer = TokenIssuer.from_settings(settings)
        self.rules = triggers.pipeline_rules(resources.config_dir())
        # Serves whose server.applied never came (a duplicate answered first; see README).
        self.unapplied: dict[str, int] = {}

    async def requested(self) -> CloudEvent:
        return await serve_requested(self.sessions, self.settings, self.issuer, MODEL)

    def sampler(
        self, label: str, http: httpx.AsyncClient, resolve: Callable[[str], str], twice: bool
    ) -> Callable[[], Awaitable[float]]:
        """One serve per call: seconds from publishing serve.requested until the chain is
        quiet (every delivery answered, duplicates too), the server checked ``pending``."""
        broker = TimedBroker(self.rules, resolve, http, duplicate_deliveries=twice)

        async def sample() -> float:
            event = await self.requested()
            server = str(event["subject"])
            waiter: asyncio.Future[tuple[float, str]] = asyncio.get_running_loop().create_future()
            broker.ends[server] = waiter
            started = time.perf_counter()
            await broker.publish(event)
            try:
                async with asyncio.timeout(120):
                    await broker.drain()  # the duplicates' deliveries too
            except TimeoutError:
                seen = [e["type"] for e in broker.seen]
                raise RuntimeError(f"not quiet within 120 s; seen {seen}") from None
            ended = time.perf_counter()
            broker.seen.clear()
            async with self.sessions() as session:
                status = (await repo.get_server(session, uuid.UUID(server))).status
            if status != ServerStatus.PENDING or broker.dead:
                raise RuntimeError(f"the serve ended {status}; dead letters: {broker.dead}")
            if not waiter.done():
                self.unapplied[label] = self.unapplied.get(label, 0) + 1
            return ended - started

        return sample


async def measure(
    settings: Settings, samples: int, warmup: int, logs: Path
) -> tuple[dict[str, list[float]], dict[str, int]]:
    bench = Bench(settings)
    context = build_context(settings)
    await context.store.ensure_ready()
    local = httpx.AsyncClient(transport=InProcessSteps(context), timeout=120)
    remote = httpx.AsyncClient(timeout=120)
    host.start(lambda: build_context(settings))
    threads, servers = await asyncio.to_thread(host.serve_functions)
    try:
        with function_processes(settings, logs) as processes:
            hostings: dict[str, Callable[[str], str]] = {
                "in-process": lambda service: f"http://{service}/",
                "functions-framework, threads": threads.__getitem__,
                "functions-framework, processes": processes.__getitem__,
            }
            sides: dict[str, Callable[[], Awaitable[float]]] = {}
            for name, resolve in hostings.items():
                http = local if name == "in-process" else remote
                for twice in (False, True):
                    label = f"{name}, every event twice" if twice else name
                    sides[label] = bench.sampler(label, http, resolve, twice)
            await ainterleaved(warmup, sides)  # pools, caches, first imports
            bench.unapplied.clear()
            return await ainterleaved(samples, sides), dict(bench.unapplied)
    finally:
        for server in servers:
            server.shutdown()
        await asyncio.to_thread(host.stop)
        await local.aclose()
        await remote.aclose()
        await context.http.aclose()


def table_rows(times: dict[str, list[float]], unapplied: dict[str, int]) -> list[Row]:
    ms_ = {name: [t * 1e3 for t in values] for name, values in times.items()}
    n = len(next(iter(ms_.values())))
    rows: list[Row] = []
    for hosting in ("functions-framework, processes", "functions-framework, threads"):
        for q in (50, 99):
            rows.append(
                row(
                    f"pipeline p{q}: {hosting} vs steps in-process",
                    percentile(ms_[hosting], q),
                    percentile(ms_["in-process"], q),
                    "ms",
                    f"serve.requested -> server.applied (the chain quiet), mirrored model, "
                    f"{n} serves each; the difference is the hosting (HTTP, functions-framework)",
                )
            )
    for hosting in ("in-process", "functions-framework, processes", "functions-framework, threads"):
        label = f"{hosting}, every event twice"
        twice = ms_[label]
        lost = unapplied.get(label, 0)
        rows.append(
            row(
                f"pipeline p50: every event twice vs once ({hosting})",
                median(twice),
                median(ms_[hosting]),
                "ms",
                f"p99 {percentile(twice, 99):.1f} vs {percentile(ms_[hosting], 99):.1f} ms; "
                f"{n} serves each; server.applied never published in {lost} of {n} "
                "(a duplicate of contract.approved answered first; the ModelServe was written)",
            )
        )
    return rows


def main() -> None:
    quiet_werkzeug()
    full = full_mode()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100 if full else 30)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-pipeline-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = settings_for(data_dir)
        logs = Path(tmp) / "logs"
        logs.mkdir()

        async def run() -> tuple[dict[str, list[float]], dict[str, int]]:
            await upgrade(make_engine(settings.resolved_database_url))
            # Mirrored once up front: the measured serves find the model in the store.
            write_synthetic_gguf(settings.resolved_catalog_dir / f"{MODEL}.gguf", "tiny")
            first = await measure_mirror_once(settings)
            print(f"mirrored {MODEL} once ({first:.2f} s); measuring", flush=True)
            return await measure(settings, args.samples, args.warmup, logs)

        times, unapplied = asyncio.run(run())
    rows = table_rows(times, unapplied)
    out = write_results(
        "pipeline",
        rows,
        settings={"samples": args.samples, "warmup": args.warmup, "model": "tiny", "full": full},
        samples={"seconds": times, "server_applied_missing": unapplied},
    )
    for item in rows:
        print(f"{item['row']}: {item['ours']:.1f} vs {item['baseline']:.1f} ms")
    print(f"wrote {out}")


async def measure_mirror_once(settings: Settings) -> float:
    """One serve through the whole chain (model.missing -> mirror) with steps in-process."""
    context = build_context(settings)
    await context.store.ensure_ready()
    async with httpx.AsyncClient(transport=InProcessSteps(context), timeout=120) as http:
        bench = Bench(settings)
        took = await bench.sampler("mirror", http, lambda service: f"http://{service}/", False)()
    await context.http.aclose()
    return took


if __name__ == "__main__":
    main()
