"""The CLI's client commands: serve, servers, stop, models ls/push.

They talk to the API over HTTP with a token, so they work the same against
``modelserve up`` and a cluster. The token comes from ``--token`` or
MODELSERVE_TOKEN; without one, a local data directory mints an admin token
(what ``modelserve token`` prints), so on one machine nothing needs copying.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from modelserve.functions.api.client import ApiClient, ApiError
from modelserve.functions.api.schemas import ServeBody, Server

Url = Annotated[
    str, typer.Option("--url", envvar="MODELSERVE_URL", help="Base URL of the modelserve API.")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELSERVE_TOKEN",
        help="Bearer token; default: minted from --data-dir when it is a local stack's.",
    ),
]
DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Local stack's data directory (token fallback).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = Path(".data")  # what `modelserve up` uses
T = TypeVar("T")

models_app = typer.Typer(help="Mirrored and catalog models.", no_args_is_help=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def _client(url: str, token: str | None, data_dir: Path) -> ApiClient:
    if token is None:
        from modelserve.stack import secret_file

        if not secret_file(data_dir).exists():
            raise fail(
                "no token: pass --token or set MODELSERVE_TOKEN "
                f"(or run next to a local stack's data directory; {data_dir} is not one)"
            )
        token = mint_token(data_dir, None)
    return ApiClient(url, token)


def mint_token(data_dir: Path, user: str | None) -> str:
    """An access token for ``user`` (default: the admin) of a local data directory."""
    import asyncio

    from modelserve.shared.auth.tokens import TokenIssuer
    from modelserve.shared.db import repo
    from modelserve.shared.db.engine import make_engine, make_sessionmaker
    from modelserve.shared.db.models import Role
    from modelserve.stack import secret_file, stack_settings

    if not secret_file(data_dir).exists():
        raise fail(f"{data_dir} is not a modelserve data directory (run `modelserve up` first)")
    settings = stack_settings(data_dir, "127.0.0.1", 8080, dev=True)
    name = user or settings.admin_username

    async def lookup() -> str | None:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                found = await repo.get_user(session, name)
                return found.role if found else None
        finally:
            await engine.dispose()

    role = asyncio.run(lookup())
    if role is None:
        raise fail(f"no user {name!r} in {data_dir}")
    return TokenIssuer.from_settings(settings).access_token(name, Role(role))


def _run(client: ApiClient, call: Callable[[ApiClient], T]) -> T:
    with client:
        try:
            return call(client)
        except ApiError as exc:
            raise fail(str(exc), code=1) from None


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _time(server: Server) -> str:
    return server.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _print_table(columns: list[str], rows: list[list[str]], empty: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo(empty)
        return
    table = Table(*columns, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def _params(pairs: list[str]) -> dict[str, Any]:
    """``n_ctx=4096`` style runtime parameters; values are JSON when they parse as JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise fail(f"--param wants KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def serve(
    model: Annotated[str, typer.Argument(help="Model name (catalog or mirrored), e.g. demo.")],
    replicas: Annotated[int, typer.Option(help="Replicas kept warm (0 scales to zero).")] = 1,
    max_replicas: Annotated[int | None, typer.Option(help="Upper bound for autoscaling.")] = None,
    cpu: Annotated[str, typer.Option(help="CPU per replica (Kubernetes quantity).")] = "1",
    memory: Annotated[
        str | None, typer.Option(help="Memory per replica, e.g. 2Gi; default: estimated.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Runtime parameter KEY=VALUE (n_ctx, n_threads, seed, ...); repeat."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait, showing progress, until ready.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for ready.")] = 600.0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Serve a model: prints its server UUID and, once ready, its OpenAI base URL."""
    try:
        body = ServeBody.model_validate(
            {
                "model": model,
                "replicas": replicas,
                "max_replicas": max_replicas,
                "cpu": cpu,
                "memory": memory,
                "runtime_params": _params(param or []),
            }
        )
    except ValidationError as exc:
        raise fail(
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from None

    def call(client: ApiClient) -> Server | None:
        accepted = client.serve(body)
        typer.echo(f"server {accepted.server_uuid}: {accepted.status}")
        if not wait:
            return None

        def show(server: Server) -> None:
            percent = f" {server.progress:.0f}%" if server.progress is not None else ""
            message = server.status_message or ""
            message = f"  {message}" if message and message != server.status else ""
            typer.echo(f"  {server.status}{percent}{message}")

        return client.wait(accepted.server_uuid, show, timeout=timeout)

    server = _run(_client(url, token, data_dir), call)
    if server is None:
        return
    if server.status != "ready":
        raise fail(f"server {server.server_uuid} {server.status}: {server.status_message}", 1)
    typer.echo(f"ready: OpenAI base_url {server.gateway_url}/v1")


def servers(
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List every server: status, model, memory, CPU, times and URL."""
    found = _run(_client(url, token, data_dir), lambda c: c.servers())
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return
    _print_table(
        ["SERVER", "MODEL", "STATUS", "REPLICAS", "MEM MB", "MAX MB", "CPU %", "CREATED", "URL"],
        [
            [
                str(s.server_uuid),
                s.model_name,
                s.status,
                str(s.replicas),
                _mb(s.memory_current_mb),
                _mb(s.memory_max_mb),
                _mb(s.cpu_usage_percent),
                _time(s),
                s.gateway_url or "-",
            ]
            for s in found
        ],
        "no servers yet: `modelserve serve demo` starts one",
    )


def stop(
    server_uuid: Annotated[uuid.UUID, typer.Argument(help="The server's UUID.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Stop and delete a server (its model stays mirrored)."""
    server = _run(_client(url, token, data_dir), lambda c: c.delete(server_uuid))
    typer.echo(f"server {server.server_uuid}: {server.status}")


@models_app.command("ls")
def models_ls(
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Mirrored models (size, quantisation, architecture, context, sha256) and the catalog."""
    found = _run(_client(url, token, data_dir), lambda c: c.models())
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    rows = [
        [
            m.model_name,
            "mirrored",
            f"{m.size_bytes / 1e6:.1f}",
            m.file_type or "-",
            m.architecture or "-",
            str(m.context_length or "-"),
            m.sha256[:12],
        ]
        for m in found.mirrored
    ]
    rows += [
        [c.name, "catalog", f"{(c.size_bytes or 0) / 1e6:.1f}", c.file_type or "-", "-", "-", "-"]
        for c in found.catalog
        if not c.mirrored
    ]
    _print_table(
        ["NAME", "WHERE", "SIZE MB", "TYPE", "ARCH", "CONTEXT", "SHA256"],
        rows,
        "no models: `modelserve models push FILE.gguf` uploads one",
    )


@models_app.command("push")
def models_push(
    path: Annotated[Path, typer.Argument(help="A .gguf file.", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option(help="Model name; default: the file's stem.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Upload a GGUF into the store (checked here first, verified by the server)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TransferSpeedColumn,
    )

    from modelserve.shared.gguf_inspect import GGUFError, inspect_gguf

    try:
        info = inspect_gguf(path)
    except GGUFError as exc:
        raise fail(f"{path} is not a usable GGUF: {exc}") from None
    model_name = name or path.stem
    client = _client(url, token, data_dir)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"uploading {model_name}", total=info.file_size)
        model = _run(client, lambda c: c.push(path, model_name, lambda n: bar.advance(task, n)))
    typer.echo(
        f"model {model.model_name} ({model.model_uuid}): {model.size_bytes} bytes, "
        f"{model.file_type}, sha256 {model.sha256}"
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(servers)
    app.command()(stop)
    app.add_typer(models_app, name="models")
