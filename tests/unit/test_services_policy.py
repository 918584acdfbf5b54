"""A missing real server skips on a laptop and is an error in CI."""

from __future__ import annotations

import pytest

from support.procs import MissingService, find_binary
from support.services import REQUIRE_ENV, start_or_skip


def _missing() -> None:
    find_binary("modelserve-no-such-binary-xyz")


def test_missing_binary_raises_with_where_it_looked() -> None:
    with pytest.raises(MissingService, match="modelserve-no-such-binary-xyz not found"):
        _missing()


def test_missing_server_skips_without_the_ci_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        start_or_skip(_missing)


def test_missing_server_fails_with_the_ci_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="an error, not a skip"):
        start_or_skip(_missing)
