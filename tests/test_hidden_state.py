"""Hidden state: one registry of providers, fingerprinted around every step.

A top-to-bottom run carries interpreter state from cell to cell that no variable holds: the
global random generators, the environment, library settings. These tests pin the registry
(every kind has a provider, each restores exactly, none imports a library), what a step
saves of it (only what it changed, owner-only), and the run-time check that makes a step
that drew from a generator inside a library start from the state notebook order gives.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

from cellpipe.core.pseudo import HIDDEN, Pseudo, file_name, parse
from cellpipe.execution.hidden_state import PROVIDERS
from cellpipe.rundir.runs import RunDir, list_runs
from nbbuild import notebook, write

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "kernel"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_every_kind_of_hidden_state_has_a_provider_and_every_provider_a_kind() -> None:
    assert {p.pseudo for p in PROVIDERS} == set(HIDDEN)


def test_pseudo_variables_have_one_parser() -> None:
    assert parse("x") is None
    assert parse("@random") == Pseudo("@random", "hidden")
    assert parse("@random").hidden is HIDDEN["@random"]  # type: ignore[union-attr]
    assert parse(file_name("data\\raw/../raw.csv")) == Pseudo(
        "@file:data/raw.csv", "file", "data/raw.csv"
    )


def test_a_provider_is_inactive_and_its_library_not_imported_until_the_notebook_imports_it() -> (
    None
):
    out = _python(
        "import sys\n"
        "from cellpipe.execution.hidden_state import fingerprints\n"
        "fp = fingerprints()\n"
        "print(fp['numpy.random'], fp['pandas.options'], 'numpy' in sys.modules, "
        "'pandas' in sys.modules)\n"
        "import numpy\n"
        "print(fingerprints()['numpy.random'] is not None)"
    )
    assert out.splitlines() == ["None None False False", "True"]


def test_each_library_setting_is_restored_exactly_by_its_provider() -> None:
    out = _python(
        "import logging, sys, warnings\n"
        "import matplotlib, numpy as np, pandas as pd, sklearn\n"
        "from cellpipe.execution import hidden_state as h\n"
        "names = [p.name for p in h.PROVIDERS]\n"
        "before, saved = h.fingerprints(), h.get_states(names)\n"
        "np.random.seed(3); matplotlib.rc('font', size=15); pd.set_option('display.max_rows', 4)\n"
        "sklearn.set_config(transform_output='pandas'); np.set_printoptions(precision=2)\n"
        "warnings.filterwarnings('ignore', message='q'); sys.setrecursionlimit(2345)\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "changed = h.fingerprints()\n"
        "print(sorted(n for n in names if changed[n] != before[n]))\n"
        "h.set_states(saved)\n"
        "after = h.fingerprints()\n"
        "print([n for n in names if after[n] != before[n]])\n"
        "print(matplotlib.rcParams['font.size'], pd.get_option('display.max_rows'), "
        "sklearn.get_config()['transform_output'], sys.getrecursionlimit())"
    )
    changed, differing, values = out.splitlines()
    assert changed == str(
        sorted(
            [
                "logging",
                "matplotlib.rcParams",
                "numpy.printoptions",
                "numpy.random",
                "pandas.options",
                "sklearn.config",
                "sys.recursionlimit",
                "warnings.filters",
            ]
        )
    )
    assert differing == "[]"
    assert values == "10.0 60 default 1000"


def _run(cli, tmp_path: Path, nb: dict, *args: str, env: dict | None = None) -> RunDir:
    path = write(tmp_path / "nb.ipynb", nb)
    proc = cli("run", str(path), "--jobs", "4", *args, env=env or {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rd,) = list_runs(tmp_path / "runs")
    return rd


def test_a_step_that_changes_the_environment_saves_only_the_variables_it_changed(
    cli, tmp_path: Path
) -> None:
    nb = notebook(
        ("imports", "import os"),
        ("step:configure", "os.environ['MODE'] = 'fast'\ndel os.environ['DROPPED']"),
        ("step:use", "print(os.environ['MODE'], 'DROPPED' in os.environ)"),
    )
    secret = "s3cr3t-value-of-the-server"
    rd = _run(cli, tmp_path, nb, env={"SERVER_TOKEN": secret, "DROPPED": "x"})
    data = rd.data_dir("configure")
    saved = b"".join(f.read_bytes() for f in data.iterdir())
    assert secret.encode() not in saved
    (record,) = [f for f in data.iterdir() if f.name.startswith("hidden-environ")]
    state = pickle.loads(record.read_bytes())
    assert state == {"environ": {"set": {"MODE": "fast"}, "unset": ["DROPPED"]}}
    outputs = json.loads(rd.outputs_path("use").read_text())["cells"]
    assert [o["text"] for c in outputs.values() for o in c["outputs"]] == ["fast False\n"]


def test_files_under_data_are_owner_only(cli, tmp_path: Path) -> None:
    nb = notebook(("step:a", "import os\nos.environ['K'] = '1'\nx = [1]"), ("step:b", "print(x)"))
    rd = _run(cli, tmp_path, nb)
    data = rd.path / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    for path in data.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


def _events(rd: RunDir, step: str) -> list[dict]:
    lines = (rd.path / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("step") == step]


DRAWS_INSIDE_A_LIBRARY = notebook(
    ("imports", "import time\nimport numpy as np\nfrom scipy import stats"),
    ("step:seed", "np.random.seed(0)"),
    # Draws as soon as it starts; the next step starts at the same time from the seed.
    ("step:early", "time.sleep(0.5)\nfirst = stats.norm.rvs(size=2)"),
    ("step:late", "second = stats.norm.rvs(size=2)"),
    ("step:free", "time.sleep(0.5)\nthird = 3"),
    ("step:show", "print(first.round(6), second.round(6), third)"),
)


def test_a_step_that_drew_from_the_wrong_generator_state_runs_again_in_notebook_order(
    cli, tmp_path: Path
) -> None:
    rd = _run(cli, tmp_path, DRAWS_INSIDE_A_LIBRARY)
    import numpy as np
    from scipy import stats

    np.random.seed(0)
    expected = f"{stats.norm.rvs(size=2).round(6)} {stats.norm.rvs(size=2).round(6)} 3\n"
    outputs = json.loads(rd.outputs_path("show").read_text())["cells"]
    assert [o["text"] for c in outputs.values() for o in c["outputs"]] == [expected]
    again = [e for e in _events(rd, "late") if "runs again" in e.get("message", "")]
    assert len(again) == 1
    assert "numpy.random" in again[0]["message"] and "step early" in again[0]["message"]
    # A step that touches no hidden state is never run again.
    assert [e["state"] for e in _events(rd, "free")] == ["pending", "running", "succeeded"]


def test_a_step_using_eval_or_globals_gets_every_earlier_name_with_a_warning(
    tmp_path: Path,
) -> None:
    from cellpipe.compiling.compiler import compile_notebook

    path = write(
        tmp_path / "nb.ipynb",
        notebook(("step:make", "a = 1\nb = 2"), ("step:use", "print(eval('a') + globals()['b'])")),
    )
    pipeline = compile_notebook(path)
    assert pipeline.step("use").inputs == {"a": "make", "b": "make"}
    (warning,) = [d for d in pipeline.diagnostics if d.code == "dynamic-names"]
    assert (warning.severity, warning.cell, warning.step) == ("warning", 2, "use")


def test_torch_generator_and_default_dtype_are_restored_exactly() -> None:
    out = _python(
        "import torch\n"
        "from cellpipe.execution import hidden_state as h\n"
        "rng, dtype = h.capture('@random'), h.capture('@torch.default_dtype')\n"
        "first = torch.rand(2).tolist()\n"
        "torch.set_default_dtype(torch.float64)\n"
        "h.restore('@random', rng); h.restore('@torch.default_dtype', dtype)\n"
        "print(torch.rand(2).tolist() == first, torch.get_default_dtype())"
    )
    assert out == "True torch.float32"


def test_branches_that_touch_no_hidden_state_run_in_parallel_beside_a_step_that_draws(
    cli, tmp_path: Path
) -> None:
    nb = notebook(
        ("imports", "import time\nimport numpy as np\nfrom scipy import stats"),
        ("step:load", "np.random.seed(0)\ndata = np.arange(4.0)"),
        ("step:left", "time.sleep(1)\nleft = data.sum()"),
        ("step:right", "time.sleep(1)\nright = data.max()"),
        ("step:noise", "noise = stats.norm.rvs(size=2)"),
        ("step:join", "print(left + right, noise.round(6))"),
    )
    rd = _run(cli, tmp_path, nb)

    def interval(step: str) -> tuple[float, float]:
        ts = {e["state"]: e["ts"] for e in _events(rd, step)}
        return ts["running"], ts["succeeded"]

    (l0, l1), (r0, r1) = interval("left"), interval("right")
    assert r0 < l1 and l0 < r1, "the two branches did not overlap"
    assert not [e for e in _events(rd, "left") + _events(rd, "right") if "again" in e["message"]]


def test_a_generator_seeded_in_the_step_that_imports_it_reaches_the_steps_after_it(
    cli, tmp_path: Path
) -> None:
    nb = notebook(
        ("step:seed", "import numpy as np\nnp.random.seed(0)"),
        # numpy is imported by scipy here, after the step started: it must start seeded.
        ("step:draw", "from scipy import stats\nprint(stats.norm.rvs(size=2).round(6))"),
    )
    rd = _run(cli, tmp_path, nb)
    import numpy as np
    from scipy import stats

    np.random.seed(0)
    expected = f"{stats.norm.rvs(size=2).round(6)}\n"
    outputs = json.loads(rd.outputs_path("draw").read_text())["cells"]
    assert [o["text"] for c in outputs.values() for o in c["outputs"]] == [expected]


def test_a_generator_a_step_merely_imports_is_not_a_change_the_next_steps_continue_from(
    cli, tmp_path: Path
) -> None:
    nb = notebook(
        ("step:load", "data = [1.0, 2.0]"),
        ("step:left", "import time\nimport numpy as np\ntime.sleep(0.5)\nleft = np.sum(data)"),
        ("step:right", "import numpy as np\nright = np.max(data)"),
        ("step:join", "print(left, right)"),
    )
    rd = _run(cli, tmp_path, nb)
    for step in ("left", "right"):
        assert (
            "numpy.random"
            not in json.loads((rd.data_dir(step) / "hidden.json").read_text())["changed"]
        )
    again = [e for s in ("left", "right", "join") for e in _events(rd, s)]
    assert not [e for e in again if "numpy.random" in e.get("message", "")]
    outputs = json.loads(rd.outputs_path("join").read_text())["cells"]
    assert [o["text"] for c in outputs.values() for o in c["outputs"]] == ["3.0 2.0\n"]


def test_estimators_displayed_by_parallel_steps_are_numbered_as_top_to_bottom(
    cli, tmp_path: Path
) -> None:
    # scikit-learn numbers the HTML of each displayed estimator with a process-wide counter.
    nb = notebook(
        ("step:first", "from sklearn.linear_model import LinearRegression\nLinearRegression()"),
        ("step:second", "from sklearn.tree import DecisionTreeRegressor\nDecisionTreeRegressor()"),
    )
    rd = _run(cli, tmp_path, nb)

    def container_ids(step: str) -> list[str]:
        cells = json.loads(rd.outputs_path(step).read_text())["cells"]
        html = "".join(o["data"]["text/html"] for c in cells.values() for o in c["outputs"])
        return re.findall(r'id="(sk-container-id-\d+)"', html)

    assert container_ids("first") == ["sk-container-id-1"]
    assert container_ids("second") == ["sk-container-id-2"]
