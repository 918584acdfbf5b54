"""Deliver events to subscribers over HTTP with Knative's semantics, in one process.

- A reply in a 2xx response goes back into the broker; 202/204 mean no reply.
- 404, 408, 409, 429, 5xx and network errors are retried with the trigger's
  backoff; any other status is final. When retries run out, the event goes to
  the dead-letter sink with ``knativeerrordest`` / ``knativeerrorcode``.
- Delivery is at least once (and in memory: what is in flight when the process
  stops is lost; the steps' idempotency makes a re-request safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cloudevents.http import CloudEvent

from modelserve.functions.broker.triggers import Trigger
from modelserve.shared import events as ev

log = logging.getLogger(__name__)
RETRYABLE = {404, 408, 409, 429}


@dataclass
class DeadLetter:
    event: CloudEvent
    trigger: str
    code: int | None
    reason: str


@dataclass
class EmbeddedBroker:
    triggers: list[Trigger]
    resolve: Callable[[str], str]
    http: httpx.AsyncClient
    duplicate_deliveries: bool = False  # deliver everything twice: for idempotency tests
    seen: list[CloudEvent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def publish(self, event: CloudEvent) -> None:
        """Accept an event and fan it out to every matching trigger."""
        self.seen.append(event)
        attributes = event.get_attributes()
        for trigger in self.triggers:
            if trigger.matches(dict(attributes)):
                copies = 2 if self.duplicate_deliveries else 1
                for _ in range(copies):
                    task = asyncio.create_task(self._deliver(trigger, event))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, event: CloudEvent) -> httpx.Response:
        headers, body = ev.encode_binary(event)
        return await self.http.post(url, headers=headers, content=body)

    async def _deliver(self, trigger: Trigger, event: CloudEvent) -> None:
        url = self.resolve(trigger.subscriber)
        code: int | None = None
        reason = ""
        for attempt in range(trigger.delivery.retry + 1):
            if attempt:
                await asyncio.sleep(trigger.delivery.delay(attempt))
            try:
                response = await self._post(url, event)
            except httpx.TransportError as exc:
                code, reason = None, f"{type(exc).__name__}: {exc}"
                continue
            code = response.status_code
            if 200 <= code < 300:
                if (
                    code == 200
                    and response.content
                    and (
                        "ce-id" in response.headers
                        or response.headers.get("content-type", "").startswith(
                            "application/cloudevents"
                        )
                    )
                ):
                    await self.publish(ev.decode(dict(response.headers), response.content))
                return
            reason = response.text[:500]
            if code not in RETRYABLE and code < 500:
                break
        log.warning("dead-lettering %s for %s: %s %s", event["type"], trigger.name, code, reason)
        self.dead.append(DeadLetter(event, trigger.name, code, reason))
        if trigger.delivery.dead_letter:
            letter = CloudEvent(dict(event.get_attributes()), event.get_data())
            letter["knativeerrordest"] = url
            if code is not None:
                letter["knativeerrorcode"] = str(code)
            try:
                await self._post(self.resolve(trigger.delivery.dead_letter), letter)
            except httpx.HTTPError as exc:
                log.error("dead-letter sink unreachable: %s", exc)

    async def drain(self) -> None:
        """Wait until nothing is in flight (deliveries spawn deliveries); bound it with
        ``asyncio.timeout`` at the call site."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
