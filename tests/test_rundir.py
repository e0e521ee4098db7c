"""The run directory's status, as everyone reads it: typed, derived in one place.

A run's state is written as events by whoever drives it; the one state nobody can write (its
driver died) is derived by cellpipe.rundir.status, and the server only translates it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from cellpipe.core.model import State
from cellpipe.driving.driver import prepare_resume, prepare_run
from cellpipe.rundir.runs import Driver, RunDir
from cellpipe_server.manager import RunManager
from nbbuild import notebook, write


def _prepared(tmp_path: Path) -> RunDir:
    nb = write(tmp_path / "n.ipynb", notebook(("step:first", "x = 1"), ("step:second", "y = x")))
    return prepare_run(tmp_path / "runs", nb)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lose_the_driver(rd: RunDir) -> None:
    """What a killed `cellpipe run` leaves: it started, a step runs, its process is gone."""
    rd.write_driver(_dead_pid())
    rd.emit(State.RUNNING)
    rd.emit(State.SUCCEEDED, "first", attempt=1)
    rd.emit(State.RUNNING, "second", attempt=1)


def test_a_prepared_run_has_no_driver_yet(tmp_path: Path) -> None:
    status = _prepared(tmp_path).status()
    assert status.state is State.PENDING
    assert status.driver is Driver.NONE
    assert not status.driver_lost


def test_a_run_whose_driver_died_is_failed_and_says_how_to_resume(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    _lose_the_driver(rd)
    written = len(rd.events())
    status = rd.status()
    assert status.driver_lost
    assert status.state is State.FAILED
    assert f"cellpipe run --resume {rd.run_id}" in status.message
    assert status.steps["second"].state is State.FAILED
    assert status.steps["second"].message == "interrupted: the run's process died"
    assert len(rd.events()) == written  # derived, never written


def test_a_run_that_ended_does_not_ask_after_its_driver(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    _lose_the_driver(rd)
    rd.emit(State.FAILED, message="step second failed")
    status = rd.status()
    assert status.driver is None and not status.driver_lost
    assert status.message == "step second failed"


def test_a_queued_resume_is_recorded_for_the_next_driver(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    _lose_the_driver(rd)
    prepare_resume(rd.runs_root, rd.run_id)
    status = rd.status()
    assert status.resume_requested
    assert status.driver is Driver.NONE
    assert status.state is State.PENDING


def test_cancelling_a_queued_run_settles_every_step_before_it_started(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    rd.settle_cancelled(before_start=True)
    status = rd.status()
    assert status.state is State.CANCELLED
    assert status.message == "cancelled before it started"
    assert {n: (s.state, s.message) for n, s in status.steps.items()} == {
        "first": (State.CANCELLED, "run cancelled before it started"),
        "second": (State.CANCELLED, "run cancelled before it started"),
    }


def test_cancelling_a_run_nobody_drives_keeps_what_had_ended(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    rd.emit(State.RUNNING)
    rd.emit(State.SUCCEEDED, "first", attempt=1)
    rd.emit(State.RUNNING, "second", attempt=2)
    rd.settle_cancelled()
    status = rd.status()
    assert (status.state, status.message) == (State.CANCELLED, "cancelled")
    assert status.steps["first"].state is State.SUCCEEDED
    last = rd.events()[-2]
    assert (last.step, last.state, last.attempt, last.message) == (
        "second",
        State.CANCELLED,
        2,
        "run cancelled",
    )


def test_the_server_announces_a_dead_driver_once(tmp_path: Path) -> None:
    rd = _prepared(tmp_path)
    sent: list[dict] = []
    manager = RunManager(tmp_path, rd.runs_root, emit=sent.append)

    async def follow() -> None:
        manager._watched[rd.run_id] = 0
        _lose_the_driver(rd)
        await manager._forward(rd.run_id)

    try:
        asyncio.run(follow())
    finally:
        asyncio.run(manager.stop())
    run_level = [e for e in sent if e["step"] is None]
    assert [e["state"] for e in run_level] == ["running", "failed"]
    assert f"cellpipe run --resume {rd.run_id}" in run_level[-1]["message"]
    assert rd.run_id not in manager._watched  # ended: the watcher says no more
