"""The local backend's warm process, started before anything else is done.

The warm process (:mod:`cellpipe.execution.forkserver`) imports IPython, the slowest part of starting a
run (0.2 to 0.3 s), then waits on stdin for the run directory. ``cellpipe run`` starts it as
its very first act, before the command-line interface and the engine are imported, so that
those imports and compiling the notebook overlap with it; the local backend adopts it
(:func:`take_warm_process`). The command forks it from itself rather than starting a new
interpreter: at that moment the command is a bare interpreter with no threads, and the fork
skips an interpreter start and the ``cellpipe`` import (about 70 ms). A process nobody adopts
reads end-of-file on stdin when the command exits, and exits too.

This module imports only the standard library modules an interpreter starts with, plus
``subprocess``: it runs before the rest of cellpipe is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

_ahead: ForkedWarmProcess | None = None

# Where this cellpipe lives: step processes must import this very copy.
_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fork_allowed() -> tuple[bool, str]:
    """Whether steps may be forked from a warm process here, and if not, why."""
    if os.environ.get("CELLPIPE_FORK", "1") == "0":
        return False, "CELLPIPE_FORK=0"
    if not hasattr(os, "fork") or sys.platform == "darwin":
        # macOS system libraries are not fork-safe once initialised; Windows has no fork.
        return False, f"forking is not safe on {sys.platform}"
    return True, ""


def child_env(**extra: str) -> dict[str, str]:
    """The environment for step processes: they must import this very cellpipe, also when
    it was found through a relative PYTHONPATH and steps run in the notebook's directory."""
    paths = [_HERE, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), **extra)


#: The warm process, importing modules first. Their output goes to stderr: stdout carries
#: the protocol. A module that fails to import is left for the prelude to report.
_PRELOAD = """\
import importlib, os, sys
out = os.dup(1)
os.dup2(2, 1)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
os.dup2(out, 1)
os.close(out)
from cellpipe.execution.forkserver import main
sys.exit(main([]))
"""


def spawn_warm_process(preload: Sequence[str] = ()) -> subprocess.Popen[bytes] | None:
    """Start a warm process that waits for a run directory on stdin; None where steps
    cannot be forked. ``preload``: modules it imports while it waits."""
    if not fork_allowed()[0]:
        return None
    from cellpipe.execution.orphans import parent_env

    command = [sys.executable, "-m", "cellpipe.execution.forkserver"]
    if preload:
        command = [sys.executable, "-c", _PRELOAD, *preload]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env(**parent_env()),
    )


def runs_locally(argv: Sequence[str]) -> bool:
    """Whether the command line ``argv`` (without the program name) is a ``cellpipe run`` on
    the local backend. A guess that must be cheap, not exact: a wrong yes costs one idle
    process, a wrong no the head start."""
    args = list(argv)
    while args and args[0].startswith("-"):  # options of the command group (--debug)
        args.pop(0)
    if not args or args[0] != "run":
        return False
    rest = args[1:]
    if "-h" in rest or "--help" in rest:
        return False
    for i, arg in enumerate(rest):
        if arg == "--backend":
            return rest[i + 1 : i + 2] == ["local"]
        if arg.startswith("--backend="):
            return arg == "--backend=local"
    return True


class ForkedWarmProcess:
    """A warm process forked from this one, with the parts of ``subprocess.Popen`` the local
    backend uses: ``stdin`` and ``stdout`` pipes, ``poll``, ``wait`` and ``kill``."""

    def __init__(self) -> None:
        cmd_r, cmd_w = os.pipe()  # commands: us -> it (its stdin)
        out_r, out_w = os.pipe()  # replies: it -> us (its stdout)
        from cellpipe.execution.orphans import parent_env  # not at import: see the top

        env = child_env(**parent_env())
        pid = os.fork()
        if pid == 0:  # the warm process; it never returns from here
            code = 1
            try:
                os.close(cmd_w)  # else it would never see end-of-file when we exit
                os.close(out_r)
                os.dup2(cmd_r, 0)
                os.dup2(out_w, 1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)  # as spawn_warm_process: its own log comes later
                for fd in (cmd_r, out_w, devnull):
                    os.close(fd)
                # As Popen's close_fds: descriptors our caller let us inherit are not its.
                os.closerange(3, _max_fd())
                os.environ.update(env)  # what a spawned one would have, for its children
                from cellpipe.execution.forkserver import main

                code = main([])
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(out_w)
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = os.fdopen(cmd_w, "wb")
        self.stdout = os.fdopen(out_r, "rb")

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: gone all the same
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:
            import time

            deadline = time.monotonic() + timeout
            while self.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(f"warm process {self.pid}", timeout)
                time.sleep(0.01)
        elif self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self.returncode = -1
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            import signal

            os.kill(self.pid, signal.SIGKILL)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


WarmProcess = subprocess.Popen[bytes] | ForkedWarmProcess


def start_ahead(argv: Sequence[str]) -> None:
    """Start the warm process now if ``argv`` is a local ``cellpipe run``. Call it only
    while this process has no threads (forking copies just the calling thread)."""
    global _ahead
    if _ahead is None and runs_locally(argv) and fork_allowed()[0]:
        try:
            _ahead = ForkedWarmProcess()
        except OSError:
            _ahead = None  # the backend starts one later and reports what goes wrong


def take_warm_process() -> WarmProcess | None:
    """The process :func:`start_ahead` started, if it is still alive; each is taken once."""
    global _ahead
    warm, _ahead = _ahead, None
    if warm is not None and warm.poll() is not None:
        return None
    return warm
