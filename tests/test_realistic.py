"""The invariant on realistic notebooks: analyses of the kind tutorial galleries hold, one
step per section and no `prev:` tags (tests/notebooks/realistic/, see its README), each run
top to bottom and as a pipeline, outputs and reproducible figures compared by the oracle."""

from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest
from oracle import both_ways as compare_both_ways

HERE = Path(__file__).parent / "notebooks" / "realistic"
sys.path.insert(0, str(HERE))
from make import NOTEBOOKS, build  # noqa: E402

#: Notebooks the engine does not run faithfully yet, and why. Strict: a fix shows as XPASS.
KNOWN: dict[str, str] = {}


def _case(name: str) -> Any:
    marks = [pytest.mark.xfail(reason=KNOWN[name], strict=True)] if name in KNOWN else []
    return pytest.param(name, marks=marks, id=name)


def _both_ways(name: str, workdir: Path) -> tuple[Any, list[str]]:
    sides = {}
    for side in ("top-to-bottom", "pipeline"):
        (workdir / side).mkdir()
        sides[side] = Path(shutil.copy(HERE / f"{name}.ipynb", workdir / side))
    return compare_both_ways(sides["top-to-bottom"], sides["pipeline"], workdir, ("--jobs", "4"))


@pytest.fixture(scope="module")
def both_ways(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    names = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_a_realistic_notebook_runs_as_top_to_bottom"
    ]
    with ThreadPoolExecutor(3) as pool:
        futures = {n: pool.submit(_both_ways, n, tmp_path_factory.mktemp(n)) for n in names}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("name", [_case(n) for n in sorted(NOTEBOOKS)])
def test_a_realistic_notebook_runs_as_top_to_bottom(name: str, both_ways) -> None:
    proc, problems = both_ways[name].result()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert not problems, "pipeline outputs differ from top to bottom:\n" + "\n".join(problems)


def test_committed_realistic_notebooks_are_what_make_py_writes() -> None:
    assert {p.stem for p in HERE.glob("*.ipynb")} == set(NOTEBOOKS)
    for name in NOTEBOOKS:
        written = json.loads(nbformat.writes(build(name)))
        assert json.loads((HERE / f"{name}.ipynb").read_text()) == written, (
            f"{name}.ipynb is stale: run `python tests/notebooks/realistic/make.py`"
        )


def test_each_realistic_notebook_has_one_step_per_section_and_no_prev_tags() -> None:
    for name in NOTEBOOKS:
        nb = build(name)
        tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
        headings = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
        assert len([t for t in tags if t.startswith("step:")]) == len(headings)
        assert not [t for t in tags if t.startswith("prev:")]
