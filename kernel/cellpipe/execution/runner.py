"""``python -m cellpipe.runner --run-dir DIR --step NAME``: execute ONE step of a run.

Every backend ends here: the local backend calls it in a forked or fresh process, the Docker
backend in a container, the Argo backend in a pod. So it depends only on the engine's small
dependency set and on the run directory.

A step runs like a slice of "Restart and Run All": the prelude (imports, functions and
parameters cells, then injected parameter values), then the step's inputs loaded from the
steps that produced them, then the step's own cells in notebook order, stopping at the first
error. Evidence is saved before the verdict: outputs and log are on disk before the
``failed`` or ``succeeded`` event.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cellpipe.core.atomic import write_json
from cellpipe.core.errors import CellpipeError, UnpicklableValue
from cellpipe.core.model import Cell, Role, State
from cellpipe.core.pseudo import is_file, is_pseudo
from cellpipe.reports.report import (
    write_step_report,  # here, so forked steps inherit it already imported
)
from cellpipe.rundir import layout
from cellpipe.rundir.runs import RunDir, StepStatus

#: In a pod (``--result-trailer``): the process's original stdout, where the log is mirrored.
_LOG_MIRROR: TextIO | None = None
_LIVE_WRITE_INTERVAL = 0.5
#: Exit status of ``--start-when`` when the step was never told to start.
NOT_STARTED = 75
START_WAIT_LIMIT_S = 24 * 3600
_START_POLL_S = 0.02


@dataclass
class CellRecord:
    outputs: list[dict[str, Any]]
    execution_count: int | None
    status: str  # "ok" | "error"
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "execution_count": self.execution_count,
            "status": self.status,
            "duration_s": round(self.duration_s, 4),
        }


@dataclass
class Failure:
    cell: Cell | None
    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)

    def message(self) -> str:
        where = f"cell {self.cell.number}: " if self.cell else ""
        return f"{where}{self.ename}: {self.evalue}"


@dataclass
class Warm:
    """A shell that has run the prelude: what every step of the run starts from."""

    shell: Any  # cellpipe.execution.shell.StepShell
    records: dict[str, CellRecord]
    failure: Failure | None
    references: dict[int, str]
    # The objects behind `references`: ids are only unique while their objects live, and a
    # step that rebinds a functions-cell name would otherwise free one for reuse.
    keep_alive: list[Any] = field(default_factory=list)
    # What the prelude wrote to the log before the step's log was opened (--start-when).
    log_text: str = ""


def warm_up(rd: RunDir, log: TextIO | None = None, shell: Any = None) -> Warm:
    """Run the prelude cells once, in ``shell`` or in a new one."""
    from cellpipe.compiling.notebook import INJECTED, injected_parameters_source
    from cellpipe.execution.shell import StepShell

    _prepare_process(rd)
    pipeline = rd.pipeline()
    params = rd.info().get("parameters") or {}
    if shell is None:
        shell = StepShell(log=log)
    else:
        shell.step_log = log
        shell.user_ns["_dh"] = [os.getcwd()]  # IPython's directory history, as if made here
    records: dict[str, CellRecord] = {}
    failure = None
    prelude = list(pipeline.prelude)
    last_params = max((c.index for c in prelude if c.role is Role.PARAMETERS), default=None)
    for cell in prelude:
        failure = _run_cell(shell, cell.id, cell.source, records, cell)
        if failure:
            break
        if cell.index == last_params and params:
            failure = _run_cell(shell, INJECTED, injected_parameters_source(params), records, cell)
            if failure:
                break
    refs = _definitions(shell.user_ns)
    alive = [v for v in shell.user_ns.values() if id(v) in refs]
    return Warm(shell, records, failure, refs, alive)


def run_step(rd: RunDir, step_name: str, *, attempt: int = 1, warm: Warm | None = None) -> int:
    """Run one step; return 0 when it succeeded, 1 when it failed.

    With ``warm`` (a forked child of a process that already ran the prelude) the prelude is
    not run again and its recorded outputs are reused.
    """
    pipeline = rd.pipeline()
    step = pipeline.step(step_name)
    rd.ensure_folders()  # absent when run by hand after `compile -o`
    from cellpipe.compiling.gates import closed_upstream

    closed = closed_upstream(step, rd.gate_verdict)
    if closed:
        # The local scheduler never starts such a step; a backend that starts every step
        # (an Argo DAG) learns here that a gate upstream closed, and passes it on.
        from cellpipe.compiling.gates import inherited_verdict

        rd.record_gate(step_name, inherited_verdict(closed))
        rd.emit(State.SKIPPED, step_name, attempt=attempt, message=closed)
        return 0
    from cellpipe.execution.orphans import process_start

    # pid and start time: resume and cancel tell a live step from a reused pid by both.
    rd.emit(
        State.RUNNING,
        step_name,
        attempt=attempt,
        pid=os.getpid(),
        start=process_start(os.getpid()),
    )
    started = time.time()
    log = open(rd.log_path(step_name), "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    if _LOG_MIRROR is not None:
        from cellpipe.backends.argo.trailer import Tee

        log = Tee(log, _LOG_MIRROR)  # type: ignore[assignment]
    log.write(f"--- cellpipe: step {step_name}, attempt {attempt}, {time.ctime(started)} ---\n")
    if warm is not None and warm.log_text:
        log.write(warm.log_text)
    out_file = rd.outputs_path(step_name)
    records: dict[str, CellRecord] = {}
    writer = _LiveWriter(out_file, rd.run_id, step_name, attempt, records)

    def finish(state: State, failure: Failure | None = None, message: str = "") -> int:
        writer.flush()
        log.flush()
        extra: dict[str, Any] = {"duration_s": round(time.time() - started, 4)}
        if failure:
            message = message or failure.message()
            extra.update(ename=failure.ename, evalue=failure.evalue)
            if failure.cell:
                extra.update(cell=failure.cell.number, cell_id=failure.cell.id)
            log.write(f"--- cellpipe: step {step_name} failed: {message} ---\n")
        _write_report(rd, step_name, state, attempt, message, started, extra["duration_s"], log)
        rd.emit(state, step_name, attempt=attempt, message=message, **extra)
        log.close()
        return 0 if state is State.SUCCEEDED else 1

    try:
        if warm is None:
            warm = warm_up(rd, log)
            _limit_fresh_process()
        else:
            warm.shell.step_log = log
        shell = warm.shell
        records.update(warm.records)
        shell.on_output = writer.live
        if warm.failure:
            return finish(State.FAILED, warm.failure)

        from cellpipe.execution import hidden_state

        tracker = hidden_state.Tracker.after_prelude(getattr(shell, "ipython", None))
        tracker.seeds = step_name in hidden_state.generator_cells(pipeline, step_name)[1]
        with shell.kernel_context():  # libraries imported by unpickling see a kernel
            failure = _load_inputs(rd, step, shell, warm.references)
        if failure:
            return finish(State.FAILED, failure)
        hidden_state.enter_step(rd, step_name, tracker)
        counts = hidden_state.execution_counts(pipeline, rd.info().get("parameters") or {})

        for cell in pipeline.step_cells(step_name):
            writer.current = cell.id
            if hasattr(shell, "ipython"):  # numbered as top to bottom: Out[n] means the same
                shell.ipython.execution_count = counts.get(cell.id, shell.ipython.execution_count)
            if "foreach" in cell.tags:  # iterations on worker processes: execution/fanout.py
                failure = _run_foreach(rd, step, cell, shell, records, attempt, log)
            else:
                failure = _run_cell(shell, cell.id, cell.source, records, cell)
            writer.flush()
            if failure:
                return finish(State.FAILED, failure)
        tracker.leave()

        metrics = _metric_values(shell.user_ns, step.metrics) if step.metrics else None
        if metrics is not None:
            rd.record_metrics(step_name, metrics)
        gate = None
        if step.settings.gate:
            from cellpipe.compiling.gates import GateError, evaluate_gate

            try:
                gate = evaluate_gate(step.settings.gate, shell.user_ns, step_name)
            except GateError as exc:
                return finish(State.FAILED, Failure(None, "GateError", str(exc)), str(exc))
        try:
            _save_outputs(rd, step, shell.user_ns, warm.references, log)
            hidden_state.save_step(rd.data_dir(step_name), tracker)
        except UnpicklableValue as exc:
            log.write(str(exc) + "\n")
            return finish(State.FAILED, Failure(None, "UnpicklableValue", str(exc)), str(exc))
        _save_verdicts(rd, step_name, metrics, gate)
        if gate is not None:
            log.write(f"--- cellpipe: {gate.message} ---\n")
        return finish(State.SUCCEEDED, message=gate.message if gate else "")
    except CellpipeError as exc:
        return finish(State.FAILED, Failure(None, type(exc).__name__, str(exc)))


def _write_report(
    rd: RunDir,
    step: str,
    state: State,
    attempt: int,
    message: str,
    started: float,
    duration: float,
    log: TextIO,
) -> None:
    """``reports/<step>.html``, before the verdict so the page exists once the verdict does.
    Costs about a millisecond (no nbconvert, see cellpipe.reports.report); a page that cannot be
    written is noted in the log and never changes the step's outcome."""
    st = StepStatus(step, state, attempt, started, started + duration, duration, message=message)
    try:
        write_step_report(rd, step, status=st)
    except Exception as exc:
        log.write(f"--- cellpipe: could not write reports/{step}.html: {exc!r} ---\n")


def _run_cell(
    shell: Any, cid: str, source: str, records: dict[str, CellRecord], cell: Cell
) -> Failure | None:
    t0 = time.perf_counter()
    result = shell.execute(source)
    records[cid] = CellRecord(
        result.outputs,
        result.execution_count,
        "ok" if result.success else "error",
        time.perf_counter() - t0,
    )
    if result.success:
        return None
    err = result.error or {}
    return Failure(
        cell, err.get("ename", "Error"), err.get("evalue", ""), list(err.get("traceback", []))
    )


def _run_foreach(
    rd: RunDir,
    step: Any,
    cell: Cell,
    shell: Any,
    records: dict[str, CellRecord],
    attempt: int,
    log: TextIO,
) -> Failure | None:
    from cellpipe.execution.fanout import run_foreach

    res = run_foreach(rd, step, cell, shell, attempt=attempt, log=log)
    status = "error" if res.error else "ok"
    records[cell.id] = CellRecord(res.outputs, res.execution_count, status, res.duration_s)
    if res.total:
        pods = f", {res.in_pods} in pods of their own" if res.in_pods else ""
        log.write(
            f"--- cellpipe: foreach in cell {cell.number}: {res.total} iterations, "
            f"{res.ran} run, {res.cached} from the cache{pods} ---\n"
        )
    if not res.error:
        return None
    err = res.error
    return Failure(cell, err.get("ename", "Error"), err.get("evalue", ""), err.get("traceback", []))


def _load_inputs(rd: RunDir, step: Any, shell: Any, references: dict[int, str]) -> Failure | None:
    from cellpipe.execution.hidden_state import restore
    from cellpipe.execution.marshal import load_value

    for name in step.absent:  # a prelude name a step before this one deleted
        shell.user_ns.pop(name, None)
    groups: dict[Path, dict[str, Any]] = {}  # values saved together load together
    for inp in rd.step_inputs(step):
        name, producer, directory, record = inp.name, inp.producer, inp.directory, inp.record
        if not inp.saved:
            return Failure(
                None,
                "MissingInput",
                f"input `{name}` comes from step {producer}, which has no saved data in "
                f"{directory}; run step {producer} first",
            )
        if record is None:
            # The producer did not define it on this run (a conditional assignment): leave it
            # unset, as a top-to-bottom run would have, so reading it raises NameError.
            continue
        try:
            value = load_value(record, directory, namespace=shell.user_ns, groups=groups)
        except Exception as exc:
            return Failure(
                None,
                "LoadError",
                f"cannot load input `{name}` ({record.type}) from step {producer}: {exc}",
            )
        if is_pseudo(name):
            restore(name, value)
        else:
            shell.user_ns[name] = value
    return None


def _save_outputs(
    rd: RunDir,
    step: Any,
    ns: dict[str, Any],
    references: dict[int, str],
    log: TextIO | None = None,
) -> None:
    from cellpipe.execution.hidden_state import capture
    from cellpipe.execution.marshal import save_value

    directory = rd.fresh_data_dir(step.name)
    records = []
    grouped = _save_alias_groups(step, ns, directory, references, records, log or sys.stderr)
    for name in step.outputs:
        if is_file(name) or name in grouped:
            continue  # a file is its own hand-off (it only orders the steps)
        if is_pseudo(name):
            value = capture(name)
        elif name in ns:
            value = ns[name]
        else:
            continue
        records.append(
            save_value(
                name,
                value,
                directory,
                producer=step.name,
                consumers=step.consumers.get(name, ()),
                references=references,
            )
        )
    rd.write_manifest(step.name, records)
    from cellpipe.execution.lineage import record_lineage

    record_lineage(rd, step, {r.name: r.sha256 for r in records})


def _save_alias_groups(
    step: Any,
    ns: dict[str, Any],
    directory: Path,
    references: dict[int, str],
    records: list,
    log: TextIO,
) -> set[str]:
    """Save the outputs that share objects together (cellpipe.execution.aliasing); returns
    their names. Names it received that share objects with them are noted in the log."""
    from cellpipe.execution.aliasing import alias_groups
    from cellpipe.execution.marshal import save_group

    names = [n for n in (*step.outputs, *step.inputs) if not is_pseudo(n) and n in ns]
    sharing = alias_groups({n: ns[n] for n in dict.fromkeys(names)})
    grouped: set[str] = set()
    for group in sharing.groups:
        out = [n for n in group if n in step.outputs]
        if len(out) > 1:
            records += save_group(
                {n: ns[n] for n in out},
                directory,
                producer=step.name,
                consumers=step.consumers,
                references=references,
            )
            grouped.update(out)
        stale = [n for n in group if n not in step.outputs]
        if out and stale:
            log.write(
                f"--- cellpipe: {', '.join(out)} share objects with {', '.join(stale)}, which "
                f"this step does not hand on; steps reading {', '.join(stale)} from "
                "elsewhere do not see this step's changes ---\n"
            )
    for name in sharing.truncated:
        log.write(f"--- cellpipe: `{name}` was not fully checked for shared objects ---\n")
    return grouped


def _save_verdicts(rd: RunDir, step: str, metrics: dict[str, Any] | None, gate: Any) -> None:
    """Metrics and the gate's verdict also go next to the step's values: a later run that
    reuses the step from the cache takes them along (see cellpipe.compiling.gates)."""
    if metrics is not None:
        rd.keep_step_metrics(step, metrics)
    if gate is not None:
        rd.record_gate(step, gate.to_json())


def _metric_values(ns: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        if name not in ns:
            continue
        v = ns[name]
        if hasattr(v, "item") and getattr(v, "shape", None) == ():
            v = v.item()  # numpy scalars
        if isinstance(v, (bool, int, float, str)) or v is None:
            values[name] = v
        elif isinstance(v, types.ModuleType) or callable(v):
            continue
        else:
            values[name] = repr(v)[:200]
    return values


def _definitions(ns: dict[str, Any]) -> dict[int, str]:
    """Functions and classes the prelude defined: pickled by reference, because every step
    defines them again and an instance must belong to the consuming step's class."""
    return {
        id(v): k
        for k, v in ns.items()
        if isinstance(v, (type, types.FunctionType))
        and getattr(v, "__module__", None) == "__main__"
        and not k.startswith("_")
    }


def _limit_fresh_process() -> None:
    """Limits come from the local backend in the environment; applied after the prelude so
    the interpreter and the imports do not count against them (as in a forked step)."""
    spec = os.environ.pop("CELLPIPE_LIMITS", None)
    if spec:
        from cellpipe.execution.limits import apply_limits

        data = json.loads(spec)
        apply_limits(data.get("limits") or {}, data.get("cpus"))


def _prepare_process(rd: RunDir) -> None:
    """Run where the notebook lives, as Jupyter does, so relative paths mean the same."""
    workdir = rd.info().get("workdir")
    if workdir and Path(workdir).is_dir():
        os.chdir(workdir)
        if "" not in sys.path and workdir not in sys.path:
            sys.path.insert(0, workdir)


class _LiveWriter:
    """Writes outputs/<step>.json as cells produce output, at most twice a second."""

    def __init__(
        self, path: Path, run_id: str, step: str, attempt: int, records: dict[str, CellRecord]
    ):
        self.path, self.run_id, self.step, self.attempt = path, run_id, step, attempt
        self.records = records
        self.current: str | None = None
        self._last = 0.0

    def live(self, outputs: list[dict[str, Any]]) -> None:
        if self.current is None:
            return
        now = time.monotonic()
        if now - self._last < _LIVE_WRITE_INTERVAL:
            return
        self._last = now
        running = dict(self.records)
        running[self.current] = CellRecord(list(outputs), None, "running", 0.0)
        self._write(running)

    def flush(self) -> None:
        self._write(self.records)

    def _write(self, records: dict[str, CellRecord]) -> None:
        write_json(
            self.path,
            {
                "run": self.run_id,
                "step": self.step,
                "attempt": self.attempt,
                "cells": {cid: r.to_json() for cid, r in records.items()},
            },
        )


def _copy_folder(src: Path, dest: Path) -> None:
    """The notebook's folder (an S3 run's, downloaded) into the working directory. Files
    only, with their times: ``dest`` is the pod's volume mount, whose own mode and times
    the step's user may not change (copytree's copystat of it fails with EPERM)."""
    import shutil

    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellpipe.runner",
        description="Execute one step of a cellpipe run directory (what every backend calls).",
    )
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory")
    parser.add_argument("--step", required=True, help="the step to execute")
    parser.add_argument("--attempt", type=int, default=1, help="attempt number (for retries)")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter: a Python literal, else typed like `cellpipe run -p` "
        "(a value equal to the parameters cell's own text is left to the cell)",
    )
    parser.add_argument(
        "--result-trailer",
        action="store_true",
        help="in a pod: mirror the log to stdout and end it with the step's result line "
        "(see cellpipe.backends.argo.trailer)",
    )
    parser.add_argument(
        "--start-when",
        type=Path,
        metavar="PATH",
        help="run the prelude now, then wait until PATH exists before running the step; "
        f"exit {NOT_STARTED} without running it if PATH.cancel appears first or PATH does "
        f"not appear within {START_WAIT_LIMIT_S // 3600} h (how the Docker backend starts a "
        "step's container while its upstream steps still run)",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        metavar="PATH",
        help="in a pod with S3 data: copy the notebook's folder unpacked at PATH into the "
        "working directory first (see cellpipe.backends.argo.folder)",
    )
    parser.add_argument(
        "--foreach-items",
        action="store_true",
        help="an Argo fan-out's first pod: print the step's foreach iterations still to run "
        "as a JSON list (see cellpipe.execution.fanout)",
    )
    parser.add_argument(
        "--foreach-iteration",
        type=int,
        metavar="N",
        help="an Argo fan-out's pod: run iteration N of the step's foreach cell and keep it "
        "for the step's own pod",
    )
    args = parser.parse_args(argv)
    from cellpipe.execution.orphans import die_with_parent_if_asked

    die_with_parent_if_asked()  # a step started by a local driver ends with it
    if args.start_when and args.result_trailer:
        parser.error("--start-when and --result-trailer cannot be combined")
    rd = RunDir(args.run_dir.resolve())
    if not rd.has_pipeline():
        parser.error(f"{rd.path} has no {layout.PIPELINE}: not a run directory")
    try:
        rd.pipeline().step(args.step)
    except KeyError:
        names = ", ".join(s.name for s in rd.pipeline().steps)
        parser.error(f"no step {args.step!r} in this pipeline; steps: {names}")
    if args.folder is not None and args.folder.is_dir():
        _copy_folder(args.folder, Path.cwd())
    if args.parameter:
        from cellpipe.backends.argo.trailer import parse_overrides

        try:
            rd.update_info(parameters=parse_overrides(rd.pipeline(), args.parameter))
        except ValueError as exc:
            parser.error(str(exc))
    if args.foreach_items or args.foreach_iteration is not None:
        from cellpipe.execution.fanout import pod_main

        return pod_main(
            rd,
            args.step,
            items_only=args.foreach_items,
            index=args.foreach_iteration,
            warm_up=warm_up,
            load_inputs=_load_inputs,
        )
    if args.result_trailer:
        return _run_in_pod(rd, args.step, args.attempt)
    if args.start_when:
        warm = _warm_until(rd, args.start_when)
        if warm is None:
            return NOT_STARTED
        return run_step(rd, args.step, attempt=args.attempt, warm=warm)
    return run_step(rd, args.step, attempt=args.attempt)


def _warm_until(rd: RunDir, go: Path) -> Warm | None:
    """Run the prelude, then wait for ``go`` to exist; None if told not to start after all.

    Until ``go`` appears the step has not started: nothing is written to the run directory
    (the prelude's log waits in memory), so a step that is then skipped leaves no trace. Its
    inputs are loaded only after ``go``, once the steps that make them have finished.
    """
    import io

    buffer = io.StringIO()
    warm = warm_up(rd, buffer)
    _limit_fresh_process()
    cancel = layout.cancel_file(go)
    deadline = time.monotonic() + START_WAIT_LIMIT_S
    while not go.exists():
        if cancel.exists() or time.monotonic() > deadline:
            return None
        time.sleep(_START_POLL_S)
    warm.log_text = buffer.getvalue()
    return warm


def _run_in_pod(rd: RunDir, step: str, attempt: int) -> int:
    """Run ``step`` with its log mirrored to stdout, then print the result trailer: the pod
    log is how the step's record reaches the machine following the run."""
    global _LOG_MIRROR
    from cellpipe.backends.argo.trailer import StepResult, encode

    _LOG_MIRROR = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    # With S3 the folder is the step's output artifact: there even when it saves nothing.
    rd.data_dir(step).mkdir(parents=True, exist_ok=True)
    try:
        return run_step(rd, step, attempt=attempt)
    finally:
        events = [e.to_json() for e in rd.events() if e.step == step]
        verdict = rd.gate_verdict(step)
        try:
            manifest = {n: r.to_json() for n, r in rd.manifest(step).items()}
        except FileNotFoundError:
            manifest = None
        if verdict is not None:
            # The gate's output parameter: the controller skips the tasks downstream on it.
            rd.write_gate_output(step, bool(verdict.get("open")))
        result = StepResult(
            step,
            events,
            rd.read_outputs(step),
            rd.metrics().get(step),
            manifest=manifest,
            gate=verdict,
            lineage=rd.lineage(step) or None,
        )
        _LOG_MIRROR.write(encode(result))
        _LOG_MIRROR.flush()


if __name__ == "__main__":
    sys.exit(main())
