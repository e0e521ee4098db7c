"""No step outlives the process driving its run.

Steps run in their own sessions (so cancel and timeouts can end all they started), which
also means nothing ends them when the driver dies. Left alone, such an orphan later writes
``succeeded`` into a run the server already reports ``failed``, and a resume started
meanwhile runs the same step twice at once. So:

- a process started for a step asks the kernel to kill it when its parent dies
  (:func:`die_with_parent`, Linux's ``PR_SET_PDEATHSIG``);
- the warm process (forkserver) learns of its driver's death from the end of its command
  pipe and kills every step it forked, with what those started (their process groups);
- a step's ``running`` event records its pid and its start time, so that a live step can
  be told apart from a reused pid: :func:`live_steps` is what resume refuses on, and what
  cancel kills when the driver is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
#: Set in a child's environment by a parent that wants it to die with it: the parent's pid.
PARENT_ENV = "CELLPIPE_DIE_WITH"


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits; exit at once if
    the parent already has (it may have died before this call). False where unsupported.

    The kernel ties this to the parent *thread*: only ask it of children started from a
    thread that lives as long as the parent (see :func:`parent_env`)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc().prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # orphaned before we could ask: do as the signal would have
    return True


def cancel_die_with_parent() -> None:
    """Undo :func:`die_with_parent` (the forkserver, once it watches its pipe instead)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _libc().prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0)


def parent_env() -> dict[str, str]:
    """Environment for a child that should die with this process: set only when called in
    the main thread (a child's death signal fires when the thread that started it ends)."""
    if threading.current_thread() is threading.main_thread():
        return {PARENT_ENV: str(os.getpid())}
    return {}


def die_with_parent_group(expected_parent: int | None = None) -> bool:
    """:func:`die_with_parent` for a process that leads its own process group (a step):
    what it started dies with it. The kernel sends SIGHUP (a step has no terminal that
    could send one), and its handler kills the whole group, this process included."""

    def end_group(signum: int, frame: Any) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGHUP, end_group)
    return die_with_parent(expected_parent, signal.SIGHUP)


def die_with_parent_if_asked() -> None:
    """In a step process: :func:`die_with_parent_group` when the parent asked for it."""
    parent = os.environ.pop(PARENT_ENV, "")
    if parent.isdigit():
        die_with_parent_group(int(parent))


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if fields[0] in ("Z", "X"):
        return False  # ended; only its parent has not collected it yet
    return start is not None and int(fields[19]) == start


def live_steps(rd: Any) -> dict[str, int]:
    """Steps of ``rd`` (a local run) whose recorded process still runs: step -> pid.

    Only a step whose last event is its ``running`` one, with a pid and start time that
    still match a process on this machine, counts."""
    info = rd.info()
    if info.get("backend", "local") != "local":
        return {}  # pids recorded in containers or pods are not this machine's
    last: dict[str, Any] = {}
    for ev in rd.events():
        if ev.step:
            last[ev.step] = ev
    out = {}
    for step, ev in last.items():
        pid, start = ev.extra.get("pid"), ev.extra.get("start")
        if ev.state.value == "running" and isinstance(pid, int) and alive(pid, start):
            out[step] = pid
    return out


def kill_live_steps(rd: Any) -> dict[str, int]:
    """Kill what :func:`live_steps` finds, with the processes each started (its group)."""
    found = live_steps(rd)
    for pid in found.values():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return found
