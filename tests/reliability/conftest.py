"""``make reliability``: faults, hostile input and load against the real components.

Every module here is marked ``reliability("<category>")``; the normal test run
deselects the mark (pyproject's addopts), ``make reliability`` selects it. Tests
record their cases through the ``reliability`` fixture (support/reliability.py);
the session ends with one table and ``build/reliability.json``.

The API + gateway stack is the integration suite's own fixture, imported rather
than copied, so both suites test the same wiring.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from integration.api.conftest import stack, stack_factory
from support.reliability import Ledger, Recorder

__all__ = ["stack", "stack_factory"]

LEDGER = Ledger()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--fuzz-seconds",
        type=float,
        default=0.0,
        help="run the fuzz targets for this long each (default: one fixed-seed round)",
    )
    group.addoption(
        "--load-seconds",
        type=float,
        default=20.0,
        help="how long the load runs last",
    )


def _category(item: pytest.Item) -> str:
    marker = item.get_closest_marker("reliability")
    return str(marker.args[0]) if marker and marker.args else "other"


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(LEDGER, _category(request.node), request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.get_closest_marker("reliability") is not None:
        last = (report.longreprtext.strip().splitlines() or [report.when])[-1]
        LEDGER.fail_test(item.nodeid, _category(item), f"{report.when}: {last[:200]}")
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    if not LEDGER.cases:
        return
    terminalreporter.section("reliability")
    terminalreporter.write_line(LEDGER.table())
    target = Path(config.rootpath) / "build" / "reliability.json"
    LEDGER.write(target)
    terminalreporter.write_line(f"cases written to {target}")
