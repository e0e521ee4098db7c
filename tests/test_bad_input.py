"""Bad input gets a clear error, exit status 2 (1 for failures at run time), and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

from nbbuild import notebook, write


def test_invalid_json_exits_2_saying_where(cli, tmp_path: Path) -> None:
    (tmp_path / "broken.ipynb").write_text('{"cells": [}')
    proc = cli("run", "broken.ipynb")
    assert proc.returncode == 2
    assert "broken.ipynb: not valid notebook JSON (line 1, column 12" in proc.stderr


def test_an_nbformat_v3_notebook_exits_2_with_how_to_convert(cli, tmp_path: Path) -> None:
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}
    (tmp_path / "old.ipynb").write_text(json.dumps(v3))
    proc = cli("compile", "old.ipynb")
    assert proc.returncode == 2
    assert "notebook format v3 is too old" in proc.stderr
    assert "jupyter nbconvert --to notebook --nbformat 4" in proc.stderr


def test_a_notebook_with_no_code_cells_exits_2(cli, tmp_path: Path) -> None:
    write(tmp_path / "prose.ipynb", notebook("# md: just words"))
    proc = cli("run", "prose.ipynb")
    assert proc.returncode == 2
    assert "has no code cells" in proc.stderr


def test_a_missing_file_exits_2(cli) -> None:
    proc = cli("compile", "nope.ipynb")
    assert proc.returncode == 2 and "nope.ipynb: no such file" in proc.stderr


def test_a_cycle_exits_2_naming_the_steps(cli, tmp_path: Path) -> None:
    write(tmp_path / "c.ipynb", notebook(("step:a prev:b", "x = 1"), ("step:b", "y = x")))
    proc = cli("compile", "c.ipynb")
    assert proc.returncode == 2
    assert "steps form a cycle: a -> b -> a" in proc.stderr
    assert "b reads `x` from a (cell 2); a has `prev:b` (cell 1)" in proc.stderr


def test_prev_tags_both_ways_are_a_cycle_naming_both_cells(cli, tmp_path: Path) -> None:
    write(tmp_path / "c.ipynb", notebook(("step:a prev:b", "x = 1"), ("step:b prev:a", "y = 2")))
    proc = cli("run", "c.ipynb")
    assert proc.returncode == 2
    assert "steps form a cycle: a -> b -> a" in proc.stderr
    assert "b has `prev:a` (cell 2); a has `prev:b` (cell 1)" in proc.stderr


def test_an_unknown_prev_exits_2_with_cell_and_tag(cli, tmp_path: Path) -> None:
    write(tmp_path / "p.ipynb", notebook(("step:a", "x = 1"), ("step:b prev:nothere", "y = 2")))
    proc = cli("run", "p.ipynb")
    assert proc.returncode == 2
    assert "cell 2 (step b): `prev:nothere` names no step" in proc.stderr


def test_an_invalid_step_name_exits_2_with_cell_and_tag(cli, tmp_path: Path) -> None:
    write(tmp_path / "n.ipynb", notebook(("step:bad.name", "x = 1")))
    proc = cli("compile", "n.ipynb")
    assert proc.returncode == 2
    assert "cell 1" in proc.stderr and "step name `bad.name` is invalid" in proc.stderr


def test_an_undefined_name_exits_2_with_cell_step_and_variable(cli, tmp_path: Path) -> None:
    write(tmp_path / "u.ipynb", notebook(("step:a", "x = 1"), ("step:train", "fit(model)")))
    proc = cli("run", "u.ipynb")
    assert proc.returncode == 2
    assert "cell 2 (step train): reads `model`" in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing runs when the notebook does not compile"


def test_cell_numbers_count_markdown_cells_too(cli, tmp_path: Path) -> None:
    nb = notebook("# md: Title", ("step:a", "x = 1"), "# md: Training", ("step:train", "fit(x)"))
    write(tmp_path / "m.ipynb", nb)
    proc = cli("compile", "m.ipynb")
    assert proc.returncode == 2
    assert "cell 4 (step train): reads `fit`" in proc.stderr


def test_a_star_import_outside_the_imports_cell_exits_2_naming_cell_and_module(
    cli, tmp_path: Path
) -> None:
    write(
        tmp_path / "s.ipynb",
        notebook(("step:a", "x = 1"), ("step:b", "from math import *\ny = floor(x)")),
    )
    proc = cli("run", "s.ipynb")
    assert proc.returncode == 2
    assert "cell 2 (step b): `from math import *` hides which names it defines" in proc.stderr
    assert "tag the cell `imports`" in proc.stderr


def test_a_star_import_in_the_imports_cell_runs(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "s.ipynb",
        notebook(("imports", "from math import *"), ("step:a", "print(floor(2.5))")),
    )
    proc = cli("run", "s.ipynb")
    assert proc.returncode == 0, proc.stderr


def test_two_parallel_writers_of_a_name_run_with_a_warning_naming_it(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "r.ipynb",
        notebook(("step:a", "x = 1"), ("step:b", "x = 2"), ("step:c", "print(x)")),
    )
    proc = cli("run", "r.ipynb")
    assert proc.returncode == 0, proc.stderr
    assert "warning: cell 2 (step b)" in proc.stderr
    assert "may run in parallel and both write `x`" in proc.stderr
    assert "step c gets b's version" in proc.stderr


def test_a_step_split_by_a_cell_that_rebinds_what_it_reads_exits_2(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "i.ipynb",
        notebook(("step:a", "x = 1"), ("step:b", "x = 2"), ("step:a", "print(x)")),
    )
    proc = cli("run", "i.ipynb")
    assert proc.returncode == 2
    assert "cell 3 (step a): reads `x` from step b (cell 2)" in proc.stderr


def test_compile_errors_as_json_list_every_problem(cli, tmp_path: Path) -> None:
    write(tmp_path / "u.ipynb", notebook(("step:a", "print(p1)"), ("step:b prev:zz", "print(p2)")))
    proc = cli("compile", "u.ipynb", "--json")
    assert proc.returncode == 2
    body = json.loads(proc.stdout)
    assert body["error"] == "CompileError"
    assert {(p["code"], p["cell"]) for p in body["problems"]} == {
        ("undefined-name", 1),
        ("undefined-name", 2),
        ("unknown-step", 2),
    }


def test_an_unknown_parameter_exits_2_listing_the_known_ones(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "p.ipynb",
        notebook(("parameters", "alpha = 1\nbeta = 2"), ("step:a", "print(alpha)")),
    )
    proc = cli("run", "p.ipynb", "-p", "gamma=3")
    assert proc.returncode == 2
    assert "unknown parameter 'gamma'; the parameters cell declares: alpha, beta" in proc.stderr


def test_an_unpicklable_value_fails_the_producing_step_naming_it(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "g.ipynb",
        notebook(
            ("step:make", "numbers = (i * i for i in range(3))"),
            ("step:use", "print(list(numbers))"),
        ),
    )
    proc = cli("run", "g.ipynb", "--json")
    assert proc.returncode == 1
    status = json.loads(proc.stdout)
    make = status["steps"]["make"]
    assert make["state"] == "failed"
    assert make["message"].startswith(
        "step make: variable `numbers` (builtins.generator) cannot be passed to step use: "
        "cannot pickle 'generator' object"
    )
    assert status["steps"]["use"] == {
        "state": "skipped",
        "duration_s": None,
        "attempts": 0,
        "cached": False,
        "message": "upstream step make failed",
    }


def test_a_step_error_names_the_cell_and_exits_1(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "e.ipynb",
        notebook(("step:a", "x = 1"), ("step:b", "y = 1\nraise ValueError('bad value')")),
    )
    proc = cli("run", "e.ipynb")
    assert proc.returncode == 1
    assert "step b failed: cell 2: ValueError: bad value" in proc.stdout
