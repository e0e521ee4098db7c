"""Engine-side hardening: what a crash, a hostile run directory or a killed driver leave
behind never breaks the next run (issue 17)."""

from __future__ import annotations

from pathlib import Path

from cellpipe.core.atomic import append_line


def test_an_append_after_a_torn_last_line_starts_on_a_fresh_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"ts": 1, "run": "r", "state": "queued"}\n{"ts": 2, "run": "r", "sta')
    append_line(events, '{"ts": 3, "run": "r", "state": "running"}')
    lines = events.read_text().splitlines()
    assert lines[-1] == '{"ts": 3, "run": "r", "state": "running"}'  # whole, not glued on
    assert lines[1] == '{"ts": 2, "run": "r", "sta'  # the torn record stays torn, alone


def test_a_resumes_queued_event_survives_a_torn_line(tmp_path: Path) -> None:
    import cellpipe
    from cellpipe.core.model import State
    from cellpipe.rundir.runs import RunDir
    from nbbuild import notebook, write

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
