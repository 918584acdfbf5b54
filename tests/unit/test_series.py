"""The charts' arithmetic: quantiles from bucket increases, rates, the bounded ring."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest

from modelserve.functions.api.series import MemorySeries, Scrape, quantile

INF = math.inf


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    before = {0.1: 0.0, 0.5: 0.0, 1.0: 0.0, INF: 0.0}
    after = {0.1: 2.0, 0.5: 6.0, 1.0: 10.0, INF: 10.0}
    # rank 5 of 10 lies in (0.1, 0.5], 3 of its 4 observations up: 0.1 + 0.4 * 3/4
    assert quantile(0.5, before, after) == pytest.approx(0.4)
    assert quantile(0.95, before, after) == pytest.approx(0.5 + 0.5 * (3.5 / 4))


def test_no_observation_in_the_interval_is_no_quantile() -> None:
    same = {0.1: 3.0, INF: 3.0}
    assert quantile(0.5, same, same) is None


def test_observations_above_the_last_bound_read_as_that_bound() -> None:
    assert quantile(0.99, {}, {1.0: 0.0, INF: 4.0}) == 1.0


def test_the_ring_keeps_an_hour_and_no_more() -> None:
    store = MemorySeries(interval=5.0)
    assert store.size == 720
    server = uuid.uuid4()
    start = time.time() - 2 * 3600
    for i in range(1500):
        store.observe(server, Scrape(start + 5 * i, generated_tokens=10.0 * i))
    window = asyncio.run(store.window(server, 3600))
    assert len(window.t) <= 720
    assert window.series["tokens_per_second"][-1] == pytest.approx(2.0)


def test_a_restarted_runtime_gives_no_rate_across_the_restart() -> None:
    store = MemorySeries(interval=5.0)
    server = uuid.uuid4()
    now = time.time()
    store.observe(server, Scrape(now - 10, generated_tokens=500.0))
    store.observe(server, Scrape(now - 5, generated_tokens=3.0))  # counters back at zero
    window = asyncio.run(store.window(server, 60))
    assert window.series["tokens_per_second"] == [None]
