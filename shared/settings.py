"""One settings object for every component, read from ``MODELSERVE_*`` variables.

It is built once at the edge (CLI, function entry point, operator start-up) and
passed down; nothing deeper reads ``os.environ``. Outside dev mode it refuses to
build with a known sample secret or a JWT secret shorter than 32 bytes, naming
the variable to fix, so a demo configuration can never reach production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MODELSERVE_"
MIN_JWT_SECRET_BYTES = 32

# Secrets that shipped in the old deployment's manifests, and their usual
# neighbours. Anything here is public knowledge and must never guard real data.
SAMPLE_SECRETS = frozenset(
    {
        "your-super-secret-jwt-key-change-in-production-minimum-32-chars",
        "minioadmin123",
        "minioadmin",
        "admin-password",
        "admin",
        "password",
        "changeme",
        "change-me",
        "secret",
        "postgres",
    }
)


class SettingsError(ValueError):
    """A setting is unusable; ``env`` names the variable to change."""

    def __init__(self, env: str, message: str) -> None:
        super().__init__(f"{env}: {message}")
        self.env = env


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """Every setting of modelserve; the env var is ``MODELSERVE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        use_attribute_docstrings=True,
        frozen=True,
    )

    mode: Literal["local", "kubernetes"] = "local"
    """``local``: the embedded single-machine stack; ``kubernetes``: Knative + KServe."""

    dev: bool = False
    """Dev mode allows sample secrets and generated credentials. Never in production."""

    data_dir: Path = Path.home() / ".local" / "share" / "modelserve"
    """Local mode: where the SQLite database and the object-store directory live."""

    database_url: str | None = None
    """SQLAlchemy async URL; default ``sqlite+aiosqlite:///<data_dir>/modelserve.db``.
    Postgres: ``postgresql+asyncpg://user:password@host:5432/modelserve``."""

    # --- auth -----------------------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    """The one algorithm tokens are signed and verified with (pinned)."""

    jwt_secret: SecretStr | None = None
    """HS256 shared secret, at least 32 bytes."""

    jwt_private_key_file: Path | None = None
    """RS256/ES256: PEM private key used to issue tokens (API only)."""

    jwt_public_key_file: Path | None = None
    """RS256/ES256: PEM public key used to verify tokens."""

    jwks_url: AnyHttpUrl | None = None
    """RS256/ES256: verify against keys published at this JWKS URL instead of a file."""

    jwt_issuer: str = "modelserve"
    """``iss`` of issued tokens, and the only issuer accepted."""

    jwt_audience: str = "modelserve"
    """``aud`` of user access tokens."""

    access_token_ttl_seconds: int = Field(default=3600, gt=0, le=7 * 24 * 3600)
    """Lifetime of user access tokens."""

    pipeline_token_ttl_seconds: int = Field(default=600, gt=0, le=24 * 3600)
    """Lifetime of the internal tokens carried by pipeline CloudEvents."""

    auth_cache_ttl_seconds: float = Field(default=1.0, gt=0, le=2)
    """How long a replica trusts what it read about a key or a user (at most 2 s: a
    revoked key or a disabled user is refused within it everywhere)."""

    metrics_token: SecretStr | None = None
    """A bearer token that gets the full ``/metrics`` of the API and the gateway (server
    UUIDs, user names, key ids as labels): Prometheus' PodMonitor sends it. Without
    it (or an admin's access token) ``/metrics`` sums those labels away."""

    events_streams_per_user: int = Field(default=8, ge=1)
    """``GET /events`` streams one user may hold open on one API replica (429 past it)."""

    series_queries_per_user: int = Field(default=4, ge=1)
    """``GET /servers/{uuid}/series`` queries one user may have running at once."""

    login_failures_per_user: int = Field(default=5, ge=1)
    """Failed ``/auth/token`` sign-ins one user name may have per ``login_window_seconds``;
    past it that name is answered 429 with Retry-After (no password is checked)."""

    login_failures_per_address: int = Field(default=20, ge=1)
    """The same per client address (the peer uvicorn reports; behind an ingress, set
    uvicorn's forwarded-allow-ips so it is the client's)."""

    login_window_seconds: float = Field(default=300.0, gt=0)
    """The sliding window the login failure limits count in."""

    login_workers: int = Field(default=2, ge=1, le=64)
    """Threads that check passwords (argon2id, 64 MiB each), off the event loop; a
    sign-in waiting behind ``4 x login_workers`` others is answered 429."""

    admin_username: str = "admin"
    """Bootstrap admin created on first start when ``admin_password`` is set."""

    admin_password: SecretStr | None = None
    """Bootstrap admin password (no default outside dev mode)."""

    # --- object store -----------------------------------------------------------
    store_backend: Literal["local", "minio"] = "local"
    """``local``: a directory under ``data_dir``; ``minio``: an S3-compatible server."""

    store_dir: Path | None = None
    """Local store directory; default ``<data_dir>/objects``."""

    store_signing_key: SecretStr | None = None
    """HMAC key for the local store's signed URLs; defaults to the JWT secret."""

    minio_endpoint: str = "127.0.0.1:9000"
    """MinIO ``host:port``."""

    minio_access_key: SecretStr | None = None
    """MinIO access key."""

    minio_secret_key: SecretStr | None = None
    """MinIO secret key."""

    minio_secure: bool = False
    """Use HTTPS to reach MinIO."""

    minio_region: str = "us-east-1"
    """Region reported to S3 clients."""

    bucket: str = "models"
    """Bucket (or top-level folder) holding mirrored GGUF files."""

    # --- serving ----------------------------------------------------------------
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    """Base URL users reach the gateway at; servers live at ``<base>/<server-uuid>``."""

    internal_token: SecretStr | None = None
    """The runtimes' internal credential (at least 32 bytes): the gateway sends it to every
    runtime, which refuses every other request but its probes. Kubernetes: the Secret
    ``modelserve-runtime-token`` (kserve/runtime-token.yaml), which the operator also
    points each runtime at; the embedded stack makes one per start."""

    namespace: str = "modelserve"
    """Kubernetes namespace for ModelServe resources."""

    kserve_deployment_mode: Literal["Serverless", "Standard"] = "Serverless"
    """KServe deployment mode of every InferenceService: ``Serverless`` (Knative, scales
    to zero) or ``Standard`` (a Deployment and an HPA; KServe's old ``RawDeployment``,
    which is accepted and renamed) for clusters without Knative."""

    @field_validator("kserve_deployment_mode", mode="before")
    @classmethod
    def _standard_not_raw(cls, value: object) -> object:
        # KServe 0.16 records "Standard" in the InferenceService's status and its
        # validating webhook refuses every later update whose annotation differs,
        # so a "RawDeployment" annotation would block even its own finalizer.
        return "Standard" if value == "RawDeployment" else value

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body the API (except uploads) and the gateway read; a bigger one
    is 413, refused by its Content-Length before a byte is read."""

    max_upload_bytes: int = Field(default=256 * 1024**3, ge=1024)
    """Largest GGUF ``PUT /models/{name}`` takes."""

    upload_reserve_bytes: int = Field(default=1024**3, ge=0)
    """Free space an upload must leave in the scratch directory: a bigger one is 507
    before it starts (by Content-Length) or when it gets there (streamed)."""

    upload_idle_seconds: float = Field(default=60.0, gt=0)
    """An upload that sends nothing for this long is dropped (408) and its scratch
    file removed: a slow drip cannot hold a lease and a worker forever."""

    # --- pipeline ---------------------------------------------------------------
    catalog_backend: Literal["local", "s3", "http"] = "local"
    """Where missing models come from: a directory, an S3/MinIO bucket, or an HTTP catalog
    compatible with the old quantisation service (``GET <url>/download-url/<model>``)."""

    catalog_dir: Path | None = None
    """Local catalog directory of ``<name>.gguf`` files; default ``<data_dir>/catalog``."""

    catalog_url: str | None = None
    """HTTP catalog base URL, or the endpoint URL (``http://host:port``) of an upstream
    S3 bucket."""

    catalog_token: SecretStr | None = None
    """Bearer token for the HTTP catalog."""

    catalog_bucket: str = "catalog"
    """Upstream bucket of the S3 catalog."""

    catalog_prefix: str = ""
    """Key prefix of the models in the upstream bucket."""

    catalog_access_key: SecretStr | None = None
    """Access key of the upstream bucket."""

    catalog_secret_key: SecretStr | None = None
    """Secret key of the upstream bucket."""

    catalog_file_origins: list[str] = Field(default_factory=list)
    """Extra origins (``https://host:port``) the HTTP catalog's signed URLs may point at."""

    catalog_url_ttl_seconds: int = Field(default=900, gt=0)
    """Lifetime of the signed URLs the S3 catalog hands out."""

    broker_url: str | None = None
    """Where functions send events outside a reply (mirror progress): the broker ingress.
    Knative sets ``K_SINK``; this wins when set."""

    work_dir: Path | None = None
    """Scratch space for downloads in progress; default ``<data_dir>/work``."""

    kubeconfig: Path | None = None
    """Kubernetes mode: kubeconfig file; in-cluster configuration when unset."""

    contract_file: Path | None = None
    """YAML resource contract (limits, per-role overrides, namespaces); built-in default
    when unset."""

    dashboard_dir: Path | None = None
    """The built dashboard (``dashboard/dist``) the API serves at ``/``; ``modelserve up``
    uses the repository's when unset."""

    prometheus_url: AnyHttpUrl | None = None
    """Prometheus' base URL (``http://prometheus.monitoring:9090``): the API reads a
    server's charts from its HTTP API. Unset, the embedded stack keeps an hour in
    memory and the API on Kubernetes has no charts."""

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        token = self.internal_token.get_secret_value() if self.internal_token else None
        if token is not None and len(token.encode()) < MIN_JWT_SECRET_BYTES:
            # Even in dev mode: every runtime would refuse it and answer nobody.
            raise SettingsError(
                env_name("internal_token"),
                f"is {len(token.encode())} bytes; at least {MIN_JWT_SECRET_BYTES} are required",
            )
        if self.dev:
            return self
        for field, value in (
            ("jwt_secret", self.jwt_secret),
            ("admin_password", self.admin_password),
            ("minio_access_key", self.minio_access_key),
            ("minio_secret_key", self.minio_secret_key),
            ("store_signing_key", self.store_signing_key),
            ("catalog_token", self.catalog_token),
            ("catalog_access_key", self.catalog_access_key),
            ("catalog_secret_key", self.catalog_secret_key),
            ("internal_token", self.internal_token),
        ):
            if value is not None and value.get_secret_value().strip().lower() in SAMPLE_SECRETS:
                raise SettingsError(
                    env_name(field),
                    "is a published sample secret; set a real one (sample secrets work only"
                    f" with {env_name('dev')}=true)",
                )
        if self.jwt_algorithm == "HS256":
            if self.jwt_secret is None:
                raise SettingsError(
                    env_name("jwt_secret"),
                    f"is required with HS256 (at least {MIN_JWT_SECRET_BYTES} random bytes,"
                    " e.g. `openssl rand -hex 32`)",
                )
            size = len(self.jwt_secret.get_secret_value().encode())
            if size < MIN_JWT_SECRET_BYTES:
                raise SettingsError(
                    env_name("jwt_secret"),
                    f"is {size} bytes; at least {MIN_JWT_SECRET_BYTES} are required",
                )
        elif self.jwt_public_key_file is None and self.jwks_url is None:
            raise SettingsError(
                env_name("jwt_public_key_file"),
                f"{self.jwt_algorithm} needs a public key file or {env_name('jwks_url')}",
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'modelserve.db'}"

    @property
    def resolved_store_dir(self) -> Path:
        return self.store_dir or self.data_dir / "objects"

    @property
    def resolved_catalog_dir(self) -> Path:
        return self.catalog_dir or self.data_dir / "catalog"

    @property
    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.data_dir / "work"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; re-raise the first problem as SettingsError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, SettingsError):
                raise cause from None
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise SettingsError(env_name(field), first["msg"]) from None
