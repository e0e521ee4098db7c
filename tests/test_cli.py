"""The command line as a user meets it: help, compile output, scripts, startup time."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from nbbuild import notebook, write

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wine.ipynb"


def test_help_teaches_the_tags_and_shows_examples(cli) -> None:
    out = cli("--help").stdout
    assert "step:NAME" in out and "cellpipe run examples/wine.ipynb" in out
    for command in ("compile", "run", "runs", "status", "logs", "cancel"):
        assert command in out


def test_run_help_explains_parameters_like_papermill(cli) -> None:
    out = cli("run", "--help").stdout
    assert "-p, --parameter NAME=VALUE" in out and "papermill" in out


def test_compile_shows_steps_dependencies_and_data(cli) -> None:
    proc = cli("compile", str(EXAMPLE), env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "wine: 6 steps" in proc.stdout
    assert "forest_accuracy" in proc.stdout and "split" in proc.stdout


def test_compile_json_is_the_pipeline(cli) -> None:
    data = json.loads(cli("compile", str(EXAMPLE), "--json").stdout)
    assert [s["name"] for s in data["steps"]] == [
        "load",
        "split",
        "forest",
        "logreg",
        "compare",
        "metrics",
    ]
    assert data["steps"][2]["inputs"] == {
        "X_train": "split",
        "y_train": "split",
        "X_test": "split",
        "y_test": "split",
    }


def test_compile_writes_readable_step_scripts_that_are_valid_python(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "s.ipynb",
        notebook(
            ("imports", "import os"), ("step:a", "%time x = 1\n!echo hi"), ("step:b", "print(x)")
        ),
    )
    cli("compile", "s.ipynb", "-o", "build", check=True)
    script = (tmp_path / "build" / "steps" / "a.py").read_text()
    assert "# %% cell 2 [step:a] id=c2" in script
    assert "# %time x = 1" in script and "get_ipython().run_line_magic('time', 'x = 1')" in script
    ast.parse(script)  # valid Python
    assert "# Inputs:  x (from a)" in (tmp_path / "build" / "steps" / "b.py").read_text()


def test_step_scripts_run_by_hand_in_dependency_order(cli, tmp_path: Path) -> None:
    write(tmp_path / "h.ipynb", notebook(("step:a", "x = 20"), ("step:b", "print(x + 1)")))
    cli("compile", "h.ipynb", "-o", "build", check=True)
    env_path = str(Path(__file__).resolve().parents[1] / "kernel")
    for step in ("a", "b"):
        proc = subprocess.run(
            [sys.executable, f"build/steps/{step}.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr
    assert "21" in (tmp_path / "build" / "logs" / "b.log").read_text()


def test_status_and_runs_show_the_run(cli, tmp_path: Path) -> None:
    write(tmp_path / "q.ipynb", notebook(("step:a", "a = 1")))
    run_id = json.loads(cli("run", "q.ipynb", "--json").stdout)["run_id"]
    status = json.loads(cli("status", run_id, "--json").stdout)
    assert status["state"] == "succeeded" and status["steps"]["a"]["state"] == "succeeded"
    listed = json.loads(cli("runs", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id]


def test_piped_tables_keep_each_run_on_one_line(cli, tmp_path: Path) -> None:
    name = "a_notebook_with_a_rather_long_name.ipynb"
    write(tmp_path / name, notebook(("step:a", "a = 1"), ("step:b", "print(a)")))
    run_id = json.loads(cli("run", name, "--json").stdout)["run_id"]
    row = next(line for line in cli("runs").stdout.splitlines() if run_id in line)
    assert name in row and "succeeded" in row and "2 succeeded" in row


def test_an_unknown_run_id_exits_2(cli) -> None:
    proc = cli("status", "20990101-000000-abcdef")
    assert proc.returncode == 2 and "no run 20990101-000000-abcdef" in proc.stderr
    proc = cli("logs", "../../etc", "passwd")
    assert proc.returncode == 2 and "is not a run id" in proc.stderr


def test_the_cli_starts_quickly(cli) -> None:
    cli("--version")  # warm the file cache
    t0 = time.perf_counter()
    proc = cli("--version")
    elapsed = time.perf_counter() - t0
    assert proc.stdout.strip() == "cellpipe, version 0.1.0"
    assert elapsed < 1.0  # about 0.1 s here; generous so a busy CI machine never flakes


def test_a_run_without_a_terminal_says_each_steps_state_on_stderr(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "p.ipynb",
        notebook(("step:load", "x = 1"), ("step:check", "assert x == 2, 'x is not 2'")),
    )
    proc = cli("run", "p.ipynb")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cellpipe: step ")]
    assert any(line.startswith("cellpipe: step load: succeeded in ") for line in lines), lines
    assert any(
        line.startswith("cellpipe: step check: failed in ")
        and line.endswith("(cell 2: AssertionError: x is not 2)")
        for line in lines
    ), lines
