"""Backends run a compiled pipeline's steps somewhere: here, in Docker, on Argo.

Built-ins are resolved by name only when asked, so ``cellpipe compile`` never imports the
Docker or Kubernetes clients. Third parties add backends through the ``cellpipe.backends``
entry-point group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from typing import Protocol, runtime_checkable

from cellpipe.core.errors import BackendUnavailable
from cellpipe.core.model import State
from cellpipe.rundir.runs import RunDir

_BUILTIN = {
    "local": "cellpipe.backends.local:LocalBackend",
    "argo": "cellpipe.backends.argo.backend:ArgoBackend",
    "docker": "cellpipe.backends.docker.backend:DockerBackend",
}


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run, as opposed to what: the same pipeline runs under any options."""

    jobs: int | None = None  # steps at once; None: the machine's cores
    use_cache: bool = True  # reuse results of unchanged steps from earlier runs
    resume: bool = False  # keep this run's succeeded steps, run the rest again

    @property
    def max_jobs(self) -> int:
        if self.jobs:
            return max(1, self.jobs)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1


@runtime_checkable
class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here now, and if not, why (one line a user can act on)."""

    def execute(self, rd: RunDir, options: RunOptions) -> State:
        """Run the pipeline of ``rd`` to its end, writing the run directory; return its state."""

    def cancel(self, rd: RunDir) -> None:
        """Stop the run of ``rd``: running steps end as ``cancelled``."""


def backend_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group="cellpipe.backends")})


def get_backend(name: str) -> Backend:
    """The backend called ``name``. Raises BackendUnavailable listing the known names."""
    target = _BUILTIN.get(name)
    if target is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group="cellpipe.backends"):
            if ep.name == name:
                return ep.load()()
        raise BackendUnavailable(
            f"no backend named {name!r}; available: {', '.join(backend_names())}"
        )
    module, _, cls = target.partition(":")
    return getattr(import_module(module), cls)()


def available_backend(name: str) -> Backend:
    """The backend called ``name``, if it can run here; else BackendUnavailable saying why."""
    backend = get_backend(name)
    ok, why = backend.available()
    if not ok:
        raise BackendUnavailable(f"the {name} backend cannot run here: {why}")
    return backend
