"""The Python API: compile, run (also from inside an event loop), runs, load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cellpipe
import pytest
from nbbuild import notebook, write


def _nb(tmp_path: Path, value: int = 1) -> Path:
    return write(
        tmp_path / "api.ipynb",
        notebook(
            ("parameters", f"k = {value}"),
            ("step:a", "x = [k, k * 2]"),
            ("step:b", "print(sum(x))"),
        ),
    )


def test_compile_returns_the_pipeline(tmp_path: Path) -> None:
    p = cellpipe.compile(_nb(tmp_path))
    assert [s.name for s in p.steps] == ["a", "b"] and p.step("b").inputs == {"x": "a"}


def test_run_returns_the_status_of_a_finished_run(tmp_path: Path, runs_root: Path) -> None:
    status = cellpipe.run(_nb(tmp_path), parameters={"k": 5})
    assert status.state is cellpipe.State.SUCCEEDED
    assert {n: s.state.value for n, s in status.steps.items()} == {
        "a": "succeeded",
        "b": "succeeded",
    }


def test_run_works_inside_a_running_event_loop_as_in_a_notebook(
    tmp_path: Path, runs_root: Path
) -> None:
    async def from_a_cell() -> cellpipe.State:
        return cellpipe.run(_nb(tmp_path)).state

    assert asyncio.run(from_a_cell()) is cellpipe.State.SUCCEEDED


def test_load_returns_an_older_runs_value_after_a_newer_run_changed_it(
    tmp_path: Path, runs_root: Path
) -> None:
    old = cellpipe.run(_nb(tmp_path, 1))
    new = cellpipe.run(_nb(tmp_path, 7))
    assert cellpipe.load(old.run_id, "a", "x") == [1, 2]
    assert cellpipe.load(new.run_id, "a", "x") == [7, 14]


def test_load_of_a_name_the_step_did_not_save_lists_what_it_saved(
    tmp_path: Path, runs_root: Path
) -> None:
    run = cellpipe.run(_nb(tmp_path))
    with pytest.raises(KeyError, match="saved no `y`; it saved: x"):
        cellpipe.load(run.run_id, "a", "y")


def test_runs_lists_a_notebooks_runs_newest_first(tmp_path: Path, runs_root: Path) -> None:
    first = cellpipe.run(_nb(tmp_path, 1))
    second = cellpipe.run(_nb(tmp_path, 2))
    assert list(cellpipe.runs(tmp_path / "api.ipynb").index) == [
        second.run_id,
        first.run_id,
    ]


def test_compile_errors_carry_every_diagnostic(tmp_path: Path) -> None:
    write(tmp_path / "bad.ipynb", notebook(("step:a", "print(nope)")))
    with pytest.raises(cellpipe.CompileError) as err:
        cellpipe.compile(tmp_path / "bad.ipynb")
    (d,) = err.value.diagnostics
    assert (d.code, d.cell, d.name) == ("undefined-name", 1, "nope")
