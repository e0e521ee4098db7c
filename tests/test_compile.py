"""Compiling tagged notebooks: steps, edges, inputs and outputs, and every compile error."""

from __future__ import annotations

import pytest
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.core.errors import CompileError
from nbbuild import notebook


def compiled(*cells, **kw):
    return compile_notebook(notebook(*cells, **kw), path="nb.ipynb")


def problems(*cells, **kw) -> list:
    with pytest.raises(CompileError) as err:
        compiled(*cells, **kw)
    return err.value.diagnostics


def test_untagged_cells_join_the_step_above():
    p = compiled(("step:load", "x = 1"), "y = x + 1", ("step:show", "print(y)"))
    assert [s.name for s in p.steps] == ["load", "show"]
    assert p.step("load").cells == ("c1", "c2")


def test_a_read_of_an_earlier_steps_name_becomes_an_input_and_an_edge():
    p = compiled(("step:load", "x = 1"), ("step:show", "print(x)"))
    assert p.step("show").inputs == {"x": "load"}
    assert p.step("load").outputs == ("x",)
    assert p.step("show").after == ("load",)
    assert [(e.source, e.target, e.kind, e.names) for e in p.edges] == [
        ("load", "show", "data", ("x",))
    ]


def test_cells_before_any_step_tag_form_an_implicit_first_step():
    p = compiled("a = 1", ("step:b", "print(a)"))
    assert [s.name for s in p.steps] == ["main", "b"]


def test_imports_functions_and_parameters_cells_belong_to_no_step():
    p = compiled(
        ("imports", "import math"),
        ("parameters", "n = 3"),
        ("functions", "def sq(v):\n    return v * v"),
        ("step:calc", "r = sq(math.sqrt(n))"),
    )
    assert [s.name for s in p.steps] == ["calc"]
    assert p.step("calc").inputs == {}
    assert [(q.name, q.default) for q in p.parameters] == [("n", 3)]


def test_kale_tag_names_compile_unchanged():
    p = compiled(
        ("imports", "import math"),
        ("pipeline-parameters", "k = 2"),
        ("block:load", "data = [1, 2, 3]"),
        ("block:train prev:load limit:memory:1Gi", "model = sum(data) * k"),
        ("skip", "boom()"),
        ("pipeline-metrics", "print(model)"),
    )
    assert [s.name for s in p.steps] == ["load", "train", "metrics"]
    assert p.step("train").settings.limits == {"memory": "1Gi"}
    assert p.step("metrics").metrics == ("model",)


def test_a_repeated_step_tag_continues_the_step():
    p = compiled(("step:a", "x = 1"), ("step:b", "y = 2"), ("step:a", "z = x + 1"))
    assert p.step("a").cells == ("c1", "c3")


@pytest.mark.parametrize("tag", ["block:", "step:"])
def test_an_empty_step_tag_continues_the_step_above_as_in_kale(tag):
    p = compiled(("block:load", "x = 1"), (tag, "y = x + 1"), ("step:show", "print(y)"))
    assert [s.name for s in p.steps] == ["load", "show"]
    assert p.step("load").cells == ("c1", "c2")
    assert p.step("show").inputs == {"y": "load"}


def test_an_empty_step_tag_on_the_first_cell_starts_the_implicit_step():
    p = compiled(("block:", "x = 1"), ("step:show", "print(x)"))
    assert [s.name for s in p.steps] == ["main", "show"]


def test_a_guarded_read_of_a_deleted_name_is_no_error_and_no_input():
    p = compiled(
        ("step:a", "tmp = 1\nkeep = 2"),
        ("step:b", "del tmp"),
        ("step:c", "try:\n    tmp\nexcept NameError:\n    print('gone', keep)"),
    )
    assert p.step("c").inputs == {"keep": "a"}
    assert p.step("c").absent == ()


def test_a_guarded_read_of_a_name_never_defined_is_no_error():
    p = compiled(("step:a", "if 'ghost' in globals():\n    print(ghost)"))
    assert p.step("a").inputs == {}


def test_a_guarded_read_of_an_existing_value_is_an_input():
    p = compiled(("step:a", "x = 1"), ("step:b", "try:\n    print(x)\nexcept NameError:\n    pass"))
    assert p.step("b").inputs == {"x": "a"}


def test_a_prelude_name_a_step_deleted_is_unbound_in_a_later_step_that_checks_for_it():
    p = compiled(
        ("parameters", "scratch = 5"),
        ("step:a", "del scratch"),
        ("step:b", "print('scratch' in globals())"),
    )
    assert p.step("b").absent == ("scratch",)


def test_a_prelude_cell_guarded_read_of_a_step_value_is_still_refused():
    (d,) = problems(
        ("step:a", "x = 1"), ("functions", "try:\n    y = x\nexcept NameError:\n    y = 0")
    )
    assert d.code == "prelude-reads-step"


def test_a_change_through_one_name_is_a_change_of_the_names_sharing_its_object():
    p = compiled(
        ("step:make", "a = [1]\npair = [a, a]\nsame = a\nother = [0]"),
        ("step:grow", "a.append(2)"),
        ("step:show", "print(pair, same, other)"),
    )
    assert p.step("show").inputs == {"pair": "grow", "same": "grow", "other": "make"}
    assert p.step("grow").inputs == {"a": "make", "pair": "make", "same": "make"}


def test_an_estimator_inside_a_pipeline_object_is_changed_with_it():
    p = compiled(
        ("functions", "def make_rbm():\n    return object()"),
        ("imports", "from sklearn.pipeline import Pipeline"),
        ("step:build", "rbm = make_rbm()\npipe = Pipeline([('rbm', rbm)])"),
        ("step:tune", "rbm.n_components = 5"),
        ("step:fit", "pipe.fit([])"),
    )
    assert p.step("fit").inputs == {"pipe": "tune"}


def test_a_rebound_name_no_longer_shares_but_its_old_sharers_still_do():
    p = compiled(
        ("step:make", "a = [1]\nsame = a\nbox = [a]\na = []"),
        ("step:grow", "same.append(2)"),
        ("step:show", "print(box, a)"),
    )
    assert p.step("show").inputs == {"box": "grow", "a": "make"}


def test_skip_cells_are_left_out():
    p = compiled(("step:a", "x = 1"), ("skip", "raise RuntimeError"), "print(x)")
    assert p.step("a").cells == ("c1", "c3")


def test_a_mutation_in_a_later_step_makes_it_the_value_readers_get():
    p = compiled(
        ("step:a", "items = []"),
        ("step:b", "items.append(1)"),
        ("step:c", "print(items)"),
    )
    assert p.step("b").inputs == {"items": "a"}
    assert p.step("c").inputs == {"items": "b"}


def test_a_function_from_a_functions_cell_brings_the_globals_it_reads():
    p = compiled(
        ("functions", "def scaled(v):\n    return v * factor"),
        ("step:a", "factor = 10"),
        ("step:b", "print(scaled(2))"),
    )
    assert p.step("b").inputs == {"factor": "a"}


def test_global_random_state_orders_steps_that_use_it():
    p = compiled(
        ("imports", "import numpy as np"),
        ("step:seed", "np.random.seed(0)"),
        ("step:draw", "a = np.random.rand()"),
    )
    assert p.step("draw").inputs == {"@random": "seed"}


def test_parallel_writers_of_a_name_are_a_warning_naming_the_variable():
    p = compiled(
        ("step:a", "x = 1"),
        ("step:b", "x = 2"),
        ("step:c", "print(x)"),
    )
    assert p.step("c").inputs == {"x": "b"}
    (w,) = [d for d in p.diagnostics if d.code == "parallel-writers"]
    assert w.severity == "warning" and w.name == "x"
    assert "step c gets b's version" in w.message


def test_a_misspelt_tag_gets_a_warning_with_the_likely_tag():
    p = compiled(("step:a stpe:b", "x = 1"))
    (w,) = p.diagnostics
    assert "did you mean `step:b`" in w.message and w.cell == 1


def test_tags_of_other_tools_are_kept_and_ignored():
    p = compiled(("step:a hide-input remove-output", "x = 1"))
    assert p.diagnostics == () and p.cells[0].tags == ("step:a", "hide-input", "remove-output")


# -- errors: each names the cell and the tag or variable -------------------------------------


def test_reading_a_name_no_earlier_step_defines_is_rejected_with_cell_number():
    (d,) = problems(("step:a", "x = 1"), ("step:b", "print(model)"))
    assert (d.code, d.cell, d.step, d.name) == ("undefined-name", 2, "b", "model")
    assert str(d) == (
        "cell 2 (step b): reads `model`, which no earlier step, parameter or import defines"
    )


def test_undefined_name_defined_only_in_a_skip_cell_says_so():
    (d,) = problems(("skip", "v = 1"), ("step:a", "print(v)"))
    assert "cell 1 defines it, but that cell is tagged `skip`" in d.message


def test_unknown_prev_is_rejected_with_the_closest_step():
    (d,) = problems(("step:load", "x = 1"), ("step:train prev:laod", "y = 2"))
    assert (d.code, d.cell, d.name) == ("unknown-step", 2, "prev:laod")
    assert "did you mean `prev:load`" in d.message


def test_a_cycle_is_rejected_naming_the_steps_and_why():
    (d,) = problems(("step:a prev:b", "x = 1"), ("step:b", "y = x"))
    assert d.code == "cycle"
    assert "a -> b -> a" in d.message or "b -> a -> b" in d.message


def test_an_invalid_step_name_is_rejected():
    (d,) = problems(("step:9lives", "x = 1"))
    assert (d.code, d.cell, d.name) == ("invalid-step-name", 1, "step:9lives")


def test_step_names_that_clash_on_kubernetes_are_rejected():
    (d,) = problems(("step:train_model", "x = 1"), ("step:train-model", "y = 1"))
    assert d.code == "duplicate-step-name" and d.cell == 2


def test_star_import_outside_an_imports_cell_is_rejected():
    (d,) = problems(("step:a", "from math import *\nprint(pi)"))
    assert (d.code, d.cell, d.name) == ("star-import", 1, "math")


def test_a_name_changed_after_a_later_step_read_it_is_rejected():
    ds = problems(("step:a", "x = 1"), ("step:b", "y = x"), ("step:a", "x = 2"))
    assert [d.code for d in ds] == ["changed-after-read"]
    assert ds[0].cell == 3 and ds[0].name == "x"


def test_all_problems_are_reported_at_once():
    ds = problems(("step:a", "print(u1)"), ("step:b prev:zzz", "print(u2)"))
    assert {d.code for d in ds} == {"undefined-name", "unknown-step"}


def test_a_bad_setting_value_is_rejected_with_the_tag():
    (d,) = problems(("step:a limit:memory:lots", "x = 1"))
    assert (d.code, d.name) == ("invalid-tag", "limit:memory:lots")


def test_pipeline_json_round_trips():
    from cellpipe.core.model import Pipeline

    p = compiled(
        ("parameters", "n = 1"), ("step:a retry:2 timeout:5", "x = n"), ("step:b", "y = x")
    )
    assert Pipeline.from_json(p.to_json()) == p


def test_a_file_written_by_one_step_and_read_by_another_orders_them():
    p = compiled(
        ("imports", "import pandas as pd"),
        ("step:write", "pd.DataFrame({'v': [1]}).to_csv('out/handoff.csv', index=False)"),
        ("step:read", "back = pd.read_csv('./out/handoff.csv')"),
    )
    assert p.step("read").after == ("write",)
    assert p.step("read").inputs == {"@file:out/handoff.csv": "write"}


def test_a_file_no_step_writes_is_not_an_input():
    p = compiled(("imports", "import pandas as pd"), ("step:load", "df = pd.read_csv('data.csv')"))
    assert p.step("load").inputs == {}
