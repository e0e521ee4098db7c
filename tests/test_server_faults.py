"""What a broken run folder or a broken index does to the server: nothing to the others.
Against a real jupyter_server with the extension (pytest-jupyter), plus the index alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import cellpipe
import pytest
from nbbuild import notebook, write
from test_server import call

GARBAGE = b"this is not a database" * 200


def _runs(root: Path, runs: Path, n: int = 2) -> list[str]:
    write(root / "p.ipynb", notebook(("parameters", "k = 1"), ("step:a", "a = k * 10")))
    return [
        cellpipe.run(root / "p.ipynb", parameters={"k": k}, runs_root=runs).run_id for k in range(n)
    ]


def test_a_garbage_index_is_moved_aside_and_rebuilt_from_the_run_folders(tmp_path: Path) -> None:
    from cellpipe_server.history import History

    root, runs = tmp_path / "root", tmp_path / "runs"
    root.mkdir()
    ids = _runs(root, runs)
    db = runs / ".history.sqlite"
    db.write_bytes(GARBAGE)
    history = History(db, runs, root)
    history.sync()
    rows, total = history.list(None, 0, 10)
    history.close()
    assert total == 2 and sorted(r["run_id"] for r in rows) == sorted(ids)
    (aside,) = runs.glob(".history.sqlite.corrupt-*")
    assert aside.read_bytes() == GARBAGE  # kept for a post-mortem, not deleted


def test_an_index_whose_pages_are_corrupt_is_rebuilt(tmp_path: Path) -> None:
    from cellpipe_server.history import History

    root, runs = tmp_path / "root", tmp_path / "runs"
    root.mkdir()
    ids = _runs(root, runs)
    db = runs / ".history.sqlite"
    history = History(db, runs, root)
    history.sync()
    history.close()
    data = bytearray(db.read_bytes())
    data[100:400] = b"\xff" * 300  # the schema's b-tree page, after the file header
    db.write_bytes(bytes(data))
    history = History(db, runs, root)
    history.sync()
    rows, total = history.list(None, 0, 10)
    history.close()
    assert total == 2 and sorted(r["run_id"] for r in rows) == sorted(ids)


def test_an_index_corrupted_while_in_use_is_rebuilt_at_the_next_request(tmp_path: Path) -> None:
    from cellpipe_server.history import History

    root, runs = tmp_path / "root", tmp_path / "runs"
    root.mkdir()
    ids = _runs(root, runs)
    db = runs / ".history.sqlite"
    history = History(db, runs, root)
    history.sync()
    db.write_bytes(GARBAGE)  # under the open connection
    rows, total = history.list(None, 0, 10)
    history.close()
    assert total == 2 and sorted(r["run_id"] for r in rows) == sorted(ids)
    assert list(runs.glob(".history.sqlite.corrupt-*"))


def test_stopping_an_extension_that_never_finished_loading_does_not_raise() -> None:
    from cellpipe_server.app import CellpipeApp

    asyncio.run(CellpipeApp().stop_extension())  # no `manager`: it failed to initialize


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict:
    from cellpipe.driving.driver import prepare_run

    runs = tmp_path / "cellpipe-runs"
    runs.mkdir(parents=True, exist_ok=True)
    # Found so when the server starts: a garbage index, and a run whose events.jsonl
    # holds a record that is not an event (the extension did not load at all).
    (runs / ".history.sqlite").write_bytes(GARBAGE)
    nb = write(tmp_path / "old.ipynb", notebook(("step:a", "a = 1")))
    broken = prepare_run(runs, nb)
    with open(broken.path / "events.jsonl", "a") as f:
        f.write("[]\n")
    (tmp_path / "broken-run-id").write_text(broken.run_id)
    return {
        "ServerApp": {"jpserver_extensions": {"cellpipe_server": True}},
        "CellpipeApp": {"runs_root": str(runs), "poll_interval": 0.05},
    }


async def test_the_extension_loads_despite_a_garbage_index_and_a_broken_run(
    jp_fetch, jp_root_dir, tmp_path: Path
) -> None:
    listed = await call(jp_fetch, "GET", "runs")
    broken = (tmp_path / "broken-run-id").read_text()
    assert [(r["run_id"], r["state"]) for r in listed["runs"]] == [(broken, "failed")]
    assert listed["runs"][0]["message"] == (
        "this run's folder is broken: events.jsonl line 1: a record must be a JSON object, "
        "not a list"
    )
    assert list((tmp_path / "cellpipe-runs").glob(".history.sqlite.corrupt-*"))
    assert sqlite3.connect(tmp_path / "cellpipe-runs" / ".history.sqlite").execute(
        "PRAGMA integrity_check"
    ).fetchone() == ("ok",)


def test_a_row_of_an_unfinished_run_is_re_derived_though_its_files_did_not_change(
    tmp_path: Path,
) -> None:
    import subprocess

    from cellpipe.core.model import State
    from cellpipe.driving.driver import prepare_run
    from cellpipe_server.history import History

    root, runs = tmp_path / "root", tmp_path / "runs"
    root.mkdir()
    write(root / "p.ipynb", notebook(("step:a", "a = 1")))
    rd = prepare_run(runs, root / "p.ipynb")
    driver = subprocess.Popen(["sleep", "60"])  # stands for the run's driver
    try:
        rd.write_driver(driver.pid)
        rd.emit(State.RUNNING, message="")
        history = History(runs / ".history.sqlite", runs, root)
        history.sync()
        assert history.list(None, 0, 10)[0][0]["state"] == "running"
        driver.kill()  # the driver dies while nobody watches; no file changes
        driver.wait()
        history.sync()
        (row,) = history.list(None, 0, 10)[0]
        history.close()
        assert row["state"] == rd.status().state.value == "failed"
    finally:
        driver.kill()
        driver.wait()


# -- broken run folders, through the REST API ------------------------------------------------


async def _finished(jp_fetch, root: Path, **params) -> str:  # type: ignore[no-untyped-def]
    from test_server import wait_for

    write(root / "q.ipynb", notebook(("parameters", "k = 1"), ("step:a", "a = k * 10")))
    run = await call(jp_fetch, "POST", "runs", body={"path": "q.ipynb", "parameters": params})
    await wait_for(jp_fetch, run["run_id"])
    return run["run_id"]


@pytest.mark.parametrize(
    "record", ["[]", "3", '"text"', '{"ts": "x", "run": 1, "state": "running"}', '{"ts": 1}']
)
async def test_a_malformed_event_record_shows_that_run_as_broken_and_hides_no_other(
    jp_fetch, jp_root_dir, tmp_path: Path, record: str
) -> None:
    good = await _finished(jp_fetch, jp_root_dir, k=1)
    broken = await _finished(jp_fetch, jp_root_dir, k=2)
    events = tmp_path / "cellpipe-runs" / broken / "events.jsonl"
    with open(events, "a") as f:
        f.write(record + "\n")
    run = await call(jp_fetch, "GET", "runs", broken)
    assert run["state"] == "failed"
    assert "events.jsonl" in run["message"] and "line" in run["message"]
    listed = {r["run_id"]: r for r in (await call(jp_fetch, "GET", "runs"))["runs"]}
    assert listed[good]["state"] == "succeeded"
    assert listed[broken]["state"] == "failed" and "events.jsonl" in listed[broken]["message"]


async def test_a_deleted_run_folder_does_not_stall_the_queue(
    jp_fetch, jp_root_dir, tmp_path: Path
) -> None:
    import shutil

    from test_server import wait_for

    write(
        jp_root_dir / "slow.ipynb",
        notebook(("imports", "import time"), ("step:a", "time.sleep(30)\na = 1")),
    )
    write(jp_root_dir / "q.ipynb", notebook(("parameters", "k = 1"), ("step:a", "a = k")))
    slow = (await call(jp_fetch, "POST", "runs", body={"path": "slow.ipynb"}))["run_id"]
    await wait_for(jp_fetch, slow, states=("running",))
    shutil.rmtree(tmp_path / "cellpipe-runs" / slow)
    ids = [
        (await call(jp_fetch, "POST", "runs", body={"path": "q.ipynb", "parameters": {"k": k}}))[
            "run_id"
        ]
        for k in range(6)  # more than the 4 slots: some wait in the queue
    ]
    for run_id in ids:
        assert (await wait_for(jp_fetch, run_id, timeout=90))["state"] == "succeeded"
