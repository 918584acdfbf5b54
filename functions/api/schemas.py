"""Request and response bodies of the public API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelserve.functions.ingest import IngestError, check_model_name
from modelserve.shared.db.models import ApiKey, ModelRecord, ServerRecord, User
from modelserve.shared.modelserve import RuntimeParams


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class ServeBody(BaseModel):
    """Ask for a model to be served."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=255, examples=["demo"])
    replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100)
    runtime_params: RuntimeParams = Field(default_factory=RuntimeParams)
    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        """The rule uploads use, at the door: a name that could never be a model
        (``../x``, a NUL byte, invisible unicode) is a 422 here, not a failed serve."""
        try:
            return check_model_name(value)
        except IngestError as exc:
            raise ValueError(str(exc)) from None


class ServeAccepted(BaseModel):
    server_uuid: uuid.UUID
    status: str
    status_url: str
    gateway_url: str


class Server(BaseModel):
    server_uuid: uuid.UUID
    model_uuid: uuid.UUID | None
    model_name: str
    owner: str | None
    status: str
    status_message: str | None
    violations: list[str] = Field(
        default_factory=list, description="Each resource-contract violation, when it failed so."
    )
    progress: float | None
    replicas: int
    runtime_params: dict[str, Any]
    memory_current_mb: float | None
    memory_max_mb: float | None
    cpu_usage_percent: float | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    updated_at: dt.datetime
    namespace: str | None
    inference_service: str | None
    gateway_url: str | None

    @field_validator("violations", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return value or []

    @classmethod
    def of(cls, record: ServerRecord) -> Server:
        return cls.model_validate(record, from_attributes=True)


class ServerSeries(BaseModel):
    """A server's charts: ``t`` (Unix seconds, oldest first) and one list per figure,
    ``null`` where there is no value (no tokens in that interval: no latency)."""

    step_seconds: float
    t: list[float]
    series: dict[str, list[float | None]]


class ServerLogs(BaseModel):
    """The last lines a server's runtime wrote (stdout and stderr, oldest first)."""

    server_uuid: uuid.UUID
    lines: list[str]


class Model(BaseModel):
    model_uuid: uuid.UUID
    model_name: str
    object_path: str
    sha256: str
    size_bytes: int
    architecture: str | None
    file_type: str | None
    parameter_count: int | None
    context_length: int | None
    source: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, record: ModelRecord) -> Model:
        return cls.model_validate(record, from_attributes=True)


class CatalogModel(BaseModel):
    name: str
    size_bytes: int | None
    file_type: str | None
    mirrored: bool


class Models(BaseModel):
    mirrored: list[Model]
    catalog: list[CatalogModel]


class KeyBody(BaseModel):
    """Make an API key: for one server, or (without ``server_uuid``) all you may use."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, examples=["chat front end"])
    server_uuid: uuid.UUID | None = None
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600)
    tokens_per_day: int | None = Field(
        default=None,
        ge=1,
        le=10**12,
        description="Budget per UTC day; past it the gateway says 429.",
    )


class Key(BaseModel):
    """A key as listed: never its secret."""

    key_id: str
    name: str
    owner: str
    server_uuid: uuid.UUID | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    tokens_per_day: int | None = None

    @classmethod
    def of(cls, record: ApiKey) -> Key:
        return cls.model_validate(record, from_attributes=True)


class NewKey(Key):
    """The answer to creating a key: the only time ``key`` is ever shown."""

    key: str


class UserOut(BaseModel):
    username: str
    role: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    tokens_per_day: int | None = None

    @classmethod
    def of(cls, record: User) -> UserOut:
        return cls.model_validate(record, from_attributes=True)


class UserPatch(BaseModel):
    """Only the fields sent change; ``tokens_per_day: null`` lifts the budget."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = None
    tokens_per_day: int | None = Field(default=None, ge=1, le=10**12)


class UsageRow(BaseModel):
    minute: dt.datetime
    server_uuid: uuid.UUID
    username: str
    key_id: str = Field(description='The API key used; "" for a JWT.')
    requests: int
    prompt_tokens: int
    completion_tokens: int


class Usage(BaseModel):
    rows: list[UsageRow]
    requests: int
    prompt_tokens: int
    completion_tokens: int
