"""Pseudo-variables: the names the data flow uses for state that lives outside the namespace.

A pseudo-variable is a name that is not a Python identifier, so it never collides with a
variable: ``@random`` (the global random generators), ``@environ``, ``@pandas.options``, ...
(hidden interpreter state, listed once in :data:`HIDDEN`) and ``@file:data/raw.csv`` (a file
a step reads or writes, relative to the notebook). They travel as plain strings (in
``pipeline.json``, manifests, edges); :func:`parse` is the one place that reads them.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

__all__ = [
    "HIDDEN",
    "HIDDEN_STATE",
    "IMPLICIT",
    "Hidden",
    "Pseudo",
    "file_name",
    "file_path",
    "is_file",
    "is_pseudo",
    "parse",
]

PREFIX = "@"
FILE_PREFIX = "@file:"


@dataclass(frozen=True, slots=True)
class Hidden:
    """One kind of hidden state a top-to-bottom run carries from cell to cell.

    ``implicit``: libraries read it without the cell saying so (imports follow ``sys.path``,
    printing follows display options), so once a step changes it every later step depends
    on it. ``drawn``: reading it changes it (a generator), so a run can tell from
    fingerprints alone which steps consumed it. ``module``: the library that must be
    imported for the state to exist (None: always there).
    """

    name: str
    description: str
    implicit: bool
    drawn: bool = False
    module: str | None = None
    imports: bool = False  # what an import finds depends on it


#: Every kind of hidden state, by pseudo-variable. ``cellpipe.execution.hidden_state`` has a
#: provider (get, set, fingerprint) for each; a test checks the two lists agree.
HIDDEN: dict[str, Hidden] = {
    h.name: h
    for h in (
        Hidden("@random", "state of the random generators", implicit=False, drawn=True),
        Hidden("@environ", "os.environ", implicit=True, imports=True),
        Hidden("@sys.path", "sys.path", implicit=True, imports=True),
        Hidden("@cwd", "working directory", implicit=True, imports=True),
        Hidden("@sys.recursionlimit", "sys.setrecursionlimit", implicit=True),
        Hidden("@warnings.filters", "warnings filters", implicit=True, module="warnings"),
        Hidden("@logging", "logging configuration", implicit=True, module="logging"),
        Hidden("@numpy.printoptions", "numpy print options", implicit=True, module="numpy"),
        Hidden("@pandas.options", "pandas options", implicit=True, module="pandas"),
        Hidden("@sklearn.config", "scikit-learn config", implicit=True, module="sklearn"),
        # Consumed as a generator is: each displayed estimator takes the next HTML ids.
        Hidden(
            "@sklearn.html_ids",
            "scikit-learn's HTML ids",
            implicit=False,
            drawn=True,
            module="sklearn",
        ),
        Hidden("@matplotlib.rcParams", "matplotlib rcParams", implicit=True, module="matplotlib"),
        Hidden("@torch.default_dtype", "torch default dtype", implicit=True, module="torch"),
        Hidden("@history", "IPython's output history (`_`, `Out`)", implicit=False),
    )
}
HIDDEN_STATE: tuple[str, ...] = tuple(HIDDEN)
#: Hidden state every later step depends on once a step has changed it.
IMPLICIT: tuple[str, ...] = tuple(n for n, h in HIDDEN.items() if h.implicit)


@dataclass(frozen=True, slots=True)
class Pseudo:
    """A parsed pseudo-variable: ``kind`` is ``"hidden"`` or ``"file"``; ``path`` is the
    file's path relative to the notebook (files only)."""

    name: str
    kind: str
    path: str = ""

    @property
    def hidden(self) -> Hidden | None:
        return HIDDEN.get(self.name)


def parse(name: str) -> Pseudo | None:
    """``name`` as a pseudo-variable, or None for an ordinary variable name."""
    if not name.startswith(PREFIX):
        return None
    if name.startswith(FILE_PREFIX):
        return Pseudo(name, "file", name[len(FILE_PREFIX) :])
    return Pseudo(name, "hidden")


def is_pseudo(name: str) -> bool:
    """Whether ``name`` is a pseudo-variable rather than a variable."""
    return name.startswith(PREFIX)


def is_file(name: str) -> bool:
    return name.startswith(FILE_PREFIX)


def file_path(name: str) -> str:
    """The notebook-relative path of file pseudo-variable ``name``."""
    p = parse(name)
    if p is None or p.kind != "file":
        raise ValueError(f"{name!r} is not a file pseudo-variable")
    return p.path


def file_name(path: str) -> str:
    """The pseudo-variable for a file a cell reads or writes (relative to the notebook)."""
    return FILE_PREFIX + posixpath.normpath(path.replace("\\", "/"))
