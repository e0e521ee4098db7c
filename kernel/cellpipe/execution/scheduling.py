"""Running a pipeline's steps as a DAG, whatever starts them: the part backends share.

The process that drives a run schedules ready steps up to ``jobs`` at a time, skips steps
whose results are cached, retries with exponential backoff, enforces timeouts and handles
cancel (SIGTERM/SIGINT). *How* a step is started is a backend's business: it hands the
scheduler a :class:`Launcher`, which starts one attempt of a step and returns a
:class:`Proc` to wait on, stop or kill (a forked process, a fresh interpreter, a container).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from cellpipe.compiling.gates import closed_upstream
from cellpipe.core.errors import Conflict
from cellpipe.core.model import State, Step
from cellpipe.execution.cache import input_hashes, parameters_seen, step_key
from cellpipe.rundir.runs import CacheIndex, RunDir

_T = TypeVar("_T")
KILL_GRACE_S = 3.0

#: Writes one line to the run's ``logs/_run.log``.
Note = Callable[[str], None]


class Proc:
    """One started attempt of a step. Subclasses say how to stop it; ``wait`` gives the exit
    code (negative: killed by that signal)."""

    def __init__(self, pid: int, waiter: asyncio.Future[int]):
        self.pid = pid
        self._waiter = waiter

    async def wait(self) -> int:
        return await asyncio.shield(self._waiter)

    def terminate(self) -> None:
        """Ask it to stop (cancel): it gets a grace period before :meth:`kill`."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)

    def describe_exit(self, code: int | None) -> str:
        """Why it ended, for a step that died without reporting a result itself."""
        return describe_exit(code)

    async def release(self) -> None:
        """Called once it has ended and been described: free what it held."""
        return None


class Launcher:
    """Starts attempts of steps for one run."""

    async def launch(self, step: Step, attempt: int) -> Proc:
        """Start ``attempt`` of ``step``. Raises LaunchError when it cannot start at all."""
        raise NotImplementedError  # pragma: no cover - interface

    async def close(self) -> None:
        return None


class LaunchError(Exception):
    """A step could not be started (its image failed to build, ...). ``retry``: whether
    another attempt may succeed; a missing package stays missing."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


#: Makes the launcher of a run, on first need (a run whose steps are all cached starts none).
LauncherFactory = Callable[[RunDir, Note], Awaitable[Launcher]]


def retry_delay(attempt: int) -> float:
    base = float(os.environ.get("CELLPIPE_RETRY_BACKOFF", "1.0"))
    return min(base * 2 ** (attempt - 1), 60.0)


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to its end, also from inside a running event loop (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=target, name="cellpipe-run")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def cancel_run(rd: RunDir, stop_leftovers: Callable[[RunDir], None]) -> None:
    """Ask the driving process to stop; if it is gone, settle the run directory ourselves.

    ``stop_leftovers`` stops whatever steps the dead driver left running (the backend knows
    how to find them).
    """
    status = rd.status()
    if status.state.terminal:
        raise Conflict(f"run {rd.run_id} already ended ({status.state.value})")
    alive = rd.driver_alive()
    pid = rd.driver_pid() if alive else None
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and not rd.status().state.terminal:
            time.sleep(0.05)
        if rd.status().state.terminal:
            return
    stop_leftovers(rd)
    rd.settle_cancelled()


class Scheduler:
    """Drives one run directory to its end with the launcher ``start_launcher`` makes."""

    def __init__(self, rd: RunDir, options: Any, start_launcher: LauncherFactory):
        self.rd, self.options = rd, options
        self._start_launcher = start_launcher
        self.pipeline = rd.pipeline()
        self.steps = {s.name: s for s in self.pipeline.steps}
        self.state: dict[str, State] = {}
        self.running: dict[str, Proc] = {}
        self.cancelled = False
        self.index = CacheIndex(rd.runs_root)
        self.params = rd.info().get("parameters") or {}
        self.gate_closed: dict[str, str] = {}  # step -> why: a closed gate upstream skipped it
        self.launcher: Launcher | None = None
        self._escalation: asyncio.Task[None] | None = None
        self._launcher_lock = asyncio.Lock()
        from cellpipe.execution.hidden_order import HiddenOrder

        self.hidden = HiddenOrder(rd, self.pipeline)
        self._again: set[str] = set()  # to run again (hidden state): never from the cache
        self._stale: set[str] = set()  # running on outputs of a step that runs again
        self._attempts: dict[str, int] = {}  # attempts made so far, for numbering re-runs
        self._log = open(rd.run_log_path(), "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def note(self, text: str) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    async def run(self) -> State:
        rd = self.rd
        rd.write_driver()
        self._install_signals()
        previous = rd.status().steps if self.options.resume else {}
        rd.emit(
            State.RUNNING,
            message="resumed" if self.options.resume else "",
            jobs=self.options.max_jobs,
            pid=os.getpid(),
        )
        for name in self.steps:
            self.state[name] = State.PENDING
            rd.emit(State.PENDING, name)
        try:
            await self._loop(previous)
        finally:
            if self.launcher:
                await self.launcher.close()
        failed = [n for n, s in self.state.items() if s is State.FAILED]
        if self.cancelled:
            final, msg = State.CANCELLED, "cancelled"
        elif failed:
            final, msg = (
                State.FAILED,
                f"step{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed",
            )
        else:
            final, msg = State.SUCCEEDED, ""
        rd.emit(final, message=msg)
        self._log.close()
        return final

    async def _loop(self, previous: dict[str, Any]) -> None:
        tasks: dict[asyncio.Task[State], str] = {}
        while True:
            self._verify_hidden(tasks)
            for name, step in self.steps.items():
                if self.state[name] is not State.PENDING or name in tasks.values():
                    continue
                ups = [self.state[u] for u in step.after]
                bad = [
                    u
                    for u in step.after
                    if self.state[u] in (State.FAILED, State.SKIPPED, State.CANCELLED)
                ]
                if self.cancelled:
                    self._settle(name, State.CANCELLED, "run cancelled before this step started")
                elif bad and bad[0] in self.gate_closed:
                    self.gate_closed[name] = self.gate_closed[bad[0]]
                    self._settle(name, State.SKIPPED, self.gate_closed[name])
                elif bad:
                    why = (
                        "skipped"
                        if self.state[bad[0]] is State.SKIPPED
                        else self.state[bad[0]].value
                    )
                    self._settle(name, State.SKIPPED, f"upstream step {bad[0]} {why}")
                elif all(u.ok for u in ups) and (
                    why := closed_upstream(step, self.rd.gate_verdict)
                ):
                    self.gate_closed[name] = why
                    self._settle(name, State.SKIPPED, why)
                elif not all(self.hidden.usable(u) for u in step.after if self.state[u].ok):
                    continue  # an upstream step's hidden state is not verified yet
                elif all(u.ok for u in ups) and len(tasks) < self.options.max_jobs:
                    task = asyncio.create_task(self._run_step(step, previous.get(name)))
                    tasks[task] = name
            if not tasks:
                if all(s.terminal for s in self.state.values()):
                    return
                if not self.hidden.unblock(self.state):
                    continue  # states settled this round may have made more steps ready
                self.note("hidden state: ordering by `prev:` blocks the check; not waiting")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                name = tasks.pop(task)
                self.state[name] = task.result()
                self.hidden.finished(name, self.state[name])
                if name in self._stale:  # it used outputs of a step that runs again
                    self._stale.discard(name)
                    self._run_again(name, "a step it depends on runs again")

    def _verify_hidden(self, tasks: dict[asyncio.Task[State], str]) -> None:
        """Steps that started from another hidden state than notebook order gives, and used
        it, run again before anything downstream starts (see cellpipe.execution.hidden_order)."""
        if self.cancelled:
            return
        for name, why in self.hidden.verify(self.state):
            self._run_again(name, why)
            # A step that drew from no generator hands on its outputs unverified; if it
            # must run again (a setting changed where the analysis could not see it), so
            # must whatever already used them.
            for later in self._downstream(name):
                if later in tasks.values():
                    self._stale.add(later)
                elif self.state[later].ok:
                    self._run_again(later, f"step {name}, which it depends on, runs again")

    def _run_again(self, name: str, why: str) -> None:
        self.note(f"step {name} runs again: {why}")
        self.hidden.forget(name)
        self._again.add(name)
        self.state[name] = State.PENDING
        self.rd.emit(State.PENDING, name, message=f"runs again: {why}")

    def _downstream(self, name: str) -> list[str]:
        found: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for s in self.steps.values():
                if current in s.after and s.name not in found:
                    found.append(s.name)
                    frontier.append(s.name)
        return found

    def _params_seen(self, step: Step) -> dict[str, Any]:
        return parameters_seen(self.pipeline, step, self.params)

    def _settle(self, name: str, state: State, message: str, **extra: Any) -> None:
        self.state[name] = state
        self.rd.emit(state, name, message=message, **extra)

    async def _run_step(self, step: Step, before: Any) -> State:
        key = None
        rerun = step.name in self._again
        self._again.discard(step.name)
        if step.settings.cache and not rerun:
            key = step_key(self.pipeline, step, self._params_seen(step), self._input_hashes(step))
            kept = self._from_cache(step, key, before)
            if kept is not None:
                return kept
        attempts = step.settings.retry + 1
        base = self._attempts.get(step.name, 0)
        for attempt in range(base + 1, base + attempts + 1):
            self._attempts[step.name] = attempt
            state, reason, again = await self._attempt(step, attempt)
            if state is State.SUCCEEDED:
                if key:
                    self.rd.record_cache_key(step.name, key)
                    self.index.store(key, self.rd, step.name)
                return state
            if state is State.CANCELLED or self.cancelled:
                return State.CANCELLED
            if attempt < base + attempts and again:
                delay = retry_delay(attempt)
                self.rd.emit(
                    State.PENDING,
                    step.name,
                    attempt=attempt,
                    message=f"attempt {attempt} failed ({reason}); retry {attempt + 1} of "
                    f"{base + attempts} in {delay:g} s",
                )
                await asyncio.sleep(delay)
                if self.cancelled:
                    return State.CANCELLED
            elif attempt < base + attempts:
                break  # another attempt cannot start either
        return State.FAILED

    def _from_cache(self, step: Step, key: str, before: Any) -> State | None:
        if (
            self.options.resume
            and before is not None
            and before.state.ok
            and self.rd.cache_key(step.name) == key
        ):
            self.rd.emit(State.CACHED, step.name, message="kept from before the resume")
            return State.CACHED
        if not self.options.use_cache:
            return None
        hit = self.index.lookup(key)
        if hit is None:
            return None
        source, source_step = hit
        if source.path != self.rd.path:
            self.rd.adopt_step(source, source_step)
            self.rd.adopt_metrics(step.name)  # its metrics came along with its data
        self.rd.record_cache_key(step.name, key)
        self.rd.emit(
            State.CACHED,
            step.name,
            message=f"unchanged since run {source.run_id}",
            from_run=source.run_id,
        )
        return State.CACHED

    def _input_hashes(self, step: Step) -> dict[str, str]:
        def hashes_of(producer: str) -> dict[str, str] | None:
            try:
                return {n: r.sha256 for n, r in self.rd.manifest(producer).items()}
            except FileNotFoundError:
                return None

        workdir = Path(self.rd.info().get("workdir") or ".")
        return input_hashes(self.pipeline, step, hashes_of, workdir)

    async def _get_launcher(self) -> Launcher:
        # Started on first need: a run whose steps are all cached never pays for the prelude.
        async with self._launcher_lock:
            if self.launcher is None:
                self.launcher = await self._start_launcher(self.rd, self.note)
            return self.launcher

    async def _attempt(self, step: Step, attempt: int) -> tuple[State, str, bool]:
        """One attempt: its state, why it failed, and whether another attempt may help."""
        launcher = await self._get_launcher()
        if self.cancelled:
            self.rd.emit(State.CANCELLED, step.name, attempt=attempt, message="run cancelled")
            return State.CANCELLED, "cancelled", False
        self.hidden.write_entry(step.name)
        try:
            proc = await launcher.launch(step, attempt)
        except LaunchError as exc:
            reason = str(exc)
            self._record_failure(step, attempt, reason)
            return State.FAILED, reason, exc.retry
        self.running[step.name] = proc
        if self.cancelled:  # cancel came while it was starting
            proc.terminate()
        timeout = step.settings.timeout
        reason = ""
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            reason = f"timed out after {timeout:g} s (timeout:{timeout:g})"
            proc.kill()
            code = await proc.wait()
        finally:
            self.running.pop(step.name, None)
        try:
            last = _last_step_event(self.rd, step.name)
            finished = (
                last is not None and last.state is State.SUCCEEDED and last.attempt == attempt
            )
            if self.cancelled and not finished:
                self.rd.emit(State.CANCELLED, step.name, attempt=attempt, message="run cancelled")
                return State.CANCELLED, "cancelled", False
            if last is not None and last.attempt == attempt and last.state.terminal and not reason:
                return last.state, last.message, True
            if not reason:
                reason = proc.describe_exit(code)
        finally:
            await proc.release()
        # The step died without saying why (killed, out of memory, timed out): say it for it.
        self._record_failure(step, attempt, reason, exit_code=code)
        return State.FAILED, reason, True

    def _record_failure(self, step: Step, attempt: int, reason: str, **extra: Any) -> None:
        self.rd.emit(State.FAILED, step.name, attempt=attempt, message=reason, **extra)
        with open(self.rd.log_path(step.name), "a", encoding="utf-8") as log:
            log.write(f"--- cellpipe: step {step.name} {reason} ---\n")

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.note("cancel requested: stopping running steps")
        for proc in list(self.running.values()):
            proc.terminate()

        async def escalate() -> None:
            await asyncio.sleep(KILL_GRACE_S)
            for proc in list(self.running.values()):
                proc.kill()

        self._escalation = asyncio.get_running_loop().create_task(escalate())

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.cancel)


def _last_step_event(rd: RunDir, step: str) -> Any:
    last = None
    for ev in rd.events():
        if ev.step == step:
            last = ev
    return last


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended without an exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed by someone)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code} without reporting a result"
