"""The platform's metric declarations: one style, and the README lists exactly them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from modelserve.shared import metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_exactly_the_declared_metrics() -> None:
    section = metrics.readme_section(README.read_text())
    assert section == metrics.readme_table(), (
        "README's metric list is stale; paste `python -m modelserve.shared.metrics` "
        "between its metrics markers"
    )


def test_names_follow_one_style() -> None:
    declared = metrics.declared()
    names = Counter(d.name for d in declared)
    assert [n for n, times in names.items() if times > 1] == []
    for d in declared:
        assert d.name.startswith("modelserve_"), d.name
        assert d.help, d.name
        if d.kind == "counter":
            assert d.name.endswith("_total"), d.name
        if d.kind == "histogram":
            assert d.name.endswith("_seconds"), d.name  # every histogram times something
        # server_uuid is bounded by the servers; nothing takes a raw path or an id.
        assert not {"path", "url", "event_id", "trace_id"} & set(d.labels), d.name


def test_every_component_declares_something() -> None:
    for component in metrics.COMPONENTS:
        assert metrics.documented_names(component), component
