"""The resource contract: every violation with its reason, per-role limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.shared.contract import (
    ContractViolation,
    Limits,
    ResourceContract,
    ResourceRequest,
    check,
    enforce,
    load_contract,
)
from modelserve.shared.db.models import Role
from modelserve.shared.gguf_inspect import GGUFInfo, estimate_memory, inspect_gguf
from modelserve.shared.quantity import cpu_cores, format_bytes, memory_bytes


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> GGUFInfo:
    return inspect_gguf(tiny_model)


def request(**fields: object) -> ResourceRequest:
    base: dict[str, object] = {"role": Role.OPERATOR, "namespace": "modelserve"}
    base.update(fields)
    return ResourceRequest.model_validate(base)


def test_a_fitting_request_passes_and_reserves_the_estimate(tiny: GGUFInfo) -> None:
    contract = ResourceContract()
    assert check(contract, request(), tiny) == []
    assert enforce(contract, request(), tiny) == estimate_memory(tiny, 2048).total_bytes
    assert enforce(contract, request(memory="1Gi"), tiny) == 2**30


def test_every_violation_is_reported_with_its_reason(tiny: GGUFInfo) -> None:
    contract = ResourceContract(
        allowed_namespaces=["prod"],
        limits=Limits.model_validate(
            {
                "max_replicas": 2,
                "max_cpu_per_replica": 2,
                "max_memory_per_replica": "16Mi",
                "max_model_size": "100Ki",
                "max_context_length": 1024,
            }
        ),
    )
    bad = request(namespace="dev", replicas=3, cpu="4", context_length=4096, memory="8Mi")
    with pytest.raises(ContractViolation) as refused:
        enforce(contract, bad, tiny)
    reasons = [str(v) for v in refused.value.violations]
    assert reasons == [
        "namespace: 'dev' is not allowed; allowed: prod",
        "replicas: 3 replicas requested; the limit is 2",
        "cpu: 4 cores per replica requested; the limit is 2",
        f"model: the model file is {format_bytes(tiny.file_size)}; the limit is 100.0 KiB",
        "context_length: 4096 tokens requested; the limit is 1024",
        "context_length: 4096 tokens requested; the model was trained for 2048",
        f"memory: the model needs about "
        f"{format_bytes(estimate_memory(tiny, 4096).total_bytes)} at 4096 tokens of context;"
        f" 8.0 MiB requested",
    ]
    assert str(refused.value).count(";") >= len(reasons) - 1


def test_memory_estimate_against_the_per_replica_limit(tiny: GGUFInfo) -> None:
    contract = ResourceContract(limits=Limits.model_validate({"max_memory_per_replica": "16Mi"}))
    (violation,) = check(contract, request(context_length=512), tiny)
    assert violation.field == "memory"
    assert "needed at 512 tokens; the limit is 16.0 MiB" in violation.reason


def test_role_overrides(tiny: GGUFInfo) -> None:
    contract = ResourceContract(
        limits=Limits(max_replicas=1),
        role_overrides={Role.ADMIN: Limits(max_replicas=10)},
    )
    assert check(contract, request(role=Role.ADMIN, replicas=5), tiny) == []
    assert [v.field for v in check(contract, request(replicas=5), tiny)] == ["replicas"]
    assert contract.limits_for(Role.ADMIN).max_replicas == 10
    assert contract.limits_for(Role.VIEWER).max_replicas == 1


def test_unspecified_context_is_capped_by_the_contract(tiny: GGUFInfo) -> None:
    contract = ResourceContract(limits=Limits(max_context_length=512))
    assert check(contract, request(), tiny) == []
    assert enforce(contract, request(), tiny) == estimate_memory(tiny, 512).total_bytes


def test_contract_file(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(
        "allowed_namespaces: [a, b]\n"
        "limits: {max_replicas: 3, max_memory_per_replica: 8Gi, max_cpu_per_replica: 1500m}\n"
        "role_overrides:\n  admin: {max_replicas: 50}\n"
    )
    contract = load_contract(path)
    assert contract.limits.max_memory_per_replica == 8 * 2**30
    assert contract.limits.max_cpu_per_replica == 1.5
    assert contract.limits_for(Role.ADMIN).max_memory_per_replica == 8 * 2**30
    assert load_contract(None) == ResourceContract()
    path.write_text("limits: {max_replicas: 3, max_gpus: 2}\n")
    with pytest.raises(ValueError, match="max_gpus"):
        load_contract(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512Mi", 512 * 2**20), ("8Gi", 8 * 2**30), ("1G", 10**9), ("1.5Ki", 1536), ("42", 42)],
)
def test_memory_quantities(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


def test_cpu_quantities_and_errors() -> None:
    assert cpu_cores("500m") == 0.5
    assert cpu_cores(2) == 2.0
    for bad in ("8 GB", "-1", "lots", "1.2.3Gi"):
        with pytest.raises(ValueError, match="not a resource quantity"):
            memory_bytes(bad)


def test_runtime_params_refuse_a_batch_larger_than_the_context() -> None:
    import pydantic

    from modelserve.shared.modelserve import RuntimeParams

    with pytest.raises(pydantic.ValidationError, match=r"n_batch \(1024\) may not exceed n_ctx"):
        RuntimeParams(n_ctx=256, n_batch=1024)
    assert RuntimeParams(n_ctx=256, n_batch=256).n_batch == 256


def test_the_runtime_batch_follows_a_small_context() -> None:
    from modelserve.runtime.config import build_config

    assert build_config(model="m.gguf", n_ctx=256).n_batch == 256
    assert build_config(model="m.gguf", n_ctx=4096).n_batch == 512
    assert build_config(model="m.gguf", n_ctx=4096, n_batch=64).n_batch == 64


def test_a_quantized_kv_cache_needs_less_memory(tiny: GGUFInfo) -> None:
    """type_k/type_v reach the estimate: a q8_0 cache fits where an f16 one does not."""
    f16 = estimate_memory(tiny, 2048).total_bytes
    q8 = estimate_memory(tiny, 2048, type_k="q8_0", type_v="q8_0").total_bytes
    assert q8 < f16
    contract = ResourceContract(limits=Limits.model_validate({"max_memory_per_replica": q8}))
    assert check(contract, request(context_length=2048), tiny)  # f16 is over the limit
    quantized = request(context_length=2048, type_k="q8_0", type_v="q8_0")
    assert check(contract, quantized, tiny) == []
    assert enforce(contract, quantized, tiny) == q8
