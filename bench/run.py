"""``make bench``: run every benchmark, then one table and ``bench/results/latest.json``.

Each script runs in its own process, one after the other (never two at once:
they would measure each other), and writes ``bench/results/<name>-<time>.json``
in the shape of common.py. This gathers the files this run wrote, prints one
markdown table of every row, and writes ``latest.json``: the machine, the
versions, each script's settings and model shapes, every sample. A script that
fails gets a row saying so; the others still run, and the exit status is 1.

Quick by default (a few minutes in all); ``BENCH_FULL=1`` runs each longer.

    .venv/bin/python bench/run.py                    # or: make bench
    .venv/bin/python bench/run.py pipeline mirror    # only these
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BENCH, RESULTS, full_mode, machine, markdown_table, row, stamp, versions

# Name -> (script, arguments always, extra arguments in quick mode; full mode runs
# each with its own defaults). The runtime's defaults (3 rounds of 1..16 streams
# against four servers) take longer than all the rest together.
QUICK_RUNTIME = ["--rounds", "1", "--streams", "1,8", "--tokens", "32"]
RUNS: dict[str, tuple[str, list[str], list[str]]] = {
    "runtime": ("runtime", [], QUICK_RUNTIME),
    # The real model (Gemma 3 270M Q4_K_M, sliding-window attention) beside the generated one.
    "runtime-gemma": ("runtime", ["--preset", "gemma", "--name", "runtime-gemma"], QUICK_RUNTIME),
}
for _script in ("gateway", "pipeline", "mirror", "coldstart"):
    RUNS[_script] = (_script, [], [])


def newest(name: str, since: float) -> Path | None:
    """The results file ``name`` wrote since ``since`` (runs go one at a time)."""
    found = [
        p
        for p in RESULTS.glob(f"{name}-*.json")
        if p.stat().st_mtime >= since and p.name[len(name) + 1].isdigit()
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def rows_of(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = report.get("rows")
    if isinstance(rows, list) and all(isinstance(r, dict) and "ratio" in r for r in rows):
        return rows
    return [dict(row(f"{name}: no rows", None, None, "", "the script wrote no rows"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help=f"run only these of {', '.join(RUNS)}")
    args = parser.parse_args()
    unknown = set(args.only) - set(RUNS)
    if unknown:
        parser.error(f"no benchmark {', '.join(sorted(unknown))}")
    full = full_mode()
    names = args.only or list(RUNS)
    reports: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    failed = False
    started_all = time.time()
    for name in names:
        script, always, quick = RUNS[name]
        argv = [sys.executable, str(BENCH / f"{script}.py"), *always]
        if not full:
            argv += quick
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        since = time.time()
        code = subprocess.run(argv, env=os.environ.copy(), check=False).returncode
        took = time.time() - since
        out = newest(name, since)
        if code != 0 or out is None:
            failed = True
            why = f"exited {code}" if code else "wrote no results"
            table.append(dict(row(f"{name}: failed", None, None, "", f"{why}; see its output")))
            reports[name] = {"failed": why, "seconds": took}
            continue
        report = json.loads(out.read_text())
        report["seconds"] = took
        report["file"] = str(out.relative_to(BENCH.parent))
        reports[name] = report
        table.extend(rows_of(report, name))
    latest: dict[str, Any] = {
        "when": stamp(),
        "full": full,
        "seconds": time.time() - started_all,
        "machine": machine(),
        "versions": versions(),
        "rows": table,
        "benchmarks": reports,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2, default=str))
    info = latest["machine"]
    print(
        f"\n{'full' if full else 'quick'} run, {latest['when']}, {info.get('cpu', '?')}, "
        f"{info['cpus']} CPUs, {info.get('memory_gib', '?')} GiB, "
        f"load {info['load_average'][0]:.1f}, {latest['seconds'] / 60:.1f} min; "
        "every sample in bench/results/latest.json\n"
    )
    print(markdown_table(table))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
