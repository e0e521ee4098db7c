"""The run directory: the contract between the engine, the backends, the server and the UI.

:class:`RunDir` is the only code that reads and writes the files of a run (their names are in
cellpipe.rundir.layout, the picture of the whole directory is there too). Everyone else asks
it: for a step's log or data directory, the steps' inputs as their producers saved them, a
gate's verdict, lineage, cache keys, the driver record, and the run's status, which is
derived from ``events.jsonl`` alone (plus whether the driver still lives: see
cellpipe.rundir.status), so a crashed process never leaves a lie behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cellpipe._version import __version__
from cellpipe.core.atomic import append_line, write_json, write_text
from cellpipe.core.errors import Conflict, RunNotFound
from cellpipe.core.model import Pipeline, State, Step
from cellpipe.rundir import layout
from cellpipe.rundir.data import (
    StepInput,
    ValueRecord,
    has_manifest,
    read_manifest,
    write_manifest,
)
from cellpipe.rundir.status import Driver, Event, RunStatus, StepStatus, derive

__all__ = [
    "RUN_ID",
    "CacheIndex",
    "Driver",
    "Event",
    "RunDir",
    "RunStatus",
    "StepInput",
    "StepStatus",
    "default_root",
    "effective_parameters",
    "iter_run_dirs",
    "list_runs",
    "metric_columns",
    "new_run_id",
    "run_summary",
]

# \Z, not $: `$` also matches before a trailing newline. Use with .match or .fullmatch.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\Z")


def new_run_id() -> str:
    """Sortable by start time (UTC), unique by a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _new_run_folder(root: Path, run_id: str | None) -> Path:
    """Create the run's folder exclusively: two runs started in the same second may draw
    the same id, and the second must not write into the first. A drawn id that is taken is
    drawn again; a given one is refused."""
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = root / (run_id or new_run_id())
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if run_id is not None:
                raise Conflict(f"run {run_id} already exists") from None
    raise Conflict("could not draw an unused run id in 20 tries")


def default_root() -> Path:
    """``$CELLPIPE_RUNS_ROOT``, else ``.cellpipe/runs`` under the current directory."""
    env = os.environ.get("CELLPIPE_RUNS_ROOT")
    return Path(env) if env else Path.cwd() / ".cellpipe" / "runs"


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
        path = _new_run_folder(Path(root), run_id)
        run_id = path.name
        rd = cls(path)
        rd.ensure_folders(parents=True)
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
        write_json(layout.notebook_file(path), notebook)
        rd.write_pipeline(pipeline, parameters)
        # Last: run.json is what makes a directory a run (list_runs, the server's history),
        # so nobody reads one whose pipeline is not written yet.
        write_json(layout.info_file(path), info)
        return rd

    @classmethod
    def open(cls, root: Path, run_id: str) -> RunDir:
        """The run ``run_id`` under ``root``. Raises RunNotFound for unknown or malformed ids."""
        if not RUN_ID.match(run_id or ""):
            raise RunNotFound(f"`{run_id}` is not a run id (they look like 20261124-013324-ab12cd)")
        rd = cls(Path(root) / run_id)
        if not rd.exists():
            # Not where: the runs root's absolute path is not the API client's business.
            raise RunNotFound(f"no run {run_id}")
        return rd

    @classmethod
    def at(cls, root: Path, run_id: str) -> RunDir:
        """The run ``run_id`` under ``root``, unchecked (for ids this process made)."""
        return cls(Path(root) / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def runs_root(self) -> Path:
        """The folder holding this run and its siblings (and their cache index)."""
        return self.path.parent

    def exists(self) -> bool:
        """Whether this is a run directory (``cellpipe run`` made it, not ``compile -o``)."""
        return layout.info_file(self.path).is_file()

    def has_pipeline(self) -> bool:
        return layout.pipeline_file(self.path).is_file()

    def ensure_folders(self, *, parents: bool = False) -> None:
        """Make the folders a step writes to (absent when run by hand after ``compile -o``)."""
        for folder in layout.FOLDERS:
            # data/ holds the user's values (and environment variables a step set): 0700
            mode = 0o700 if folder == layout.DATA else 0o777
            (self.path / folder).mkdir(parents=parents, exist_ok=True, mode=mode)

    def info(self) -> dict[str, Any]:
        if self._info is None:
            try:
                info = json.loads(layout.info_file(self.path).read_text())
                if not isinstance(info, dict):
                    raise ValueError(f"{layout.RUN_INFO} of run {self.run_id} is not an object")
                self._info = info
            except FileNotFoundError:
                # A directory from `cellpipe compile -o DIR`, its steps run by hand.
                nb = self.pipeline().path
                workdir = str(Path(nb).resolve().parent) if nb else str(Path.cwd())
                self._info = {"run_id": self.path.name, "workdir": workdir, "parameters": {}}
        return self._info

    def update_info(self, **changes: Any) -> None:
        info = dict(self.info(), **changes)
        write_json(layout.info_file(self.path), info)
        self._info = info

    def notebook(self) -> dict[str, Any]:
        """The notebook as it was when the run started (or was last resumed)."""
        return json.loads(layout.notebook_file(self.path).read_text(encoding="utf-8"))

    def pipeline_path(self) -> Path:
        return layout.pipeline_file(self.path)

    def scripts_dir(self) -> Path:
        """Where the readable ``<step>.py`` scripts are."""
        return layout.step_script_file(self.path, "-").parent

    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline.from_json(
                json.loads(layout.pipeline_file(self.path).read_text())
            )
        return self._pipeline

    def write_pipeline(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        """Write ``pipeline.json`` and the readable ``steps/<step>.py`` (atomically each);
        also what ``cellpipe compile -o DIR`` makes of a directory."""
        from cellpipe.compiling.compiler import step_script

        self.path.mkdir(parents=True, exist_ok=True)
        write_json(layout.pipeline_file(self.path), pipeline.to_json())
        (self.path / layout.STEPS).mkdir(exist_ok=True)
        for step in pipeline.steps:
            write_text(
                layout.step_script_file(self.path, step.name),
                step_script(pipeline, step.name, parameters or {}),
            )
        self._pipeline = pipeline

    def replace_pipeline(self, pipeline: Pipeline, notebook: dict[str, Any]) -> None:
        """Used by resume: the user fixed the notebook; the run continues with the new code."""
        write_json(layout.notebook_file(self.path), notebook)
        self.write_pipeline(pipeline, self.info().get("parameters"))

    # -- logs and outputs -------------------------------------------------------------------

    def log_path(self, step: str) -> Path:
        return layout.log_file(self.path, step)

    def log_tail(self, step: str, limit: int) -> str:
        """The last ``limit`` bytes of the step's log ("" before it wrote one)."""
        try:
            with open(self.log_path(step), "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def driver_log_path(self) -> Path:
        """What the detached driver process prints (and dies with)."""
        return layout.engine_log_file(self.path, layout.DRIVER_LOG)

    def run_log_path(self) -> Path:
        """The scheduler's notes: how steps were started, cache decisions, cancel."""
        return layout.engine_log_file(self.path, layout.RUN_LOG)

    def prelude_log_path(self) -> Path:
        """The warm process's prelude, run once before steps fork from it."""
        return layout.engine_log_file(self.path, layout.PRELUDE_LOG)

    def images_log_path(self) -> Path:
        """Docker image builds."""
        return layout.engine_log_file(self.path, layout.IMAGES_LOG)

    def outputs_path(self, step: str) -> Path:
        return layout.outputs_file(self.path, step)

    def hidden_entry_path(self, step: str) -> Path:
        """Which finished steps' hidden state ``step`` starts from (written by the scheduler,
        read by the runner; see cellpipe.execution.hidden_state)."""
        return layout.hidden_entry_file(self.path, step)

    def read_outputs(self, step: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.outputs_path(step).read_text())
        except FileNotFoundError:
            return None

    def report_path(self, step: str) -> Path:
        return layout.report_file(self.path, step)

    def run_report_path(self) -> Path:
        return layout.run_report_file(self.path)

    def go_dir(self) -> Path:
        return layout.go_dir(self.path)

    def go_path(self, step: str, attempt: int = 1) -> Path:
        """The file whose appearance starts a step in a container started ahead."""
        return layout.go_file(self.path, step, attempt)

    # -- data, as producers saved it ------------------------------------------------------------

    def data_dir(self, step: str) -> Path:
        return layout.data_dir(self.path, step)

    def foreach_dir(self, step: str) -> Path:
        """Where a foreach step keeps the iterations it finished (retries, resume, pods)."""
        return layout.foreach_dir(self.path, step)

    def has_data(self, step: str) -> bool:
        """Whether ``step`` saved its values completely (its manifest is written last)."""
        return has_manifest(self.data_dir(step))

    def fresh_data_dir(self, step: str) -> Path:
        """``step``'s data directory, emptied: an earlier attempt's leftovers must not pass
        for this one's. The values go in (cellpipe.execution.marshal names their files),
        then :meth:`write_manifest` lists them, last. The folder itself stays: in a Docker
        step container it is a mount point (the one writable place of the runs root)."""
        directory = self.data_dir(step)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):  # a container's mount point may not be ours to chmod
            directory.chmod(0o700)  # the user's data: owner-only, as files are
        for child in list(directory.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return directory

    def write_manifest(self, step: str, records: Iterable[ValueRecord]) -> None:
        write_manifest(self.data_dir(step), records)

    def manifest(self, step: str) -> dict[str, ValueRecord]:
        """The values ``step`` saved, by name. Raises FileNotFoundError when it saved none."""
        return read_manifest(self.data_dir(step))

    def saved_records(self, step: str) -> dict[str, ValueRecord]:
        """The values ``step`` saved, by name: here, or where an Argo run keeps them (the
        manifest ``remote.json`` holds). Raises FileNotFoundError when it saved none."""
        try:
            return self.manifest(step)
        except FileNotFoundError:
            remote = self.remote(step)
            if remote is None or not isinstance(remote.get("manifest"), dict):
                raise
            return {k: ValueRecord.from_json(v) for k, v in remote["manifest"].items()}

    def step_inputs(self, step: Step) -> list[StepInput]:
        """Each input of ``step`` as its producer saved it in this run (each producer's
        manifest read once), in the order of ``step.inputs``."""
        manifests: dict[str, dict[str, ValueRecord] | None] = {}
        out = []
        for name, producer in step.inputs.items():
            if producer not in manifests:
                try:
                    manifests[producer] = self.manifest(producer)
                except FileNotFoundError:
                    manifests[producer] = None
            manifest = manifests[producer]
            out.append(
                StepInput(
                    name,
                    producer,
                    self.data_dir(producer),
                    saved=manifest is not None,
                    record=(manifest or {}).get(name),
                )
            )
        return out

    def gate_verdict(self, step: str) -> dict[str, Any] | None:
        """The verdict of ``step``'s gate (cellpipe.compiling.gates); None without one."""
        try:
            return json.loads((self.data_dir(step) / layout.GATE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def record_gate(self, step: str, verdict: Mapping[str, Any]) -> None:
        """Next to the step's values: it travels with them when the step is cached."""
        directory = self.data_dir(step)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / layout.GATE, dict(verdict))

    def write_gate_output(self, step: str, is_open: bool) -> None:
        """In an Argo pod: the gate's verdict as the word its output parameter carries."""
        path = layout.gate_output_file(self.path, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, "open" if is_open else "closed")

    def remote(self, step: str) -> dict[str, Any] | None:
        """Where an Argo step's values are kept on the cluster, and their manifest:
        ``{"storage": ..., "run_key": ..., "manifest": {name: record}}``; None when the
        step's values are here (or it has none)."""
        try:
            data = json.loads((self.data_dir(step) / layout.REMOTE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def record_remote(self, step: str, record: Mapping[str, Any]) -> None:
        directory = self.data_dir(step)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / layout.REMOTE, dict(record))

    def lineage(self, step: str) -> dict[str, Any]:
        """``step``'s lineage record (cellpipe.execution.lineage); {} without one."""
        try:
            return json.loads((self.data_dir(step) / layout.LINEAGE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def write_lineage(self, step: str, record: Mapping[str, Any]) -> None:
        write_json(self.data_dir(step) / layout.LINEAGE, dict(record))

    def cache_key(self, step: str) -> str | None:
        """The key ``step``'s values were computed (or reused) under."""
        try:
            return (self.data_dir(step) / layout.CACHE_KEY).read_text().strip()
        except FileNotFoundError:
            return None

    def record_cache_key(self, step: str, key: str) -> None:
        write_text(self.data_dir(step) / layout.CACHE_KEY, key + "\n")

    def adopt_step(self, source: RunDir, step: str) -> None:
        """Bring a cached step's data and outputs from run ``source`` into this one (hard
        links where possible: stored values are never modified in place, consumers map them
        copy-on-write), its log headed by where it came from."""
        src, dst = source.data_dir(step), self.data_dir(step)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in src.iterdir():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)
        outputs = source.outputs_path(step)
        if outputs.is_file():
            shutil.copy2(outputs, self.outputs_path(step))
        with contextlib.suppress(FileNotFoundError):
            log = source.log_path(step).read_text(encoding="utf-8", errors="replace")
            self.log_path(step).write_text(
                f"--- cellpipe: cached; output of run {source.run_id} ---\n{log}",
                encoding="utf-8",
            )

    # -- metrics -------------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(layout.metrics_file(self.path).read_text())
        except FileNotFoundError:
            return {}

    def record_metrics(self, step: str, values: dict[str, Any]) -> None:
        """Merge one step's metrics into metrics.json; steps may finish at the same time."""
        with self._locked("metrics"):
            data = self.metrics()
            data[step] = values
            write_json(layout.metrics_file(self.path), data)

    def keep_step_metrics(self, step: str, values: Mapping[str, Any]) -> None:
        """Also next to the step's values, so a run reusing it from the cache brings them."""
        write_json(self.data_dir(step) / layout.STEP_METRICS, dict(values))

    def adopt_metrics(self, step: str) -> None:
        """A step reused from the cache brings the metrics it recorded (data/<step>/)."""
        try:
            values = json.loads((self.data_dir(step) / layout.STEP_METRICS).read_text())
        except (FileNotFoundError, ValueError):
            return
        self.record_metrics(step, values)

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with open(layout.lock_file(self.path, name), "w") as lock:
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
        append_line(layout.events_file(self.path), json.dumps(ev.to_json(), default=str))
        return ev

    def events(self, since: int = 0) -> list[Event]:
        """Events in order. ``since`` skips that many (for followers reading incrementally:
        it counts events, not lines, so a skipped line never shifts what comes next)."""
        return self._read_events()[0][since:]

    def _read_events(self) -> tuple[list[Event], str]:
        """The events, and what is wrong with the file ("" when nothing is).

        A line that is not JSON at all was torn by a crash mid-write (appends start on a
        fresh line, see append_line): that one record is lost, the rest stands. A line that
        is JSON but not an event was written by something else: the run is broken, and the
        problem names the file and the line."""
        try:
            text = layout.events_file(self.path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], ""
        out, problem = [], ""
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            if not line.endswith("\n"):
                break  # a record being written right now
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            try:
                out.append(Event.from_json(record))
            except ValueError as exc:
                problem = problem or f"{layout.EVENTS} line {number}: {exc}"
        return out, problem

    def stamp(self) -> str:
        """Changes whenever the run's status or metrics may have (for indexes over runs)."""
        parts = []
        for name in layout.STATUS_FILES:
            try:
                st = (self.path / name).stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            except FileNotFoundError:
                parts.append("-")
        return "/".join(parts)

    def write_driver(self, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        write_json(
            layout.driver_file(self.path),
            {"pid": pid, "start": _process_start(pid), "host": socket.gethostname()},
        )

    def clear_driver(self) -> None:
        """The old driver is gone for good (a resume): until a new one starts, none is."""
        layout.driver_file(self.path).unlink(missing_ok=True)

    def _driver_record(self) -> dict[str, Any] | None:
        """driver.json; {} when it cannot be read, None when there is none."""
        try:
            return json.loads(layout.driver_file(self.path).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def driver_pid(self) -> int | None:
        """The pid of the recorded driver (on the host it names)."""
        d = self._driver_record()
        return None if d is None else d.get("pid")

    def driver(self) -> Driver:
        d = self._driver_record()
        if d is None:
            return Driver.NONE
        if not d or d.get("host") != socket.gethostname():
            return Driver.UNKNOWN
        pid = d.get("pid")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return Driver.LOST
        except PermissionError:
            pass
        start = _process_start(pid)
        alive = start is None or d.get("start") is None or start == d["start"]
        return Driver.ALIVE if alive else Driver.LOST

    def driver_alive(self) -> bool | None:
        """True/False for a driver on this host; None when no driver is recorded or it is remote."""
        return {Driver.ALIVE: True, Driver.LOST: False}.get(self.driver())

    def status(self) -> RunStatus:
        events, problem = self._read_events()
        return derive(
            self.run_id,
            self.pipeline(),
            self.info(),
            events,
            self.driver,
            path=str(self.path),
            problem=problem,
        )

    def settle_cancelled(self, *, before_start: bool = False) -> None:
        """End a run nobody drives any more as cancelled: every step that has not ended,
        then the run. The one way every backend, and the server's queue, settles a cancel.

        ``before_start``: the run was only queued (its steps' attempts are not counted)."""
        if before_start:
            step_msg, run_msg = "run cancelled before it started", "cancelled before it started"
        else:
            step_msg, run_msg = "run cancelled", "cancelled"
        for name, st in self.status().steps.items():
            if not st.state.terminal:
                attempt = 0 if before_start else st.attempts
                self.emit(State.CANCELLED, name, attempt=attempt, message=step_msg)
        self.emit(State.CANCELLED, message=run_msg)


class CacheIndex:
    """``<runs root>/.cache/<key>.json`` -> the run directory and step that produced it.

    An entry is only a pointer, and reusing it unpickles what it points at: so only a run
    directory directly under this runs root (by its real path, symlinks resolved) and a
    plain step name are accepted. Anything else, written by whoever could write the
    index, is ignored like a missing entry."""

    def __init__(self, runs_root: Path):
        self.root = layout.cache_index(Path(runs_root))
        self._runs_root = Path(runs_root)

    def lookup(self, key: str, *, remote: bool = False) -> tuple[RunDir, str] | None:
        """The run and step that made ``key``, while its values are there. ``remote``: the
        values are on a cluster's storage (an Argo run; the key is scoped by that storage),
        so the run directory holds their record (``RunDir.remote``) instead."""
        try:
            entry = json.loads(layout.cache_entry(self._runs_root, key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict):
            return None
        run_dir, step = entry.get("run_dir"), entry.get("step")
        if not isinstance(run_dir, str) or not isinstance(step, str):
            return None
        rd = self._confined(Path(run_dir), step)
        if rd is None or not (rd.remote(step) is not None if remote else rd.has_data(step)):
            return None  # that run was deleted, its data is incomplete, or it is elsewhere
        return rd, step

    def _confined(self, run_dir: Path, step: str) -> RunDir | None:
        if not RUN_ID.match(run_dir.name) or not _plain_name(step):
            return None
        try:
            root = self._runs_root.resolve(strict=True)
            real = run_dir.resolve(strict=True)
            data = layout.data_dir(real, step).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real.parent != root or data != layout.data_dir(real, step):
            return None
        return RunDir(real)

    def store(self, key: str, rd: RunDir, step: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(
            layout.cache_entry(self._runs_root, key), {"run_dir": str(rd.path), "step": step}
        )


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def history_db(runs_root: Path) -> Path:
    """Where the server keeps its index of the runs under ``runs_root``."""
    return layout.history_db(Path(runs_root))


def iter_run_dirs(root: Path) -> Iterator[RunDir]:
    """The run directories directly under ``root`` (unsorted)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if RUN_ID.match(p.name):
            rd = RunDir(p)
            if rd.exists():
                yield rd


def list_runs(root: Path, notebook: str | Path | None = None) -> list[RunDir]:
    """Run directories under ``root``, newest first, optionally only those of ``notebook``."""
    want = str(Path(notebook).resolve()) if notebook else None
    out = []
    for rd in iter_run_dirs(root):
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
