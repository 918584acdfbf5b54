"""Run the real operator (kopf) in a background thread for a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import kopf

from modelserve.operator.run import operate
from modelserve.shared.settings import Settings
from support.kopf_discovery import group_discovery


@contextmanager
def running_operator(
    settings: Settings, webhook: kopf.WebhookServer | None = None
) -> Iterator[None]:
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            operate(
                settings,
                stop_flag=stop,
                ready_flag=ready,
                post_events=False,
                metrics_interval=1,
                webhook=webhook,
            )
        ),
        daemon=True,
    )
    with group_discovery():
        thread.start()
        assert ready.wait(30), "the operator did not start"
        try:
            yield
        finally:
            stop.set()
            thread.join(30)
            assert not thread.is_alive(), "the operator did not stop"
