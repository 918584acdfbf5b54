"""Wait for something another process does (a controller, an operator) to show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any], within: float = 30, explain: Callable[[], str] | None = None
) -> Any:
    """Call ``check`` (in a thread: it may block on the API) until it returns something
    truthy, and return that; fail after ``within`` seconds, with ``explain()`` if given."""
    deadline = time.monotonic() + within
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"not reached within {within}s: {check.__name__}{detail}")
        await asyncio.sleep(0.2)
