"""Run the real operator (kopf) in a background thread for a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import kopf

from modelserve.operator.run import operate
from modelserve.shared.settings import Settings


@contextmanager
def running_operator(
    settings: Settings,
    webhook: kopf.WebhookServer | None = None,
    *,
    post_events: bool = False,
    metrics_address: tuple[str, int] | None = None,
) -> Iterator[None]:
    """The operator in a thread until the block ends; Events are posted only when asked."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            operate(
                settings,
                stop_flag=stop,
                ready_flag=ready,
                post_events=post_events,
                metrics_interval=1,
                webhook=webhook,
                metrics_address=metrics_address,
            )
        ),
        daemon=True,
    )
    thread.start()
    assert ready.wait(30), "the operator did not start"
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the operator did not stop"
