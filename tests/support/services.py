"""Turn "this real server is not installed here" into a skip or, in CI, an error."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

from support.procs import MissingService

T = TypeVar("T")
REQUIRE_ENV = "MODELSERVE_REQUIRE_SERVICES"


def services_required() -> bool:
    """``.ci/run`` sets MODELSERVE_REQUIRE_SERVICES=1: a missing server fails the run."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip on a laptop; fail where real servers are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is an error, not a skip)")
    pytest.skip(reason)


def start_or_skip(start: Callable[[], T]) -> T:
    """Start a real server; a missing binary skips (or fails in CI), a broken one errors."""
    try:
        return start()
    except MissingService as exc:
        unavailable(str(exc))
