"""The ``cellpipe`` command.

Exit codes: 0 success, 1 the pipeline failed, 2 bad input (the message names the cell and
the tag or variable). With ``--json`` stdout carries only JSON; messages go to stderr.
Heavy imports happen inside commands so ``cellpipe --help`` and ``compile`` start fast.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from cellpipe._version import __version__
from cellpipe.backends.argo.cli import schedule as schedule_command
from cellpipe.backends.docker.cli import image as image_group
from cellpipe.cli.common import (
    CONTEXT,
    STATE_STYLE,
    Context,
    fail,
    json_option,
    runs_root_option,
    runs_root_path,
    stdout_console,
)
from cellpipe.cli.lineage import lineage as lineage_command
from cellpipe.cli.report import report as report_command
from cellpipe.cli.serve import serve as serve_command
from cellpipe.cli.tag import tag as tag_command
from cellpipe.core.errors import CellpipeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cellpipe")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run a tagged Jupyter notebook as a pipeline of steps.

    Tag code cells `step:NAME` (or Kale's `block:NAME`), optionally `prev:NAME`, and mark
    shared cells `imports`, `functions` and `parameters`. cellpipe works out which variables
    each step needs from earlier steps, and runs the steps as a DAG so that the result is what
    "Restart and Run All" computes.

    \b
    Examples:
      cellpipe compile examples/wine.ipynb            # show the steps and their data
      cellpipe run examples/wine.ipynb -p n_estimators=20 --output executed.ipynb
      cellpipe runs                                   # history, newest first
      cellpipe logs RUN_ID train                      # a step's stdout and stderr
    """
    ctx.obj = CONTEXT
    ctx.obj.debug = debug


# -- compile -----------------------------------------------------------------------------------


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(),
    help="Write pipeline.json and steps/<step>.py into this directory; with --target argo, "
    "the Workflow YAML into this file ('-': stdout).",
)
@click.option(
    "--target",
    type=click.Choice(["scripts", "argo"]),
    default="scripts",
    show_default=True,
    help="What to generate.",
)
@json_option
@click.pass_obj
def compile(obj: Context, notebook: str, out_dir: str | None, target: str, as_json: bool) -> None:
    """Check a notebook and show its pipeline: steps, dependencies, inputs -> outputs.

    Exits 2 and lists every problem (with cell numbers) when the notebook cannot run as a
    pipeline that matches a top-to-bottom run.
    """
    from cellpipe.compiling.compiler import compile_notebook
    from cellpipe.rundir.runs import RunDir

    obj.json = as_json
    pipeline = compile_notebook(notebook)
    if target == "argo":
        from cellpipe.backends.argo.cli import compile_argo

        return compile_argo(pipeline, out_dir, as_json)
    if out_dir:
        RunDir(Path(out_dir)).write_pipeline(pipeline)
    if as_json:
        click.echo(json.dumps(pipeline.to_json(), indent=1))
        return
    _print_pipeline(pipeline)
    if out_dir:
        out = RunDir(Path(out_dir))
        click.echo(
            f"\nWrote {out.pipeline_path()} and {len(pipeline.steps)} step scripts in {out.scripts_dir()}/"
        )


def _print_pipeline(pipeline: Any) -> None:
    from rich.table import Table

    console = stdout_console()
    table = Table(title=f"{pipeline.name}: {len(pipeline.steps)} steps", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("after")
    table.add_column("cells", justify="right")
    table.add_column("inputs")
    table.add_column("outputs")
    table.add_column("settings")
    from cellpipe.compiling.compiler import _describe_settings

    numbers = {c.id: c.number for c in pipeline.cells}
    for s in pipeline.steps:
        cells = sorted(numbers[c] for c in s.cells)
        inputs = ", ".join(f"{n}←{p}" for n, p in s.inputs.items())
        table.add_row(
            s.name,
            ", ".join(s.after) or "-",
            _ranges(cells),
            inputs or "-",
            ", ".join(s.outputs) or "-",
            _describe_settings(s.settings.to_json()) or "-",
        )
    console.print(table)
    if pipeline.parameters:
        console.print(
            "parameters: " + ", ".join(f"{p.name}={p.expression}" for p in pipeline.parameters)
        )
    for d in pipeline.diagnostics:
        console.print(f"[yellow]warning:[/] {d}", highlight=False)


def _ranges(numbers: list[int]) -> str:
    out, start, prev = [], None, None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


# -- run -----------------------------------------------------------------------------------


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--backend",
    "backend_name",
    default="local",
    show_default=True,
    help="Where steps run: local, docker (a container per step) or argo (a pod per step).",
)
@click.option(
    "-p",
    "--parameter",
    "raw_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a value of the parameters cell (typed like papermill: bool, None, int, "
    "float, else str). Repeatable.",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Steps at once. Default: cores.")
@click.option("--no-cache", is_flag=True, help="Run every step, even unchanged ones.")
@click.option("--namespace", help="argo: the Kubernetes namespace (default: the kubeconfig's).")
@click.option(
    "--resume",
    metavar="RUN_ID",
    help="Continue RUN_ID: keep its succeeded steps, run failed and later ones again with "
    "the notebook's current code.",
)
@click.option(
    "--output",
    "executed",
    type=click.Path(dir_okay=False),
    help="Write a copy of the notebook with every cell's outputs (the source is untouched).",
)
@click.option(
    "--notify",
    metavar="URL|COMMAND",
    envvar="CELLPIPE_NOTIFY",
    help="When the run ends, POST its status (JSON) to URL, or pipe it to COMMAND's stdin. "
    "Put secrets in ${VARIABLES}: they are read when sending, never stored. The notebook's "
    "metadata.cellpipe.notify wins. Default: $CELLPIPE_NOTIFY.",
)
@runs_root_option
@json_option
@click.pass_obj
def run(
    obj: Context,
    notebook: str | None,
    backend_name: str,
    raw_params: tuple[str, ...],
    jobs: int | None,
    no_cache: bool,
    namespace: str | None,
    resume: str | None,
    executed: str | None,
    notify: str | None,
    runs_root: str | None,
    as_json: bool,
) -> None:
    """Run a notebook as a pipeline and wait for it to finish.

    Exit status: 0 when every step succeeded, 1 when a step failed, 2 for bad input.
    """
    obj.json = as_json
    backend = _early_backend(backend_name)  # first: it warms up while we compile
    from cellpipe.compiling.notebook import parse_parameter_options
    from cellpipe.core.errors import ParameterError
    from cellpipe.driving.driver import drive, prepare_resume, prepare_run

    root = runs_root_path(runs_root)
    overrides = parse_parameter_options(raw_params)
    if resume:
        if overrides:
            raise ParameterError(
                "--resume keeps the run's parameters; start a new run to change them"
            )
        rd = prepare_resume(root, resume, notebook)
    elif not notebook:
        raise ParameterError("give a NOTEBOOK to run, or --resume RUN_ID")
    else:
        rd = prepare_run(
            root,
            notebook,
            backend=backend_name,
            parameters=overrides,
            options={"jobs": jobs, "no_cache": no_cache, "namespace": namespace},
            via="cli",
            notify=notify,
        )
    pipeline = rd.pipeline()
    for d in pipeline.diagnostics:
        click.echo(f"cellpipe: warning: {d}", err=True)
    if not as_json:
        click.echo(
            f"cellpipe: run {rd.run_id} ({len(pipeline.steps)} steps, {backend_name})", err=True
        )

    progress: _Progress | None = None
    if not as_json:
        progress = _Progress(rd) if sys.stderr.isatty() else _StepLines(rd)
    if progress:
        progress.start()
    try:
        # A resumed run goes on with its own backend (drive reads it from the run), not --backend's.
        state = drive(rd, resume=bool(resume), backend=None if resume else backend)
    finally:
        if progress:
            progress.stop()
    status = rd.status()
    if executed:
        from cellpipe.reports.executed import write_executed_notebook

        written = write_executed_notebook(rd, Path(executed))
    if as_json:
        click.echo(json.dumps(_status_json(status), indent=1))
    else:
        _print_status(status, rd)
        if executed:
            click.echo(f"executed notebook: {executed}", err=True)
            for extra in written[1:]:
                click.echo(f"executed referenced notebook: {extra}", err=True)
    sys.exit(0 if state.ok else 1)


def _early_backend(name: str) -> Any:
    """The backend, checked and asked to warm up before anything else is done (see
    LocalBackend.prepare). Raises BackendUnavailable when it cannot run here."""
    from cellpipe.backends import available_backend

    backend = available_backend(name)
    prepare = getattr(backend, "prepare", None)
    if prepare is not None:
        prepare()
    return backend


def _status_json(status: Any) -> dict[str, Any]:
    d = status.to_json()
    d["steps"] = {
        name: {
            k: s[k]
            for k in ("state", "duration_s", "attempts", "cached", "message", "iterations")
            if k in s  # iterations: a foreach step's {done, total}
        }
        for name, s in d["steps"].items()
    }
    return d


class _Progress:
    """A live table on the terminal: one line per step with its state and elapsed time."""

    def __init__(self, rd: Any):
        self.rd = rd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cellpipe-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        with Live(console=console, refresh_per_second=8, transient=True) as live:
            while not self._stop.wait(0.12):
                try:
                    live.update(_status_table(self.rd.status(), live=True))
                except (OSError, ValueError):
                    continue


class _StepLines(_Progress):
    """Without a terminal (a CI log, a pipe): a line on stderr each time a step's state or
    message changes, so that a long or stuck run says where it is (a pod waiting for a
    node, an image pull) while it waits, not only at the end."""

    def _loop(self) -> None:
        said: dict[str, tuple[str, str | None]] = {}
        while True:
            stopping = self._stop.wait(1.0)
            try:
                steps = self.rd.status().steps
            except (OSError, ValueError):
                steps = {}
            for name, st in steps.items():
                now = (st.state.value, st.message or None)
                if said.get(name, ("pending", None)) != now:
                    said[name] = now
                    click.echo(f"cellpipe: step {_step_line(name, st)}", err=True)
            if stopping:
                return


def _step_line(name: str, st: Any) -> str:
    line = f"{name}: {st.state.value}"
    if st.duration_s is not None and st.state.terminal:
        line += f" in {st.duration_s:.2f} s"
    if st.message and st.state.value != "succeeded":
        line += f" ({st.message})"
    return line


def _status_table(status: Any, live: bool = False) -> Any:
    from rich.table import Table

    table = Table(
        title=f"run {status.run_id} · {status.state.value}", title_justify="left", expand=False
    )
    table.add_column("step", style="bold")
    table.add_column("state")
    table.add_column("duration", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("cached")
    table.add_column("message", overflow="fold", max_width=60)
    now = time.time()
    for name, st in status.steps.items():
        if st.duration_s is not None:
            dur = f"{st.duration_s:.2f} s"
        elif st.started_at and st.state.value == "running":
            dur = f"{now - st.started_at:.1f} s"
        else:
            dur = ""
        style = STATE_STYLE.get(st.state.value, "")
        table.add_row(
            name,
            f"[{style}]{st.state.value}[/]",
            dur,
            str(st.attempts or ""),
            "yes" if st.cached else "",
            st.message if (live or st.state.value not in ("succeeded",)) else "",
        )
    return table


def _print_status(status: Any, rd: Any) -> None:
    console = stdout_console()
    console.print(_status_table(status))
    dur = f" in {status.duration_s:.2f} s" if status.duration_s is not None else ""
    console.print(f"run [bold]{status.run_id}[/] {status.state.value}{dur}", highlight=False)
    console.print(f"run directory: {rd.path}", highlight=False, soft_wrap=True)
    for name, st in status.steps.items():
        if st.state.value == "failed":
            console.print(
                f"[red]step {name} failed[/]: {st.message}\n  log: {rd.log_path(name)}",
                highlight=False,
            )


# -- runs, status, logs, cancel ---------------------------------------------------------------


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False), required=False)
@click.option("--limit", default=20, show_default=True, help="How many runs to show.")
@click.option(
    "--metrics", "with_metrics", is_flag=True, help="Compare runs: parameters and metrics."
)
@click.option(
    "--compare",
    "compare_ids",
    multiple=True,
    metavar="RUN_ID",
    help="Compare these runs (give two or more): parameters, metrics, per-step state, "
    "duration and cached/ran, differing columns marked. Extra RUN_IDs may follow NOTEBOOK.",
)
@click.argument("more_ids", nargs=-1, metavar="")
@runs_root_option
@json_option
@click.pass_obj
def runs(
    obj: Context,
    notebook: str | None,
    limit: int,
    with_metrics: bool,
    compare_ids: tuple[str, ...],
    more_ids: tuple[str, ...],
    runs_root: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first (of NOTEBOOK only, when given).

    `cellpipe runs NB --compare ID ID…` compares runs side by side instead.
    """
    from cellpipe.rundir.runs import RunDir, list_runs

    obj.json = as_json
    if more_ids and not compare_ids:
        raise click.UsageError("more than one NOTEBOOK: to compare runs, use --compare ID ID…")
    if compare_ids:
        ids = [*compare_ids, *more_ids]
        if len(ids) < 2:
            raise click.UsageError("--compare needs two or more run ids")
        root = runs_root_path(runs_root)
        chosen = [RunDir.open(root, run_id) for run_id in ids]
        if notebook:
            listed = {rd.run_id for rd in list_runs(root, notebook)}
            other = [rd.run_id for rd in chosen if rd.run_id not in listed]
            if other:
                raise click.UsageError(f"not runs of {notebook}: {', '.join(other)}")
        from cellpipe.cli.compare import print_comparison

        print_comparison(chosen, as_json)
        return
    dirs = list_runs(runs_root_path(runs_root), notebook)[:limit]
    if with_metrics:
        from cellpipe.cli.metrics import print_metrics

        print_metrics(dirs, as_json)
        return
    statuses = [rd.status() for rd in dirs]
    if as_json:
        click.echo(json.dumps([_status_json(s) for s in statuses], indent=1))
        return
    if not statuses:
        click.echo("no runs yet: start one with `cellpipe run NOTEBOOK`", err=True)
        return
    from rich.table import Table

    table = Table()
    for col in ("run", "notebook", "state", "started", "duration", "steps"):
        table.add_column(col, no_wrap=col not in ("notebook", "steps"))
    for s in statuses:
        counts: dict[str, int] = {}
        for st in s.steps.values():
            counts[st.state.value] = counts.get(st.state.value, 0) + 1
        table.add_row(
            s.run_id,
            Path(s.notebook).name if s.notebook else "-",
            f"[{STATE_STYLE.get(s.state.value, '')}]{s.state.value}[/]",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started_at))
            if s.started_at
            else "",
            f"{s.duration_s:.1f} s" if s.duration_s is not None else "",
            " ".join(f"{n} {k}" for k, n in counts.items()),
        )
    stdout_console().print(table)


@cli.command()
@click.argument("run_id")
@runs_root_option
@json_option
@click.pass_obj
def status(obj: Context, run_id: str, runs_root: str | None, as_json: bool) -> None:
    """Show the state of a run and of each of its steps."""
    from cellpipe.rundir.runs import RunDir

    obj.json = as_json
    rd = RunDir.open(runs_root_path(runs_root), run_id)
    st = rd.status()
    if as_json:
        click.echo(json.dumps(_status_json(st), indent=1))
    else:
        _print_status(st, rd)
        if st.message and st.state.value != "failed":
            click.echo(st.message)
        elif st.message:
            click.echo(st.message, err=True)


@cli.command()
@click.argument("run_id")
@click.argument("step")
@runs_root_option
@click.pass_obj
def logs(obj: Context, run_id: str, step: str, runs_root: str | None) -> None:
    """Print the stdout and stderr of STEP in run RUN_ID."""
    from cellpipe.core.errors import RunNotFound
    from cellpipe.rundir.runs import RunDir

    rd = RunDir.open(runs_root_path(runs_root), run_id)
    names = [s.name for s in rd.pipeline().steps]
    if step not in names:
        raise RunNotFound(f"run {run_id} has no step {step!r}; steps: {', '.join(names)}")
    path = rd.log_path(step)
    if not path.exists():
        click.echo(f"step {step} has not written a log yet", err=True)
        return
    click.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)


@cli.command()
@click.argument("run_id")
@runs_root_option
@click.pass_obj
def cancel(obj: Context, run_id: str, runs_root: str | None) -> None:
    """Stop a running run: its running steps end as cancelled."""
    from cellpipe.backends import get_backend
    from cellpipe.rundir.runs import RunDir

    rd = RunDir.open(runs_root_path(runs_root), run_id)
    get_backend(rd.info().get("backend", "local")).cancel(rd)
    click.echo(f"run {run_id} {rd.status().state.value}")


for _command in (
    lineage_command,
    serve_command,
    image_group,
    schedule_command,
    report_command,
    tag_command,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point; the one place errors become messages and exit codes."""
    try:
        code = cli.main(args=argv, prog_name="cellpipe", standalone_mode=False)
    except click.ClickException as exc:  # usage errors: exit 2, as click does
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except CellpipeError as exc:
        fail(exc, CONTEXT)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
