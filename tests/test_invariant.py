"""The invariant: a pipeline run computes what "Restart and Run All" computes.

Each adversarial notebook in tests/notebooks/ runs top to bottom with nbclient and a real
kernel, and as a pipeline with `cellpipe run --output`; every code cell's outputs must match.
Each side runs on its own copy of the notebook, so files one writes are not there for the
other. To keep the suite fast, the selected notebooks start running, a few at a time, as soon
as the first of these tests asks for its result.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbbuild import notebook, write
from notebooks.make import CASES, SUPPORT_FILES, build
from oracle import (
    REJECTED,
    copy_case,
    differences,
    has_figures,
    invariant_case,
    run_pipeline,
    run_top_to_bottom,
)

HERE = Path(__file__).parent / "notebooks"


def _assert_same_outputs(expected: Any, executed: Any, again: Any = None) -> None:
    problems = differences(expected, executed, again)
    if problems:
        pytest.fail("pipeline outputs differ from top to bottom:\n" + "\n".join(problems))


def _run_both_ways(name: str, workdir: Path) -> tuple[Any, Any, Any, Any]:
    params = CASES[name].parameters or None
    copies = copy_case(name, workdir)
    # As many steps at once as the DAG allows, so that a missing edge shows as a wrong value.
    executed, proc = run_pipeline(copies["pipeline"], workdir, params, ("--jobs", "8"))
    expected = run_top_to_bottom(copies["top-to-bottom"], params)
    # Figures are compared byte for byte where top to bottom draws the same bytes twice.
    again = run_top_to_bottom(copies["top-to-bottom"], params) if has_figures(expected) else None
    return expected, executed, proc, again


_INVARIANT = "test_pipeline_outputs_equal_top_to_bottom_outputs"


@pytest.fixture(scope="module")
def both_ways(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Futures of (top-to-bottom notebook, pipeline notebook, cellpipe process) by name, for
    every notebook the session selected; most of a run is waiting on kernel and process
    start-up, so a few at a time take far less time than one after another."""
    names = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == _INVARIANT
    ]
    with ThreadPoolExecutor(3) as pool:
        futures = {n: pool.submit(_run_both_ways, n, tmp_path_factory.mktemp(n)) for n in names}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("name", [invariant_case(n) for n in sorted(CASES) if n not in REJECTED])
def test_pipeline_outputs_equal_top_to_bottom_outputs(name: str, both_ways) -> None:
    expected, executed, proc, again = both_ways[name].result()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert executed is not None, "no executed notebook was written"
    _assert_same_outputs(expected, executed, again)


def _drawn(*pngs: str) -> Any:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plt.plot([1, 2])")
    cell.id = "plot"
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": p, "text/plain": "<Figure>"})
        for p in pngs
    ]
    nb.cells = [cell]
    return nb


def test_the_oracle_holds_the_pipeline_to_figures_top_to_bottom_draws_reproducibly() -> None:
    assert differences(_drawn("AAAA"), _drawn("AAAA"), _drawn("AAAA")) == []
    (problem,) = differences(_drawn("AAAA"), _drawn("BBBB"), _drawn("AAAA"))
    assert "figure 1 differs" in problem


def test_the_oracle_ignores_bytes_of_figures_top_to_bottom_does_not_reproduce() -> None:
    assert differences(_drawn("AAAA"), _drawn("BBBB"), _drawn("CCCC")) == []


def _project(root: Path) -> Path:
    """A notebook that reads a data file and imports a module kept next to it."""
    (root / "project").mkdir()
    (root / "project" / "data.csv").write_text("v\n1\n2\n")
    (root / "project" / "helper_mod.py").write_text("K = 1\n")
    return write(
        root / "project" / "analysis.ipynb",
        notebook(
            ("imports", "import pandas as pd\nimport helper_mod"),
            ("step:load", "df = pd.read_csv('data.csv')\nk = helper_mod.K"),
            ("step:show", "print(df.v.sum(), k)"),
        ),
    )


def test_a_rerun_with_nothing_changed_is_cached_and_shows_the_same_outputs(
    tmp_path: Path,
) -> None:
    path = _project(tmp_path)
    run_pipeline(path, tmp_path)
    executed, proc = run_pipeline(path, tmp_path, extra=("--json",))
    assert proc.returncode == 0, proc.stderr
    assert {s["state"] for s in json.loads(proc.stdout)["steps"].values()} == {"cached"}
    _assert_same_outputs(run_top_to_bottom(path), executed)


def test_a_rerun_after_a_data_file_changed_computes_with_the_new_data(tmp_path: Path) -> None:
    path = _project(tmp_path)
    run_pipeline(path, tmp_path)
    (path.parent / "data.csv").write_text("v\n10\n20\n")
    executed, proc = run_pipeline(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    _assert_same_outputs(run_top_to_bottom(path), executed)


def test_a_rerun_after_a_local_module_changed_uses_the_new_module(tmp_path: Path) -> None:
    path = _project(tmp_path)
    run_pipeline(path, tmp_path)
    (path.parent / "helper_mod.py").write_text("K = 2\n")
    executed, proc = run_pipeline(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    _assert_same_outputs(run_top_to_bottom(path), executed)


def test_committed_notebooks_are_what_make_py_writes() -> None:
    committed = {p.stem for p in HERE.glob("*.ipynb")}
    assert committed == set(CASES), "run `python tests/notebooks/make.py`"
    for name, case in CASES.items():
        written = json.loads(nbformat.writes(build(name, case)))
        assert json.loads((HERE / f"{name}.ipynb").read_text()) == written, (
            f"{name}.ipynb is stale: run `python tests/notebooks/make.py`"
        )
    for file_name, text in SUPPORT_FILES.items():
        assert (HERE / file_name).read_text() == text, f"{file_name} is stale"


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_notebooks_a_dag_cannot_run_faithfully_are_rejected_at_compile(name: str) -> None:
    from cellpipe.compiling.compiler import compile_notebook
    from cellpipe.core.errors import CompileError

    with pytest.raises(CompileError) as err:
        compile_notebook(HERE / f"{name}.ipynb")
    assert [d.code for d in err.value.diagnostics] == [REJECTED[name]]
