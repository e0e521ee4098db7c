"""The TypeScript unit tests (jest, as the JupyterLab extension template runs them) are part of
the suite, so `pytest` and CI run them too: the sidebar's pure logic (tags, states, layout,
literals, colours) is checked on every change, not only when someone remembers `jlpm test`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_labextensions_jest_suite_passes() -> None:
    jlpm = shutil.which("jlpm")
    assert jlpm, "jlpm not found: it comes with jupyterlab (`pip install -e '.[test]'`)"
    assert (REPO / "node_modules").is_dir(), (
        "node_modules is missing: `pip install -e .` runs `jlpm install` (or run it yourself)"
    )
    done = subprocess.run(
        [jlpm, "test", "--ci"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    summary = next(line for line in report.splitlines() if line.startswith("Tests:"))
    assert "passed" in summary and "failed" not in summary, summary
