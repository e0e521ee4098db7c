"""cellpipe inside a real Jupyter kernel (nbclient): the magic, the live monitor, time travel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbbuild import notebook, write
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


def _pipeline(tmp_path: Path) -> Path:
    """Three steps; `wait` holds until the driving notebook creates `go`, so a test can
    look at the monitor while the run is still going."""
    return write(
        tmp_path / "other.ipynb",
        notebook(
            ("imports", "import os, time"),
            ("parameters", "k = 1"),
            ("step:a", "x = [k, k * 2]"),
            ("step:wait", "while not os.path.exists('go'):\n    time.sleep(0.05)\ny = sum(x)"),
            ("step:b", "print(y)"),
        ),
    )


def _execute(tmp_path: Path, *sources: str, allow_errors: bool = False) -> nbformat.NotebookNode:
    """Run ``sources`` as the cells of a notebook in a fresh kernel, in ``tmp_path``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return nb


def _printed(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _last_json(cell: Any) -> Any:
    return json.loads(_printed(cell).strip().splitlines()[-1])


def test_the_magic_runs_the_pipeline_without_blocking_and_the_widget_reaches_succeeded(
    tmp_path: Path, runs_root: Path
) -> None:
    _pipeline(tmp_path)
    nb = _execute(
        tmp_path,
        "%load_ext cellpipe",
        "m = %cellpipe run other.ipynb",
        # The cell above returned while step `wait` still waits for us: the kernel is free.
        "import json, time\n"
        "deadline = time.time() + 60\n"
        "while m.states['wait'] != 'running' and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps(m.states))",
        "open('go', 'w').close()\n"
        "m.wait(timeout=60)\n"
        "print(json.dumps({'states': m.states, 'run': m.state,\n"
        "    'boxes': {n: b.description for n, b in m.step_buttons.items()},\n"
        "    'cancel_disabled': m.cancel_button.disabled}))",
    )
    assert _last_json(nb.cells[2]) == {"a": "succeeded", "wait": "running", "b": "pending"}
    final = _last_json(nb.cells[3])
    assert final["states"] == {"a": "succeeded", "wait": "succeeded", "b": "succeeded"}
    assert final["run"] == "succeeded" and final["cancel_disabled"] is True
    assert all(final["boxes"][n].startswith(f"{n} · succeeded") for n in ("a", "wait", "b"))
    # The browser's copy of the widgets (what nbclient received over the kernel's comms)
    # shows the same: trait changes made by the monitor's thread reached the frontend.
    models = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    shown = [
        m["state"]["description"].split(" · ")
        for m in models.values()
        if m["model_name"] == "ButtonModel" and " · " in m["state"].get("description", "")
    ]
    assert {name: word.split()[0] for name, word in shown} == {
        "a": "succeeded",
        "wait": "succeeded",
        "b": "succeeded",
    }
    display = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in display[0]["data"]


def test_the_cancel_button_stops_the_run(tmp_path: Path, runs_root: Path) -> None:
    _pipeline(tmp_path)
    nb = _execute(
        tmp_path,
        "%load_ext cellpipe",
        "import json, time\n"
        "m = %cellpipe run other.ipynb\n"
        "deadline = time.time() + 60\n"
        "while m.states['wait'] != 'running' and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "m.cancel_button.click()  # what a click in the browser does\n"
        "m.wait(timeout=60)\n"
        "print(json.dumps([m.state, m.states]))",
    )
    assert _last_json(nb.cells[1]) == [
        "cancelled",
        {"a": "succeeded", "wait": "cancelled", "b": "cancelled"},
    ]


def test_the_magic_runs_the_kernels_own_notebook_by_default(
    tmp_path: Path, runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "mine.ipynb", notebook(("step:a", "x = 2"), ("step:b", "print(x * 21)"))
    )
    # What jupyter_server tells a notebook's kernel; ipykernel exposes it as `__session__`.
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    nb = _execute(
        tmp_path,
        "%load_ext cellpipe",
        "m = %cellpipe run\nm.wait(timeout=60)\nprint(m.rd.info()['notebook'], m.state)",
    )
    assert _printed(nb.cells[1]).split() == [str(path), "succeeded"]


def test_the_magic_says_to_name_the_notebook_when_the_kernel_cannot_tell(
    tmp_path: Path, runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = _execute(tmp_path, "%load_ext cellpipe", "%cellpipe run", allow_errors=True)
    # IPython shows a UsageError as one message, without a traceback into cellpipe.
    shown = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert shown.startswith("UsageError: cannot tell which notebook this kernel runs")
    assert "%cellpipe run path/to/notebook.ipynb" in shown
    assert "Traceback" not in shown


def test_load_returns_an_older_runs_value_after_a_newer_run_changed_it(
    tmp_path: Path, runs_root: Path
) -> None:
    _pipeline(tmp_path)
    (tmp_path / "go").touch()
    nb = _execute(
        tmp_path,
        "import cellpipe, json\n"
        "old = cellpipe.run('other.ipynb')\n"
        "new = cellpipe.run('other.ipynb', parameters={'k': 7})\n"
        "print(json.dumps([old.state.value, new.state.value,\n"
        "    cellpipe.load(old.run_id, 'a', 'x'), cellpipe.load(new.run_id, 'a', 'x'),\n"
        "    cellpipe.load(old.run_id, 'wait', 'y')]))",
    )
    assert _last_json(nb.cells[0]) == ["succeeded", "succeeded", [1, 2], [7, 14], 3]
    # In a kernel, cellpipe.run() shows the live monitor while it waits.
    widgets = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert len(widgets) == 2


def test_runs_is_a_dataframe_of_runs_with_parameters_state_durations_and_metrics(
    tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "scored.ipynb",
        notebook(
            ("parameters", "k = 1"),
            ("step:train", "score = 0.5 + k / 10"),
            ("metrics", "score"),
        ),
    )
    nb = _execute(
        tmp_path,
        "import cellpipe, json\n"
        "first = cellpipe.run('scored.ipynb')\n"
        "second = cellpipe.run('scored.ipynb', parameters={'k': 3})\n"
        "df = cellpipe.runs('scored.ipynb')\n"
        "print(json.dumps({'index': df.index.name, 'ids': list(df.index),\n"
        "    'columns': list(df.columns), 'first': [first.run_id, second.run_id],\n"
        "    'k': list(df['param.k']), 'score': list(df['metric.score']),\n"
        "    'state': list(df['state']), 'started': str(df['started'].dtype),\n"
        "    'durations': bool((df['duration.train'] > 0).all())}))",
    )
    got = _last_json(nb.cells[0])
    first, second = got["first"]
    assert got["index"] == "run_id" and got["ids"] == [second, first]  # newest first
    assert got["columns"] == [
        "notebook",
        "state",
        "started",
        "duration_s",
        "backend",
        "user",
        "via",
        "param.k",
        "metric.score",
        "duration.train",
        "duration.metrics",
    ]
    assert got["k"] == [3, 1] and got["score"] == pytest.approx([0.8, 0.6])
    assert got["state"] == ["succeeded", "succeeded"]
    assert got["started"].startswith("datetime64") and got["durations"]
