"""The CLI's key and user commands: ``modelserve keys create|ls|revoke``, ``users``.

Kept beside ``remote.py`` (same options, same client) but on their own: keys are
credentials, and the one rule here is that a key's plaintext is printed once, at
creation, and never again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Annotated

import typer

from modelserve.functions.api.client import ApiClient
from modelserve.functions.api.schemas import Key, KeyBody
from modelserve.remote import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    AsJson,
    DataDir,
    Token,
    Url,
    _client,
    _print_table,
    _run,
    fail,
)

keys_app = typer.Typer(help="API keys for servers' OpenAI endpoints.", no_args_is_help=True)
users_app = typer.Typer(help="Users (admins): list, disable, enable.", no_args_is_help=True)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(duration: str | None) -> int | None:
    """``90d``, ``12h``, ``30m`` or ``600s`` in seconds."""
    if duration is None:
        return None
    match = _DURATION.match(duration)
    if match is None:
        raise fail(f"--expires wants a duration like 30d, 12h, 30m or 600s, not {duration!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _state(key: Key) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= dt.datetime.now(dt.UTC):
        return "expired"
    return "active"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'chat front end'.")],
    server: Annotated[
        uuid.UUID | None, typer.Option(help="Only this server; default: all you may use.")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime: 30d, 12h, 30m, 600s.")] = None,
    tokens_per_day: Annotated[
        int | None, typer.Option(help="Budget per UTC day; past it the gateway answers 429.")
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Make an API key and print it, once: it cannot be shown again."""
    try:
        body = KeyBody(
            name=name,
            server_uuid=server,
            expires_in_seconds=_seconds(expires),
            tokens_per_day=tokens_per_day,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    made = _run(_client(url, token, data_dir), lambda c: c.create_key(body))
    if as_json:
        typer.echo(made.model_dump_json(indent=2))
        return
    scope = f"server {made.server_uuid}" if made.server_uuid else "all your servers"
    typer.echo(f"key {made.key_id} ({made.name}) for {scope}, expires {_when(made.expires_at)}")
    typer.echo("store it now; it is not shown again:", err=True)
    typer.echo(made.key)


@keys_app.command("ls")
def keys_ls(
    owner: Annotated[str | None, typer.Option(help="Admins: one user's keys.")] = None,
    server: Annotated[uuid.UUID | None, typer.Option(help="Only keys for this server.")] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Your keys (an admin sees everyone's): id, name, scope, state, times; never secrets."""
    found = _run(_client(url, token, data_dir), lambda c: c.keys(owner, server))
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in found], indent=2))
        return
    _print_table(
        ["KEY", "NAME", "OWNER", "SERVER", "STATE", "CREATED", "EXPIRES", "LAST USED"],
        [
            [
                k.key_id,
                k.name,
                k.owner,
                str(k.server_uuid) if k.server_uuid else "all",
                _state(k),
                _when(k.created_at),
                _when(k.expires_at),
                _when(k.last_used_at),
            ]
            for k in found
        ],
        "no keys yet: `modelserve keys create NAME` makes one",
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (as `keys ls` shows it).")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Revoke a key: refused everywhere within seconds."""
    key = _run(_client(url, token, data_dir), lambda c: c.revoke_key(key_id))
    typer.echo(f"key {key.key_id} ({key.name}): revoked at {_when(key.revoked_at)}")


@users_app.command("ls")
def users_ls(
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Every user, with role and whether disabled."""
    found = _run(_client(url, token, data_dir), lambda c: c.users())
    if as_json:
        typer.echo(json.dumps([u.model_dump(mode="json") for u in found], indent=2))
        return
    _print_table(
        ["USER", "ROLE", "CREATED", "DISABLED"],
        [[u.username, u.role, _when(u.created_at), _when(u.disabled_at)] for u in found],
        "no users",
    )


def _set_disabled(username: str, disabled: bool, client: ApiClient) -> None:
    user = _run(client, lambda c: c.set_disabled(username, disabled))
    typer.echo(f"user {user.username}: {'disabled' if user.disabled_at else 'enabled'}")


@users_app.command("disable")
def users_disable(
    username: Annotated[str, typer.Argument()],
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Disable a user: every token and key of theirs is refused from now on."""
    _set_disabled(username, True, _client(url, token, data_dir))


@users_app.command("enable")
def users_enable(
    username: Annotated[str, typer.Argument()],
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False, _client(url, token, data_dir))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
