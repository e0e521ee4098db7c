"""The run directory: the contract between the engine, the backends, the server and the UI.

::

    <root>/<run-id>/
      run.json            who started it, from where, notebook, backend, parameters, options
      notebook.ipynb      the notebook as it was when the run started
      pipeline.json       the compiled pipeline;  steps/<step>.py  readable step scripts
      events.jsonl        append-only state changes: {ts, run, step?, state, attempt, message}
      driver.json         pid of the process driving the run (local and docker backends)
      logs/<step>.log     stdout and stderr of the step
      outputs/<step>.json nbformat outputs of each cell, by cell id
      data/<step>/        the step's outputs, marshalled, with manifest.json
      metrics.json        metrics by step

Status is derived from ``events.jsonl`` alone (plus whether the driver still lives), so a
crashed process never leaves a lie behind.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe._version import __version__
from cellpipe.core.atomic import append_line, write_json
from cellpipe.core.errors import RunNotFound
from cellpipe.core.model import Pipeline, State

RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def new_run_id() -> str:
    """Sortable by start time (UTC), unique by a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def default_root() -> Path:
    """``$CELLPIPE_RUNS_ROOT``, else ``.cellpipe/runs`` under the current directory."""
    env = os.environ.get("CELLPIPE_RUNS_ROOT")
    return Path(env) if env else Path.cwd() / ".cellpipe" / "runs"


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    run: str
    state: State
    step: str | None = None
    attempt: int = 0
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ts": round(self.ts, 6), "run": self.run}
        if self.step is not None:
            d["step"] = self.step
        d.update(state=self.state.value, attempt=self.attempt, message=self.message)
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        known = {"ts", "run", "step", "state", "attempt", "message"}
        return cls(
            ts=d["ts"],
            run=d["run"],
            state=State(d["state"]),
            step=d.get("step"),
            attempt=d.get("attempt", 0),
            message=d.get("message", ""),
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class StepStatus:
    name: str
    state: State = State.PENDING
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    cached: bool = False
    message: str = ""
    cell: int | None = None
    cell_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "attempts": self.attempts,
            "cached": self.cached,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "message": self.message,
            "cell": self.cell,
            "cell_id": self.cell_id,
        }


@dataclass
class RunStatus:
    run_id: str
    state: State
    steps: dict[str, StepStatus]
    notebook: str | None = None
    backend: str = "local"
    parameters: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""
    path: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state.value,
            "steps": {n: s.to_json() for n, s in self.steps.items()},
            "notebook": self.notebook,
            "backend": self.backend,
            "parameters": self.parameters,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "message": self.message,
            "path": self.path,
        }


class RunDir:
    """One run's directory. Cheap to construct; reads happen on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._pipeline: Pipeline | None = None
        self._info: dict[str, Any] | None = None

    # -- creation and lookup ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        pipeline: Pipeline,
        notebook: dict[str, Any],
        *,
        backend: str = "local",
        parameters: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        workdir: Path | None = None,
        run_id: str | None = None,
        via: str | None = None,
    ) -> RunDir:
        from cellpipe.compiling.compiler import write_pipeline

        run_id = run_id or new_run_id()
        path = Path(root) / run_id
        for sub in ("logs", "outputs", "data"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        rd = cls(path)
        info = {
            "run_id": run_id,
            "notebook": pipeline.path and str(Path(pipeline.path).resolve()),
            "name": pipeline.name,
            "workdir": str(
                workdir or (Path(pipeline.path).resolve().parent if pipeline.path else Path.cwd())
            ),
            "backend": backend,
            "parameters": parameters or {},
            "options": options or {},
            "created_at": time.time(),
            "user": _user(),
            "host": socket.gethostname(),
            "cwd": os.getcwd(),
            "via": via or _started_via(),
            "pid": os.getpid(),
            "notebook_sha256": pipeline.notebook_sha256,
            "engine_version": __version__,
            "python": sys.version.split()[0],
        }
        write_json(path / "run.json", info)
        write_json(path / "notebook.ipynb", notebook)
        write_pipeline(pipeline, path, parameters)
        return rd

    @classmethod
    def open(cls, root: Path, run_id: str) -> RunDir:
        """The run ``run_id`` under ``root``. Raises RunNotFound for unknown or malformed ids."""
        if not RUN_ID.match(run_id or ""):
            raise RunNotFound(f"`{run_id}` is not a run id (they look like 20261124-013324-ab12cd)")
        path = Path(root) / run_id
        if not (path / "run.json").is_file():
            raise RunNotFound(f"no run {run_id} under {root}")
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def info(self) -> dict[str, Any]:
        if self._info is None:
            try:
                self._info = json.loads((self.path / "run.json").read_text())
            except FileNotFoundError:
                # A directory from `cellpipe compile -o DIR`, its steps run by hand.
                nb = self.pipeline().path
                workdir = str(Path(nb).resolve().parent) if nb else str(Path.cwd())
                self._info = {"run_id": self.path.name, "workdir": workdir, "parameters": {}}
        return self._info

    def update_info(self, **changes: Any) -> None:
        info = dict(self.info(), **changes)
        write_json(self.path / "run.json", info)
        self._info = info

    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline.from_json(
                json.loads((self.path / "pipeline.json").read_text())
            )
        return self._pipeline

    def replace_pipeline(self, pipeline: Pipeline, notebook: dict[str, Any]) -> None:
        """Used by resume: the user fixed the notebook; the run continues with the new code."""
        from cellpipe.compiling.compiler import write_pipeline

        write_json(self.path / "notebook.ipynb", notebook)
        write_pipeline(pipeline, self.path, self.info().get("parameters"))
        self._pipeline = pipeline

    # -- files ----------------------------------------------------------------------------

    def log_path(self, step: str) -> Path:
        return self.path / "logs" / f"{step}.log"

    def outputs_path(self, step: str) -> Path:
        return self.path / "outputs" / f"{step}.json"

    def data_dir(self, step: str) -> Path:
        return self.path / "data" / step

    def read_outputs(self, step: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.outputs_path(step).read_text())
        except FileNotFoundError:
            return None

    def metrics(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads((self.path / "metrics.json").read_text())
        except FileNotFoundError:
            return {}

    def record_metrics(self, step: str, values: dict[str, Any]) -> None:
        """Merge one step's metrics into metrics.json; steps may finish at the same time."""
        with self._locked("metrics"):
            data = self.metrics()
            data[step] = values
            write_json(self.path / "metrics.json", data)

    def adopt_metrics(self, step: str) -> None:
        """A step reused from the cache brings the metrics it recorded (data/<step>/)."""
        try:
            values = json.loads((self.data_dir(step) / "metrics.json").read_text())
        except (FileNotFoundError, ValueError):
            return
        self.record_metrics(step, values)

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with open(self.path / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- events and status ------------------------------------------------------------------

    def emit(
        self,
        state: State,
        step: str | None = None,
        *,
        attempt: int = 0,
        message: str = "",
        **extra: Any,
    ) -> Event:
        ev = Event(time.time(), self.run_id, State(state), step, attempt, message, extra)
        append_line(self.path / "events.jsonl", json.dumps(ev.to_json(), default=str))
        return ev

    def events(self, since: int = 0) -> list[Event]:
        """Events in order. ``since`` skips that many (for followers reading incrementally)."""
        try:
            text = (self.path / "events.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines(keepends=True)[since:]:
            if not line.endswith("\n"):
                break  # a record being written right now
            try:
                out.append(Event.from_json(json.loads(line)))
            except (ValueError, KeyError):
                continue
        return out

    def write_driver(self, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        write_json(
            self.path / "driver.json",
            {"pid": pid, "start": _process_start(pid), "host": socket.gethostname()},
        )

    def driver_alive(self) -> bool | None:
        """True/False for a driver on this host; None when no driver is recorded or it is remote."""
        try:
            d = json.loads((self.path / "driver.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if d.get("host") != socket.gethostname():
            return None
        pid = d.get("pid")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        start = _process_start(pid)
        return start is None or d.get("start") is None or start == d["start"]

    def status(self) -> RunStatus:
        pipeline = self.pipeline()
        info = self.info()
        steps = {s.name: StepStatus(s.name) for s in pipeline.steps}
        run_state, run_msg = State.PENDING, ""
        started = ended = None
        last_ts = None
        for ev in self.events():
            last_ts = ev.ts
            if ev.step is None:
                run_state, run_msg = ev.state, ev.message
                if ev.state is State.RUNNING:
                    started = started or ev.ts
                    ended = None
                elif ev.state.terminal:
                    ended = ev.ts
                continue
            st = steps.setdefault(ev.step, StepStatus(ev.step))
            st.state, st.message = ev.state, ev.message
            st.attempts = max(st.attempts, ev.attempt)
            st.cached = ev.state is State.CACHED
            if ev.state is State.RUNNING:
                if st.started_at is None or st.ended_at is not None:
                    st.started_at, st.ended_at = ev.ts, None
            elif ev.state.terminal:
                st.ended_at = ev.ts
                st.duration_s = ev.extra.get("duration_s")
                if st.duration_s is None and st.started_at is not None:
                    st.duration_s = ev.ts - st.started_at
                st.cell, st.cell_id = ev.extra.get("cell"), ev.extra.get("cell_id")
            elif ev.state is State.PENDING and st.ended_at is not None:
                st.started_at = st.ended_at = None  # queued again (retry or resume)
        if not run_state.terminal and self.driver_alive() is False:
            run_state = State.FAILED
            run_msg = (
                "the process running this pipeline stopped before the run finished; "
                f"continue it with `cellpipe run --resume {self.run_id}`"
            )
            ended = ended or last_ts
            for st in steps.values():
                if st.state is State.RUNNING:
                    st.state, st.message = State.FAILED, "interrupted: the run's process died"
        return RunStatus(
            run_id=self.run_id,
            state=run_state,
            steps=steps,
            notebook=info.get("notebook"),
            backend=info.get("backend", "local"),
            parameters=info.get("parameters", {}),
            started_at=started or info.get("created_at"),
            ended_at=ended,
            message=run_msg,
            path=str(self.path),
        )


def list_runs(root: Path, notebook: str | Path | None = None) -> list[RunDir]:
    """Run directories under ``root``, newest first, optionally only those of ``notebook``."""
    root = Path(root)
    if not root.is_dir():
        return []
    want = str(Path(notebook).resolve()) if notebook else None
    out = []
    for p in root.iterdir():
        if not RUN_ID.match(p.name) or not (p / "run.json").is_file():
            continue
        rd = RunDir(p)
        if want and rd.info().get("notebook") != want:
            continue
        out.append(rd)
    # Ids sort by second only; two runs started in the same second are ordered by start time.
    out.sort(key=lambda rd: (rd.info().get("created_at", 0), rd.run_id), reverse=True)
    return out


def effective_parameters(pipeline: Pipeline, overrides: dict[str, Any]) -> dict[str, Any]:
    """Every parameter's value in a run: the override, else the literal default, else the
    default's source text (``"expr: 2 * n"``) when it is computed."""
    out: dict[str, Any] = {}
    for p in pipeline.parameters:
        if p.name in overrides:
            out[p.name] = overrides[p.name]
        elif p.type == "expression":
            out[p.name] = f"expr: {p.expression}"
        else:
            out[p.name] = p.default
    return out


def metric_columns(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A run's metrics by name; ``step.name`` where two steps record the same name."""
    counts: dict[str, int] = {}
    for values in metrics.values():
        for name in values:
            counts[name] = counts.get(name, 0) + 1
    return {
        (name if counts[name] == 1 else f"{step}.{name}"): value
        for step, values in metrics.items()
        for name, value in values.items()
    }


def run_summary(rd: RunDir) -> dict[str, Any]:
    """One run as a row to compare with others: who, state, durations, parameters, metrics."""
    status = rd.status()
    info = rd.info()
    return {
        "run_id": rd.run_id,
        "notebook": status.notebook,
        "state": status.state.value,
        "started_at": status.started_at,
        "duration_s": None if status.duration_s is None else round(status.duration_s, 3),
        "backend": status.backend,
        "user": info.get("user"),
        "via": info.get("via"),
        "parameters": effective_parameters(rd.pipeline(), status.parameters),
        "metrics": metric_columns(rd.metrics()),
        "steps": {
            n: {"state": st.state.value, "duration_s": st.duration_s}
            for n, st in status.steps.items()
        },
    }


def _started_via() -> str:
    """What started the run, for the audit trail: the CLI sets it; otherwise guess from the
    process (the Jupyter server, a notebook kernel, or a Python program)."""
    if "jupyter_server.serverapp" in sys.modules:
        return "server"
    if "ipykernel" in sys.modules:
        return "kernel"
    return "python"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])
