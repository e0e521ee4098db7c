"""The run manager: everything the REST handlers do, with no HTTP in it.

Runs are prepared here (compile errors come back at once) and driven by detached
``python -m cellpipe.driving.driver`` processes, at most ``max_concurrent_runs`` at a time; the rest
wait in a queue that is rebuilt from the run directories when the server starts. A watcher
follows the events of active runs and forwards each state change to the event bus.
Blocking engine calls run in threads so the server's event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellpipe.core.errors import Conflict, RunNotFound
from cellpipe.core.model import State
from cellpipe.rundir.runs import Driver, RunDir, RunStatus, history_db

from .history import History
from .models import (
    CompileRequest,
    CreateRun,
    DescribeBackend,
    DescribeProfile,
    DescribeRun,
    DescribeStep,
    ListProfilesResponse,
    ResumeRun,
    SplitRequest,
)
from .paths import relative, resolve

SCHEMA_ID = "https://events.cellpipe.dev/run-state"
_LOG_LIMIT = 2 * 2**20


class RunManager:
    def __init__(
        self,
        root_dir: Path,
        runs_root: Path,
        *,
        default_backend: str = "local",
        default_profile: str | None = None,
        profile_dir: Path | None = None,
        max_concurrent_runs: int = 4,
        poll_interval: float = 0.25,
        notify: Any = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
        log: logging.Logger | None = None,
    ):
        self.root = Path(root_dir).resolve()
        self.runs_root = Path(runs_root)
        self.default_backend = default_backend
        self.default_profile = default_profile or None
        self.profile_dir = profile_dir
        self.max_concurrent_runs = max_concurrent_runs
        self.poll_interval = poll_interval
        self.notify = notify
        self._emit = emit or (lambda data: None)
        self.log = log or logging.getLogger(__name__)
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.history = History(history_db(self.runs_root), self.runs_root, self.root)
        self._queue: deque[tuple[str, bool]] = deque()
        self._watched: dict[str, int] = {}  # run id -> events forwarded so far
        self._drivers: dict[str, subprocess.Popen[bytes]] = {}  # ours, collected when they end
        self._exiting: list[subprocess.Popen[bytes]] = []  # replaced (a resume) but not yet ended
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def rediscover(self) -> None:
        """After a (re)start: runs still driven are watched again, prepared ones queued."""
        self.history.sync()
        for rd, status in self._unfinished():
            try:
                if status.driver is Driver.ALIVE:
                    self._watched[rd.run_id] = len(rd.events())
                elif status.driver is Driver.NONE:  # prepared (or resumed), never driven
                    self._queue.append((rd.run_id, status.resume_requested))
            except Exception:  # one broken run folder must not keep the extension down
                self.log.exception("cellpipe: cannot pick up run %s again", rd.run_id)

    async def start(self) -> None:
        """Start watching (also done on first use, should the server not call this)."""
        self._ensure_watching()

    def _ensure_watching(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching. Running drivers go on (they are detached) and are found again on
        the next start; forgetting their handles here is deliberate."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for proc in [*self._drivers.values(), *self._exiting]:
            if proc.poll() is None:
                proc.returncode = 0  # detached: not ours to wait for any more
        self._drivers.clear()
        self.history.close()

    def _unfinished(self) -> list[tuple[RunDir, RunStatus]]:
        out = []
        for d in sorted(self.runs_root.iterdir()):
            rd = RunDir(d)
            if rd.exists():
                try:
                    status = rd.status()
                except Exception:
                    continue  # broken: listed as such by the history, never driven
                if not status.state.terminal:
                    out.append((rd, status))
        return out

    # -- requests --------------------------------------------------------------------------------

    async def compile(self, req: CompileRequest) -> dict[str, Any]:
        from cellpipe.compiling.compiler import compile_notebook

        path = resolve(self.root, req.path)
        source: Any = req.content if req.content is not None else path
        pipeline = await asyncio.to_thread(compile_notebook, source, path=str(path))
        data = pipeline.to_json()
        data["path"] = req.path
        return data

    async def split(self, req: SplitRequest) -> dict[str, Any]:
        """The engine's split of the notebook at its headings; nothing is written."""
        from cellpipe.compiling.notebook import read_notebook
        from cellpipe.compiling.split import split_at_headings

        path = resolve(self.root, req.path)
        source: Any = req.content if req.content is not None else path
        nb, _ = await asyncio.to_thread(read_notebook, source)
        plan = await asyncio.to_thread(split_at_headings, nb, req.level)
        return plan.to_json()

    async def create(self, req: CreateRun) -> DescribeRun:
        self._ensure_watching()
        from cellpipe.backends import available_backend
        from cellpipe.driving.driver import prepare_run

        path = resolve(self.root, req.path)
        backend = req.backend or self.default_backend
        available_backend(backend)  # 503 with the reason, before anything is prepared
        source: Any = req.content if req.content is not None else path
        options: dict[str, Any] = {"jobs": req.jobs, "no_cache": req.no_cache}
        if backend == "argo":
            name = req.profile if req.profile is not None else self.default_profile
            options["profile"] = None  # the request's choice, not the server's environment
            if name:
                from cellpipe.backends.argo.profiles import load_profile

                profile = await asyncio.to_thread(load_profile, name, self._profile_folder())
                options["profile"] = profile.to_json()
        rd = await asyncio.to_thread(
            prepare_run,
            self.runs_root,
            source,
            path=str(path),
            backend=backend,
            parameters=req.parameters,
            options=options,
            notify=self.notify,
        )
        self._queue.append((rd.run_id, False))
        self._dispatch()
        return await self.describe(rd.run_id)

    async def resume(self, run_id: str, req: ResumeRun) -> DescribeRun:
        self._ensure_watching()
        from cellpipe.driving.driver import prepare_resume

        if any(r == run_id for r, _ in self._queue):
            raise Conflict(f"run {run_id} is queued; cancel it first")
        await asyncio.to_thread(prepare_resume, self.runs_root, run_id, req.content)
        self._queue.append((run_id, True))
        self._dispatch()
        return await self.describe(run_id)

    def queued(self) -> int:
        """Runs waiting for a free slot."""
        return len(self._queue)

    async def cancel(self, run_id: str) -> DescribeRun:
        self._ensure_watching()
        rd = await asyncio.to_thread(self._open, run_id)
        queued = [q for q in self._queue if q[0] == run_id]
        if queued:
            self._queue.remove(queued[0])
            await asyncio.to_thread(functools.partial(rd.settle_cancelled, before_start=True))
        else:
            from cellpipe.backends import get_backend

            backend = get_backend(rd.info().get("backend", "local"))
            await asyncio.to_thread(backend.cancel, rd)
        await self._forward(run_id)
        return await self.describe(run_id)

    async def describe(self, run_id: str) -> DescribeRun:
        self._ensure_watching()
        return await asyncio.to_thread(self._describe, run_id)

    async def list(
        self, path: str | None, page: int, page_size: int
    ) -> tuple[list[DescribeRun], int]:
        if path:
            path = resolve(self.root, path).relative_to(self.root).as_posix()
        await asyncio.to_thread(self.history.sync)
        rows, total = await asyncio.to_thread(
            self.history.list, path, (page - 1) * page_size, page_size
        )
        return [DescribeRun(**r) for r in rows], total

    async def outputs(self, run_id: str, step: str) -> dict[str, Any]:
        rd = await asyncio.to_thread(self._open, run_id, step)
        data = await asyncio.to_thread(rd.read_outputs, step)
        return data or {"run": run_id, "step": step, "attempt": 0, "cells": {}}

    async def log_text(self, run_id: str, step: str) -> str:
        rd = await asyncio.to_thread(self._open, run_id, step)

        return await asyncio.to_thread(rd.log_tail, step, _LOG_LIMIT)

    def backends(self) -> list[DescribeBackend]:
        from cellpipe.backends import backend_names, get_backend

        out = []
        for name in backend_names():
            try:
                ok, why = get_backend(name).available()
            except Exception as exc:  # a broken plugin must not break the list
                ok, why = False, str(exc)
            out.append(DescribeBackend(name=name, available=ok, reason=why))
        return out

    def profiles(self) -> ListProfilesResponse:
        """The cluster profiles of the server's profile folder (a broken one with its error)."""
        from cellpipe.backends.argo.profiles import list_profiles

        folder = self._profile_folder()
        return ListProfilesResponse(
            profiles=[DescribeProfile(**p.to_json()) for p in list_profiles(folder)],
            default=self.default_profile,
            folder=str(folder),
        )

    def _profile_folder(self) -> Path:
        from cellpipe.backends.argo.profiles import profile_dir

        return self.profile_dir if self.profile_dir is not None else profile_dir()

    # -- internals ---------------------------------------------------------------------------------

    def _open(self, run_id: str, step: str | None = None) -> RunDir:
        rd = RunDir.open(self.runs_root, run_id)
        if step is not None and step not in {s.name for s in rd.pipeline().steps}:
            names = ", ".join(s.name for s in rd.pipeline().steps)
            raise RunNotFound(f"run {run_id} has no step {step!r}; steps: {names}")
        return rd

    def _describe(self, run_id: str) -> DescribeRun:
        rd = self._open(run_id)
        try:
            st = rd.status()
        except Exception as exc:  # the run's folder is broken: say so, as a failed run
            return DescribeRun(
                run_id=run_id,
                path=None,
                backend="",
                state=State.FAILED.value,
                message=f"this run's folder is broken: {type(exc).__name__}: {exc}",
            )
        if any(r == run_id for r, _ in self._queue) and not st.state.terminal:
            st.message = st.message or "queued: waiting for a free slot"
        return DescribeRun(
            run_id=st.run_id,
            path=relative(self.root, st.notebook),
            backend=st.backend,
            state=st.state.value,
            message=st.message,
            parameters=st.parameters,
            started_at=st.started_at,
            ended_at=st.ended_at,
            duration_s=st.duration_s,
            steps=[
                DescribeStep(name=n, **_step_fields(s), **_grouping(rd, n))
                for n, s in st.steps.items()
            ],
            metrics=rd.metrics(),
        )

    def _dispatch(self) -> None:
        from cellpipe.driving.driver import start_detached

        while self._queue and len(self._watched) < self.max_concurrent_runs:
            run_id, resume = self._queue.popleft()
            rd = RunDir.at(self.runs_root, run_id)
            if not rd.exists():
                continue  # deleted while it waited
            self._watched[run_id] = len(rd.events())
            previous = self._drivers.get(run_id)
            if previous is not None and previous.poll() is None:
                self._exiting.append(previous)
            self._drivers[run_id] = start_detached(rd, resume=resume)

    async def _watch(self) -> None:
        failing: set[str] = set()  # runs whose failure was logged: once, not every poll
        while True:
            for run_id in list(self._watched):
                try:
                    if not RunDir.at(self.runs_root, run_id).path.is_dir():
                        self._gone(run_id)
                        continue
                    await self._forward(run_id)
                    failing.discard(run_id)
                except Exception:  # one broken run directory must not stop the others
                    if run_id not in failing:
                        failing.add(run_id)
                        self.log.exception("cellpipe: watching run %s failed", run_id)
            try:
                self._exiting = [p for p in self._exiting if p.poll() is None]
                self._dispatch()
            except Exception:
                self.log.exception("cellpipe: starting queued runs failed")
            await asyncio.sleep(self.poll_interval)

    def _gone(self, run_id: str) -> None:
        """A watched run whose folder was deleted has ended: its slot is free, and its
        driver (which can record nothing any more) is stopped, with its steps."""
        self._watched.pop(run_id, None)
        driver = self._drivers.pop(run_id, None)
        if driver is not None and driver.poll() is None:
            driver.kill()
            self._exiting.append(driver)
        self.log.warning("cellpipe: the folder of run %s was deleted; it counts as ended", run_id)

    async def _forward(self, run_id: str) -> None:
        """Send the run's new events to the event bus; stop watching once it has ended."""
        rd = RunDir.at(self.runs_root, run_id)
        seen = self._watched.get(run_id, 0)
        events = await asyncio.to_thread(rd.events, seen)
        path = None
        if events:
            path = relative(self.root, rd.info().get("notebook"))
        for ev in events:
            self._emit(
                {
                    "run_id": run_id,
                    "step": ev.step,
                    "state": ev.state.value,
                    "attempt": ev.attempt,
                    "message": ev.message,
                    "path": path,
                    "ts": ev.ts,
                }
            )
        if run_id in self._watched:
            self._watched[run_id] = seen + len(events)
        if events:
            await asyncio.to_thread(self.history.update, rd)
        status = await asyncio.to_thread(rd.status)
        driver = self._drivers.get(run_id)
        driving = driver is not None and driver.poll() is None  # poll() also collects it
        if status.state.terminal and not driving:
            self._watched.pop(run_id, None)
            self._drivers.pop(run_id, None)
            await asyncio.to_thread(self.history.update, rd)
            if status.driver_lost:
                # Derived, not written: the driver died. Say so once, as an event.
                self._emit(
                    {
                        "run_id": run_id,
                        "step": None,
                        "state": status.state.value,
                        "attempt": 0,
                        "message": status.message,
                        "path": relative(self.root, rd.info().get("notebook")),
                        "ts": status.ended_at or 0.0,
                    }
                )


def _step_fields(s: Any) -> dict[str, Any]:
    d = s.to_json()
    d["state"] = s.state.value
    return d


def _grouping(rd: RunDir, step: str) -> dict[str, Any]:
    """The part of a composed notebook a step belongs to, for the sidebar's groups."""
    try:
        s = rd.pipeline().step(step)
    except (KeyError, OSError, ValueError):
        return {}
    return {"group": s.group, "notebook": s.notebook}
