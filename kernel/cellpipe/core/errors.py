"""Every error cellpipe raises on purpose, rooted at :class:`CellpipeError`.

Each error knows how it is reported: ``exit_code`` for the CLI, ``http_status`` for the
server, and ``to_json()`` for both. There are three translation points (``cli.main``,
the server's base handler and the TypeScript ``requestAPI``); nothing else turns these
into exit codes or status codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem or remark about a notebook, tied to a cell where there is one.

    ``cell`` is the 1-based position of the cell in the notebook, as Jupyter users count.
    ``code`` is a stable identifier (``undefined-name``, ``cycle``, ...) tests and the UI use.
    """

    code: str
    message: str
    severity: str = "error"  # "error" | "warning"
    cell: int | None = None
    cell_id: str | None = None
    step: str | None = None
    name: str | None = None  # the tag or variable the message is about
    line: int | None = None

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "notebook"
        if self.step:
            where += f" (step {self.step})"
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
            "cell": self.cell,
            "cell_id": self.cell_id,
            "step": self.step,
            "name": self.name,
            "line": self.line,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnostic:
        return cls(**{k: data.get(k) for k in cls.__slots__ if k in data})


class CellpipeError(Exception):
    """Base of every error cellpipe raises deliberately."""

    exit_code: int = 1
    http_status: int = 500

    def to_json(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": str(self)}


class NotebookError(CellpipeError):
    """The input is not a notebook cellpipe can read (bad JSON, old format, no code)."""

    exit_code = 2
    http_status = 400


class CompileError(CellpipeError):
    """The notebook cannot become a faithful pipeline. Holds *all* problems found."""

    exit_code = 2
    http_status = 400

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = [d for d in diagnostics if d.severity == "error"] or list(diagnostics)
        super().__init__(self._summary())

    def _summary(self) -> str:
        n = len(self.diagnostics)
        head = f"{n} problem{'s' if n != 1 else ''} in the notebook"
        return head + ":\n" + "\n".join(f"  {d}" for d in self.diagnostics)

    def __reduce__(self):  # keep it picklable across process boundaries
        return (type(self), (self.diagnostics,))

    def to_json(self) -> dict[str, Any]:
        return {
            "error": "CompileError",
            "message": str(self),
            "problems": [d.to_json() for d in self.diagnostics],
        }


class ParameterError(CellpipeError):
    """A ``-p NAME=VALUE`` the notebook's parameters cell does not declare, or a bad value."""

    exit_code = 2
    http_status = 400


class UnpicklableValue(CellpipeError):
    """A value a later step needs cannot be saved. Raised in the producing step."""

    exit_code = 1
    http_status = 500

    def __init__(self, name: str, type_name: str, producer: str, consumers: list[str], reason: str):
        self.name, self.type_name, self.producer = name, type_name, producer
        self.consumers, self.reason = list(consumers), reason
        used_by = ", ".join(consumers) if consumers else "a later step"
        super().__init__(
            f"step {producer}: variable `{name}` ({type_name}) cannot be passed to step "
            f"{used_by}: {reason}. Create it in the step that uses it, or pass what it is "
            f"built from (a path, a config dict) instead and rebuild it there."
        )

    def __reduce__(self):
        return (
            type(self),
            (self.name, self.type_name, self.producer, self.consumers, self.reason),
        )


@dataclass
class StepFailed(CellpipeError):
    """A step raised. Carries what a user needs to find and fix the cell."""

    run_id: str
    step: str
    cell: int | None = None
    cell_id: str | None = None
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)

    exit_code = 1
    http_status = 500

    def __str__(self) -> str:
        where = f" in cell {self.cell}" if self.cell is not None else ""
        return f"step {self.step} failed{where}: {self.ename}: {self.evalue}"

    def __reduce__(self):
        return (
            type(self),
            (
                self.run_id,
                self.step,
                self.cell,
                self.cell_id,
                self.ename,
                self.evalue,
                self.traceback,
            ),
        )


class RunNotFound(CellpipeError):
    exit_code = 2
    http_status = 404


class Conflict(CellpipeError):
    """The action does not fit the run's current state (resume a running run, ...)."""

    exit_code = 2
    http_status = 409


class BackendUnavailable(CellpipeError):
    """The backend cannot run here (Docker daemon down, no kubeconfig, ...)."""

    exit_code = 2
    http_status = 503
