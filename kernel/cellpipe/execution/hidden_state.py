"""Interpreter state a top-to-bottom run carries from cell to cell, as plain data.

The data flow treats the names in ``model.HIDDEN_STATE`` like variables: a step that uses or
changes the global random generators, ``os.environ``, ``sys.path`` or the working directory
reads and writes a pseudo-variable, which the runner captures after the producing step and
restores before each consumer, so the consumer continues where a top-to-bottom run would be.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def capture(name: str) -> Any:
    """The current value of hidden state ``name``, as a plain picklable object.

    ``"@random"`` holds the state of :mod:`random`, and of numpy's legacy global generator
    and torch's CPU generator when those libraries are already imported (capturing never
    imports them). ``"@environ"`` is a dict copy of ``os.environ``, ``"@sys.path"`` a list
    copy of ``sys.path``, ``"@cwd"`` the working directory.

    Raises ``KeyError`` for a name that is not hidden state.
    """
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
    """Make hidden state ``name`` what :func:`capture` returned.

    Generators whose state was captured are restored, importing numpy or torch when the
    producing step had it and this process has not yet. ``os.environ`` becomes equal to the
    captured dict (extra keys removed); ``sys.path`` is changed in place, so it stays the
    object other modules hold; the working directory is changed with ``os.chdir``.

    Raises ``KeyError`` for a name that is not hidden state.
    """
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
        sys.path[:] = state
    elif name == "@cwd":
        os.chdir(state)
    else:
        raise KeyError(f"unknown hidden state {name!r}")
