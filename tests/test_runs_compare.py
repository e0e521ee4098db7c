"""`cellpipe runs NB --compare ID ID…`: the sidebar's Compare tab on the command line."""

from __future__ import annotations

import json
from pathlib import Path

from nbbuild import notebook, write

SCALED = notebook(
    ("parameters", "scale = 2"),
    ("step:compute", 'total = sum(range(10)) * scale\nprint(f"total {total}")'),
    ("metrics", "total"),
)


def run_ids(cli, path: Path) -> list[str]:
    listed = cli("runs", str(path), "--json", check=True)
    return [r["run_id"] for r in json.loads(listed.stdout)]  # newest first


def test_compare_marks_the_differing_parameter_metric_and_cached_step(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "scaled.ipynb", SCALED)
    cli("run", str(path), check=True)
    cli("run", str(path), "-p", "scale=3", check=True)
    cli("run", str(path), "-p", "scale=3", check=True)  # same inputs: compute is reused
    third, second, first = run_ids(cli, path)

    data = json.loads(
        cli("runs", str(path), "--compare", first, second, "--json", check=True).stdout
    )
    assert [r["run_id"] for r in data["runs"]] == [first, second]
    assert [r["parameters"]["scale"] for r in data["runs"]] == [2, 3]
    assert [r["metrics"]["total"] for r in data["runs"]] == [90, 135]
    assert data["differs"] == ["param:scale", "metric:total"]

    reused = json.loads(
        cli("runs", str(path), "--compare", second, third, "--json", check=True).stdout
    )
    assert reused["runs"][1]["steps"]["compute"]["cached"] is True
    assert "step:compute" in reused["differs"] and "param:scale" not in reused["differs"]

    table = cli("runs", str(path), "--compare", first, second, third, check=True).stdout
    assert "≠ scale" in table and "≠ total" in table and "≠ compute (step)" in table
    assert "reused" in table and "ran" in table


def test_compare_needs_two_runs_of_the_notebook(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "scaled.ipynb", SCALED)
    other = write(tmp_path / "other.ipynb", SCALED)
    cli("run", str(path), check=True)
    cli("run", str(other), check=True)
    (mine,) = run_ids(cli, path)
    (theirs,) = run_ids(cli, other)

    one = cli("runs", str(path), "--compare", mine)
    assert one.returncode == 2 and "two or more" in one.stderr
    foreign = cli("runs", str(path), "--compare", mine, theirs)
    assert foreign.returncode == 2 and f"not runs of {path}: {theirs}" in foreign.stderr
    unknown = cli("runs", str(path), "--compare", mine, "20990101-000000-abcdef")
    assert unknown.returncode == 2 and "no run 20990101-000000-abcdef" in unknown.stderr
