"""The operator killed mid-reconcile (SIGKILL, as an OOM or a node loss would) and restarted.

The real ``modelserve operator`` process runs as config/'s ``modelserve-operator``
ServiceAccount against the real control plane and Postgres. It is killed at the
moments a reconcile is half done: right after kopf put its finalizer on the new
ModelServe, right after the InferenceService was created (before the record
moved), and right after the delete handler removed the InferenceService (before it
finished the record and its finalizer). Each time a fresh operator finishes the
work, and the audit afterwards finds exactly one InferenceService owned by the
ModelServe, one server row with the right status, and, after the delete,
nothing left in the cluster.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from integration.operator.conftest import api
from integration.operator.test_operator import a_pending_modelserve, isvcs
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from support.databases import create_postgres_database, drop_postgres_database
from support.kubectl import KubeconfigFor
from support.postgres import PostgresServer
from support.records import wait_for_status
from support.reliability import Recorder
from support.waiting import eventually

__all__ = ["api"]
pytestmark = [pytest.mark.reliability("faults"), pytest.mark.kube, pytest.mark.postgres]


@contextmanager
def operator_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``modelserve operator`` as its own process; killed (not stopped) at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "modelserve", "operator", "--no-post-events"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(30)


def kill_when(
    process: subprocess.Popen[bytes], moment: Callable[[], Any], within: float = 90
) -> None:
    """SIGKILL the operator the moment ``moment()`` is true (polled every 20 ms)."""
    deadline = time.monotonic() + within
    while not moment():
        assert process.poll() is None, "the operator exited by itself"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)


async def test_the_operator_killed_mid_reconcile_converges(
    api: client.ApiClient,
    kubeconfig_for: KubeconfigFor,
    postgres_server: PostgresServer,
    reliability: Recorder,
) -> None:
    for name, checked in (
        ("after the finalizer", "a fresh operator makes exactly one InferenceService"),
        ("after the InferenceService", "no second one; the record reaches loading"),
        ("mid-delete", "a fresh operator removes the InferenceService; the record is deleted"),
    ):
        reliability.case(
            f"operator SIGKILL {name}",
            injected=f"SIGKILL of `modelserve operator` {name}",
            checked=checked,
            outcome="survived",
        )
    url = await create_postgres_database(postgres_server)
    engine = make_engine(url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    env = {
        "MODELSERVE_MODE": "kubernetes",
        "MODELSERVE_DATABASE_URL": url,
        "MODELSERVE_KUBECONFIG": str(kubeconfig_for("modelserve-operator")),
        "MODELSERVE_JWT_SECRET": secrets.token_hex(24),
        "MODELSERVE_PUBLIC_BASE_URL": "https://models.example.test",
    }
    objects = client.CustomObjectsApi(api)

    def modelserve() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = objects.get_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name
            )
        except ApiException as exc:
            assert exc.status == 404
            return None
        return found

    try:
        namespace, spec = await a_pending_modelserve(api, sessions)
        name = ms.resource_name(spec.server_uuid)
        with operator_process(env) as first:
            kill_when(first, lambda: ((modelserve() or {}).get("metadata") or {}).get("finalizers"))
        with operator_process(env) as second:
            kill_when(second, lambda: isvcs(api, namespace))
        with operator_process(env):
            await wait_for_status(sessions, spec.server_uuid, "loading", within=60)
            (isvc,) = isvcs(api, namespace)
            owner = modelserve()
            assert owner is not None
            (reference,) = isvc["metadata"]["ownerReferences"]
            assert reference["uid"] == owner["metadata"]["uid"]
            assert owner["metadata"]["finalizers"] == ["modelserve.dev/operator"]

        with operator_process(env) as deleting:
            objects.delete_namespaced_custom_object(
                ms.GROUP, ms.VERSION, namespace, ms.PLURAL, name
            )
            kill_when(deleting, lambda: not isvcs(api, namespace))  # its child gone, itself not
        with operator_process(env):
            await eventually(lambda: modelserve() is None and not isvcs(api, namespace), 60)
            await wait_for_status(sessions, spec.server_uuid, "deleted", within=60)
        async with sessions() as session:
            rows = await repo.list_servers(session)
        assert [(r.server_uuid, r.status) for r in rows] == [(spec.server_uuid, "deleted")]
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, url)
