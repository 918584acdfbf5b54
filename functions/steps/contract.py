"""model.available -> contract.approved, or serve.failed listing every violation."""

from __future__ import annotations

from cloudevents.http import CloudEvent
from pydantic import ValidationError

from modelserve.functions.steps.context import StepContext, StepFailure
from modelserve.shared import events as ev
from modelserve.shared.contract import ResourceRequest, check, enforce
from modelserve.shared.db import repo
from modelserve.shared.gguf_inspect import info_from_facts
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.modelserve import RuntimeParams

STEP = "contract"


def _problems(exc: ValidationError, prefix: str) -> list[str]:
    return [f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


async def handle(event: CloudEvent, ctx: StepContext) -> CloudEvent:
    available = ev.payload(event, ev.ModelAvailable)
    request, server = available.request, ev.subject_uuid(event)
    await ctx.advance(
        server, ServerStatus.VALIDATING, status_message="checking the resource contract"
    )
    try:
        params = RuntimeParams.model_validate(request.runtime_params)
    except ValidationError as exc:
        raise StepFailure("invalid runtime parameters", _problems(exc, "runtime_params.")) from None
    async with ctx.sessions() as session:
        record = await repo.get_model(session, available.model.model_uuid)
    if not record.gguf:
        raise StepFailure(f"model {record.model_name} has no recorded GGUF facts")
    model = info_from_facts(record.object_path, record.gguf)
    try:
        wanted = ResourceRequest.model_validate(
            {
                "role": ctx.requester(event).role,  # the verified claim, not the event's data
                "namespace": request.namespace or ctx.settings.namespace,
                "replicas": request.replicas,
                "max_replicas": request.max_replicas,
                "cpu": request.cpu,  # quantities: "500m", "4Gi"
                "memory": request.memory,
                "context_length": params.n_ctx,
                "type_k": params.type_k or "f16",
                "type_v": params.type_v or "f16",
            }
        )
    except (ValidationError, ValueError) as exc:
        reasons = _problems(exc, "") if isinstance(exc, ValidationError) else [str(exc)]
        raise StepFailure("invalid resource request", reasons) from None
    violations = check(ctx.contract, wanted, model)
    if violations:
        raise StepFailure("the request breaks the resource contract", [str(v) for v in violations])
    memory = enforce(ctx.contract, wanted, model)
    return ctx.reply(
        STEP,
        event,
        ev.CONTRACT_APPROVED,
        ev.ContractApproved(
            request=request,
            model=available.model,
            memory_bytes=memory,
        ),
    )
