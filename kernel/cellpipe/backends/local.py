"""The local backend: the steps of a pipeline as processes on this machine, in parallel.

Scheduling (retries, timeouts, cache, cancel, resume) is :mod:`cellpipe.execution.scheduling`'s; this
module starts the steps. They are forked from a warm process that already ran the prelude
(see :mod:`cellpipe.execution.forkserver`); where that is unsafe, each step gets a fresh interpreter
instead. Each step leads its own process group, so a cancel or timeout stops all it started.
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
from collections.abc import Sequence

from cellpipe.backends import RunOptions
from cellpipe.core.model import State, Step
from cellpipe.execution.limits import cpu_count
from cellpipe.execution.orphans import kill_live_steps, parent_env
from cellpipe.execution.scheduling import Launcher, Note, Proc, Scheduler, cancel_run, run_sync
from cellpipe.execution.warm_ahead import (
    WarmProcess,
    child_env,
    fork_allowed,
    spawn_warm_process,
    take_warm_process,
)
from cellpipe.rundir.runs import RunDir


class LocalBackend:
    name = "local"

    def __init__(self, *, keep_unused_warm: bool = False) -> None:
        self._warm: WarmProcess | None = None
        # A long-lived caller (cellpipe serve) keeps a warm process no run needed for the next.
        self._keep_unused_warm = keep_unused_warm

    @property
    def warm_ready(self) -> bool:
        """Whether a warm process started by :meth:`prepare` waits for a run."""
        return self._warm is not None and self._warm.poll() is None

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self, preload: Sequence[str] = ()) -> None:
        """Called before compiling: start the warm process early, or adopt the one
        ``cellpipe run`` started first of all (see cellpipe.execution.warm_ahead).

        ``preload``: modules it imports while it waits (``cellpipe serve`` passes the
        prelude's, so a request does not pay for them)."""
        if self._warm is None and not preload:
            self._warm = take_warm_process()
        if self._warm is None:
            self._warm = spawn_warm_process(preload)

    def discard_warm(self) -> None:
        """Stop a warm process that :meth:`prepare` started and no run used."""
        warm, self._warm = self._warm, None
        if warm is not None:
            if warm.poll() is None:
                warm.kill()
            warm.wait()
            for pipe in (warm.stdin, warm.stdout):
                if pipe is not None:
                    pipe.close()

    def execute(self, rd: RunDir, options: RunOptions) -> State:
        return run_sync(self.async_execute(rd, options))

    async def async_execute(self, rd: RunDir, options: RunOptions) -> State:
        warm, self._warm = self._warm, None
        used = False

        async def start(rd: RunDir, note: Note) -> Launcher:
            nonlocal used
            used = True
            return await _start_launcher(rd, note, warm)

        try:
            return await Scheduler(rd, options, start).run()
        finally:
            if warm is not None and not used and self._keep_unused_warm:
                self._warm = warm  # every step was cached: it still waits, untouched
            elif warm is not None and warm.poll() is None:
                warm.kill()  # never used: every step was cached
                warm.wait()

    def cancel(self, rd: RunDir) -> None:
        """Ask the driving process to stop; if it is gone, kill the steps it left running."""
        cancel_run(rd, _kill_leftover_steps)


def _kill_leftover_steps(rd: RunDir) -> None:
    # Only processes whose pid *and* start time match a step's running event: a pid the
    # system has since given to another process is not ours to kill.
    kill_live_steps(rd)


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


# -- launchers -------------------------------------------------------------------------------


class _LocalLauncher(Launcher):
    """Turns a step's limits into what a process here gets: ``limit:cpu`` pins it to that
    many cores, taken in turn so that parallel steps do not share them."""

    def __init__(self) -> None:
        self._cores = itertools.cycle(_cores())

    async def launch(self, step: Step, attempt: int) -> Proc:
        limits = dict(step.settings.limits)
        n = cpu_count(limits)
        cpus = sorted({next(self._cores) for _ in range(n)}) if n else None
        return await self._start(step.name, attempt, limits, cpus)

    async def _start(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> Proc:
        raise NotImplementedError  # pragma: no cover - interface


class _FreshProcessLauncher(_LocalLauncher):
    """A new interpreter per step: ``python -m cellpipe.runner``."""

    def __init__(self, rd: RunDir):
        super().__init__()
        self.rd = rd

    async def _start(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> Proc:
        env = child_env(
            CELLPIPE_LIMITS=json.dumps({"limits": limits, "cpus": cpus}), **parent_env()
        )
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
        return Proc(proc.pid, fut)


class _ForkLauncher(_LocalLauncher):
    """Steps forked from a warm :mod:`cellpipe.execution.forkserver` process."""

    def __init__(self, proc: WarmProcess, stdout: asyncio.StreamReader):
        super().__init__()
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

    async def _start(
        self, step: str, attempt: int, limits: dict[str, str], cpus: list[int] | None
    ) -> Proc:
        assert self.proc.stdin is not None
        async with self.lock:  # the server answers commands in order
            cmd = {"run": step, "attempt": attempt, "limits": limits, "cpus": cpus}
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            pid = await self.started.get()
        return Proc(pid, self._exit_future(pid))

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


async def _start_launcher(rd: RunDir, note: Note, warm: WarmProcess | None = None) -> Launcher:
    ok, why = fork_allowed()
    if not ok:
        note(f"fresh process per step: {why}")
        return _FreshProcessLauncher(rd)
    if warm is None or warm.poll() is not None:
        with open(rd.prelude_log_path(), "ab") as err:
            warm = subprocess.Popen(
                [sys.executable, "-m", "cellpipe.execution.forkserver", "--run-dir", str(rd.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=rd.info().get("workdir") or None,
                env=child_env(**parent_env()),
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
