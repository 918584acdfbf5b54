"""The ``modelserve`` command line: the one place that wires components together.

``modelserve`` is a namespace package on purpose: the component folders at the
repository root (``shared/``, ``functions/``, ``runtime/``, ``kserve/``,
``operator/``) are reached through the relative symlinks beside this file and
have no ``__init__.py``, so none of them can shadow the standard library's
``operator`` or the KServe SDK, and import-linter can still see all of them.

Nothing imports this module (an import contract checks it); it is the edge where
configuration enters and is passed down.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import typer

from modelserve.remote import DEFAULT_DATA_DIR, DEFAULT_URL, mint_token, register
from modelserve.remote import fail as _fail
from modelserve.remote_keys import register as register_keys
from modelserve.shared.runtime_params import env_name

app = typer.Typer(
    name="modelserve",
    help="Serverless serving of GGUF language models: embedded stack, pipeline and runtime.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the modelserve version."""
    typer.echo(package_version("modelserve"))


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface for the API, gateway and dashboard.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port for the API, gateway and dashboard.")] = 8080,
    data_dir: Annotated[
        Path, typer.Option(help="SQLite, object store, logs, secrets.")
    ] = DEFAULT_DATA_DIR,
    dev: Annotated[bool, typer.Option(help="Dev mode: generated admin, printed token.")] = True,
) -> None:
    """Run the whole embedded stack: API + gateway, broker, pipeline, local backend."""
    import asyncio

    from modelserve.shared import logs, tracing
    from modelserve.shared.settings import SettingsError
    from modelserve.stack import StackInfo, run_stack

    logs.configure()
    tracing.configure()  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set

    def ready(info: StackInfo) -> None:
        lines = [
            "",
            f"modelserve is up at {info.url}",
            f"dashboard: {info.url}/  (sign in as {info.admin_username})",
            f"API docs: {info.url}/docs",
            f"data directory: {info.data_dir.resolve()}",
        ]
        if info.admin_password:
            lines.append(f"admin password (shown once): {info.admin_password}")
        if dev:
            lines.append(f"admin token: {info.admin_token}")
        where = "" if info.url == DEFAULT_URL else f" --url {info.url}"
        where += "" if info.data_dir == DEFAULT_DATA_DIR else f" --data-dir {info.data_dir}"
        lines += [
            "",
            "serve the demo model (in another shell):",
            f"  .venv/bin/modelserve serve demo{where}" + ("" if dev else " --token $TOKEN"),
            "or with curl:",
            f"  TOKEN=$(.venv/bin/modelserve token --data-dir {info.data_dir})",
            f'  curl -s -X POST {info.url}/serve -H "Authorization: Bearer $TOKEN" '
            "-H 'Content-Type: application/json' -d '{\"model\": \"demo\"}'",
            "then chat with it (OpenAI client):",
            f"  OpenAI(base_url='{info.url}/<server_uuid>/v1', api_key=TOKEN)",
            "",
        ]
        typer.echo("\n".join(lines))

    try:
        asyncio.run(run_stack(data_dir, host, port, dev=dev, on_ready=ready))
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@app.command()
def token(
    data_dir: Annotated[
        Path, typer.Option(help="The data directory of `modelserve up`.")
    ] = DEFAULT_DATA_DIR,
    user: Annotated[str, typer.Option(help="User to mint the token for.")] = "admin",
) -> None:
    """Print an access token for a user of that data directory (only the token)."""
    typer.echo(mint_token(data_dir, user))


@app.command("gen-model")
def gen_model(
    path: Annotated[Path, typer.Argument(help="Where to write the .gguf file.")],
    preset: Annotated[
        str,
        typer.Option(
            help="tiny (~0.5 MB, tests/demo), mini (~10 MB), small (~210 MB); "
            "mamba (recurrent) or hybrid (Jamba: Mamba and attention blocks), ~0.5 MB each."
        ),
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
    name: Annotated[str | None, typer.Option(help="general.name in the header.")] = None,
) -> None:
    """Write a GGUF with random weights (no download needed): llama-shaped, or Mamba/Jamba."""
    from modelserve.shared.gguf_inspect import inspect_gguf
    from modelserve.shared.gguf_synth import PRESETS, write_synthetic_gguf

    if preset not in PRESETS:
        raise _fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    write_synthetic_gguf(path, preset, seed=seed, name=name)
    info = inspect_gguf(path)
    typer.echo(
        f"wrote {path} ({info.file_size / 1e6:.1f} MB, {info.parameter_count:,} parameters, "
        f"{info.file_type}, context {info.context_length})"
    )


def _runtime_options(run: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    """A command with one option per runtime parameter, derived from RuntimeConfig
    (type, help, ``MODELSERVE_RUNTIME_<NAME>`` variable), as llama-cpp-python's CLI
    is derived from its settings. Unset options stay unset, so the runtime's own
    defaults (declared once, in shared/runtime_params.py) apply."""
    from modelserve.runtime.config import RuntimeConfig

    parameters, hints = [], {}
    for name, info in RuntimeConfig.model_fields.items():
        required = info.is_required()
        kind: Any = info.annotation if required else info.annotation | None  # type: ignore[operator]
        text = (info.description or "").rstrip(".")
        if not required and info.default is not None:
            text += f" (default {info.default})"
        hint = Annotated[kind, typer.Option(envvar=env_name(name), help=text, show_default=False)]
        default = inspect.Parameter.empty if required else None
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
            )
        )
        hints[name] = hint

    def command(**values: Any) -> None:
        run(values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = hints
    command.__doc__ = run.__doc__
    command.__name__ = run.__name__
    return command


@app.command()
@_runtime_options
def runtime(values: dict[str, Any]) -> None:
    """Serve one GGUF with the OpenAI API (KServe ModelServer + llama.cpp)."""
    from modelserve.runtime.config import RuntimeConfigError, build_config
    from modelserve.runtime.engine import EngineError
    from modelserve.runtime.source import ModelSourceError
    from modelserve.shared import logs, tracing

    logs.configure()
    traces = tracing.TraceSettings()
    tracing.configure(traces)  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        config = build_config(**values)
        config.chat_template_text()
    except RuntimeConfigError as exc:
        raise _fail(str(exc)) from None
    from modelserve.runtime.server import serve

    try:
        serve(config, traceparent=traces.traceparent)
    except (ModelSourceError, EngineError) as exc:
        raise _fail(str(exc), code=1) from None


@app.command("operator")
def operator_command(
    post_events: Annotated[bool, typer.Option(help="Post Kubernetes Events.")] = True,
    webhook_port: Annotated[
        int | None, typer.Option(help="Serve the admission webhooks (HTTPS) on this port.")
    ] = None,
    webhook_cert: Annotated[Path | None, typer.Option(help="Webhook TLS certificate.")] = None,
    webhook_key: Annotated[Path | None, typer.Option(help="Webhook TLS private key.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics at /metrics on this port.")
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve kopf's health check (HTTP GET /healthz) on this port.")
    ] = None,
) -> None:
    """Run the ModelServe operator (kopf): ModelServe -> KServe InferenceService.

    Settings come from MODELSERVE_* (database URL, kubeconfig or in-cluster credentials).
    """
    import asyncio

    from modelserve.operator.run import operate
    from modelserve.shared import logs, tracing
    from modelserve.shared.settings import SettingsError, load_settings

    logs.configure()
    tracing.configure()  # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    webhook = None
    if webhook_port is not None:
        import kopf

        if webhook_cert is None or webhook_key is None:
            raise _fail("--webhook-port needs --webhook-cert and --webhook-key")
        webhook = kopf.WebhookServer(
            addr="0.0.0.0",  # noqa: S104 - the API server calls it from outside the pod
            port=webhook_port,
            certfile=str(webhook_cert),
            pkeyfile=str(webhook_key),
        )
    metrics = ("0.0.0.0", metrics_port) if metrics_port is not None else None  # noqa: S104
    # The kubelet probes it from outside the pod, hence every interface.
    liveness = None if health_port is None else f"http://0.0.0.0:{health_port}/healthz"
    asyncio.run(
        operate(
            settings,
            post_events=post_events,
            webhook=webhook,
            metrics_address=metrics,
            liveness_endpoint=liveness,
        )
    )


register(app)
register_keys(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="modelserve")


if __name__ == "__main__":  # pragma: no cover
    main()
