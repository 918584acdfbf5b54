"""Tenancy in the pipeline: a step judges the role its token was signed with, not the data.

The real pipeline (functions-framework over HTTP, config/'s Triggers on the embedded
broker, MinIO, the store) under a contract that gives operators one replica and
admins eight. An operator's serve of three replicas is started as ``POST /serve``
starts it, then its event's data is rewritten to say ``admin`` (what anyone who can
post to the broker could send): the contract step still judges an operator's
request and refuses it, and nothing is applied.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from modelserve.shared import events as ev
from modelserve.shared.db import repo
from support.pipeline import pipeline_factory, tiny_gguf
from support.reliability import Recorder

__all__ = ["pipeline_factory", "tiny_gguf"]
pytestmark = [pytest.mark.reliability("tenancy"), pytest.mark.minio]


async def test_a_step_takes_the_role_from_the_token_not_the_event_data(
    pipeline_factory: Any, tiny_gguf: bytes, tmp_path: Path, reliability: Recorder
) -> None:
    reliability.case(
        "pipeline: role rewritten in the event data",
        injected="an operator's serve.requested whose data says role admin (3 replicas; "
        "operators may have 1, admins 8)",
        checked="the contract step judges the token's role (operator): serve.failed at the "
        "contract, nothing applied",
    )
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        json.dumps(
            {"limits": {"max_replicas": 1}, "role_overrides": {"admin": {"max_replicas": 8}}}
        )
    )
    pipe = await pipeline_factory(contract_file=contract)
    pipe.upload_upstream("demo", tiny_gguf)
    broker = pipe.broker()
    event = await pipe.request_event("demo", replicas=3, role="operator")
    forged = event.get_data()
    forged["request"]["role"] = "admin"
    event.data = forged
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()
    types = [e["type"] for e in broker.seen]
    assert ev.SERVER_APPLIED not in types, types
    (failed,) = [e for e in broker.seen if e["type"] == ev.SERVE_FAILED]
    body = ev.payload(failed, ev.ServeFailed)
    assert body.step == "contract", body
    assert [v.split(":")[0] for v in body.violations] == ["replicas"], body.violations
    async with pipe.sessions() as session:
        record = await repo.get_server(session, ev.subject_uuid(event))
    assert record.status == "failed"
