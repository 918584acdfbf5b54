"""What every benchmark script shares: the row shape, the machine, interleaving, the JSON.

A benchmark's figure is a ratio of two things measured in the same run,
interleaved, on this machine (``ours`` against ``baseline``); the absolute
values are there as context only, since they move from machine to machine and
minute to minute. Every script writes ``bench/results/<name>-<time>.json`` with
the same top-level keys (``benchmark``, ``when``, ``machine``, ``versions``,
``settings``, ``rows``, ``samples``); ``bench/run.py`` gathers them into
``bench/results/latest.json`` and one markdown table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, TypeVar

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
CACHE = Path.home() / ".cache" / "modelserve"
MODELS = CACHE / "bench-models"
T = TypeVar("T")


class Row(TypedDict):
    """One line of the table: ``ratio`` is ``ours / baseline`` (None when either is missing).

    ``goal`` (optional) is the target the issue sets, as text (``<= 1.3x``);
    ``note`` says what was measured, how often, and anything a reader must know.
    """

    row: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    unit: str
    note: str
    goal: NotRequired[str]


def row(
    name: str,
    ours: float | None,
    baseline: float | None,
    unit: str,
    note: str = "",
    goal: str = "",
) -> Row:
    ratio = None if ours is None or baseline is None or baseline == 0 else ours / baseline
    made = Row(row=name, ours=ours, baseline=baseline, ratio=ratio, unit=unit, note=note)
    if goal:
        made["goal"] = goal
    return made


def full_mode() -> bool:
    """``BENCH_FULL=1``: the longer runs (bigger objects, more rounds). Read by mains only."""
    return os.environ.get("BENCH_FULL", "") not in ("", "0", "false", "no")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); the same rule in every script."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(rounds: int, sides: Mapping[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Call every side once per round, the order reversed every other round (ABBA), so
    drift, caches and the other load on the machine fall on all sides alike."""
    samples: dict[str, list[T]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(sides[name]())
    return samples


async def ainterleaved(
    rounds: int, sides: Mapping[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """:func:`interleaved` for coroutines, one at a time."""
    samples: dict[str, list[T]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(await sides[name]())
    return samples


def machine() -> dict[str, Any]:
    """What the figures were taken on (the ratios travel, the absolute times do not)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return info


def versions(*binaries: Sequence[str]) -> dict[str, str]:
    """Package versions, the commit, and ``binary --version`` of each argv given."""
    found: dict[str, str] = {}
    for package in ("modelserve", "llama-cpp-python", "httpx", "minio", "functions-framework"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    found["commit"] = commit.stdout.strip() or "unknown"
    for argv in binaries:
        try:
            out = subprocess.run(list(argv), capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            out = f"unavailable: {exc}"
        found[Path(argv[0]).name] = out.strip().splitlines()[0] if out.strip() else "unknown"
    return found


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(
    name: str,
    rows: Sequence[Row],
    *,
    settings: Mapping[str, Any],
    samples: Any,
    extra_versions: Mapping[str, str] | None = None,
    **more: Any,
) -> Path:
    """``bench/results/<name>-<time>.json`` in the shared shape; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = stamp()
    out = RESULTS / f"{name}-{when}.json"
    report = {
        "benchmark": name,
        "when": when,
        "machine": machine(),
        "versions": {**versions(), **(extra_versions or {})},
        "settings": dict(settings),
        "rows": list(rows),
        "samples": samples,
        **more,
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    return out


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    magnitude = abs(value)
    text = (
        f"{value:.0f}" if magnitude >= 100 else f"{value:.3g}" if magnitude < 1 else f"{value:.1f}"
    )
    return f"{text} {unit}".strip()


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The one table ``make bench`` prints: row, ours, baseline, ratio, goal, note."""
    lines = [
        "| row | ours | baseline | ratio | goal | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for item in rows:
        unit = str(item.get("unit", ""))
        ratio = item.get("ratio")
        lines.append(
            "| {} | {} | {} | {} | {} | {} |".format(
                item.get("row", "?"),
                fmt(item.get("ours"), unit),
                fmt(item.get("baseline"), unit),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                item.get("goal", ""),
                str(item.get("note", "")).replace("|", "/").replace("\n", " "),
            )
        )
    return "\n".join(lines)


def run_measured(argv: Sequence[str], **kw: Any) -> tuple[str, float]:
    """Run ``argv`` to the end; (its stdout, wall seconds). A peak RSS comes from the child
    itself (VmHWM): wait4's ru_maxrss carries the parent's RSS at fork into the child's."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), stdout=subprocess.PIPE, check=False, **kw)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{list(argv)[:4]} exited {done.returncode}")
    return done.stdout.decode(), wall


def quiet_werkzeug() -> None:
    """The functions' werkzeug servers log a line per request; a benchmark makes thousands."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def support_on_path() -> None:
    """tests/support (the real MinIO and Postgres starters) importable as ``support``."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


class EmbeddedStack:
    """``modelserve up`` without the CLI: the embedded stack on a free port in a thread.

    ``with EmbeddedStack(data_dir) as info:`` yields its StackInfo (URL, admin token).
    modelserve.stack is imported here, not at the top, so that processes which only
    need the helpers above (the mirror's children) do not carry it in their RSS.
    """

    def __init__(self, data_dir: Path) -> None:
        import asyncio
        import threading

        from modelserve.shared.net import free_port

        self.data_dir, self.port = data_dir, free_port()
        self.info: Any = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        from modelserve.stack import run_stack

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await run_stack(
                self.data_dir, "127.0.0.1", self.port, on_ready=self._on_ready, stop=self._stop
            )

        asyncio.run(main())

    def _on_ready(self, info: Any) -> None:
        self.info = info
        self._ready.set()

    def __enter__(self) -> Any:
        self._thread.start()
        if not self._ready.wait(120) or self.info is None:
            raise RuntimeError("the stack did not start within 120 s")
        return self.info

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


async def serve_requested(sessions: Any, settings: Any, issuer: Any, model: str) -> CloudEvent:
    """A server record and its serve.requested event, as ``POST /serve`` makes them:
    the start of a pipeline run that skips the API (the pipeline and mirror rows)."""
    import uuid

    from modelserve.functions.serve_request import open_serve
    from modelserve.shared import events as ev
    from modelserve.shared import modelserve as ms

    server = uuid.uuid4()
    return await open_serve(
        sessions,
        issuer,
        server=server,
        request=ev.ServeRequest(model=model, requested_by="admin", role="admin"),
        gateway_url=ms.gateway_url(settings.public_base_url, server),
        source="/bench",
    )
