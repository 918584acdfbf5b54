"""/events sends status changes at once and live figures at a bounded rate."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from modelserve.functions.api.routes.events import Changes


def row(server: uuid.UUID, status: str = "ready", memory: float | None = None) -> Any:
    return SimpleNamespace(
        server_uuid=server,
        status=status,
        progress=None,
        status_message=None,
        memory_current_mb=memory,
        memory_max_mb=memory,
        cpu_usage_percent=None,
    )


def test_status_changes_go_out_at_once_and_figures_at_most_every_period() -> None:
    changes, server = Changes(usage_every=2.0), uuid.uuid4()
    assert changes.due(row(server, "loading"), now=0.0)  # first sight
    assert not changes.due(row(server, "loading"), now=0.1)  # nothing new
    assert changes.due(row(server, "ready"), now=0.2)  # a status change: at once
    assert not changes.due(row(server, "ready", memory=10), now=1.0)  # figures: too soon
    assert changes.due(row(server, "ready", memory=11), now=2.3)  # figures: due
    assert not changes.due(row(server, "ready", memory=11), now=9.0)  # unchanged: silent
    assert changes.due(row(server, "deleting", memory=11), now=9.1)
    other = uuid.uuid4()
    assert changes.due(row(other, "ready", memory=1), now=9.1)  # each server on its own
