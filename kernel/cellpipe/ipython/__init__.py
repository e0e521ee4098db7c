"""cellpipe inside a notebook's kernel: ``%load_ext cellpipe``, ``%cellpipe run``, the monitor.

``%cellpipe run`` runs the *saved* notebook (this one by default) as a pipeline in a process
of its own, so the kernel stays free and its state untouched, and returns a live
:class:`~cellpipe.ipython.monitor.Monitor`.
"""

from __future__ import annotations

from typing import Any

from cellpipe.ipython.launch import in_kernel, run_and_wait, start

__all__ = ["Monitor", "in_kernel", "load_ipython_extension", "run_and_wait", "start"]


def __getattr__(name: str) -> Any:
    # The monitor imports ipywidgets; only load it when a run is actually watched.
    if name == "Monitor":
        from cellpipe.ipython.monitor import Monitor

        return Monitor
    raise AttributeError(name)


def load_ipython_extension(ipython: Any) -> None:
    from cellpipe.ipython.magics import CellpipeMagics

    ipython.register_magics(CellpipeMagics)
