"""The resource contract: what a serve request may ask for, per role.

The validator returns every violation with its reason, not only the first, so
the user can fix a request in one go. Memory is judged with the GGUF memory
estimate (weights + KV cache at the requested context + overhead), so a model
that cannot fit is refused before a pod is ever scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import GGUFInfo, estimate_memory
from modelserve.shared.quantity import cpu_cores, format_bytes, memory_bytes
from modelserve.shared.runtime_params import CacheType

Bytes = Annotated[int, BeforeValidator(memory_bytes)]
Cores = Annotated[float, BeforeValidator(cpu_cores)]


class Limits(BaseModel):
    """Upper bounds; ``None`` means no bound on that dimension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_replicas: int | None = Field(default=None, ge=0)
    max_cpu_per_replica: Cores | None = None
    max_memory_per_replica: Bytes | None = None
    max_model_size: Bytes | None = None
    max_context_length: int | None = Field(default=None, gt=0)
    max_gpus_per_replica: int | None = Field(default=0, ge=0)
    """GPUs are granted, never assumed: 0 unless the contract names a number (None: any)."""

    def merged(self, override: Limits) -> Limits:
        """This set with every bound that ``override`` sets replaced."""
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class ResourceContract(BaseModel):
    """Limits for everyone, per-role overrides, and where servers may run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_namespaces: list[str] | None = None
    limits: Limits = Limits(
        max_replicas=4,
        max_cpu_per_replica=8,
        max_memory_per_replica=32 * 2**30,
        max_model_size=64 * 2**30,
        max_context_length=32768,
    )
    role_overrides: dict[Role, Limits] = Field(default_factory=dict)

    def limits_for(self, role: Role) -> Limits:
        override = self.role_overrides.get(role)
        return self.limits.merged(override) if override else self.limits

    @classmethod
    def from_file(cls, path: Path) -> ResourceContract:
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})


class ResourceRequest(BaseModel):
    """What one serve request asks for, per replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    namespace: str
    replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    cpu: Cores = 1.0
    memory: Bytes | None = None
    context_length: int | None = Field(default=None, gt=0)
    type_k: CacheType = CacheType.F16
    type_v: CacheType = CacheType.F16
    """The KV cache's element types (runtime parameters): a quantized cache needs less."""
    gpus: int = Field(default=0, ge=0)

    def estimate(self, model: GGUFInfo, context: int) -> int:
        """Bytes ``model`` needs at ``context`` tokens with this request's cache types."""
        return estimate_memory(model, context, type_k=self.type_k, type_v=self.type_v).total_bytes


@dataclass(frozen=True)
class Violation:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ContractViolation(Exception):
    """A request breaks the contract; ``violations`` lists every reason."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(str(v) for v in violations))
        self.violations = violations


def effective_context(request: ResourceRequest, limits: Limits, model: GGUFInfo) -> int:
    """The requested context, or else the model's, capped by the contract."""
    if request.context_length:
        return request.context_length
    candidates = [c for c in (model.context_length, limits.max_context_length) if c]
    return min(candidates) if candidates else 4096


def check(contract: ResourceContract, request: ResourceRequest, model: GGUFInfo) -> list[Violation]:
    """Every way ``request`` breaks ``contract`` for ``model``; empty when it fits."""
    limits = contract.limits_for(request.role)
    found: list[Violation] = []

    def violate(field: str, reason: str) -> None:
        found.append(Violation(field, reason))

    if contract.allowed_namespaces is not None and (
        request.namespace not in contract.allowed_namespaces
    ):
        allowed = ", ".join(contract.allowed_namespaces) or "(none)"
        violate("namespace", f"{request.namespace!r} is not allowed; allowed: {allowed}")
    top = max(request.replicas, request.max_replicas or 0)
    if limits.max_replicas is not None and top > limits.max_replicas:
        violate("replicas", f"{top} replicas requested; the limit is {limits.max_replicas}")
    if request.max_replicas is not None and request.max_replicas < request.replicas:
        violate("max_replicas", f"{request.max_replicas} is below replicas={request.replicas}")
    if limits.max_cpu_per_replica is not None and request.cpu > limits.max_cpu_per_replica:
        violate(
            "cpu",
            f"{request.cpu:g} cores per replica requested; the limit is "
            f"{limits.max_cpu_per_replica:g}",
        )
    if limits.max_gpus_per_replica is not None and request.gpus > limits.max_gpus_per_replica:
        violate(
            "gpus",
            f"{request.gpus} GPUs per replica requested; the limit is "
            f"{limits.max_gpus_per_replica}",
        )
    if limits.max_model_size is not None and model.file_size > limits.max_model_size:
        violate(
            "model",
            f"the model file is {format_bytes(model.file_size)}; the limit is "
            f"{format_bytes(limits.max_model_size)}",
        )

    context = effective_context(request, limits, model)
    if limits.max_context_length is not None and context > limits.max_context_length:
        violate(
            "context_length",
            f"{context} tokens requested; the limit is {limits.max_context_length}",
        )
    if model.context_length and context > model.context_length:
        violate(
            "context_length",
            f"{context} tokens requested; the model was trained for {model.context_length}",
        )

    needed = request.estimate(model, context)
    if request.memory is not None and needed > request.memory:
        violate(
            "memory",
            f"the model needs about {format_bytes(needed)} at {context} tokens of "
            f"context; {format_bytes(request.memory)} requested",
        )
    asked = request.memory if request.memory is not None else needed
    if limits.max_memory_per_replica is not None and asked > limits.max_memory_per_replica:
        what = "requested" if request.memory is not None else f"needed at {context} tokens"
        violate(
            "memory",
            f"{format_bytes(asked)} per replica {what}; the limit is "
            f"{format_bytes(limits.max_memory_per_replica)}",
        )
    return found


def enforce(contract: ResourceContract, request: ResourceRequest, model: GGUFInfo) -> int:
    """Raise ContractViolation with every reason, else return the memory to reserve."""
    violations = check(contract, request, model)
    if violations:
        raise ContractViolation(violations)
    limits = contract.limits_for(request.role)
    needed = request.estimate(model, effective_context(request, limits, model))
    return request.memory if request.memory is not None else needed


def load_contract(path: Path | None) -> ResourceContract:
    """The contract in ``path`` (YAML), or the built-in default."""
    return ResourceContract.from_file(path) if path else ResourceContract()
