"""What every ``cellpipe`` subcommand shares: the error context, the one place errors become
exit codes and messages, and the ``--runs-root`` / ``--json`` options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from cellpipe.core.errors import CellpipeError, CompileError

STATE_STYLE = {
    "pending": "dim",
    "running": "bold blue",
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "magenta",
}


class Context:
    debug = False
    json = False


#: Options that shape how errors are reported; set by the group and the commands.
CONTEXT = Context()


def fail(exc: BaseException, ctx: Context) -> NoReturn:
    """The CLI's one translation point from exceptions to exit codes and messages."""
    if isinstance(exc, CellpipeError):
        if ctx.json:
            click.echo(json.dumps(exc.to_json(), indent=1))
        elif isinstance(exc, CompileError):
            click.echo(f"cellpipe: {len(exc.diagnostics)} problem(s) in the notebook:", err=True)
            for d in exc.diagnostics:
                click.echo(f"  error: {d}", err=True)
        else:
            click.echo(f"cellpipe: error: {exc}", err=True)
        if ctx.debug:
            raise exc
        sys.exit(exc.exit_code)
    raise exc


def runs_root_path(value: str | None) -> Path:
    from cellpipe.rundir.runs import default_root

    return Path(value) if value else default_root()


runs_root_option = click.option(
    "--runs-root",
    envvar="CELLPIPE_RUNS_ROOT",
    type=click.Path(file_okay=False),
    help="Where run directories live. Default: $CELLPIPE_RUNS_ROOT, else ./.cellpipe/runs.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout only."
)


def stdout_console() -> Any:
    """A rich console for tables on stdout. Piped or redirected, rich would fold tables at
    80 columns; lines as wide as their content are what `grep`, `less -S` and files want."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=250)
