"""cellpipe: turn a tagged Jupyter notebook into a pipeline and run it faithfully.

The public API is small on purpose::

    cellpipe.compile(path)                      # -> Pipeline, or CompileError with every problem
    cellpipe.run(path, backend="local", parameters={...})   # -> RunStatus
    cellpipe.runs(path)                         # -> pandas DataFrame of runs, newest first
    cellpipe.load(run_id, step, name)           # a value from any past run

In a notebook, ``%load_ext cellpipe`` adds ``%cellpipe run``: the saved notebook runs as a
pipeline in the background while a live widget shows its steps (see cellpipe.ipython).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe._version import __version__
from cellpipe.core.errors import CellpipeError, CompileError, StepFailed
from cellpipe.core.model import State

if TYPE_CHECKING:
    import pandas

    from cellpipe.core.model import Pipeline
    from cellpipe.rundir.runs import RunStatus

__all__ = [
    "CellpipeError",
    "CompileError",
    "State",
    "StepFailed",
    "__version__",
    "compile",
    "load",
    "load_ipython_extension",
    "run",
    "runs",
]


def compile(path: str | Path) -> Pipeline:
    """Compile the notebook at ``path``; raises CompileError listing every problem."""
    from cellpipe.compiling.compiler import compile_notebook

    return compile_notebook(path)


def run(
    path: str | Path,
    *,
    backend: str = "local",
    parameters: dict[str, Any] | None = None,
    jobs: int | None = None,
    use_cache: bool = True,
    runs_root: str | Path | None = None,
) -> RunStatus:
    """Run the notebook at ``path`` as a pipeline and wait for the end; return its status.

    Works from inside a running event loop too. In a Jupyter kernel the run happens in a
    process of its own (interrupting the kernel cancels it) while a live widget shows it.
    """
    from cellpipe.driving.driver import drive, prepare_run
    from cellpipe.rundir.runs import default_root

    root = Path(runs_root) if runs_root else default_root()
    from cellpipe.ipython import in_kernel

    if in_kernel():
        from cellpipe.ipython import run_and_wait

        return run_and_wait(
            path,
            backend=backend,
            parameters=parameters,
            options={"jobs": jobs, "no_cache": not use_cache},
            runs_root=root,
        )
    rd = prepare_run(
        root,
        path,
        backend=backend,
        parameters=parameters,
        options={"jobs": jobs, "no_cache": not use_cache},
    )
    drive(rd)
    return rd.status()


def runs(
    path: str | Path | None = None, *, runs_root: str | Path | None = None
) -> pandas.DataFrame:
    """Runs (of the notebook at ``path``, when given), newest first, as a DataFrame to compare.

    Indexed by ``run_id``; columns ``notebook``, ``state``, ``started`` (a timestamp),
    ``duration_s``, ``backend``, ``user``, ``via``, then ``param.NAME`` for each parameter
    (its value in that run), ``metric.NAME`` for each recorded metric and ``duration.STEP``
    (seconds) for each step.
    """
    from cellpipe.rundir.runs import default_root, list_runs, run_summary

    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "cellpipe.runs() returns a pandas DataFrame: `pip install pandas`, or use "
            "`cellpipe runs --json` on the command line"
        ) from None
    root = Path(runs_root) if runs_root else default_root()
    rows = []
    for rd in list_runs(root, path):
        s = run_summary(rd)
        row: dict[str, Any] = {
            "run_id": s["run_id"],
            "notebook": s["notebook"],
            "state": s["state"],
            "started": s["started_at"],
            "duration_s": s["duration_s"],
            "backend": s["backend"],
            "user": s["user"],
            "via": s["via"],
        }
        row.update({f"param.{k}": v for k, v in s["parameters"].items()})
        row.update({f"metric.{k}": v for k, v in s["metrics"].items()})
        row.update({f"duration.{k}": v["duration_s"] for k, v in s["steps"].items()})
        rows.append(row)
    base = ["run_id", "notebook", "state", "started", "duration_s", "backend", "user", "via"]
    frame = pd.DataFrame(rows, columns=base if not rows else None)
    frame["started"] = pd.to_datetime(frame["started"], unit="s", utc=True)
    return frame.set_index("run_id")


def load(run_id: str, step: str, name: str, *, runs_root: str | Path | None = None) -> Any:
    """The value ``name`` as step ``step`` of run ``run_id`` saved it (time travel).

    Only names a later step reads are saved. Raises RunNotFound / KeyError with the names
    that exist. For a run on Argo the step's values are first copied from the cluster's
    storage into the run's own directory (S3 with this machine's AWS credentials, or a
    volume through a one-pod Workflow: docs/argo.md), and read from there.
    """
    from cellpipe.core.pseudo import is_pseudo
    from cellpipe.execution.marshal import load_value
    from cellpipe.rundir.runs import RunDir, default_root

    rd = RunDir.open(Path(runs_root) if runs_root else default_root(), run_id)
    directory = rd.data_dir(step)
    remote = rd.remote(step)
    if remote is not None:
        from cellpipe.backends.argo.values import fetch

        if name not in (remote.get("manifest") or {}):
            saved = [n for n in remote.get("manifest") or {} if not is_pseudo(n)]
            raise KeyError(
                f"step {step} of run {run_id} saved no `{name}`; it saved: "
                + (", ".join(saved) or "nothing")
            )
        fetch(rd, step)
    try:
        manifest = rd.manifest(step)
    except FileNotFoundError:
        raise KeyError(f"run {run_id} has no saved values for step {step!r}") from None
    if name not in manifest:
        raise KeyError(
            f"step {step} of run {run_id} saved no `{name}`; it saved: "
            + (", ".join(n for n in manifest if not is_pseudo(n)) or "nothing")
        )
    return load_value(manifest[name], directory)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext cellpipe``: registers the ``%cellpipe`` magic."""
    from cellpipe.ipython import load_ipython_extension as load

    load(ipython)
