"""Engine-side hardening: what a crash, a hostile run directory or a killed driver leave
behind never breaks the next run (issue 17)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import cellpipe
import pytest
from cellpipe.core.atomic import append_line
from nbbuild import notebook, write


def test_an_append_after_a_torn_last_line_starts_on_a_fresh_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"ts": 1, "run": "r", "state": "queued"}\n{"ts": 2, "run": "r", "sta')
    append_line(events, '{"ts": 3, "run": "r", "state": "running"}')
    lines = events.read_text().splitlines()
    assert lines[-1] == '{"ts": 3, "run": "r", "state": "running"}'  # whole, not glued on
    assert lines[1] == '{"ts": 2, "run": "r", "sta'  # the torn record stays torn, alone


def test_a_resumes_queued_event_survives_a_torn_line(tmp_path: Path) -> None:
    from cellpipe.core.model import State
    from cellpipe.rundir.runs import RunDir

    nb = write(tmp_path / "t.ipynb", notebook(("step:a", "a = 1")))
    run = cellpipe.run(nb, runs_root=tmp_path / "runs")
    rd = RunDir(tmp_path / "runs" / run.run_id)
    with open(rd.path / "events.jsonl", "a") as f:
        f.write('{"ts": 9, "run": "x", "state": "runn')  # the crash, mid-write
    rd.emit(State.PENDING, message="resume queued", resume=True)
    last = rd.events()[-1]
    assert (last.state, last.message, last.extra) == (
        State.PENDING,
        "resume queued",
        {"resume": True},
    )


class _Touch:
    """Unpickling this creates ``marker``: a stand-in for any code an attacker runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_a_cache_entry_pointing_outside_the_runs_root_is_ignored(tmp_path: Path) -> None:
    nb = write(tmp_path / "c.ipynb", notebook(("step:a", "a = [1, 2]"), ("step:b", "print(a)")))
    runs = tmp_path / "runs"
    first = cellpipe.run(nb, runs_root=runs)
    # Someone who can write the runs root plants a run-like folder elsewhere, with a
    # pickle that runs code, and points the cache entry of step a at it.
    evil = tmp_path / "elsewhere" / first.run_id
    shutil.copytree(runs / first.run_id / "data" / "a", evil / "data" / "a")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(str(marker)))
    (evil / "data" / "a" / "a.pkl").write_bytes(payload)
    manifest = json.loads((evil / "data" / "a" / "manifest.json").read_text())
    manifest["a"].update(bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    (evil / "data" / "a" / "manifest.json").write_text(json.dumps(manifest))
    key = (runs / first.run_id / "data" / "a" / "cache_key").read_text().strip()
    (runs / ".cache" / f"{key}.json").write_text(json.dumps({"run_dir": str(evil), "step": "a"}))

    second = cellpipe.run(nb, runs_root=runs)

    assert not marker.exists()
    assert second.state.value == "succeeded"
    assert second.steps["a"].state.value == "succeeded"  # ran again, not "cached" from there


def test_a_cache_entry_with_a_step_name_that_climbs_out_is_ignored(tmp_path: Path) -> None:
    from cellpipe.execution.cache import CacheIndex

    runs = tmp_path / "runs"
    (runs / "20990101-000000-abcdef" / "data").mkdir(parents=True)
    (tmp_path / "x" / "manifest.json").parent.mkdir()
    (tmp_path / "x" / "manifest.json").write_text("{}")
    index = CacheIndex(runs)
    index.root.mkdir()
    entry = {"run_dir": str(runs / "20990101-000000-abcdef"), "step": "../../../x"}
    (index.root / "k.json").write_text(json.dumps(entry))
    assert index.lookup("k") is None
    (index.root / "l.json").write_text("[]")  # not even a mapping
    assert index.lookup("l") is None


# -- no step outlives its driver --------------------------------------------------------------


def _pids_of(pattern: str) -> set[int]:
    """Live (not zombie) processes whose command line contains ``pattern``."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if pattern in cmdline and state != "Z":
            found.add(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked-steps", "fresh-processes"])
def test_killing_the_driver_outright_ends_its_steps_and_what_they_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: str
) -> None:
    from cellpipe.driving.driver import prepare_run, start_detached

    monkeypatch.setenv("CELLPIPE_FORK", fork)
    marker = f"cellpipe-orphan-probe-{tmp_path.name}"
    nb = write(
        tmp_path / "long.ipynb",
        notebook(
            ("imports", "import subprocess, time"),
            (
                "step:hold",
                f"child = subprocess.Popen(['sleep', '120', '{marker}'][:2])\n"
                f"open('pids', 'w').write(f'{{child.pid}}')\n"
                "time.sleep(120)",
            ),
            ("step:after", "print('after')"),
        ),
    )
    rd = prepare_run(tmp_path / "runs", nb)
    driver = start_detached(rd)
    try:
        assert _wait(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text())
        grandchild = int((tmp_path / "pids").read_text())
        step_pid = next(
            e.extra["pid"] for e in rd.events() if e.step == "hold" and e.state.value == "running"
        )
        warm = _pids_of(str(rd.path)) - {driver.pid}
        driver.kill()  # kill -9: no chance to clean up
        driver.wait()
        assert _wait(lambda: not _alive(step_pid), timeout=10), "the step outlived its driver"
        assert _wait(lambda: not _alive(grandchild), timeout=10), "what the step started lives"
        assert _wait(lambda: not any(_alive(p) for p in warm), timeout=10)
        time.sleep(0.3)
        states = [(e.step, e.state.value) for e in rd.events()]
        assert ("hold", "succeeded") not in states
        assert rd.status().state.value == "failed"
    finally:
        with contextlib.suppress(Exception):
            os.kill(int((tmp_path / "pids").read_text()), signal.SIGKILL)
        for pid in _pids_of(str(rd.path)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _failed_run(tmp_path: Path) -> Any:
    from cellpipe.rundir.runs import RunDir

    nb = write(tmp_path / "f.ipynb", notebook(("step:a", "raise ValueError('no')")))
    run = cellpipe.run(nb, runs_root=tmp_path / "runs")
    return RunDir(tmp_path / "runs" / run.run_id)


def test_resume_stops_a_step_still_running_from_the_previous_attempt(tmp_path: Path) -> None:
    from cellpipe.core.model import State
    from cellpipe.driving.driver import prepare_resume
    from cellpipe.execution.orphans import process_start

    rd = _failed_run(tmp_path)
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # What a step whose driver was killed leaves: its running event, and it, alive.
        rd.emit(State.RUNNING, "a", attempt=2, pid=leftover.pid, start=process_start(leftover.pid))
        prepare_resume(tmp_path / "runs", rd.run_id)
        assert leftover.wait(timeout=5) == -signal.SIGKILL
    finally:
        leftover.kill()
        leftover.wait()


def test_resume_leaves_alone_a_process_that_only_reuses_a_recorded_pid(tmp_path: Path) -> None:
    from cellpipe.core.model import State
    from cellpipe.driving.driver import prepare_resume
    from cellpipe.execution.orphans import process_start

    rd = _failed_run(tmp_path)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = process_start(other.pid)
        assert start is not None
        rd.emit(State.RUNNING, "a", attempt=2, pid=other.pid, start=start - 100)
        prepare_resume(tmp_path / "runs", rd.run_id)
        time.sleep(0.2)
        assert other.poll() is None  # another process that got the pid: not ours to kill
    finally:
        other.kill()
        other.wait()


# -- run ids ----------------------------------------------------------------------------------


def _pipeline(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    from cellpipe.compiling.compiler import compile_notebook

    nb = write(tmp_path / "i.ipynb", notebook(("step:a", "a = 1")))
    return compile_notebook(nb), json.loads(nb.read_text())


def test_a_generated_run_id_that_is_taken_is_drawn_again_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellpipe.rundir import runs

    pipeline, nb = _pipeline(tmp_path)
    first = runs.RunDir.create(tmp_path / "runs", pipeline, nb, parameters={"who": "first"})
    drawn = iter([first.run_id, first.run_id, "20990101-000000-abcdef"])
    monkeypatch.setattr(runs, "new_run_id", lambda: next(drawn))
    second = runs.RunDir.create(tmp_path / "runs", pipeline, nb, parameters={"who": "second"})
    assert second.run_id == "20990101-000000-abcdef"
    assert first.info()["parameters"] == {"who": "first"}
    assert json.loads((first.path / "run.json").read_text())["parameters"] == {"who": "first"}


def test_creating_a_run_under_an_id_that_exists_is_refused(tmp_path: Path) -> None:
    from cellpipe.core.errors import Conflict
    from cellpipe.rundir.runs import RunDir

    pipeline, nb = _pipeline(tmp_path)
    first = RunDir.create(tmp_path / "runs", pipeline, nb)
    with pytest.raises(Conflict, match=f"run {first.run_id} already exists"):
        RunDir.create(tmp_path / "runs", pipeline, nb, run_id=first.run_id)
