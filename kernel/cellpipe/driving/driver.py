"""Starting runs: prepare a run directory, then drive it here or in a detached process.

The CLI prepares and drives in one process. The server prepares (so compile errors come
back at once, with the open notebook's unsaved content) and then starts
``python -m cellpipe.driving.driver RUN_DIR`` detached, so a server restart loses no run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellpipe.core.errors import Conflict, ParameterError
from cellpipe.core.model import State
from cellpipe.core.notify import notify_target
from cellpipe.rundir.runs import RunDir


def prepare_run(
    root: Path,
    notebook: str | Path | Mapping[str, Any],
    *,
    path: str | None = None,
    backend: str = "local",
    parameters: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    via: str | None = None,
    notify: Any = None,
) -> RunDir:
    """Compile ``notebook`` (a path, or content with ``path`` naming it) into a new run
    directory under ``root``. Raises NotebookError, CompileError or ParameterError.

    ``via`` names what started it for the audit trail (``cli``, ``kernel``, ``server``,
    ``serve``); by default it is guessed from the process. ``notify``: where to say that
    the run ended (``--notify``, ``c.CellpipeApp.notify``) unless the notebook's
    ``metadata.cellpipe.notify`` says; see ``cellpipe.core.notify``. An argo run's
    ``options["profile"]`` is the cluster profile's JSON (None: none); when the caller
    leaves it out, ``$CELLPIPE_PROFILE`` selects it."""
    from cellpipe.compiling.compiler import compile_notebook, inline_references
    from cellpipe.compiling.notebook import notebook_settings, read_notebook, resolve_parameters

    nb, _ = read_notebook(notebook)
    name = path if path is not None else (None if isinstance(notebook, Mapping) else str(notebook))
    pipeline = compile_notebook(nb, path=name)
    # The snapshot is the notebook the pipeline was compiled from: referenced notebooks
    # inlined (compiling succeeded, so this does too), so resume and --output need only it.
    nb = inline_references(nb, name).nb
    values = resolve_parameters(list(pipeline.parameters), dict(parameters or {}))
    opts = dict(options or {})
    if backend == "argo" and "profile" not in opts:
        # Callers that choose (the CLI's --profile, the server's request) set it, None
        # included; the rest (the API, %cellpipe) get the environment's $CELLPIPE_PROFILE.
        from cellpipe.backends.argo.profiles import resolve

        profile = resolve(None)
        opts["profile"] = profile.to_json() if profile else None
    target = notify_target(notebook_settings(nb).get("notify"), notify)
    if target is not None:
        opts["notify"] = target.to_json()  # templates only: secrets stay in the environment
    return RunDir.create(
        root,
        pipeline,
        nb,
        backend=backend,
        parameters=values,
        options=opts,
        via=via,
    )


def prepare_resume(
    root: Path, run_id: str, notebook: str | Path | Mapping[str, Any] | None = None
) -> RunDir:
    """Compile the notebook again into run ``run_id`` so it can continue.

    ``notebook``: the fixed notebook (a path or content); default: the file the run came
    from, else its snapshot. Raises Conflict while the run is still going.
    """
    from cellpipe.compiling.compiler import compile_notebook, inline_references
    from cellpipe.compiling.notebook import read_notebook, resolve_parameters

    rd = RunDir.open(root, run_id)
    status = rd.status()
    if not status.state.terminal:
        raise Conflict(f"run {run_id} is still {status.state.value}; cancel it first")
    _stop_leftover_steps(rd)
    info = rd.info()
    source: Any = notebook
    if source is None:
        original = info.get("notebook")
        source = original if original and Path(original).is_file() else None
    if source is None:
        nb = rd.notebook()
    else:
        nb, _ = read_notebook(source)
    pipeline = compile_notebook(nb, path=info.get("notebook"))
    nb = inline_references(nb, info.get("notebook")).nb
    resolve_parameters(list(pipeline.parameters), info.get("parameters") or {})
    rd.replace_pipeline(pipeline, nb)
    # The old driver is gone; until the new one starts, the run waits (it has not failed).
    rd.clear_driver()
    rd.emit(State.PENDING, message="resume queued", resume=True)
    return rd


def _stop_leftover_steps(rd: RunDir, wait_s: float = 5.0) -> None:
    """A driver killed outright can leave a step running (on a machine without death
    signals, or from before they existed); resuming next to it would run that step twice
    at once. Kill such steps (pid and start time checked), or refuse when they survive."""
    import time

    from cellpipe.execution.orphans import kill_live_steps, live_steps

    if not kill_live_steps(rd):
        return
    deadline = time.monotonic() + wait_s
    while (left := live_steps(rd)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if left:
        steps = ", ".join(f"{s} (pid {p})" for s, p in sorted(left.items()))
        raise Conflict(
            f"run {rd.run_id}: step {steps} of the previous attempt is still running and "
            "could not be stopped; resume once it has ended"
        )


def drive(rd: RunDir, *, resume: bool = False, backend: Any = None) -> State:
    """Run a prepared run directory to its end with its backend; return the final state."""
    from cellpipe.backends import RunOptions, get_backend

    info = rd.info()
    opts = info.get("options") or {}
    if backend is None:
        backend = get_backend(info.get("backend", "local"))
    options = RunOptions(
        jobs=opts.get("jobs"), use_cache=not opts.get("no_cache", False), resume=resume
    )
    state = backend.execute(rd, options)
    _step_reports(rd)
    if opts.get("notify") and _driver_notifies(rd):
        _notify(rd, opts["notify"])
    return state


#: Backends whose runs this process notifies about at their end.
_NOTIFYING_BACKENDS = ("local", "docker")


def _driver_notifies(rd: RunDir) -> bool:
    """Local and Docker runs notify from here. An Argo run notifies from the cluster, through
    its Workflow's exit handler (so scheduled runs do too), except when no Workflow was
    submitted (every step cached or skipped) or the follower stopped it without its exit
    handler (a pod that could not start): then nobody else does, so this process does.
    Exactly one notification per run either way."""
    info = rd.info()
    backend = info.get("backend", "local")
    if backend in _NOTIFYING_BACKENDS:
        return True
    argo = info.get("argo") or {}
    return backend == "argo" and not (argo.get("workflow") and argo.get("notify"))


def _notify(rd: RunDir, config: Any) -> None:
    """Say the run ended; after the final state is on disk, and never changing it."""
    from cellpipe.core.notify import Notify, send

    try:
        target = Notify.parse(config)
        if target is not None:
            send(target, rd.status().to_json())
    except Exception as exc:  # a notification must never fail the run
        print(f"cellpipe: warning: notify: {type(exc).__name__}", file=sys.stderr)


def _step_reports(rd: RunDir) -> None:
    """Pages for the steps whose runner wrote none (cached, skipped, killed): every step of
    a finished run has ``reports/<step>.html``. The run's outcome never depends on them."""
    from cellpipe.reports.report import write_missing_step_reports

    try:
        write_missing_step_reports(rd)
    except Exception as exc:
        print(f"cellpipe: warning: could not write the step reports: {exc!r}", file=sys.stderr)


def start_detached(rd: RunDir, *, resume: bool = False) -> subprocess.Popen[bytes]:
    """Drive ``rd`` in a new process that outlives the caller.

    The caller should ``poll()`` the returned process now and then: while it lives, the
    finished driver stays a zombie until its parent collects it.
    """
    here = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    args = [sys.executable, "-m", "cellpipe.driving.driver", str(rd.path)]
    if resume:
        args.append("--resume")
    with open(rd.driver_log_path(), "ab") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not killed with the server, nor by its Ctrl-C
        )
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellpipe.driving.driver",
        description="Drive a prepared cellpipe run directory to its end (used by the server).",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    rd = RunDir(args.run_dir.resolve())
    if not rd.exists():
        parser.error(f"{rd.path} is not a run directory")
    try:
        state = drive(rd, resume=args.resume)
    except ParameterError as exc:
        print(f"cellpipe: error: {exc}", file=sys.stderr)
        return 2
    return 0 if state.ok else 1


if __name__ == "__main__":
    sys.exit(main())
