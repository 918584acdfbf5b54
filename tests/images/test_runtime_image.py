"""The runtime image serves a model from /mnt/models to the real `openai` client.

The container is the one of kserve/'s ClusterServingRuntime (image, command,
args, env, securityContext); the test plays KServe's part: the storage
initializer's /mnt/models (the generated model, read-only), the model name the
InferenceService fills into ``{{.Name}}``, and the internal credential its Secret
gives the pod (the runtime, on 0.0.0.0, refuses to start without one).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelserve.shared.net import free_port
from support.containers import (
    Container,
    manifest_container,
    manifest_pod,
    readable_copy,
    run_container,
)
from support.procs import ServiceFailed
from support.toolchain import ROOT
from support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]
SERVING_RUNTIME = ROOT / "kserve" / "cluster-serving-runtime.yaml"
NO_EOS = {"2": -100}  # token 2 is </s>: the stream runs to max_tokens
TOKEN = secrets.token_hex(32)  # kserve/runtime-token.yaml's value, as the gateway sends it


@pytest.fixture
def runtime_container(
    images: Path, tiny_model: Path, tmp_path: Path
) -> Iterator[tuple[Container, str]]:
    pod = manifest_pod(SERVING_RUNTIME, "modelserve-llamacpp")
    models = readable_copy(tiny_model, tmp_path / "models").parent
    port = free_port()
    container = run_container(
        pod,
        replace={"{{.Name}}": "demo"},
        env={"MODELSERVE_RUNTIME_INTERNAL_TOKEN": TOKEN},
        volumes=[(models, "/mnt/models")],
        publish={8080: port},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield container, url
    finally:
        container.stop()


async def test_runtime_image_streams_a_chat_to_the_openai_client(
    runtime_container: tuple[Container, str],
) -> None:
    container, url = runtime_container

    def ready() -> bool:
        if not container.running():
            raise ServiceFailed(f"the runtime container exited:\n{container.logs()}")
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, 120, explain=container.logs)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Hello from a container"}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=NO_EOS,
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1, "the reply came in one piece, not streamed"
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 16
    container.check_confined(manifest_container(SERVING_RUNTIME, "modelserve-llamacpp"))
