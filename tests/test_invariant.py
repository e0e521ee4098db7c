"""The invariant: a pipeline run computes what "Restart and Run All" computes.

Each adversarial notebook in tests/notebooks/ runs top to bottom with nbclient and a real
kernel, then as a pipeline with `cellpipe run --output`; every cell's outputs must match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from notebooks.make import NOTEBOOKS, PARAMETERS
from oracle import comparable, run_pipeline, run_top_to_bottom

HERE = Path(__file__).parent / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_pipeline_outputs_equal_top_to_bottom_outputs(name: str, tmp_path: Path) -> None:
    path = HERE / f"{name}.ipynb"
    params = PARAMETERS.get(name)
    expected = comparable(run_top_to_bottom(path, params))
    executed, proc = run_pipeline(path, tmp_path, params)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    actual = comparable(executed)
    assert list(actual) == list(expected), "cells differ"
    for number, cell_id in enumerate(expected, start=1):
        assert actual[cell_id] == expected[cell_id], f"outputs of code cell {number} ({cell_id})"


def test_parallel_writers_warn_on_stderr_naming_the_variable(tmp_path: Path) -> None:
    _, proc = run_pipeline(HERE / "parallel_writers.ipynb", tmp_path)
    assert proc.returncode == 0
    assert "warning" in proc.stderr and "`x`" in proc.stderr
    assert "step c gets b's version" in proc.stderr
