"""``python -m cellpipe.backends.docker.watchdog RUN_DIR``: the run's containers end with
its driver.

Containers are not the driver's children: when the driver is killed outright nothing stops
them, and a step container left running later writes ``succeeded`` into a run the server
reports ``failed``. The Docker backend starts this small process next to each run, in its
own session, holding the read end of a pipe whose write end only the driver has. When the
driver ends, the pipe ends: a driver that finished says ``done`` first and nothing happens;
otherwise every container labelled with the run's id is removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DONE = b"done\n"  # what the backend sends when the run ended as it should


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    received = b""
    while chunk := os.read(0, 64):
        received += chunk
    if received.endswith(DONE):
        return 0
    from cellpipe.backends.docker.backend import remove_run_containers
    from cellpipe.rundir.runs import RunDir

    remove_run_containers(RunDir(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
