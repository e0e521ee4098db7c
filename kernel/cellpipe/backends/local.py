"""The local backend: the steps of a pipeline as processes on this machine, in parallel.

The process that runs ``cellpipe run`` drives the run: it schedules ready steps up to
``jobs`` at a time, skips steps whose results are cached, retries with exponential backoff,
enforces timeouts and handles cancel (SIGTERM/SIGINT). Steps are forked from a warm process
that already ran the prelude (see :mod:`cellpipe.forkserver`); where that is unsafe, each
step gets a fresh interpreter instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..cache import CacheIndex, file_hash, files_read, record_key, recorded_key, reuse, step_key
from ..errors import Conflict
from ..limits import cpu_count
from ..model import State, Step
from ..runs import RunDir
from . import RunOptions

_T = TypeVar("_T")
_KILL_GRACE_S = 3.0


def _child_env(**extra: str) -> dict[str, str]:
    """The environment for step processes: they must import this very cellpipe, also when
    it was found through a relative PYTHONPATH and steps run in the notebook's directory."""
    here = str(Path(__file__).resolve().parents[2])
    paths = [here, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), **extra)


def _retry_delay(attempt: int) -> float:
    base = float(os.environ.get("CELLPIPE_RETRY_BACKOFF", "1.0"))
    return min(base * 2 ** (attempt - 1), 60.0)


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self._warm: subprocess.Popen[bytes] | None = None

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self) -> None:
        """Called before compiling: start the warm process early (see prespawn_warm_process)."""
        if self._warm is None:
            self._warm = prespawn_warm_process()

    def execute(self, rd: RunDir, options: RunOptions) -> State:
        return run_sync(self.async_execute(rd, options))

    async def async_execute(self, rd: RunDir, options: RunOptions) -> State:
        warm, self._warm = self._warm, None
        try:
            return await _Scheduler(rd, options, warm).run()
        finally:
            if warm is not None and warm.poll() is None:
                warm.kill()  # never used: every step was cached
                warm.wait()

    def cancel(self, rd: RunDir) -> None:
        """Ask the driving process to stop; if it is gone, settle the run directory ourselves."""
        status = rd.status()
        if status.state.terminal:
            raise Conflict(f"run {rd.run_id} already ended ({status.state.value})")
        alive = rd.driver_alive()
        if alive:
            pid = json.loads((rd.path / "driver.json").read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 10
            while time.time() < deadline and not rd.status().state.terminal:
                time.sleep(0.05)
            if rd.status().state.terminal:
                return
        for ev in rd.events():
            pid = ev.extra.get("pid")
            if ev.state is State.RUNNING and pid:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        for name, st in rd.status().steps.items():
            if not st.state.terminal:
                rd.emit(State.CANCELLED, name, attempt=st.attempts, message="run cancelled")
        rd.emit(State.CANCELLED, message="cancelled")


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


class _Scheduler:
    def __init__(
        self, rd: RunDir, options: RunOptions, warm: subprocess.Popen[bytes] | None = None
    ):
        self.rd, self.options = rd, options
        self._warm = warm
        self.pipeline = rd.pipeline()
        self.steps = {s.name: s for s in self.pipeline.steps}
        self.state: dict[str, State] = {}
        self.running: dict[str, int] = {}  # step -> pid (its own process group)
        self.cancelled = False
        self.index = CacheIndex(rd.path.parent)
        self.params = rd.info().get("parameters") or {}
        self.launcher: _Launcher | None = None
        self._escalation: asyncio.Task[None] | None = None
        self._launcher_lock = asyncio.Lock()
        self._cores = itertools.cycle(_cores())
        self._log = open(rd.path / "logs" / "_run.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115

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
                elif bad:
                    why = (
                        "skipped"
                        if self.state[bad[0]] is State.SKIPPED
                        else self.state[bad[0]].value
                    )
                    self._settle(name, State.SKIPPED, f"upstream step {bad[0]} {why}")
                elif all(u.ok for u in ups) and len(tasks) < self.options.max_jobs:
                    task = asyncio.create_task(self._run_step(step, previous.get(name)))
                    tasks[task] = name
            if not tasks:
                if all(s.terminal for s in self.state.values()):
                    return
                continue  # states settled this round may have made more steps ready
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                name = tasks.pop(task)
                self.state[name] = task.result()

    def _settle(self, name: str, state: State, message: str, **extra: Any) -> None:
        self.state[name] = state
        self.rd.emit(state, name, message=message, **extra)

    async def _run_step(self, step: Step, before: Any) -> State:
        key = None
        if step.settings.cache:
            key = step_key(self.pipeline, step, self.params, self._input_hashes(step))
            kept = self._from_cache(step, key, before)
            if kept is not None:
                return kept
        attempts = step.settings.retry + 1
        for attempt in range(1, attempts + 1):
            state, reason = await self._attempt(step, attempt)
            if state is State.SUCCEEDED:
                if key:
                    record_key(self.rd.path, step.name, key)
                    self.index.store(key, self.rd.path, step.name)
                return state
            if state is State.CANCELLED or self.cancelled:
                return State.CANCELLED
            if attempt < attempts:
                delay = _retry_delay(attempt)
                self.rd.emit(
                    State.PENDING,
                    step.name,
                    attempt=attempt,
                    message=f"attempt {attempt} failed ({reason}); retry {attempt + 1} of "
                    f"{attempts} in {delay:g} s",
                )
                await asyncio.sleep(delay)
                if self.cancelled:
                    return State.CANCELLED
        return State.FAILED

    def _from_cache(self, step: Step, key: str, before: Any) -> State | None:
        if (
            self.options.resume
            and before is not None
            and before.state.ok
            and recorded_key(self.rd.path, step.name) == key
        ):
            self.rd.emit(State.CACHED, step.name, message="kept from before the resume")
            return State.CACHED
        if not self.options.use_cache:
            return None
        hit = self.index.lookup(key)
        if hit is None:
            return None
        run_dir, source_step = hit
        if run_dir != self.rd.path:
            reuse(run_dir, self.rd.path, source_step)
        record_key(self.rd.path, step.name, key)
        self.rd.emit(
            State.CACHED,
            step.name,
            message=f"unchanged since run {run_dir.name}",
            from_run=run_dir.name,
        )
        return State.CACHED

    def _input_hashes(self, step: Step) -> dict[str, str]:
        from ..marshal import read_manifest

        hashes: dict[str, str] = {}
        manifests: dict[str, Any] = {}
        for name, producer in step.inputs.items():
            if producer not in manifests:
                try:
                    manifests[producer] = read_manifest(self.rd.data_dir(producer))
                except FileNotFoundError:
                    manifests[producer] = {}
            rec = manifests[producer].get(name)
            hashes[name] = rec.sha256 if rec else "absent"
        # Files count by their content: a changed data.csv must not give a stale cache hit.
        workdir = Path(self.rd.info().get("workdir") or ".")
        for name in files_read(self.pipeline, step, workdir):
            hashes[name] = file_hash(workdir / name[len("@file:") :])
        return hashes

    async def _get_launcher(self) -> _Launcher:
        # Started on first need: a run whose steps are all cached never pays for the prelude.
        async with self._launcher_lock:
            if self.launcher is None:
                self.launcher = await _start_launcher(self.rd, self.note, self._warm)
            return self.launcher

    async def _attempt(self, step: Step, attempt: int) -> tuple[State, str]:
        launcher = await self._get_launcher()
        limits = dict(step.settings.limits)
        n = cpu_count(limits)
        cpus = sorted({next(self._cores) for _ in range(n)}) if n else None
        proc = await launcher.launch(step.name, attempt, limits, cpus)
        self.running[step.name] = proc.pid
        timeout = step.settings.timeout
        reason = ""
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            reason = f"timed out after {timeout:g} s (timeout:{timeout:g})"
            await _kill(proc)
            code = await proc.wait()
        finally:
            self.running.pop(step.name, None)
        last = _last_step_event(self.rd, step.name)
        finished = last is not None and last.state is State.SUCCEEDED and last.attempt == attempt
        if self.cancelled and not finished:
            self.rd.emit(State.CANCELLED, step.name, attempt=attempt, message="run cancelled")
            return State.CANCELLED, "cancelled"
        if last is not None and last.attempt == attempt and last.state.terminal and not reason:
            return last.state, last.message
        if not reason:
            reason = _describe_exit(code)
        # The step died without saying why (killed, out of memory, timed out): say it for it.
        self.rd.emit(State.FAILED, step.name, attempt=attempt, message=reason, exit_code=code)
        with open(self.rd.log_path(step.name), "a", encoding="utf-8") as log:
            log.write(f"--- cellpipe: step {step.name} {reason} ---\n")
        return State.FAILED, reason

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.note("cancel requested: stopping running steps")
        for pid in list(self.running.values()):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)

        async def escalate() -> None:
            await asyncio.sleep(_KILL_GRACE_S)
            for pid in list(self.running.values()):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

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


def _describe_exit(code: int | None) -> str:
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


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


async def _kill(proc: _Proc) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- launchers -------------------------------------------------------------------------------


class _Proc:
    def __init__(self, pid: int, waiter: asyncio.Future[int]):
        self.pid = pid
        self._waiter = waiter

    async def wait(self) -> int:
        return await asyncio.shield(self._waiter)


class _Launcher:
    async def launch(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> _Proc:
        raise NotImplementedError  # pragma: no cover - interface

    async def close(self) -> None:
        return None


class _FreshProcessLauncher(_Launcher):
    """A new interpreter per step: ``python -m cellpipe.runner``."""

    def __init__(self, rd: RunDir):
        self.rd = rd

    async def launch(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> _Proc:
        env = _child_env(CELLPIPE_LIMITS=json.dumps({"limits": limits, "cpus": cpus}))
        with open(self.rd.log_path(step), "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cellpipe.runner",
                "--run-dir",
                str(self.rd.path),
                "--step",
                step,
                "--attempt",
                str(attempt),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.rd.info().get("workdir") or None,
                env=env,
                start_new_session=True,
            )
        fut: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        return _Proc(proc.pid, fut)


class _ForkLauncher(_Launcher):
    """Steps forked from a warm :mod:`cellpipe.forkserver` process."""

    def __init__(self, proc: subprocess.Popen[bytes], stdout: asyncio.StreamReader):
        self.proc = proc
        self.stdout = stdout
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.exits: dict[int, asyncio.Future[int]] = {}
        self.lock = asyncio.Lock()
        self._orphans: set[asyncio.Task[None]] = set()  # keep references: tasks are weak
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self.stdout.readline():
            msg = json.loads(line)
            if "started" in msg:
                self._exit_future(msg["pid"])
                await self.started.put(msg["pid"])
            elif "exited" in msg:
                fut = self._exit_future(msg["pid"])
                if not fut.done():
                    fut.set_result(msg["code"])
        # The server is gone: children it started may still run; wait for them by pid.
        for pid, fut in self.exits.items():
            if not fut.done():
                self._orphans.add(asyncio.create_task(_wait_pid(pid, fut)))

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        if pid not in self.exits:
            self.exits[pid] = asyncio.get_running_loop().create_future()
        return self.exits[pid]

    async def launch(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> _Proc:
        assert self.proc.stdin is not None
        async with self.lock:  # the server answers commands in order
            cmd = {"run": step, "attempt": attempt, "limits": limits, "cpus": cpus}
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            pid = await self.started.get()
        return _Proc(pid, self._exit_future(pid))

    async def close(self) -> None:
        # Every step it started has ended (the scheduler waited for them); its interpreter's
        # own shutdown is of no use to anyone, so do not wait for it.
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            self.proc.kill()
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        self.reader.cancel()


async def _wait_pid(pid: int, fut: asyncio.Future[int]) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    if not fut.done():
        fut.set_result(-signal.SIGKILL)


def fork_allowed() -> tuple[bool, str]:
    if os.environ.get("CELLPIPE_FORK", "1") == "0":
        return False, "CELLPIPE_FORK=0"
    if not hasattr(os, "fork") or sys.platform == "darwin":
        # macOS system libraries are not fork-safe once initialised; Windows has no fork.
        return False, f"forking is not safe on {sys.platform}"
    return True, ""


def prespawn_warm_process() -> subprocess.Popen[bytes] | None:
    """Start the warm process now, so that its interpreter start and IPython import overlap
    with compiling the notebook; it waits for the run directory on stdin."""
    if not fork_allowed()[0]:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "cellpipe.forkserver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
    )


async def _start_launcher(
    rd: RunDir, note: Any, warm: subprocess.Popen[bytes] | None = None
) -> _Launcher:
    ok, why = fork_allowed()
    if not ok:
        note(f"fresh process per step: {why}")
        return _FreshProcessLauncher(rd)
    if warm is None or warm.poll() is not None:
        with open(rd.path / "logs" / "_prelude.log", "ab") as err:
            warm = subprocess.Popen(
                [sys.executable, "-m", "cellpipe.forkserver", "--run-dir", str(rd.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=rd.info().get("workdir") or None,
                env=_child_env(),
            )
    else:
        assert warm.stdin is not None
        warm.stdin.write(f"{rd.path}\n".encode())
        warm.stdin.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), warm.stdout)
    line = await reader.readline()
    hello = json.loads(line) if line else {}
    if hello.get("fork"):
        note(
            f"warm start: prelude ran once in {hello.get('prelude_s')} s; steps are forked from it"
        )
        return _ForkLauncher(warm, reader)
    reason = hello.get("reason") or "the warm process exited (see logs/_prelude.log)"
    note(f"fresh process per step: cannot fork safely: {reason}")
    if warm.poll() is None:
        warm.kill()
    await loop.run_in_executor(None, warm.wait)
    return _FreshProcessLauncher(rd)
