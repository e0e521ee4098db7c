"""``cellpipe runs --metrics``: runs side by side, one column per parameter and metric."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from cellpipe.cli.common import stdout_console


def print_metrics(dirs: list[Any], as_json: bool) -> None:
    """``cellpipe runs --metrics``: one row per run, one column per parameter and metric."""
    from cellpipe.rundir.runs import run_summary

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
