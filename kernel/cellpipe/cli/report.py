"""``cellpipe report RUN_ID``: a run as one self-contained HTML page (see cellpipe.reports.report)."""

from __future__ import annotations

from pathlib import Path

import click

from cellpipe.cli.common import runs_root_option, runs_root_path


@click.command()
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the page; `-` prints it. Default: report.html in the run directory.",
)
@runs_root_option
def report(run_id: str, output: str | None, runs_root: str | None) -> None:
    """Write run RUN_ID as one HTML page that opens offline: every step's state, inputs,
    outputs and traceback, the executed cells, the DAG, the parameters and the metrics.

    \b
    Examples:
      cellpipe report RUN_ID                  # writes report.html into the run directory
      cellpipe report RUN_ID -o wine.html     # to share: images and styles are inside
    """
    from cellpipe.reports.report import render_report, write_report
    from cellpipe.rundir.runs import RunDir

    rd = RunDir.open(runs_root_path(runs_root), run_id)
    if output == "-":
        click.echo(render_report(rd), nl=False)
        return
    click.echo(str(write_report(rd, Path(output) if output else None)))
