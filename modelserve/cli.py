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

from importlib.metadata import version as package_version

import typer

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
def up() -> None:
    """Start the embedded stack (API, gateway, dashboard, broker, functions, local backend).

    Not built yet: the embedded stack arrives with the CLI/embedded-stack issue.
    """
    typer.echo(
        "modelserve up: the embedded stack is not built yet. It needs the runtime, "
        "the serve pipeline, the local backend and the API/gateway; see the open issues.",
        err=True,
    )
    raise typer.Exit(code=2)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="modelserve")


if __name__ == "__main__":  # pragma: no cover
    main()
