"""`cellpipe run` starts the local backend's warm process before anything else."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cellpipe.execution import warm_ahead


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "nb.ipynb"],
        ["--debug", "run", "nb.ipynb", "-p", "n=3"],
        ["run", "nb.ipynb", "--backend", "local"],
        ["run", "--backend=local", "nb.ipynb"],
        ["run", "--resume", "20261201-120000-abcdef"],
    ],
)
def test_a_local_run_starts_the_warm_process_first(argv: list[str]) -> None:
    assert warm_ahead.runs_locally(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["compile", "nb.ipynb"],
        ["runs"],
        ["run", "--help"],
        ["run", "nb.ipynb", "-h"],
        ["run", "nb.ipynb", "--backend", "docker"],
        ["run", "nb.ipynb", "--backend=argo"],
        ["run", "nb.ipynb", "--backend"],
    ],
)
def test_other_commands_start_nothing(argv: list[str]) -> None:
    assert not warm_ahead.runs_locally(argv)


def test_a_warm_process_nobody_adopts_exits_when_the_command_does() -> None:
    # In a clean interpreter, as the command: forking this multi-threaded test process
    # would not be what `cellpipe run` does.
    command = (
        "from cellpipe.execution import warm_ahead\n"
        "warm_ahead.start_ahead(['run', 'missing.ipynb'])\n"
        "print(warm_ahead._ahead.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(out.stdout)
    deadline = time.monotonic() + 60
    while _alive(pid):
        assert time.monotonic() < deadline, f"warm process {pid} outlived its command"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running, not exited (an exited process whose parent is gone may stay a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_the_command_adopts_its_warm_process_once() -> None:
    command = (
        "from cellpipe.execution import warm_ahead\n"
        "warm_ahead.start_ahead(['run', 'nb.ipynb'])\n"
        "warm = warm_ahead.take_warm_process()\n"
        "assert warm_ahead.take_warm_process() is None\n"
        "warm.stdin.close()\n"
        "print(warm.wait(timeout=60), repr(warm.stdout.read()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, timeout=90, check=True
    )
    assert out.stdout.split() == ["0", "b''"]  # it exited cleanly and never said "ready"


def test_no_warm_process_where_steps_cannot_be_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLPIPE_FORK", "0")
    warm_ahead.start_ahead(["run", "nb.ipynb"])
    assert warm_ahead.take_warm_process() is None


def test_the_warm_process_keeps_no_descriptor_the_command_inherited() -> None:
    # A caller waiting for end-of-file on a pipe it gave the command must not wait for the
    # warm process too (as with Popen's close_fds).
    command = (
        "import time\n"
        "from cellpipe.execution import warm_ahead\n"
        "warm_ahead.start_ahead(['run', 'nb.ipynb'])\n"
        "print(warm_ahead._ahead.pid, flush=True)\n"
        "time.sleep(3)\n"  # the warm process waits for a run meanwhile
    )
    read_end, write_end = os.pipe()
    inherited = f"pipe:[{os.fstat(write_end).st_ino}]"
    proc = subprocess.Popen(
        [sys.executable, "-c", command], stdout=subprocess.PIPE, text=True, pass_fds=(write_end,)
    )
    os.close(write_end)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        time.sleep(0.5)
        held = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                held.append(os.readlink(fd))
        assert held and inherited not in held
    finally:
        proc.communicate(timeout=30)
        os.close(read_end)
