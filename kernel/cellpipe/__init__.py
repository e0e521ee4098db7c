"""cellpipe: turn a tagged Jupyter notebook into a pipeline and run it faithfully.

The public API is small on purpose::

    cellpipe.compile(path)                      # -> Pipeline, or CompileError with every problem
    cellpipe.run(path, backend="local", parameters={...})   # -> RunStatus
    cellpipe.runs(path)                         # -> list of RunStatus, newest first
    cellpipe.load(run_id, step, name)           # a value from any past run
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The submodule `cellpipe.runs` (the run directory) shares its name with the API function
# `cellpipe.runs()`. Importing it here first means the function defined below is what the
# attribute holds for good; engine code imports the module with `from .runs import ...`.
from . import runs as _runs_module  # noqa: F401
from .errors import CellpipeError, CompileError, StepFailed
from .model import State

if TYPE_CHECKING:
    from .model import Pipeline
    from .runs import RunStatus

__all__ = [
    "CellpipeError",
    "CompileError",
    "State",
    "StepFailed",
    "__version__",
    "compile",
    "load",
    "run",
    "runs",
]


def compile(path: str | Path) -> Pipeline:
    """Compile the notebook at ``path``; raises CompileError listing every problem."""
    from .compiler import compile_notebook

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

    Works from inside a running event loop too (a notebook cell).
    """
    from .launch import drive, prepare_run
    from .runs import default_root

    root = Path(runs_root) if runs_root else default_root()
    rd = prepare_run(
        root,
        path,
        backend=backend,
        parameters=parameters,
        options={"jobs": jobs, "no_cache": not use_cache},
    )
    drive(rd)
    return rd.status()


def runs(path: str | Path | None = None, *, runs_root: str | Path | None = None) -> list[RunStatus]:
    """Runs (of the notebook at ``path``, when given), newest first."""
    from .runs import default_root, list_runs

    root = Path(runs_root) if runs_root else default_root()
    return [rd.status() for rd in list_runs(root, path)]


def load(run_id: str, step: str, name: str, *, runs_root: str | Path | None = None) -> Any:
    """The value ``name`` as step ``step`` of run ``run_id`` saved it (time travel).

    Only names a later step reads are saved. Raises RunNotFound / KeyError with the names
    that exist.
    """
    from .marshal import load_value, read_manifest
    from .runs import RunDir, default_root

    rd = RunDir.open(Path(runs_root) if runs_root else default_root(), run_id)
    directory = rd.data_dir(step)
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        raise KeyError(f"run {run_id} has no saved values for step {step!r}") from None
    if name not in manifest:
        raise KeyError(
            f"step {step} of run {run_id} saved no `{name}`; it saved: "
            + (", ".join(n for n in manifest if not n.startswith("@")) or "nothing")
        )
    return load_value(manifest[name], directory)
