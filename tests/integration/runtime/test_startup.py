"""Start-up refuses bad models and bad parameters with a precise message."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import openai
import pytest

from support.minio_server import MinioServer
from support.runtime import run_runtime_to_failure, start_runtime


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--n-ctx", "0"], 2, "n_ctx: Input should be greater than or equal to 16"),
        (["--n-ctx", "256", "--n-batch", "512"], 2, r"n_batch \(512\) exceeds n_ctx \(256\)"),
        (["--max-queue", "-1"], 2, "max_queue"),
        (["--sha256", "xyz"], 2, "sha256: Value error, must be 64 hexadecimal"),
        (["--sha256", "0" * 64], 1, "sha256 mismatch .* refusing to serve"),
        (["--chat-template-file", "/nonexistent/t.jinja"], 2, "cannot read /nonexistent/t.jinja"),
        (["--chat-template", "@/etc/hostname"], 2, "'@path' .* is not accepted"),
        (["--chat-template", "{% for %}"], 1, "the chat template is not valid Jinja"),
    ],
    ids=[
        "n_ctx",
        "n_batch",
        "max_queue",
        "sha-format",
        "sha-mismatch",
        "template-file",
        "template-at-path",
        "template-syntax",
    ],
)
def test_bad_parameters(tiny_model: Path, args: list[str], code: int, message: str) -> None:
    result = run_runtime_to_failure(tiny_model, *args)
    assert result.returncode == code, result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_missing_and_corrupt_models(tmp_path: Path) -> None:
    result = run_runtime_to_failure(tmp_path / "nope.gguf")
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 100)
    result = run_runtime_to_failure(corrupt)
    assert result.returncode == 1
    assert "cannot serve" in result.stderr and "implausible header" in result.stderr
    html = tmp_path / "page.gguf"
    html.write_text("<html>")
    result = run_runtime_to_failure(html)
    assert "not a GGUF file" in result.stderr
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    result = run_runtime_to_failure(empty)
    assert "no .gguf file in" in result.stderr


def test_model_directory_like_mnt_models(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "demo.gguf").write_bytes(tiny_model.read_bytes())
    server = start_runtime(tmp_path, "--model-name", "demo")
    try:
        client = openai.OpenAI(base_url=server.openai_base, api_key="x", max_retries=0)
        assert client.completions.create(model="demo", prompt="a", max_tokens=2).choices
    finally:
        server.stop()


@pytest.fixture
def model_in_minio(minio_server: MinioServer, tiny_model: Path) -> tuple[str, str, dict[str, str]]:
    client = minio_server.client()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    client.fput_object(bucket, "demo/demo.gguf", str(tiny_model))
    env = {
        "AWS_ENDPOINT_URL": minio_server.url,
        "AWS_ACCESS_KEY_ID": minio_server.access_key,
        "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_USE_HTTPS": "0",
        "S3_VERIFY_SSL": "0",
    }
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    return f"s3://{bucket}/demo/demo.gguf", sha, env


@pytest.mark.minio
def test_pull_from_minio_with_verified_sha256(
    model_in_minio: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    uri, sha, env = model_in_minio
    server = start_runtime(
        uri, "--model-name", "demo", "--sha256", sha, "--download-dir", str(tmp_path), env=env
    )
    try:
        client = openai.OpenAI(base_url=server.openai_base, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content is not None
    finally:
        server.stop()
    assert list(tmp_path.rglob("*.gguf"))


@pytest.mark.minio
def test_pull_from_minio_with_wrong_sha256_refuses_to_serve(
    model_in_minio: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    uri, _, env = model_in_minio
    result = run_runtime_to_failure(
        uri, "--sha256", "1" * 64, "--download-dir", str(tmp_path), env=env
    )
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr and "refusing to serve" in result.stderr
    assert not list(tmp_path.rglob("*.gguf")), "the untrusted download must not be kept"


@pytest.mark.minio
def test_pull_from_minio_with_bad_credentials(
    model_in_minio: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    uri, _, env = model_in_minio
    result = run_runtime_to_failure(
        uri, "--download-dir", str(tmp_path), env={**env, "AWS_SECRET_ACCESS_KEY": "wrong" * 5}
    )
    assert result.returncode == 1
    assert f"cannot download {uri}" in result.stderr
