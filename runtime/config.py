"""Runtime parameters, validated once at start so a bad value never reaches llama.cpp."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelserve.shared.slots import MAX_SEQUENCES, default_n_parallel

ENV_PREFIX = "MODELSERVE_RUNTIME_"
MAX_CONTEXT = 1 << 20
DEFAULT_N_BATCH = 512


class RuntimeConfigError(ValueError):
    """A runtime parameter is invalid; the message names the parameter and why."""


class RuntimeConfig(BaseModel):
    """Everything the model server needs; each field is also ``MODELSERVE_RUNTIME_<NAME>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str = Field(min_length=1)
    """A GGUF file, a directory holding one (KServe's /mnt/models), or s3://bucket/key."""

    model_name: str = Field(default="model", min_length=1, max_length=255)
    """The name clients send as ``model``; requests for another name get 404."""

    sha256: str | None = None
    """Expected sha256 of the GGUF; the server refuses to start on a mismatch."""

    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 inside a pod)."""

    port: int = Field(default=8080, ge=1, le=65535)
    """HTTP port."""

    n_ctx: int = Field(default=2048, ge=16, le=MAX_CONTEXT)
    """Context window in tokens."""

    n_threads: int | None = Field(default=None, ge=1, le=1024)
    """CPU threads for generation (default: llama.cpp's choice)."""

    n_gpu_layers: int = Field(default=0, ge=-1)
    """Layers to offload to the GPU; -1 offloads all (GPU builds only)."""

    n_batch: int = Field(default=DEFAULT_N_BATCH, ge=1, le=1 << 16)
    """Prompt-processing batch size."""

    n_parallel: int | None = Field(default=None, ge=1, le=MAX_SEQUENCES)
    """Requests decoded together in one batch (slots); default 4 on CPU, 16 when offloaded."""

    prefix_cache: int | None = Field(default=None, ge=0, le=MAX_SEQUENCES)
    """Finished sequences whose KV stays resident for prefix reuse; default n_parallel, 0 off."""

    chat_template: str | None = None
    """Jinja chat template overriding the one in the GGUF; ``@path`` reads a file."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Default sampling seed (a request's ``seed`` wins)."""

    max_queue: int = Field(default=16, ge=0, le=10_000)
    """Requests allowed to wait while every slot is busy; beyond it the answer is 503."""

    embeddings: bool = False
    """Serve /v1/embeddings (loads a second, embedding context)."""

    download_dir: Path = Path("/tmp/modelserve-models")  # noqa: S108 - a cache, not a secret
    """Where an s3:// model is downloaded to."""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be 64 hexadecimal characters")
        return value

    def slots(self) -> int:
        """``n_parallel``, or the default for where the layers run."""
        if self.n_parallel is not None:
            return self.n_parallel
        return default_n_parallel(self.n_gpu_layers != 0)

    def cached_sequences(self) -> int:
        """``prefix_cache``, or one cached sequence per slot."""
        return self.slots() if self.prefix_cache is None else self.prefix_cache

    def chat_template_text(self) -> str | None:
        if self.chat_template is None or not self.chat_template.startswith("@"):
            return self.chat_template
        path = Path(self.chat_template[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise RuntimeConfigError(f"chat_template: cannot read {path}: {exc.strerror}") from None


def build_config(**values: object) -> RuntimeConfig:
    """Validate; the first problem becomes a RuntimeConfigError naming the parameter."""
    given = {k: v for k, v in values.items() if v is not None}
    n_ctx = given.get("n_ctx")
    if "n_batch" not in given and isinstance(n_ctx, int):
        # A small context with the default batch would be refused; the batch follows it.
        given["n_batch"] = min(DEFAULT_N_BATCH, n_ctx)
    try:
        config = RuntimeConfig.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RuntimeConfigError(f"invalid runtime parameters: {problems}") from None
    if config.n_batch > config.n_ctx:
        raise RuntimeConfigError(
            f"invalid runtime parameters: n_batch ({config.n_batch}) exceeds n_ctx ({config.n_ctx})"
        )
    if config.slots() + config.cached_sequences() > MAX_SEQUENCES:
        raise RuntimeConfigError(
            f"invalid runtime parameters: n_parallel ({config.slots()}) plus prefix_cache "
            f"({config.cached_sequences()}) exceeds llama.cpp's {MAX_SEQUENCES} sequences"
        )
    return config
