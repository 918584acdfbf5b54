"""The runtime's tunable parameters, declared once: name, type, default, bounds, help.

Everything else is derived from :class:`RuntimeTunables`:

- the runtime's own configuration (``runtime/config.py`` subclasses it and adds
  where the model is and where to listen);
- the request side (:data:`RuntimeParams`): ``POST /serve``'s ``runtime_params``,
  the ModelServe's ``spec.runtime`` and the CRD's schema for it, every field
  optional (unset means the runtime's default), camelCase in the resource;
- the ``modelserve runtime`` options and their ``MODELSERVE_RUNTIME_<NAME>``
  variables, which the operator sets on the pod and the local backend passes.

A parameter added here appears in all of them; ``tests/unit/test_runtime_params.py``
checks that they agree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from modelserve.shared.slots import MAX_SEQUENCES

ENV_PREFIX = "MODELSERVE_RUNTIME_"
MAX_CONTEXT = 1 << 20
DEFAULT_N_BATCH = 512


class CacheType(StrEnum):
    """KV cache element types llama.cpp offers (``--cache-type-k/-v``)."""

    F32 = "f32"
    F16 = "f16"
    Q8_0 = "q8_0"
    Q5_1 = "q5_1"
    Q5_0 = "q5_0"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"
    IQ4_NL = "iq4_nl"


class ReasoningFormat(StrEnum):
    """llama-server's ``--reasoning-format``: ``auto`` splits, ``none`` leaves the text."""

    AUTO = "auto"
    NONE = "none"


def _not_a_file(template: str | None) -> str | None:
    """``@path`` would read a file on the server: an operator's start-up flag, never a
    parameter a request sets (the runtime's ``--chat-template-file``)."""
    if template is not None and template.startswith("@"):
        raise ValueError(
            "'@path' (a template read from a file on the server) is not accepted here; "
            "send the template's text (the runtime's operator can use --chat-template-file)"
        )
    return template


class RuntimeTunables(BaseModel):
    """What a user may choose for a server's runtime, with the runtime's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    n_ctx: int = Field(default=2048, ge=16, le=MAX_CONTEXT)
    """Context window in tokens."""

    n_threads: int | None = Field(default=None, ge=1, le=1024)
    """CPU threads for generation (default: llama.cpp's choice)."""

    n_gpu_layers: int = Field(default=0, ge=-1, le=10_000)
    """Layers to offload to the GPU; -1 offloads all (GPU builds only). Bounded: llama.cpp
    reads it as a 32-bit int, and no model has 10,000 layers."""

    n_batch: int = Field(default=DEFAULT_N_BATCH, ge=1, le=1 << 16)
    """Prompt-processing batch size (default: min(512, n_ctx))."""

    n_parallel: int | None = Field(default=None, ge=1, le=MAX_SEQUENCES)
    """Requests decoded together in one batch (slots); default 4 on CPU, 16 when offloaded."""

    prefix_cache: int | None = Field(default=None, ge=0, le=MAX_SEQUENCES)
    """Finished sequences whose KV stays resident for prefix reuse; default n_parallel, 0 off."""

    chat_template: Annotated[str | None, AfterValidator(_not_a_file)] = Field(
        default=None, max_length=64 * 1024
    )
    """Jinja chat template (its text) overriding the one in the GGUF."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Default sampling seed (a request's ``seed`` wins)."""

    max_queue: int = Field(default=16, ge=0, le=10_000)
    """Requests allowed to wait while every slot is busy; beyond it the answer is 503."""

    embeddings: bool = False
    """Serve /v1/embeddings (loads a second, embedding context)."""

    type_k: CacheType = CacheType.F16
    """KV cache type of keys (f16, or q8_0 / q4_0 ... to hold more context in less memory)."""

    type_v: CacheType = CacheType.F16
    """KV cache type of values; a quantized one needs flash attention, which llama.cpp
    turns on where the backend has it."""

    reasoning_format: ReasoningFormat = ReasoningFormat.AUTO
    """auto: a reasoning model's thinking comes back as reasoning_content; none: in content."""


TUNABLES: tuple[str, ...] = tuple(RuntimeTunables.model_fields)


def env_name(field: str) -> str:
    """The variable the runtime reads a parameter from (and the operator sets)."""
    return f"{ENV_PREFIX}{field.upper()}"


class _Overrides(BaseModel):
    """The request side: each tunable optional, camelCase in the ModelServe resource."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    @model_validator(mode="after")
    def _batch_fits_context(self) -> _Overrides:
        n_batch, n_ctx = getattr(self, "n_batch", None), getattr(self, "n_ctx", None)
        if n_batch is not None and n_ctx is not None and n_batch > n_ctx:
            raise ValueError(f"n_batch ({n_batch}) may not exceed n_ctx ({n_ctx})")
        return self

    def as_runtime_args(self) -> dict[str, Any]:
        """The values that were set, keyed like the runtime's options."""
        return self.model_dump(exclude_none=True)


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The same field, with the same bounds and help, defaulting to unset (None)."""
    return info.annotation | None, FieldInfo.merge_field_infos(info, default=None)  # type: ignore[operator]


if TYPE_CHECKING:  # the type checker sees the tunables' fields (each may be None at run time)

    class RuntimeParams(_Overrides, RuntimeTunables):
        pass

else:
    RuntimeParams = create_model(
        "RuntimeParams",
        __base__=_Overrides,
        __doc__="llama.cpp parameters of a server's runtime; unset means the runtime's default.",
        **{name: _optional(info) for name, info in RuntimeTunables.model_fields.items()},
    )
