"""Runtime parameters, validated once at start so a bad value never reaches llama.cpp."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from modelserve.shared.runtime_params import DEFAULT_N_BATCH, RuntimeTunables
from modelserve.shared.slots import MAX_SEQUENCES, default_n_parallel


class RuntimeConfigError(ValueError):
    """A runtime parameter is invalid; the message names the parameter and why."""


class RuntimeConfig(RuntimeTunables):
    """Everything the model server needs: the tunables (declared once, in
    shared/runtime_params.py) plus where the model is and where to listen. Each
    field is also ``MODELSERVE_RUNTIME_<NAME>``."""

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

    internal_token: str | None = Field(default=None, min_length=32, repr=False)
    """The gateway's credential: every request but the probes and /metrics must carry
    ``Authorization: Bearer <it>`` (401 otherwise). Required unless the server listens on
    loopback only. Give it in the environment, never on the command line."""

    download_dir: Path = Path("/tmp/modelserve-models")  # noqa: S108 - a cache, not a secret
    """Where an s3:// model is downloaded to."""

    chat_template_file: Path | None = None
    """A file holding the Jinja chat template (the operator's choice at start; never a
    request's: chat_template takes the text)."""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be 64 hexadecimal characters")
        return value

    @field_validator("internal_token", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # An empty Secret value is no credential: it counts as missing, and fails below.
        return None if value == "" else value

    @model_validator(mode="after")
    def _credential_beyond_loopback(self) -> RuntimeConfig:
        if self.internal_token is None and not _loopback(self.host):
            raise ValueError(
                f"internal_token is required when listening on {self.host} (beyond loopback):"
                " without it anyone who reaches the port is served"
            )
        return self

    def slots(self) -> int:
        """``n_parallel``, or the default for where the layers run."""
        if self.n_parallel is not None:
            return self.n_parallel
        return default_n_parallel(self.n_gpu_layers != 0)

    def cached_sequences(self) -> int:
        """``prefix_cache``, or one cached sequence per slot."""
        return self.slots() if self.prefix_cache is None else self.prefix_cache

    def chat_template_text(self) -> str | None:
        """The template override: ``chat_template_file``'s text, else ``chat_template``."""
        path = self.chat_template_file
        if path is None:
            return self.chat_template
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise RuntimeConfigError(f"chat_template_file: cannot read {path}: {reason}") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
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
