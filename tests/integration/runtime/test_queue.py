"""A full queue answers 503 with Retry-After, and the server carries on afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from support.runtime import RuntimeServer, start_runtime

NO_EOS = {"2": -100}


@pytest.fixture(scope="module")
def no_queue_runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(
        tiny_model, "--model-name", "demo", "--max-queue", "0", "--n-parallel", "1"
    )
    yield server
    server.stop()


def test_full_queue_is_503_with_retry_after(no_queue_runtime: RuntimeServer) -> None:
    url = no_queue_runtime.url
    with httpx.stream(
        "POST",
        f"{url}/v1/completions",
        json={
            "model": "demo",
            "prompt": "long",
            "max_tokens": 1900,
            "stream": True,
            "logit_bias": NO_EOS,
        },
        timeout=30,
    ) as running:
        assert running.status_code == 200
        lines = running.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # it holds the model now
        busy = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.json()["error"]["code"] == "queue_full"
        assert "the queue holds 0" in busy.json()["error"]["message"]
        assert sum(1 for line in lines if line.startswith("data: {")) > 1000  # ran on, whole
    client = openai.OpenAI(base_url=no_queue_runtime.openai_base, api_key="x", max_retries=0)
    reply = client.completions.create(model="demo", prompt="again", max_tokens=4)
    assert reply.choices[0].finish_reason in {"length", "stop"}


@pytest.fixture(scope="module")
def two_slot_runtime(tiny_model: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(
        tiny_model, "--model-name", "demo", "--max-queue", "0", "--n-parallel", "2"
    )
    yield server
    server.stop()


def test_every_slot_serves_before_the_queue_refuses(two_slot_runtime: RuntimeServer) -> None:
    url = two_slot_runtime.url
    body = {"model": "demo", "prompt": "long", "max_tokens": 1500, "stream": True}
    body["logit_bias"] = NO_EOS
    with (
        httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as first,
        httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        first_lines, second_lines = first.iter_lines(), second.iter_lines()
        next(first_lines)
        next(second_lines)  # both decode at once: two slots
        busy = httpx.post(
            f"{url}/v1/completions", json={"model": "demo", "prompt": "x"}, timeout=30
        )
        assert busy.status_code == 503, busy.text
        assert "2 requests are running" in busy.json()["error"]["message"]
        slots = httpx.get(f"{url}/metrics", timeout=10).text
        assert "modelserve_slots_total 2.0" in slots
        assert "modelserve_slots_busy 2.0" in slots
