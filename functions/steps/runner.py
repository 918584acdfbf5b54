"""Run one step on one event: verify, dedupe, handle, and turn failures into serve.failed.

Answers map onto Knative Eventing's delivery rules: 200 with a reply event (it
goes back to the broker), 202 with none (the chain ends), 400 for a request that
will never work (not retried), 401/403 for a bad token, 503 for "try again"
(retried with backoff, then dead-lettered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict
from sqlalchemy.exc import OperationalError

from modelserve.functions.catalog.base import CatalogError, ModelNotInCatalog
from modelserve.functions.steps.context import RetryLater, StepContext, StepFailure, Superseded
from modelserve.shared import events as ev
from modelserve.shared import lifecycle, logs, tracing
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.db import repo
from modelserve.shared.lifecycle import ServerStatus
from modelserve.shared.store.base import StoreUnavailable

log = logging.getLogger(__name__)
Handler = Callable[[CloudEvent, StepContext], Awaitable[CloudEvent | None]]
TRANSIENT = (StoreUnavailable, OperationalError, ConnectionError, TimeoutError)


@dataclass
class Outcome:
    status: int
    reply: CloudEvent | None = None
    message: str = ""
    duplicate: bool = False  # answered as an earlier delivery was

    @property
    def kind(self) -> str:
        """The ``outcome`` label of ``modelserve_step_events_total``."""
        if self.duplicate:
            return "duplicate"
        if self.status >= 500:  # Knative Eventing redelivers these
            return "retry"
        if self.status >= 400:
            return "refused"
        if self.reply is None:
            return "acked"
        return "failed" if self.reply["type"] == ev.SERVE_FAILED else "ok"


def _request_of(event: CloudEvent) -> ev.ServeRequest | None:
    data = event.get_data()
    if isinstance(data, dict) and isinstance(data.get("request"), dict):
        try:
            return ev.ServeRequest.model_validate(data["request"])
        except ValueError:
            return None
    return None


async def _fail(
    step: str, event: CloudEvent, ctx: StepContext, failure: StepFailure
) -> CloudEvent | None:
    server = ev.subject_uuid(event)
    message = failure.reason
    if failure.violations:
        message = f"{failure.reason}: " + "; ".join(failure.violations)
    try:
        moved = await lifecycle.move(
            ctx.sessions,
            server,
            ServerStatus.FAILED,
            status_message=message,
            progress=None,
            violations=failure.violations or None,
        )
    except repo.NotFound:
        log.warning("serve %s failed before its server record existed: %s", server, message)
    else:
        if not moved:  # deleted (or already failed) meanwhile: nobody waits for the reason
            log.info("%s: server %s is %s; not failing it: %s", step, server, moved.status, message)
            return None
    data = ev.ServeFailed(
        request=_request_of(event),
        step=step,
        reason=failure.reason,
        violations=failure.violations,
    )
    return ctx.reply(step, event, ev.SERVE_FAILED, data)


def _stored(reply: dict[str, Any] | None, *, duplicate: bool = False) -> Outcome:
    if reply is None:
        return Outcome(202, duplicate=duplicate)
    return Outcome(200, from_dict(reply), duplicate=duplicate)


async def run_step(step: str, handler: Handler, event: CloudEvent, ctx: StepContext) -> Outcome:
    """Run ``handler`` once per event; every line it logs names the server, the
    event and its trace, and the step's metrics count what came of it."""
    started = time.perf_counter()
    traceparent = event.get(ev.TRACEPARENT_ATTRIBUTE)
    with (
        logs.bound(
            server_uuid=event.get("subject"),
            event_id=event["id"],
            trace_id=logs.trace_id(traceparent),
        ),
        tracing.continued(
            f"step {step}",
            traceparent,
            server_uuid=str(event.get("subject")),
            event_type=str(event["type"]),
        ) as span,
    ):
        outcome = Outcome(500)
        try:
            outcome = await _run_step(step, handler, event, ctx)
            return outcome
        finally:
            span.set_attribute("outcome", outcome.kind)
            ctx.metrics.events.labels(step, outcome.kind).inc()
            ctx.metrics.duration.labels(step).observe(time.perf_counter() - started)


async def _run_step(step: str, handler: Handler, event: CloudEvent, ctx: StepContext) -> Outcome:
    try:
        ev.verify_event(event, ctx.verifier)
    except ev.EventError as exc:
        return Outcome(400, message=str(exc))
    except AuthError as exc:
        return Outcome(exc.status, message=f"{exc.code}: {exc.message}")
    async with ctx.sessions() as session:
        seen = await repo.processed_event(session, event["source"], event["id"])
    if seen is not None:
        log.info("%s: %s/%s handled before; answering as then", step, event["source"], event["id"])
        return _stored(seen.reply, duplicate=True)
    try:
        reply = await handler(event, ctx)
    except ev.EventError as exc:
        return Outcome(400, message=str(exc))
    except RetryLater as exc:
        return Outcome(503, message=str(exc))
    except Superseded as exc:
        # Not written in the ledger: when a twin delivery of this event is what moved
        # the server on, the twin's answer is the event's answer, and writing "no
        # reply" first would make the twin answer that too (its reply lost).
        log.info("%s: %s; acking %s", step, exc, event["id"])
        return Outcome(202)
    except TRANSIENT as exc:
        log.warning("%s: transient failure, asking for redelivery: %s", step, exc)
        return Outcome(503, message=f"{type(exc).__name__}: {exc}")
    except StepFailure as failure:
        reply = await _fail(step, event, ctx, failure)
    except ModelNotInCatalog as exc:
        reply = await _fail(step, event, ctx, StepFailure(str(exc)))
    except CatalogError as exc:
        return Outcome(503, message=f"catalog: {exc}")
    except Exception as exc:
        log.exception("%s failed on %s", step, event["id"])
        reply = await _fail(step, event, ctx, StepFailure(f"internal error in {step}: {exc}"))
    stored = to_dict(reply) if reply is not None else None
    async with ctx.sessions.begin() as session:
        first = await repo.mark_event_processed(
            session, event["source"], event["id"], event["type"], event.get("subject"), stored
        )
        if not first:  # a concurrent delivery finished first: answer as it did
            seen = await repo.processed_event(session, event["source"], event["id"])
            return _stored(seen.reply if seen else stored, duplicate=True)
    return _stored(stored)
