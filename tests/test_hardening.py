"""Engine-side hardening: what a crash, a hostile run directory or a killed driver leave
behind never breaks the next run (issue 17)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import cellpipe
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
