"""Notebook composition: `notebook:NAME` cells (Kale 2.3) and `%run x.ipynb` stand for the
notebook they name; the pipeline computes what the main notebook, with each such cell
replaced by the referenced notebook's cells, computes top to bottom."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.compiling.compose import MAX_DEPTH, inline
from cellpipe.core.errors import CompileError
from nbbuild import notebook, write
from oracle import differences, run_pipeline, run_top_to_bottom

COMPOSITION = Path(__file__).parent / "notebooks" / "composition"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The composition notebooks, copied: a run writes nothing next to the committed ones."""
    return Path(shutil.copytree(COMPOSITION, tmp_path / "project"))


def _ref(name: str, path: str, source: str = "") -> dict:
    return {
        "cell_type": "code",
        "id": f"ref-{name}",
        "metadata": {"notebook_path": path, "tags": [f"notebook:{name}"]},
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def _with_cells(*cells: dict) -> dict:
    nb = notebook("x = 0")
    nb["cells"] = list(cells)
    return nb


def _errors(path: Path) -> list:
    with pytest.raises(CompileError) as info:
        compile_notebook(path)
    return info.value.diagnostics


# -- compiling ------------------------------------------------------------------------------


def test_kale_composition_notebook_gives_qualified_steps_in_notebook_order(project: Path) -> None:
    pipeline = compile_notebook(project / "main.ipynb")
    assert [s.name for s in pipeline.steps] == [
        "notebook_a.cities",
        "notebook_a.readings",
        "notebook_a.table",
        "notebook_a.summary",
        "notebook_b.greet",
        "notebook_b.fit",
        "notebook_b.model",
        "notebook_b.summary",
        "notebook_c.predict",
        "notebook_c.summary",
        "notebook_c.metrics",
    ]


def test_variables_shared_between_notebooks_become_edges_between_parts(project: Path) -> None:
    pipeline = compile_notebook(project / "main.ipynb")
    assert pipeline.step("notebook_b.fit").inputs == {"table": "notebook_a.table"}
    assert pipeline.step("notebook_c.summary").inputs == {
        "cities": "notebook_a.cities",
        "prediction": "notebook_c.predict",
    }
    assert pipeline.step("notebook_b.model").after == ("notebook_b.fit",)  # prev:fit, qualified


def test_each_step_names_its_group_and_notebook_in_the_compile_json(project: Path) -> None:
    data = compile_notebook(project / "main_mixed.ipynb").to_json()
    by_name = {s["name"]: s for s in data["steps"]}
    assert (by_name["notebook_b.fit"]["group"], by_name["notebook_b.fit"]["notebook"]) == (
        "notebook_b",
        "notebook_b.ipynb",
    )
    assert (by_name["final"]["group"], by_name["final"]["notebook"]) == (None, None)


def test_the_main_notebook_sets_a_parameter_a_referenced_notebook_declares(project: Path) -> None:
    params = {p.name: p.default for p in compile_notebook(project / "main_mixed.ipynb").parameters}
    assert params == {"scale": 3, "label": "from a"}
    alone = {p.name: p.default for p in compile_notebook(project / "main.ipynb").parameters}
    assert alone == {"scale": 2, "label": "from a"}


def test_percent_run_of_a_notebook_composes_the_same_steps(project: Path) -> None:
    by_tag = compile_notebook(project / "main_mixed.ipynb")
    by_run = compile_notebook(project / "main_run.ipynb")
    assert [s.name for s in by_run.steps] == [s.name for s in by_tag.steps]


def test_percent_run_of_a_script_stays_an_ordinary_magic(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("h = 1\n")
    write(tmp_path / "m.ipynb", notebook(("step:a", "%run helper.py"), ("step:b", "print(1)")))
    assert [s.name for s in compile_notebook(tmp_path / "m.ipynb").steps] == ["a", "b"]


def test_a_missing_referenced_notebook_is_an_error_at_its_cell(tmp_path: Path) -> None:
    write(tmp_path / "m.ipynb", _with_cells(notebook("x = 1")["cells"][0], _ref("a", "./a.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("unreadable-notebook", 2)
    assert d.message == (
        "`notebook:a`: cannot use the referenced notebook: ./a.ipynb: no such file"
    )


def test_an_unreadable_referenced_notebook_says_why(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_text("{not json")
    write(tmp_path / "m.ipynb", _with_cells(_ref("a", "a.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("unreadable-notebook", 1)
    assert "not valid notebook JSON" in d.message


def test_a_notebook_tag_without_notebook_path_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "m.ipynb", _with_cells(_ref("a", "")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("missing-notebook", 1)
    assert "no `notebook_path` in its metadata" in d.message


def test_code_in_a_notebook_cell_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", notebook(("step:s", "a = 1")))
    write(tmp_path / "m.ipynb", _with_cells(_ref("a", "a.ipynb", "# the data\nprint('hi')")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("code-in-notebook-cell", 1)
    assert "move `print('hi')` to a cell of its own" in d.message


def test_notebooks_referring_to_each_other_are_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", _with_cells(_ref("b", "b.ipynb")))
    write(tmp_path / "b.ipynb", _with_cells(_ref("a", "a.ipynb")))
    write(tmp_path / "m.ipynb", _with_cells(notebook("x = 1")["cells"][0], _ref("a", "a.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("notebook-cycle", 2)
    assert d.message == (
        "b.ipynb cell 1: `notebook:a`: notebooks refer to each other: a.ipynb -> b.ipynb -> a.ipynb"
    )


def test_a_notebook_referring_to_itself_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "m.ipynb", _with_cells(_ref("m", "m.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert d.code == "notebook-cycle"
    assert d.message.endswith("m.ipynb -> m.ipynb")


def test_nesting_deeper_than_the_limit_is_refused_and_says_the_limit(tmp_path: Path) -> None:
    assert MAX_DEPTH == 3
    for level in range(1, 5):  # n1 -> n2 -> n3 -> n4 -> n5
        write(
            tmp_path / f"n{level}.ipynb", _with_cells(_ref(f"n{level + 1}", f"n{level + 1}.ipynb"))
        )
    write(tmp_path / "n5.ipynb", notebook(("step:leaf", "x = 1")))
    write(tmp_path / "m.ipynb", _with_cells(_ref("n1", "n1.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("notebooks-too-deep", 1)
    assert "references nest more than 3 notebooks deep" in d.message
    assert "cellpipe supports 3 levels" in d.message


def test_three_levels_of_nesting_compile_with_doubly_qualified_names(tmp_path: Path) -> None:
    write(tmp_path / "n1.ipynb", _with_cells(_ref("n2", "n2.ipynb")))
    write(tmp_path / "n2.ipynb", _with_cells(_ref("n3", "n3.ipynb")))
    write(tmp_path / "n3.ipynb", notebook(("step:leaf", "x = 1")))
    write(tmp_path / "m.ipynb", _with_cells(_ref("n1", "n1.ipynb")))
    [step] = compile_notebook(tmp_path / "m.ipynb").steps
    assert (step.name, step.group, step.notebook) == ("n1.n2.n3.leaf", "n1.n2.n3", "n3.ipynb")


def test_two_references_with_one_name_clash(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", notebook(("step:s", "a = 1")))
    write(tmp_path / "b.ipynb", notebook(("step:t", "b = 1")))
    write(tmp_path / "m.ipynb", _with_cells(_ref("part", "a.ipynb"), _ref("part", "b.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("duplicate-notebook-name", 2)
    assert "the name `part` is already used by cell 1" in d.message


def test_a_reference_named_like_a_step_of_the_main_notebook_clashes(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", notebook(("step:s", "a = 1")))
    nb = notebook(("step:train", "t = 1"))
    nb["cells"].append(_ref("train", "a.ipynb"))
    write(tmp_path / "m.ipynb", nb)
    [d] = _errors(tmp_path / "m.ipynb")
    assert (d.code, d.cell) == ("duplicate-notebook-name", 2)
    assert "`train` is also a step of m.ipynb" in d.message


def test_a_dot_in_a_step_tag_is_refused_it_is_kept_for_parts(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", notebook(("step:s", "a = 1")))
    nb = notebook(("step:a.s", "t = 1"))
    nb["cells"].append(_ref("a", "a.ipynb"))
    write(tmp_path / "m.ipynb", nb)
    codes = [(d.code, d.cell) for d in _errors(tmp_path / "m.ipynb")]
    assert ("invalid-step-name", 1) in codes


def test_an_error_inside_a_referenced_notebook_names_that_notebook_and_cell(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", notebook(("step:s", "print(undefined_thing)")))
    write(tmp_path / "m.ipynb", _with_cells(notebook("x = 1")["cells"][0], _ref("a", "a.ipynb")))
    [d] = _errors(tmp_path / "m.ipynb")
    assert d.cell == 2  # the main notebook's cell that brings a.ipynb in
    assert d.message.startswith("a.ipynb cell 1: ")
    assert "undefined_thing" in d.message


# -- running --------------------------------------------------------------------------------


def _inlined_top_to_bottom(main: Path) -> nbformat.NotebookNode:
    """The oracle: the main notebook with its references inlined, run top to bottom."""
    flat = main.with_name(f"{main.stem}.inlined.ipynb")
    flat.write_text(json.dumps(inline(json.loads(main.read_text()), main.parent).nb))
    return run_top_to_bottom(flat)


def _executed_inlined(executed_main: Path) -> nbformat.NotebookNode:
    """The executed main notebook with the executed referenced notebooks inlined."""
    nb = inline(json.loads(executed_main.read_text()), executed_main.parent, executed=True).nb
    return nbformat.reads(json.dumps(nb), as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize("main", ["main", "main_mixed", "main_run"])
def test_a_composed_pipeline_equals_the_inlined_top_to_bottom_run(
    main: str, project: Path, tmp_path: Path
) -> None:
    expected = _inlined_top_to_bottom(project / f"{main}.ipynb")
    executed, proc = run_pipeline(project / f"{main}.ipynb", tmp_path, extra=("--jobs", "4"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert executed is not None
    actual = _executed_inlined(tmp_path / f"{main}.executed.ipynb")
    assert differences(expected, actual) == []
    # and the outputs are real: the last part printed its prediction
    texts = [
        o.get("text", "")
        for c in actual.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    ]
    assert any("prediction at 10 ->" in t for t in texts)


def test_output_writes_the_executed_main_and_each_referenced_notebook_beside_it(
    cli, project: Path, tmp_path: Path, runs_root: Path
) -> None:
    proc = cli("run", str(project / "main.ipynb"), "--output", "out/main.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "main.ipynb",
        "main.notebook_a.ipynb",
        "main.notebook_b.ipynb",
        "main.notebook_c.ipynb",
    ]
    main = json.loads((out / "main.ipynb").read_text())
    ref_b = main["cells"][2]
    assert ref_b["metadata"]["tags"] == ["notebook:notebook_b"]
    assert ref_b["metadata"]["notebook_path"] == "./notebook_b.ipynb"  # still the source's
    assert ref_b["metadata"]["cellpipe"]["executed_notebook"] == "main.notebook_b.ipynb"
    b = json.loads((out / "main.notebook_b.ipynb").read_text())
    assert [c["id"] for c in b["cells"]] == ["b1", "b2", "b3", "b4"]
    assert b["cells"][2]["metadata"]["tags"] == ["step:model", "prev:fit"]  # as in the source
    assert b["cells"][2]["outputs"][0]["text"] == "model: {'slope': 4.6, 'intercept': 3.5}\n"
    assert b["cells"][2]["metadata"]["cellpipe"]["step"] == "notebook_b.model"
    assert "executed referenced notebook: out/main.notebook_c.ipynb" in proc.stderr


def test_run_directory_and_cli_use_qualified_step_names(
    cli, project: Path, runs_root: Path
) -> None:
    status = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    assert status["state"] == "succeeded"
    assert "notebook_c.predict" in status["steps"]
    run = runs_root / status["run_id"]
    assert (run / "steps" / "notebook_c.predict.py").is_file()
    assert (run / "logs" / "notebook_c.predict.log").is_file()
    logs = cli("logs", status["run_id"], "notebook_c.predict")
    assert "prediction at 10 -> 49.5" in logs.stdout


def test_a_rerun_caches_every_part_and_an_edit_in_one_part_reruns_only_downstream(
    cli, project: Path
) -> None:
    first = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    assert first["state"] == "succeeded"
    second = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    assert {s["state"] for s in second["steps"].values()} == {"cached"}
    c = json.loads((project / "notebook_c.ipynb").read_text())
    c["cells"][1]["source"] = ["print('city:', cities[int(prediction) % len(cities)])"]
    (project / "notebook_c.ipynb").write_text(json.dumps(c))
    third = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    ran = sorted(n for n, s in third["steps"].items() if s["state"] == "succeeded")
    assert ran == ["notebook_c.summary"]


def test_resume_reruns_the_failed_step_of_a_part_after_the_fix(cli, project: Path) -> None:
    c = json.loads((project / "notebook_c.ipynb").read_text())
    good = c["cells"][0]["source"]
    c["cells"][0]["source"] = ["prediction = model['no such key']"]
    (project / "notebook_c.ipynb").write_text(json.dumps(c))
    failed = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    assert failed["steps"]["notebook_c.predict"]["state"] == "failed"
    c["cells"][0]["source"] = good
    (project / "notebook_c.ipynb").write_text(json.dumps(c))
    resumed = json.loads(cli("run", "--resume", failed["run_id"], "--json").stdout)
    assert resumed["state"] == "succeeded"
    assert resumed["steps"]["notebook_a.cities"]["state"] == "cached"
    assert resumed["steps"]["notebook_c.predict"]["state"] == "succeeded"


# -- Argo ----------------------------------------------------------------------------------


def test_argo_gives_each_referenced_notebook_its_own_dag_template(project: Path) -> None:
    from cellpipe.backends.argo.manifest import ArgoSettings, build_workflow
    from test_argo_manifest import IMAGES, manifest_problems

    pipeline = compile_notebook(project / "main_mixed.ipynb")
    images = {s.name: IMAGES for s in pipeline.steps}
    doc = build_workflow(pipeline, ArgoSettings.from_notebook(pipeline.settings), images=images)
    assert manifest_problems(doc) == []
    dags = {t["name"]: t["dag"]["tasks"] for t in doc["spec"]["templates"] if "dag" in t}
    assert sorted(dags) == ["main", "part-notebook-a", "part-notebook-b", "part-notebook-c"]
    assert [(t["name"], t.get("dependencies", [])) for t in dags["main"]] == [
        ("part-notebook-a", []),
        ("part-notebook-b", ["part-notebook-a"]),
        ("part-notebook-c", ["part-notebook-b", "part-notebook-a"]),
        ("final", ["part-notebook-c"]),
    ]
    assert [(t["name"], t.get("dependencies", [])) for t in dags["part-notebook-b"]] == [
        ("notebook-b-greet", []),
        ("notebook-b-fit", []),
        ("notebook-b-model", ["notebook-b-fit"]),
        ("notebook-b-summary", []),
    ]
    step = next(t for t in doc["spec"]["templates"] if t["name"] == "notebook-b-fit")
    assert "--step" in step["container"]["args"]
    assert step["container"]["args"][step["container"]["args"].index("--step") + 1] == (
        "notebook_b.fit"
    )


def test_a_composed_notebook_runs_on_argo_with_a_pod_per_qualified_step(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the fake Kubernetes API server whose pods run the real runner; the real
    cluster (issue "Argo on a real cluster") is another engineer's."""
    from cellpipe.backends import RunOptions
    from cellpipe.backends.argo.backend import ArgoBackend
    from cellpipe.core.model import State
    from cellpipe.driving.driver import prepare_run
    from fake_k8s import FakeCluster

    with FakeCluster(tmp_path / "cluster", execute=True) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        rd = prepare_run(tmp_path / "runs", project / "main_mixed.ipynb", backend="argo")
        assert ArgoBackend().execute(rd, RunOptions()) is State.SUCCEEDED
        steps = rd.status().steps
        assert {s.state.value for s in steps.values()} == {"succeeded"}
        assert "notebook_c.predict" in steps
        assert "prediction at 10 -> 74.25" in rd.log_path("notebook_c.predict").read_text()


@pytest.mark.slow
def test_a_composed_notebook_under_docker_equals_the_inlined_top_to_bottom_run(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_docker_backend import USER, _give

    monkeypatch.setenv("CELLPIPE_DOCKER_USER", USER)
    _give(tmp_path)
    expected = _inlined_top_to_bottom(project / "main_mixed.ipynb")
    _give(tmp_path)
    _, proc = run_pipeline(
        project / "main_mixed.ipynb", tmp_path, extra=("--backend", "docker", "--jobs", "4")
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    actual = _executed_inlined(tmp_path / "main_mixed.executed.ipynb")
    assert differences(expected, actual) == []


def test_the_run_report_shows_every_part_with_its_outputs(
    cli, project: Path, tmp_path: Path
) -> None:
    """Kale-shaped notebooks keep their sources as lists of lines, as Jupyter saves them."""
    status = json.loads(cli("run", str(project / "main.ipynb"), "--json").stdout)
    proc = cli("report", status["run_id"], "--output", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r.html").read_text()
    assert "notebook_b.model" in page and "notebook_c.predict" in page
    assert "prediction at 10 -&gt; 49.5" in page or "prediction at 10 -> 49.5" in page
