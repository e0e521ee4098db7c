"""The local backend's warm process, started before anything else is done.

The warm process (:mod:`cellpipe.forkserver`) imports IPython, the slowest part of starting a
run (0.2 to 0.3 s), then waits on stdin for the run directory. ``cellpipe run`` starts it as
its very first act, before the command-line interface and the engine are imported, so that
those imports and compiling the notebook overlap with it; the local backend adopts it
(:func:`take_warm_process`). A process nobody adopts reads end-of-file on stdin when the
command exits, and exits too.

This module imports only the standard library modules an interpreter starts with, plus
``subprocess``: it runs before the rest of cellpipe is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

_ahead: subprocess.Popen[bytes] | None = None

# Where this cellpipe lives: step processes must import this very copy.
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
from cellpipe.forkserver import main
sys.exit(main([]))
"""


def spawn_warm_process(preload: Sequence[str] = ()) -> subprocess.Popen[bytes] | None:
    """Start a warm process that waits for a run directory on stdin; None where steps
    cannot be forked. ``preload``: modules it imports while it waits."""
    if not fork_allowed()[0]:
        return None
    command = [sys.executable, "-m", "cellpipe.forkserver"]
    if preload:
        command = [sys.executable, "-c", _PRELOAD, *preload]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env(),
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


def start_ahead(argv: Sequence[str]) -> None:
    """Start the warm process now if ``argv`` is a local ``cellpipe run``."""
    global _ahead
    if _ahead is None and runs_locally(argv):
        try:
            _ahead = spawn_warm_process()
        except OSError:
            _ahead = None  # the backend starts one later and reports what goes wrong


def take_warm_process() -> subprocess.Popen[bytes] | None:
    """The process :func:`start_ahead` started, if it is still alive; each is taken once."""
    global _ahead
    warm, _ahead = _ahead, None
    if warm is not None and warm.poll() is not None:
        return None
    return warm
