"""The compiled pipeline: plain, frozen data with explicit JSON round trips.

These types cross every boundary (the run directory's ``pipeline.json``, step containers,
the server), so they import nothing heavier than the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cellpipe.core.errors import Diagnostic
from cellpipe.core.pseudo import HIDDEN_STATE as _HIDDEN_STATE

#: Names that are not Python identifiers stand for hidden interpreter state a top-to-bottom
#: run carries from cell to cell; the data flow treats them like variables. Listed once, in
#: cellpipe.core.pseudo (re-exported here for code that imports it from the model).
HIDDEN_STATE = _HIDDEN_STATE


class State(str, Enum):
    """States of a run and of each step (DESIGN: run directory)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self not in (State.PENDING, State.RUNNING)

    @property
    def ok(self) -> bool:
        return self in (State.SUCCEEDED, State.CACHED)


class Role(str, Enum):
    """What a cell is for in the pipeline."""

    STEP = "step"
    IMPORTS = "imports"
    FUNCTIONS = "functions"
    PARAMETERS = "parameters"
    SKIP = "skip"
    MARKDOWN = "markdown"  # markdown and raw cells: carried into scripts as comments

    def __str__(self) -> str:
        return self.value

    @property
    def prelude(self) -> bool:
        """Prelude cells run at the start of every step, before its inputs are loaded."""
        return self in (Role.IMPORTS, Role.FUNCTIONS, Role.PARAMETERS)


@dataclass(frozen=True, slots=True)
class Cell:
    index: int  # 0-based position in the notebook
    id: str
    kind: str  # "code" | "markdown" | "raw"
    source: str
    tags: tuple[str, ...] = ()
    role: Role = Role.STEP
    step: str | None = None
    metrics: bool = False

    @property
    def number(self) -> int:
        """1-based position, as users count cells."""
        return self.index + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "tags": list(self.tags),
            "role": self.role.value,
            "step": self.step,
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls(
            index=d["index"],
            id=d["id"],
            kind=d["kind"],
            source=d["source"],
            tags=tuple(d.get("tags", ())),
            role=Role(d["role"]),
            step=d.get("step"),
            metrics=d.get("metrics", False),
        )


@dataclass(frozen=True, slots=True)
class StepSettings:
    """Execution settings from tags (``limit:``, ``retry:``, ...) and notebook defaults."""

    limits: dict[str, str] = field(default_factory=dict)  # {"memory": "2Gi", "cpu": "1"}
    image: str | None = None
    packages: tuple[str, ...] = ()
    retry: int = 0
    timeout: float | None = None
    cache: bool = True
    gpu: int = 0
    gate: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    secrets: tuple[tuple[str, ...], ...] = ()  # (name, /mount/path) or (name, key, ENV_VAR)

    def to_json(self) -> dict[str, Any]:
        return {
            "limits": dict(self.limits),
            "image": self.image,
            "packages": list(self.packages),
            "retry": self.retry,
            "timeout": self.timeout,
            "cache": self.cache,
            "gpu": self.gpu,
            "gate": self.gate,
            "annotations": dict(self.annotations),
            "labels": dict(self.labels),
            "secrets": [list(s) for s in self.secrets],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepSettings:
        return cls(
            limits=dict(d.get("limits", {})),
            image=d.get("image"),
            packages=tuple(d.get("packages", ())),
            retry=d.get("retry", 0),
            timeout=d.get("timeout"),
            cache=d.get("cache", True),
            gpu=d.get("gpu", 0),
            gate=d.get("gate"),
            annotations=dict(d.get("annotations", {})),
            labels=dict(d.get("labels", {})),
            secrets=tuple(tuple(s) for s in d.get("secrets", ())),  # type: ignore[misc]
        )


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    cells: tuple[str, ...]  # ids of the step's own cells, in notebook order
    inputs: dict[str, str] = field(default_factory=dict)  # variable -> producing step
    outputs: tuple[str, ...] = ()  # variables some later step reads
    after: tuple[str, ...] = ()  # direct upstream steps (explicit and inferred)
    settings: StepSettings = field(default_factory=StepSettings)
    consumers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output -> steps
    metrics: tuple[str, ...] = ()  # names its metrics cell records
    # Names the prelude binds that an earlier step deleted and this step checks for (`try: x
    # except NameError`): unbound after the prelude, as they are top to bottom.
    absent: tuple[str, ...] = ()
    #: The referenced notebook's part (``notebook_a`` for ``notebook_a.train``, ``a.b`` when
    #: nested) and that notebook's path relative to the main one; None for the main's steps.
    group: str | None = None
    notebook: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "notebook": self.notebook,
            "cells": list(self.cells),
            "inputs": dict(self.inputs),
            "outputs": list(self.outputs),
            "after": list(self.after),
            "settings": self.settings.to_json(),
            "consumers": {k: list(v) for k, v in self.consumers.items()},
            "metrics": list(self.metrics),
            **({"absent": list(self.absent)} if self.absent else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(
            name=d["name"],
            cells=tuple(d["cells"]),
            inputs=dict(d.get("inputs", {})),
            outputs=tuple(d.get("outputs", ())),
            after=tuple(d.get("after", ())),
            settings=StepSettings.from_json(d.get("settings", {})),
            consumers={k: tuple(v) for k, v in d.get("consumers", {}).items()},
            metrics=tuple(d.get("metrics", ())),
            absent=tuple(d.get("absent", ())),
            group=d.get("group"),
            notebook=d.get("notebook"),
        )


@dataclass(frozen=True, slots=True)
class Edge:
    """``source`` runs before ``target``. ``kind``: "prev" (a tag), "data" (``target``
    reads names ``source`` wrote) or "order" (added so a later writer sees the earlier one's
    version)."""

    source: str
    target: str
    kind: str
    names: tuple[str, ...] = ()
    cell: int | None = None  # the cell (1-based) that gave rise to the edge

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "names": list(self.names),
            "cell": self.cell,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Edge:
        return cls(d["source"], d["target"], d["kind"], tuple(d.get("names", ())), d.get("cell"))


@dataclass(frozen=True, slots=True)
class Parameter:
    """A name assigned in the parameters cell. ``default`` is its literal value when the
    assignment is a literal, else ``None`` with ``expression`` holding the source."""

    name: str
    default: Any
    expression: str
    type: str  # "int", "float", "str", "bool", "NoneType", "list", "dict", ... or "expression"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "expression": self.expression,
            "type": self.type,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Parameter:
        return cls(d["name"], d.get("default"), d.get("expression", ""), d.get("type", ""))


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A notebook compiled into steps. Steps are in a topological order, ties broken by
    the position of each step's first cell, so that a sequential run is deterministic."""

    name: str
    path: str | None
    cells: tuple[Cell, ...]
    steps: tuple[Step, ...]
    edges: tuple[Edge, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # notebook-level metadata.cellpipe
    diagnostics: tuple[Diagnostic, ...] = ()  # warnings; errors raise CompileError instead
    notebook_sha256: str = ""
    engine_version: str = ""

    @property
    def prelude(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.role.prelude)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)

    def step_cells(self, name: str) -> tuple[Cell, ...]:
        ids = set(self.step(name).cells)
        return tuple(c for c in self.cells if c.id in ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "engine_version": self.engine_version,
            "name": self.name,
            "path": self.path,
            "notebook_sha256": self.notebook_sha256,
            "settings": self.settings,
            "parameters": [p.to_json() for p in self.parameters],
            "steps": [s.to_json() for s in self.steps],
            "edges": [e.to_json() for e in self.edges],
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "cells": [c.to_json() for c in self.cells],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pipeline:
        return cls(
            name=d["name"],
            path=d.get("path"),
            cells=tuple(Cell.from_json(c) for c in d["cells"]),
            steps=tuple(Step.from_json(s) for s in d["steps"]),
            edges=tuple(Edge.from_json(e) for e in d.get("edges", ())),
            parameters=tuple(Parameter.from_json(p) for p in d.get("parameters", ())),
            settings=dict(d.get("settings", {})),
            diagnostics=tuple(Diagnostic.from_json(x) for x in d.get("diagnostics", ())),
            notebook_sha256=d.get("notebook_sha256", ""),
            engine_version=d.get("engine_version", ""),
        )
