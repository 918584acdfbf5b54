"""read_ahead: the store's upload overlaps its source, in order, bounded, errors kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelserve.shared.store.base import read_ahead


class Source:
    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.produced = 0
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for index in range(self.count):
                if index == self.fail_at:
                    raise OSError(f"source broke at chunk {index}")
                self.produced += 1
                yield bytes([index])
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_chunks_arrive_in_order() -> None:
    source = Source(50)
    assert [c async for c in read_ahead(source.chunks(), 4)] == [bytes([i]) for i in range(50)]


async def test_the_source_runs_ahead_only_as_far_as_the_depth() -> None:
    source = Source(100)
    ahead = read_ahead(source.chunks(), 4)
    assert await anext(ahead) == b"\x00"
    await asyncio.sleep(0.05)  # the consumer is busy: the source fills the queue, then waits
    # one taken, four queued, one more held by the task waiting for room
    assert source.produced == 6
    await ahead.aclose()


async def test_a_source_error_reaches_the_consumer_after_the_good_chunks() -> None:
    source = Source(10, fail_at=3)
    received = []
    with pytest.raises(OSError, match="source broke at chunk 3"):
        async for chunk in read_ahead(source.chunks(), 2):
            received.append(chunk)
    assert received == [b"\x00", b"\x01", b"\x02"]


async def test_closing_early_stops_the_source() -> None:
    source = Source(1000)
    ahead = read_ahead(source.chunks(), 2)
    await anext(ahead)
    await ahead.aclose()
    await asyncio.sleep(0.01)
    assert source.closed and source.produced < 10
