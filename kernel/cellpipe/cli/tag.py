"""``cellpipe tag NOTEBOOK --at-headings``: tag a notebook's cells as steps in one go."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cellpipe.cli.common import Context, json_option


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "--at-headings",
    is_flag=True,
    help="A step per markdown heading: named from its text; cells before the first "
    "heading become `setup`, cells that only import become `imports`.",
)
@click.option(
    "--level",
    type=click.IntRange(1, 6),
    default=2,
    show_default=True,
    help="Headings of this level or above start a step (`#` is 1, `##` is 2).",
)
@click.option("--dry-run", is_flag=True, help="Show the steps; write nothing.")
@json_option
@click.pass_obj
def tag(
    obj: Context, notebook: str, at_headings: bool, level: int, dry_run: bool, as_json: bool
) -> None:
    """Tag NOTEBOOK's cells as pipeline steps without tagging them one by one.

    Existing step and prev: tags are replaced (edges come from the data the steps share);
    other tags stay. The notebook file is rewritten unless --dry-run; nothing else is.

    \b
    Examples:
      cellpipe tag analysis.ipynb --at-headings --dry-run   # preview
      cellpipe tag analysis.ipynb --at-headings --level 3
    """
    from cellpipe.compiling.notebook import read_notebook
    from cellpipe.compiling.split import apply_split, split_at_headings
    from cellpipe.core.atomic import write_text
    from cellpipe.core.errors import NotebookError

    obj.json = as_json
    if not at_headings:
        raise click.UsageError("say how to tag: --at-headings (the only way so far)")
    path = Path(notebook)
    nb, label = read_notebook(path)
    plan = split_at_headings(nb, level)
    if not plan.steps:
        raise NotebookError(f"{label}: every code cell only imports; there is no step to make")
    written = bool(plan.tags) and not dry_run
    if written:
        # As Jupyter saves notebooks: one-space indent, sorted keys, UTF-8 as is.
        text = json.dumps(apply_split(nb, plan), indent=1, sort_keys=True, ensure_ascii=False)
        write_text(path, text + "\n")
    if as_json:
        click.echo(json.dumps(plan.to_json() | {"written": written}, indent=1))
        return
    number = {cid: n for s in plan.steps for cid, n in zip(s.cells, s.numbers, strict=True)}
    number.update(
        {c.get("id"): i + 1 for i, c in enumerate(nb["cells"]) if c.get("id") in plan.imports}
    )
    width = max(len(s.name) for s in plan.steps)
    click.echo(f"{len(plan.steps)} steps at the headings of level {level} and above in {label}:")
    for s in plan.steps:
        cells = ("cell " if len(s.numbers) == 1 else "cells ") + ", ".join(map(str, s.numbers))
        origin = f"\u201c{s.heading}\u201d" if s.heading is not None else "before the first heading"
        click.echo(f"  {s.name:<{width}}  {cells:<16}  {origin}")
    if plan.imports:
        numbers = ", ".join(str(number.get(c, c)) for c in plan.imports)
        click.echo(f"  imports: {'cell' if len(plan.imports) == 1 else 'cells'} {numbers}")
    if dry_run:
        click.echo(f"--dry-run: {label} not written.")
    elif written:
        click.echo(f"wrote the tags of {len(plan.tags)} cells to {label}")
    else:
        click.echo(f"{label} already has these tags; not written.")
