"""Interpreter state a top-to-bottom run carries from cell to cell, as plain data.

The data flow treats these pseudo-variables like names (see ``model.HIDDEN_STATE``): a step
that changes the global random generators, ``os.environ``, ``sys.path`` or the working
directory passes the new state on to the steps after it.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def capture(name: str) -> Any:
    """The current value of the hidden state ``name`` as a picklable object."""
    if name == "@random":
        import random

        state: dict[str, Any] = {"random": random.getstate()}
        if "numpy" in sys.modules:
            state["numpy"] = sys.modules["numpy"].random.get_state()
        if "torch" in sys.modules:
            state["torch"] = sys.modules["torch"].get_rng_state()
        return state
    if name == "@environ":
        return dict(os.environ)
    if name == "@sys.path":
        return list(sys.path)
    if name == "@cwd":
        return os.getcwd()
    raise KeyError(f"unknown hidden state {name!r}")


def restore(name: str, state: Any) -> None:
    """Make the hidden state ``name`` what :func:`capture` returned."""
    if name == "@random":
        import random

        random.setstate(state["random"])
        if "numpy" in state:
            import numpy

            numpy.random.set_state(state["numpy"])
        if "torch" in state:
            import torch

            torch.set_rng_state(state["torch"])
    elif name == "@environ":
        for key in set(os.environ) - set(state):
            del os.environ[key]
        os.environ.update(state)
    elif name == "@sys.path":
        sys.path[:] = state  # in place: modules hold references to this list
    elif name == "@cwd":
        os.chdir(state)
    else:
        raise KeyError(f"unknown hidden state {name!r}")
