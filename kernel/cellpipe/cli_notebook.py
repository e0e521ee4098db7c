"""Commands for the notebook experience: ``cellpipe lineage``, ``cellpipe serve``, and the
``--metrics`` view of ``cellpipe runs``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from .cli import _Context, _runs_root, json_option, runs_root_option, stdout_console


def print_metrics(dirs: list[Any], as_json: bool) -> None:
    """``cellpipe runs --metrics``: one row per run, one column per parameter and metric."""
    from .runs import run_summary

    rows = [run_summary(rd) for rd in dirs]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {k: r[k] for k in ("run_id", "state", "started_at", "duration_s")}
                    | {"parameters": r["parameters"], "metrics": r["metrics"]}
                    for r in rows
                ],
                indent=1,
                default=repr,
            )
        )
        return
    if not rows:
        click.echo("no runs yet: start one with `cellpipe run NOTEBOOK`", err=True)
        return
    from rich.table import Table

    params = list(dict.fromkeys(k for r in rows for k in r["parameters"]))
    metrics = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    table = Table(title="parameters | metrics", title_justify="left")
    table.add_column("run", no_wrap=True)
    table.add_column("state")
    table.add_column("started", no_wrap=True)
    for p in params:
        table.add_column(p, style="dim")
    for m in metrics:
        table.add_column(m, justify="right", style="bold")
    for r in rows:
        started = (
            time.strftime("%m-%d %H:%M:%S", time.localtime(r["started_at"]))
            if r["started_at"]
            else ""
        )
        table.add_row(
            r["run_id"],
            r["state"],
            started,
            *(_cell(r["parameters"].get(p, "")) for p in params),
            *(_cell(r["metrics"].get(m, "")) for m in metrics),
        )
    stdout_console().print(table)
    if not metrics:
        click.echo(
            "no metrics recorded: tag a cell `metrics` whose lines name the values to record",
            err=True,
        )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@click.command()
@click.argument("run_id")
@click.argument("step")
@click.argument("name")
@runs_root_option
@json_option
@click.pass_obj
def lineage(
    obj: _Context, run_id: str, step: str, name: str, runs_root: str | None, as_json: bool
) -> None:
    """Where the value NAME of STEP in run RUN_ID came from.

    Prints its ancestry: the step that made it (with its code's hash and the run that really
    computed it when it was cached), that step's inputs and where they came from, back to
    the steps that read only the parameters.
    """
    from .errors import RunNotFound
    from .lineage import ancestry, render

    obj.json = as_json
    try:
        origin = ancestry(_runs_root(runs_root), run_id, step, name)
    except KeyError as exc:
        raise RunNotFound(exc.args[0]) from None
    if as_json:
        click.echo(json.dumps(origin.to_json(), indent=1, default=repr))
        return
    stdout_console().print(render(origin))


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False, exists=True))
@click.option("--port", default=8000, show_default=True, help="TCP port (0: any free port).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The endpoint has no authentication: keep it on localhost "
    "or behind a proxy that authenticates.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests run at once; one more is answered 429 with Retry-After.",
)
@click.option("--verbose", is_flag=True, help="Log every request on stderr.")
@runs_root_option
@click.pass_obj
def serve(
    obj: _Context,
    notebook: str,
    port: int,
    host: str,
    max_concurrent: int,
    verbose: bool,
    runs_root: str | None,
) -> None:
    """Serve NOTEBOOK's pipeline over HTTP: POST /run runs it with the given parameters.

    \b
    POST /run  {"parameters": {"x": 3}, "return": ["prediction"]}
            -> {"run_id", "state", "steps", "metrics", "values", "duration_s"}
    GET /health

    Steps whose code, inputs and parameters are unchanged come from the cache; a warm
    process is ready before each request. The notebook is read once, at start.
    """
    from .serve import PipelineService, make_server

    service = PipelineService(Path(notebook), _runs_root(runs_root), max_concurrent=max_concurrent)
    server = make_server(service, host, port)
    server.verbose = verbose  # type: ignore[attr-defined]
    bound_host, bound_port = server.server_address[:2]
    click.echo(
        f"cellpipe: serving {notebook} on http://{bound_host}:{bound_port} "
        f"(POST /run, GET /health; {max_concurrent} at once). Ctrl-C stops.",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("cellpipe: stopping", err=True)
    finally:
        server.server_close()
        service.close()
