"""The reliability suite's ledger: what each case injected, what it checked, how it ended.

A test of ``tests/reliability`` calls ``reliability.case(...)`` for every hostile
thing it does (one test may try many) before it checks the outcome. When the
test passes its cases count as refused or survived; when it fails, every case it
recorded counts as a failure (and a test that failed before recording any counts
as one). At the end of the session ``make reliability`` prints one table per
category and writes the whole ledger to ``build/reliability.json``, so the
README's guarantees point at cases that really ran.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["refused", "survived"]
CATEGORIES = ("tokens", "hostile input", "ssrf", "tenancy", "faults", "load")


@dataclass
class Case:
    category: str
    name: str
    injected: str
    checked: str
    outcome: Outcome
    test: str
    failed: bool = False


@dataclass
class Ledger:
    cases: list[Case] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fail_test(self, test: str, category: str, reason: str) -> None:
        """``test`` failed: its cases are failures (one stands in if it recorded none)."""
        mine = [c for c in self.cases if c.test == test]
        for recorded in mine:
            recorded.failed = True
        if not mine:
            self.cases.append(Case(category, test, "(nothing recorded)", reason, "refused", test))
            self.cases[-1].failed = True

    def rows(self) -> list[dict[str, Any]]:
        by_category: dict[str, list[Case]] = defaultdict(list)
        for recorded in self.cases:
            by_category[recorded.category].append(recorded)
        order = [c for c in CATEGORIES if c in by_category]
        order += sorted(set(by_category) - set(CATEGORIES))
        rows = []
        for category in order:
            cases = by_category[category]
            ok = [c for c in cases if not c.failed]
            rows.append(
                {
                    "category": category,
                    "cases": len(cases),
                    "refused": sum(c.outcome == "refused" for c in ok),
                    "survived": sum(c.outcome == "survived" for c in ok),
                    "failures": len(cases) - len(ok),
                    "notes": "; ".join(self.notes.get(category, [])),
                }
            )
        return rows

    def table(self) -> str:
        rows = self.rows()
        header = ("category", "cases", "refused", "survived", "failures", "notes")
        cells = [header] + [tuple(str(r[h]) for h in header) for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
        lines = []
        for n, row in enumerate(cells):
            left = "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=False))
            lines.append(f"{left}  {row[-1]}".rstrip())
            if n == 0:
                lines.append("-" * max(len(line) for line in lines))
        total = sum(r["failures"] for r in rows)
        lines.append(f"failures in all: {total}")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "summary": self.rows(),
            "figures": self.figures,
            "cases": [asdict(c) for c in self.cases],
        }
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


class Recorder:
    """The ``reliability`` fixture: one test's view of the ledger."""

    def __init__(self, ledger: Ledger, category: str, test: str) -> None:
        self.ledger, self.category, self.test = ledger, category, test

    def case(self, name: str, *, injected: str, checked: str, outcome: Outcome = "refused") -> None:
        """Note a case before checking it: a failing test turns it into a failure."""
        self.ledger.cases.append(Case(self.category, name, injected, checked, outcome, self.test))

    def note(self, text: str) -> None:
        """A figure worth a glance in the table (latencies, counts)."""
        self.ledger.notes[self.category].append(text)

    def figure(self, name: str, values: dict[str, Any]) -> None:
        """Numbers kept in build/reliability.json (not in the table)."""
        self.ledger.figures[name] = values


def retry_hint_ratio(hint: int, real_wait: float) -> float:
    """How far a Retry-After ``hint`` is from the ``real_wait`` (seconds) it stands for.

    The header carries whole seconds, at least 1, so a real wait under a second
    counts as 1 s: a hint of 1 s for a wait of 0.2 s is the best it can say (1.0),
    and 2 s for it is 2.0.
    """
    return hint / max(real_wait, 1.0)


def retry_hint_within_twice(hint: int, real_wait: float) -> bool:
    """The README's promise: a busy answer's Retry-After is within 2x of the real wait."""
    return 0.5 <= retry_hint_ratio(hint, real_wait) <= 2.0
