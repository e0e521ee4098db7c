"""Runs started from a kernel: in a detached process, watched by a live Monitor.

Here rather than in the package's ``__init__`` so that the magics (which start runs) and the
package (which loads the magics) do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellpipe.rundir.runs import RunStatus


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
