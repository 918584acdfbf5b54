"""Runtime faults: stopped with streams queued, killed mid-stream. Clients always learn why.

- SIGINT with one stream running and three queued: the queued clients get a
  503 with ``Retry-After`` at once (not a bare 500 when the grace runs out), the
  running one keeps streaming and ends with an error event naming the shutdown
  if the grace runs out first, and the process exits.
- ``kill -9`` of a runtime under ``modelserve up`` mid-stream: the client's stream
  ends with an error event (never a silent cut), the record says the runtime
  exited and is restarting, the backend brings it back, the next request is served.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from modelserve.shared.net import free_port
from support.reliability import Recorder
from support.runtime import start_runtime
from support.stack import stack

pytestmark = pytest.mark.reliability("faults")
NO_EOS = {"2": -100}


async def test_sigint_with_streams_queued(tiny_model: Path, reliability: Recorder) -> None:
    runtime = await asyncio.to_thread(
        start_runtime, tiny_model, "--model-name", "demo", "--n-parallel", "1", "--max-queue", "4"
    )
    body = {
        "model": "demo",
        "prompt": "long",
        "max_tokens": 1900,
        "stream": True,
        "logit_bias": NO_EOS,
    }
    reliability.case(
        "runtime SIGINT: queued streams",
        injected="SIGINT while 1 stream runs and 3 wait in the queue",
        checked="each queued client: 503 + Retry-After, code shutting_down, within 3 s",
        outcome="survived",
    )
    reliability.case(
        "runtime SIGINT: the running stream",
        injected="SIGINT mid-stream",
        checked="it streams on, then ends with [DONE] or an error event naming the shutdown",
        outcome="survived",
    )
    try:
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60) as http:
            lines: list[str] = []
            streaming = asyncio.Event()

            async def running() -> None:
                async with http.stream("POST", "/v1/completions", json=body) as stream:
                    assert stream.status_code == 200
                    async for line in stream.aiter_lines():
                        if line:
                            lines.append(line)
                            streaming.set()

            first = asyncio.create_task(running())
            await asyncio.wait_for(streaming.wait(), 30)
            queued = [
                asyncio.create_task(http.post("/v1/completions", json=body)) for _ in range(3)
            ]
            await asyncio.sleep(1.0)  # they are in the queue now
            assert not any(q.done() for q in queued)
            proc = runtime.process.proc
            assert proc is not None
            proc.send_signal(signal.SIGINT)
            signalled = time.monotonic()
            answers = await asyncio.gather(*queued)
            assert time.monotonic() - signalled < 3
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["Retry-After"]) >= 1
                assert answer.json()["error"]["code"] == "shutting_down"
            await asyncio.wait_for(first, 30)
        last = lines[-1]
        if last != "data: [DONE]":
            error = json.loads(last.removeprefix("data: "))["error"]
            assert "shutting down" in error["message"], last
        assert len(lines) > 10
        assert await asyncio.to_thread(proc.wait, 30) is not None
    finally:
        runtime.stop()


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return found


def test_kill_9_mid_stream(tmp_path: Path, reliability: Recorder) -> None:
    for name, checked in (
        ("client", "the stream ends with an error event, not a silent cut"),
        ("record", "the server record says the runtime exited (-9) and is restarting"),
        ("backend", "the backend restarts the runtime: ready again"),
        ("next request", "the next request after it is back is served"),
    ):
        reliability.case(
            f"runtime kill -9: {name}",
            injected="kill -9 of the runtime mid-stream",
            checked=checked,
            outcome="survived",
        )
    with stack(tmp_path / "data", free_port()) as up:
        auth = {"Authorization": f"Bearer {up.token}"}
        http = httpx.Client(base_url=up.url, headers=auth, timeout=60)
        accepted = http.post("/serve", json={"model": "demo", "runtime_params": {"n_ctx": 2048}})
        assert accepted.status_code == 202, accepted.text
        server = accepted.json()["server_uuid"]

        def record() -> dict[str, Any]:
            answer: dict[str, Any] = http.get(f"/servers/{server}").json()
            return answer

        wait_for("ready", lambda: record()["status"] == "ready", 120, every=0.5)
        runtimes = [
            c
            for c in psutil.Process(up.process.pid).children(recursive=True)
            if "runtime" in " ".join(c.cmdline())
        ]
        assert len(runtimes) == 1
        body = {"model": "demo", "prompt": "long", "max_tokens": 1900, "stream": True}
        lines: list[str] = []
        with http.stream(
            "POST", f"/{server}/v1/completions", json={**body, "logit_bias": NO_EOS}
        ) as s:
            assert s.status_code == 200
            for line in s.iter_lines():
                if not line:
                    continue
                lines.append(line)
                if len(lines) == 5:
                    runtimes[0].kill()  # SIGKILL
        error = json.loads(lines[-1].removeprefix("data: "))["error"]
        assert "mid-stream" in error["message"], lines[-1]
        said = wait_for(
            "the record to say why",
            lambda: "exited (-9)" in (record()["status_message"] or "") and record(),
            30,
        )
        assert said["status"] == "loading", said
        wait_for("ready again", lambda: record()["status"] == "ready", 120, every=0.5)
        again = http.post(
            f"/{server}/v1/completions", json={"model": "demo", "prompt": "hi", "max_tokens": 4}
        )
        assert again.status_code == 200, again.text
        http.close()
