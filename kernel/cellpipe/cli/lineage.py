"""``cellpipe lineage RUN_ID STEP NAME``: where a stored value came from."""

from __future__ import annotations

import json

import click

from cellpipe.cli.common import (
    Context,
    json_option,
    runs_root_option,
    runs_root_path,
    stdout_console,
)


@click.command()
@click.argument("run_id")
@click.argument("step")
@click.argument("name")
@runs_root_option
@json_option
@click.pass_obj
def lineage(
    obj: Context, run_id: str, step: str, name: str, runs_root: str | None, as_json: bool
) -> None:
    """Where the value NAME of STEP in run RUN_ID came from.

    Prints its ancestry: the step that made it (with its code's hash and the run that really
    computed it when it was cached), that step's inputs and where they came from, back to
    the steps that read only the parameters.
    """
    from cellpipe.core.errors import RunNotFound
    from cellpipe.execution.lineage import ancestry, render

    obj.json = as_json
    try:
        origin = ancestry(runs_root_path(runs_root), run_id, step, name)
    except KeyError as exc:
        raise RunNotFound(exc.args[0]) from None
    if as_json:
        click.echo(json.dumps(origin.to_json(), indent=1, default=repr))
        return
    stdout_console().print(render(origin))
