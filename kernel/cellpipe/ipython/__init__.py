"""cellpipe inside a notebook's kernel: ``%load_ext cellpipe``, ``%cellpipe run``, the monitor.

``%cellpipe run`` runs the *saved* notebook (this one by default) as a pipeline in a process
of its own, so the kernel stays free and its state untouched, and returns a live
:class:`~cellpipe.ipython.monitor.Monitor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellpipe.rundir.runs import RunStatus

__all__ = ["Monitor", "in_kernel", "load_ipython_extension", "run_and_wait", "start"]


def __getattr__(name: str) -> Any:
    # The monitor imports ipywidgets; only load it when a run is actually watched.
    if name == "Monitor":
        from cellpipe.ipython.monitor import Monitor

        return Monitor
    raise AttributeError(name)


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (where widgets can be shown)."""
    import sys

    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def start(
    path: str | Path,
    *,
    backend: str = "local",
    parameters: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    runs_root: str | Path | None = None,
) -> Any:
    """Start a run of the saved notebook at ``path`` in a detached process; return its
    Monitor at once. Raises CompileError / ParameterError / BackendUnavailable first."""
    from cellpipe.backends import available_backend
    from cellpipe.driving.driver import prepare_run, start_detached
    from cellpipe.ipython.monitor import Monitor
    from cellpipe.rundir.runs import default_root

    available_backend(backend)
    root = Path(runs_root) if runs_root else default_root()
    rd = prepare_run(
        root, path, backend=backend, parameters=parameters, options=options, via="kernel"
    )
    return Monitor(rd, start_detached(rd))


def run_and_wait(path: str | Path, **kwargs: Any) -> RunStatus:
    """``cellpipe.run()`` in a kernel: start, show the monitor, wait for the end.

    Interrupting the kernel cancels the run."""
    from IPython.display import display

    monitor = start(path, **kwargs)
    display(monitor)
    try:
        return monitor.wait()
    except KeyboardInterrupt:
        monitor.cancel()
        raise


def load_ipython_extension(ipython: Any) -> None:
    from cellpipe.ipython.magics import CellpipeMagics

    ipython.register_magics(CellpipeMagics)
