"""``modelserve keys create|ls|revoke`` and ``users disable`` against the real API over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from typer.testing import CliRunner

from modelserve.cli import app
from support.records import new_server


async def cli(stack: Any, user: str, *args: str) -> Any:
    """Run the CLI in a thread (the API serves on this test's event loop)."""
    runner = CliRunner()
    where = ["--url", stack.api, "--token", stack.token(user)]
    return await asyncio.to_thread(runner.invoke, app, [*args, *where])


async def test_keys_create_ls_revoke(stack: Any) -> None:
    async with stack.sessions.begin() as session:
        server = await new_server(session, status="mirroring", owner="alice")
    made = await cli(stack, "alice", "keys", "create", "batch job", "--server", str(server))
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("msk_") and f"server {server}" in made.stdout
    key_id = key.split("_")[1]
    gateway = await stack.http.get(
        f"{stack.gateway}/{server}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    assert gateway.status_code == 503  # the key opened the door; the server is still mirroring

    listed = await cli(stack, "alice", "keys", "ls")
    assert listed.exit_code == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout
    as_json = await cli(stack, "alice", "keys", "ls", "--json")
    assert [k["key_id"] for k in json.loads(as_json.stdout)] == [key_id]

    revoked = await cli(stack, "alice", "keys", "revoke", key_id)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    listed = await cli(stack, "alice", "keys", "ls")
    assert "revoked" in listed.stdout
    missing = await cli(stack, "bob", "keys", "revoke", key_id)
    assert missing.exit_code == 1 and "404" in missing.output


async def test_keys_create_refuses_bad_input(stack: Any) -> None:
    bad = await cli(stack, "alice", "keys", "create", "x", "--expires", "soon")
    assert bad.exit_code == 2 and "duration" in bad.output
    unknown = await cli(stack, "alice", "keys", "create", "x", "--server", str(uuid.uuid4()))
    assert unknown.exit_code == 1 and "404" in unknown.output
    expiring = await cli(
        stack,
        "alice",
        "keys",
        "create",
        "x",
        "--expires",
        "30d",
        "--tokens-per-day",
        "5000",
        "--json",
    )
    assert expiring.exit_code == 0, expiring.output
    assert json.loads(expiring.stdout)["expires_at"] is not None
    assert json.loads(expiring.stdout)["tokens_per_day"] == 5000
    zero = await cli(stack, "alice", "keys", "create", "x", "--tokens-per-day", "0")
    assert zero.exit_code == 2 and "tokens_per_day" in zero.output


async def test_users_disable_and_enable(stack: Any) -> None:
    disabled = await cli(stack, "root", "users", "disable", "bob")
    assert disabled.exit_code == 0 and "disabled" in disabled.stdout
    refused = await cli(stack, "bob", "keys", "ls")
    assert refused.exit_code == 1 and "403" in refused.output
    listed = await cli(stack, "root", "users", "ls", "--json")
    assert {u["username"]: u["disabled_at"] for u in json.loads(listed.stdout)}["bob"]
    enabled = await cli(stack, "root", "users", "enable", "bob")
    assert enabled.exit_code == 0 and "enabled" in enabled.stdout
    not_admin = await cli(stack, "alice", "users", "disable", "bob")
    assert not_admin.exit_code == 1 and "403" in not_admin.output
