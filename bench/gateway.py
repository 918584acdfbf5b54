"""What the gateway costs: the same runtime called directly and through the gateway.

Runs the embedded stack in-process (``modelserve up`` without the CLI), serves
the demo model, then measures both ways in to its runtime: its own port
("direct", the baseline) and ``<stack>/<server-uuid>/v1`` ("gateway"). The
clients run in a process of their own (this file with ``--worker``), so the
client never competes with the stack for this process's interpreter lock.

- Latency: one request at a time, alternating direct and gateway request by
  request, so drift hits both alike; a small non-streamed completion and a
  streamed chat (time to the first body byte, and to the end). "Added" is the
  median of the paired differences (gateway minus the direct request next to it).
- Throughput: ``--clients`` concurrent clients (keep-alive connections of a lean
  asyncio load generator in one process, ``RawConnection``) sending small
  completions for ``--seconds``, direct and gateway alternating round by round
  (``--rounds``); requests/s is the median over rounds.
- Serve -> ready for a fresh server (pipeline + runtime start), as context.
- ``--profile``: one more gateway load round under ``py-spy record`` (give its
  path, or have it on PATH) attached to this process; the top entries by own
  and by inclusive time are printed and kept in the JSON.

Prints a table and writes every sample to ``bench/results/gateway-<time>.json``;
``main`` also returns the rows (``row``, ``ours``, ``baseline``, ``ratio``,
``unit``, ``note``) for ``make bench``'s table. ``BENCH_FULL=1`` measures longer.

    make bench            # or: .venv/bin/python bench/gateway.py --requests 40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from common import EmbeddedStack

from modelserve.functions.api.client import ApiClient
from modelserve.functions.api.schemas import ServeBody
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.stack import stack_settings

RESULTS = Path(__file__).resolve().parent / "results"
COMPLETION = {"model": "demo", "prompt": "Hello", "max_tokens": 8, "temperature": 0}
CHAT_STREAM = {
    "model": "demo",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 32,
    "stream": True,
}
GOAL_ADDED_MS = 1.0
# Where the stack's loop waits for work: not time the gateway spends.
IDLE_LEAVES = {"EpollSelector.select (selectors.py)", "select (selectors.py)"}
GOAL_THROUGHPUT_RATIO = 0.8
Target = dict[str, Any]  # {"name", "base", "headers"}


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


# --- the client process (--worker) -----------------------------------------------------


def completion(http: httpx.Client, target: Target) -> dict[str, float]:
    started = time.perf_counter()
    response = http.post(
        f"{target['base']}/v1/completions", headers=target["headers"], json=COMPLETION
    )
    response.raise_for_status()
    return {"completion_s": time.perf_counter() - started}


def stream(http: httpx.Client, target: Target) -> dict[str, float]:
    started, first = time.perf_counter(), None
    with http.stream(
        "POST", f"{target['base']}/v1/chat/completions", headers=target["headers"], json=CHAT_STREAM
    ) as reply:
        reply.raise_for_status()
        for chunk in reply.iter_raw():
            if first is None and chunk:
                first = time.perf_counter()
    end = time.perf_counter()
    return {"first_byte_s": (first or end) - started, "stream_total_s": end - started}


def latency(spec: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Alternate the targets request by request, so drift hits both alike."""
    targets: list[Target] = spec["targets"]
    samples: dict[str, dict[str, list[float]]] = {t["name"]: {} for t in targets}
    with httpx.Client(timeout=60) as http:
        for i in range(spec["warmup"] + spec["requests"]):
            for call in (completion, stream):
                for target in targets if i % 2 == 0 else targets[::-1]:
                    result = call(http, target)
                    if i >= spec["warmup"]:
                        for metric, value in result.items():
                            samples[target["name"]].setdefault(metric, []).append(value)
    return samples


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads the answer.

    A load generator as lean as ``wrk``'s loop (none is installed here, and an
    httpx client spends more CPU per request than the gateway itself, which on a
    two-core machine would measure the client): the request bytes are built once,
    the answer is read by its Content-Length (or chunks) and only its status kept.
    """

    def __init__(self, base: str, path: str, headers: dict[str, str], body: bytes) -> None:
        url = httpx.URL(base)
        self.host, self.port = url.host, url.port or 80
        head = [
            f"POST {url.raw_path.decode().rstrip('/')}{path} HTTP/1.1",
            f"Host: {url.netloc.decode()}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> int:
        """The answer's status; reconnects once when the server had closed an idle connection."""
        for attempt in (0, 1):
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(self.request)
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.close()
                if attempt:
                    raise
                continue
            return await self._rest(head)
        raise AssertionError("unreachable")

    async def _rest(self, head: bytes) -> int:
        assert self.reader is not None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
        }
        if fields.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load_round(pool: list[RawConnection], seconds: float) -> Any:
    """Each connection a client: small completions back to back for ``seconds``."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()

    async def client(connection: RawConnection) -> None:
        while (started := time.perf_counter()) < deadline:
            try:
                status = await connection.post()
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] += 1
                await connection.close()
                continue
            if status != 200:
                errors[str(status)] += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in pool))
    wall = time.perf_counter() - began
    return {
        "rps": len(latencies) / wall,
        "ok": len(latencies),
        "wall_s": wall,
        "errors": dict(errors),
        "p50_s": statistics.median(latencies) if latencies else None,
    }


async def throughput(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rounds alternating the targets (order flipped every round), one pool per target."""
    targets: list[Target] = spec["targets"]
    body = json.dumps(COMPLETION).encode()
    pools = {
        t["name"]: [
            RawConnection(t["base"], "/v1/completions", t["headers"], body)
            for _ in range(spec["clients"])
        ]
        for t in targets
    }
    rounds: dict[str, list[dict[str, Any]]] = {t["name"]: [] for t in targets}
    try:
        for target in targets:  # warm: every connection open, caches filled
            await load_round(pools[target["name"]], spec["warmup_s"])
        for i in range(spec["rounds"]):
            for target in targets if i % 2 == 0 else targets[::-1]:
                result = await load_round(pools[target["name"]], spec["seconds"])
                rounds[target["name"]].append(result)
    finally:
        for pool in pools.values():
            for connection in pool:
                await connection.close()
    return rounds


def worker() -> None:
    """Read a spec on stdin, run it, print its result as JSON."""
    spec = json.load(sys.stdin)
    if spec["mode"] == "latency":
        result: Any = latency(spec)
    else:
        result = asyncio.run(throughput(spec))
    json.dump(result, sys.stdout)


def run_worker(spec: dict[str, Any]) -> Any:
    done = subprocess.run(
        [sys.executable, __file__, "--worker"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        env=os.environ,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the client process failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


# --- the profile -----------------------------------------------------------------------


def profiled_round(py_spy: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """A gateway-only load round with py-spy sampling this process (the stack's thread).

    py-spy runs until the load is over and is then stopped with SIGINT, on which
    it writes what it sampled.
    """
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached before the load begins
    try:
        load = run_worker({**spec, "rounds": 1})
    finally:
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=120)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode()[-2000:]}")
    return {
        "tool": "py-spy record --rate 200 (sampling, nonblocking)",
        "load": load,
        **top_entries(out),
    }


def frame_name(frame: str) -> str:
    """``func (/path/to/file.py:12)`` -> ``func (file.py)``: one entry per function."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else func


def top_entries(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Own and inclusive sample shares per function, from py-spy's collapsed stacks.

    Only the stack's event-loop thread counts (stacks through ``Stack._run``);
    py-spy leaves out samples where it was idle, and the loop's wait in
    ``select`` is counted apart, so the shares are of the time the thread was busy.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame_name(f) for f in stack.split(";")]
        if "Stack._run (gateway.py)" not in frames:
            continue
        n = int(count)
        if frames[-1] in IDLE_LEAVES:
            idle += n
            continue
        busy += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def share(counts: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / max(busy, 1), 1)) for f, n in counts.most_common(top)]

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "own_pct": share(own),
        "inclusive_pct": share(inclusive),
    }


# --- the run ---------------------------------------------------------------------------


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


def paired_added(gateway: list[float], direct: list[float]) -> float:
    return statistics.median(g - d for g, d in zip(gateway, direct, strict=True))


def make_rows(
    samples: dict[str, dict[str, list[float]]],
    load: dict[str, list[dict[str, Any]]],
    ready_times: list[float],
    clients: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for metric, name in (
        ("completion_s", "gateway: small completion p50"),
        ("first_byte_s", "gateway: first streamed byte p50"),
        ("stream_total_s", "gateway: 32-token stream total p50"),
    ):
        direct, gateway = samples["direct"][metric], samples["gateway"][metric]
        d, g = statistics.median(direct), statistics.median(gateway)
        added = paired_added(gateway, direct) * 1e3
        goal = f" (goal <= {GOAL_ADDED_MS:g} ms)" if metric != "stream_total_s" else ""
        rows.append(
            {
                "row": name,
                "ours": round(g * 1e3, 3),
                "baseline": round(d * 1e3, 3),
                "ratio": round(g / d, 3),
                "unit": "ms",
                "note": f"baseline: the runtime directly; added {added:+.2f} ms{goal}",
            }
        )
    d_rps = statistics.median(r["rps"] for r in load["direct"])
    g_rps = statistics.median(r["rps"] for r in load["gateway"])
    errors = sum(sum(r["errors"].values()) for rs in load.values() for r in rs)
    rows.append(
        {
            "row": f"gateway: requests/s at {clients} clients",
            "ours": round(g_rps, 1),
            "baseline": round(d_rps, 1),
            "ratio": round(g_rps / d_rps, 3),
            "unit": "req/s",
            "note": f"baseline: the runtime directly; goal >= {GOAL_THROUGHPUT_RATIO:g}x; "
            f"{errors} errors",
        }
    )
    rows.append(
        {
            "row": "serve -> ready (pipeline + runtime start)",
            "ours": round(statistics.median(ready_times), 3),
            "baseline": None,
            "ratio": None,
            "unit": "s",
            "note": f"median of {len(ready_times)}; context, no baseline",
        }
    )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| row | ours | baseline | ratio | unit | note |\n|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["row"], r["ours"], r["baseline"], r["ratio"], r["unit"], r["note"]]
        print("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    full = os.environ.get("BENCH_FULL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=200 if full else 40,
        help="Measured requests per target and kind (latency).",
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--serves", type=int, default=3, help="Serve -> ready repetitions.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients (throughput).")
    parser.add_argument(
        "--rounds",
        type=int,
        default=9 if full else 5,
        help="Throughput rounds per target, alternated.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0 if full else 2.0,
        help="Length of one throughput round.",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="py-spy",
        default=None,
        metavar="PY_SPY",
        help="Profile one more gateway load round with py-spy (path or name).",
    )
    parser.add_argument("--parallel", type=int, default=8, help="The runtime's n_parallel.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return []
    py_spy = shutil.which(args.profile) if args.profile else None
    if args.profile and py_spy is None:
        parser.error(f"no py-spy at {args.profile!r}")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        with EmbeddedStack(data_dir) as info, ApiClient(info.url, info.admin_token) as client:
            ready_times = serve_to_ready(client, args.serves)
            # Room for every client in the runtime's queue: a 503 for a full queue
            # would measure the queue, not the gateway.
            params = {"n_parallel": args.parallel, "max_queue": 2 * args.clients}
            accepted = client.serve(
                ServeBody.model_validate({"model": "demo", "runtime_params": params})
            )
            client.wait(accepted.server_uuid, lambda s: None, timeout=120)
            targets = [
                {
                    "name": "direct",
                    "base": internal_url(data_dir, accepted.server_uuid),
                    "headers": {},
                },
                {
                    "name": "gateway",
                    "base": f"{info.url}/{accepted.server_uuid}",
                    "headers": {"Authorization": f"Bearer {info.admin_token}"},
                },
            ]
            samples = run_worker(
                {
                    "mode": "latency",
                    "targets": targets,
                    "requests": args.requests,
                    "warmup": args.warmup,
                }
            )
            load_spec = {
                "mode": "load",
                "targets": targets,
                "clients": args.clients,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "warmup_s": 1.0,
            }
            load = run_worker(load_spec)
            if py_spy is not None:
                out = RESULTS / f"gateway-profile-{stamp}.txt"
                profile = profiled_round(py_spy, {**load_spec, "targets": targets[1:]}, out)

    rows = make_rows(samples, load, ready_times, args.clients)
    print(
        f"\ngateway vs the runtime directly, demo model (tiny GGUF): latency medians of "
        f"{args.requests} alternated requests; requests/s medians of {args.rounds} "
        f"alternated {args.seconds:g} s rounds at {args.clients} clients"
    )
    print_table(rows)
    if profile is not None:
        print(
            f"\nprofile (py-spy, the stack's thread, {profile['busy_samples']} busy samples, "
            f"{profile['idle_samples']} idle): own time"
        )
        for frame, pct in profile["own_pct"][:15]:
            print(f"  {pct:5.1f}%  {frame}")
        print("inclusive")
        for frame, pct in profile["inclusive_pct"][:25]:
            print(f"  {pct:5.1f}%  {frame}")

    out = RESULTS / f"gateway-{stamp}.json"
    report: dict[str, Any] = {
        "benchmark": "gateway",
        "when": stamp,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "rows": rows,
        "samples_s": samples,
        "load_rounds": load,
        "serve_to_ready_s": ready_times,
        "profile": profile,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
