"""bench/common.py: the row shape, the ABBA interleaving and the table every benchmark shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # bench/ is a folder of scripts, not a package


def test_row_ratio_is_ours_over_baseline_and_none_without_both() -> None:
    assert common.row("x", 3.0, 2.0, "ms")["ratio"] == 1.5
    assert common.row("x", 3.0, None, "ms")["ratio"] is None
    assert common.row("x", 3.0, 0.0, "ms")["ratio"] is None
    assert "goal" not in common.row("x", 1.0, 1.0, "s")
    assert common.row("x", 1.0, 1.0, "s", goal="<= 1.3x")["goal"] == "<= 1.3x"


def test_interleaving_reverses_the_order_every_other_round() -> None:
    calls: list[str] = []

    def side(name: str) -> Callable[[], int]:
        def call() -> int:
            calls.append(name)
            return len(calls)

        return call

    samples = common.interleaved(4, {name: side(name) for name in "ab"})
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert samples == {"a": [1, 4, 5, 8], "b": [2, 3, 6, 7]}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 50) == 51.0
    assert common.percentile(values, 99) == 99.0
    assert common.percentile([7.0], 99) == 7.0


def test_one_markdown_table_with_missing_values_and_no_broken_cells() -> None:
    table = common.markdown_table(
        [
            common.row("fast", 0.5, 0.25, "ms", "a | b", goal="<= 1 ms"),
            common.row("failed", None, None, "", "exited 1"),
        ]
    ).splitlines()
    assert table[0] == "| row | ours | baseline | ratio | goal | note |"
    assert table[2] == "| fast | 0.5 ms | 0.25 ms | 2.00x | <= 1 ms | a / b |"
    assert table[3] == "| failed | n/a | n/a | n/a |  | exited 1 |"
