"""A warm process that runs the prelude once and forks one child per step.

``python -m cellpipe.execution.forkserver --run-dir DIR`` is started by the local backend. It runs the
imports, functions and parameters cells, then answers commands on stdin, one JSON object a
line, and reports on stdout:

    -> {"ready": true, "fork": true|false, "reason": "...", "prelude_s": 0.8}
    <- {"run": "train", "attempt": 1, "limits": {...}}
    -> {"started": "train", "pid": 1234}
    -> {"exited": "train", "pid": 1234, "code": 0}      code < 0: killed by signal -code

A step then costs a fork (milliseconds) instead of an interpreter start and the prelude's
imports. Forking is refused when the prelude left threads running (a forked child would
inherit locks held by threads that do not exist in it); the backend then starts a fresh
process per step and says so in the log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cellpipe.execution.limits import apply_limits
from cellpipe.execution.orphans import (
    PARENT_ENV,
    cancel_die_with_parent,
    die_with_parent,
    die_with_parent_group,
)
from cellpipe.rundir.runs import RunDir


def _send(msg: dict[str, Any]) -> None:
    with contextlib.suppress(BrokenPipeError):  # the driver is gone: no one to tell
        os.write(_out_fd, (json.dumps(msg) + "\n").encode())


_out_fd = 1


def serve(run_dir: Path | None) -> int:
    """Serve one run. Without ``run_dir`` (started ahead of time, while the run is being
    compiled) import the engine and IPython first, then read the run directory from stdin."""
    global _out_fd
    # Until it watches its command pipe, the kernel ends it with its driver (orphans.py).
    parent = os.getppid()
    asked = os.environ.pop(PARENT_ENV, "").isdigit()
    if asked:
        die_with_parent(parent)
    # Our protocol owns the original stdout; anything else printing goes to stderr (the log).
    _out_fd = os.dup(1)
    os.dup2(2, 1)
    from cellpipe.execution.runner import run_step, warm_up

    shell = None
    if run_dir is None:
        # The slow part (importing IPython, building its shell) happens before we wait.
        from cellpipe.execution.shell import StepShell

        shell = StepShell()
        line = _read_line(sys.stdin.fileno())
        if not line.strip():
            return 0  # the run never needed us (compile error, all steps cached)
        run_dir = Path(line.decode().strip())
    rd = RunDir(run_dir)
    log_path = rd.prelude_log_path()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    os.close(fd)
    t0 = time.perf_counter()
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        warm = warm_up(rd, log, shell)
    if warm.failure is None:
        # Later steps get new log files; the warm shell must not keep writing here.
        warm.shell.step_log = None
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    fork_ok = not threads
    reason = "" if fork_ok else f"the prelude started threads ({', '.join(threads[:3])})"
    _send(
        {
            "ready": True,
            "fork": fork_ok,
            "reason": reason,
            "prelude_s": round(time.perf_counter() - t0, 4),
        }
    )
    if not fork_ok:
        return 0
    # Python's `random` reseeds itself in every forked child (os.register_at_fork), which
    # would lose a seed the prelude set; keep the state to give each child back.
    from cellpipe.execution.hidden_state import capture

    random_state = capture("@random") if _prelude_seeds_random(rd) else None

    # Ctrl-C in a terminal signals the whole foreground group, this process included. The
    # command that started us cancels the run and closes our stdin; were we to die here, it
    # would learn of each running step's end only by polling for the orphan. Not before the
    # prelude ran: ignored signals stay ignored in programs the prelude starts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    # Commands are read from the raw descriptor; nothing may sit in sys.stdin's buffer.
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "cmd")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    # From here the end of the command pipe tells of the driver's death, and we must live
    # on to end the steps (the kernel would kill just us, not what the steps started).
    if asked:
        cancel_die_with_parent()
        if os.getppid() != parent:
            return 0  # the driver died in between; no step was started
    me = os.getpid()
    children: dict[int, str] = {}
    buf = b""
    stdin_open = True
    orphaned = False
    while stdin_open or children:
        if not stdin_open and not orphaned and os.getppid() != parent:
            # The pipe ended because the driver died (a dying process closes its files
            # before it is replaced as our parent, hence the check on every turn): end
            # its steps, and all they started (each leads its own process group).
            orphaned = True
            for pid in children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        for key, _ in sel.select(timeout=1.0 if stdin_open else 0.05):
            if key.data == "cmd":
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:
                    stdin_open = False
                    sel.unregister(sys.stdin.fileno())
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cmd = json.loads(line)
                    pid = os.fork()
                    if pid == 0:  # the step
                        _child(rd, cmd, warm, random_state, run_step, me)
                    children[pid] = cmd["run"]
                    _send({"started": cmd["run"], "pid": pid})
            else:
                os.read(wake_r, 4096)
        _reap(children)
    return 0


def _read_line(fd: int) -> bytes:
    """One line, byte by byte: later commands are read from the same descriptor, so nothing
    may be read ahead into a buffer."""
    out = bytearray()
    while (ch := os.read(fd, 1)) and ch != b"\n":
        out += ch
    return bytes(out)


def _reap(children: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        step = children.pop(pid, None)
        if step is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        _send({"exited": step, "pid": pid, "code": code})


def _child(
    rd: RunDir, cmd: dict[str, Any], warm: Any, random_state: Any, run_step: Any, server: int
) -> None:
    code = 1
    try:
        os.setsid()  # its own process group: cancel and timeouts end everything it started
        die_with_parent_group(server)  # should the warm process itself be killed
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        fd = os.open(rd.log_path(cmd["run"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(_out_fd)
        os.close(0)
        apply_limits(cmd.get("limits") or {}, cmd.get("cpus"))
        if random_state is None:
            _reseed()  # fresh processes would start from fresh seeds
        else:
            from cellpipe.execution.hidden_state import restore

            restore("@random", random_state)  # as a fresh process after the prelude would
        code = run_step(rd, cmd["run"], attempt=cmd.get("attempt", 1), warm=warm)
    except BaseException as exc:  # the child must never return into the server's loop
        with contextlib.suppress(OSError):
            os.write(2, f"cellpipe: step process crashed: {exc!r}\n".encode())
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reseed() -> None:
    """Forked children share the warm process's random state; a fresh process would not."""
    import random

    random.seed()
    # Only a generator the prelude already imported has shared state. numpy >= 2 imports
    # numpy.random on first use, and a step that first uses it seeds it freshly itself;
    # touching `np.random` here would import it in every step (about 12 ms each).
    nprandom = sys.modules.get("numpy.random")
    if nprandom is not None:
        nprandom.seed()


def _prelude_seeds_random(rd: RunDir) -> bool:
    from cellpipe.compiling.analysis import analyse_cell

    for cell in rd.pipeline().prelude:
        try:
            if "@random" in analyse_cell(cell.source).mutates:
                return True
        except Exception:
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellpipe.execution.forkserver")
    parser.add_argument("--run-dir", type=Path, help="the run; default: read it from stdin")
    args = parser.parse_args(argv)
    return serve(args.run_dir.resolve() if args.run_dir else None)


if __name__ == "__main__":
    sys.exit(main())
