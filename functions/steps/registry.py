"""Which step handles which event type: the single source for hosts, triggers and tests."""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.functions.steps import (
    apply,
    availability,
    contract,
    dead_letter,
    mirror,
    signed_url,
)
from modelserve.functions.steps.runner import Handler
from modelserve.shared import events as ev


@dataclass(frozen=True)
class Step:
    name: str
    handles: str | None  # None: any event type (the dead-letter sink)
    handler: Handler

    @property
    def service(self) -> str:
        """The Knative Service (and Trigger subscriber) name of this step."""
        return f"modelserve-{self.name}"


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("availability", ev.SERVE_REQUESTED, availability.handle),
        Step("signed-url", ev.MODEL_MISSING, signed_url.handle),
        Step("mirror", ev.MODEL_URL_SIGNED, mirror.handle),
        Step("contract", ev.MODEL_AVAILABLE, contract.handle),
        Step("apply", ev.CONTRACT_APPROVED, apply.handle),
    )
}

DEAD_LETTER = Step("dead-letter", None, dead_letter.handle)


def lookup(name: str) -> Step:
    return DEAD_LETTER if name == DEAD_LETTER.name else STEPS[name]
