"""Gates (`gate:EXPR` stops downstream steps), lineage of stored values, the audit trail."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import cellpipe
import pytest
from nbbuild import notebook, write


def _gated(tmp_path: Path) -> Path:
    return write(
        tmp_path / "gated.ipynb",
        notebook(
            ("parameters", "quality = 0.85"),
            ("step:train", "model = {'weights': [1, 2]}"),
            ("step:evaluate gate:accuracy>=0.9", "accuracy = quality"),
            ("step:deploy", "print('deploying', model, accuracy)\ndeployed = True"),
            ("step:notify", "print('deployed' if deployed else 'no')"),
            ("step:report", "print('model has', len(model['weights']), 'weights')"),
        ),
    )


def _states(status: cellpipe.RunStatus) -> dict[str, str]:
    return {n: s.state.value for n, s in status.steps.items()}


def test_a_closed_gate_skips_every_downstream_step_with_the_reason(
    tmp_path: Path, runs_root: Path
) -> None:
    status = cellpipe.run(_gated(tmp_path))
    assert _states(status) == {
        "train": "succeeded",
        "evaluate": "succeeded",
        "deploy": "skipped",
        "notify": "skipped",
        "report": "succeeded",  # not downstream of the gate
    }
    reason = "gate accuracy>=0.9 closed: accuracy=0.85 (step evaluate)"
    assert status.steps["deploy"].message == reason
    assert status.steps["notify"].message == reason
    assert status.state is cellpipe.State.SUCCEEDED  # a closed gate is a verdict, not a failure


def test_an_open_gate_lets_downstream_steps_run(tmp_path: Path, runs_root: Path) -> None:
    status = cellpipe.run(_gated(tmp_path), parameters={"quality": 0.95})
    assert set(_states(status).values()) == {"succeeded"}
    assert status.steps["evaluate"].message == (
        "gate accuracy>=0.9 open: accuracy=0.95 (step evaluate)"
    )


def test_a_backend_that_starts_every_step_still_skips_behind_a_closed_gate(
    tmp_path: Path, runs_root: Path
) -> None:
    """As an Argo pod would: the runner itself refuses to run behind a closed gate."""
    from cellpipe.execution.runner import run_step
    from cellpipe.rundir.runs import RunDir

    status = cellpipe.run(_gated(tmp_path))
    rd = RunDir(runs_root / status.run_id)
    assert run_step(rd, "deploy", attempt=2) == 0
    assert run_step(rd, "notify", attempt=2) == 0
    reason = "gate accuracy>=0.9 closed: accuracy=0.85 (step evaluate)"
    last = {ev.step: (ev.state.value, ev.attempt, ev.message) for ev in rd.events()}
    assert last["deploy"] == ("skipped", 2, reason)
    assert last["notify"] == ("skipped", 2, reason)


def test_a_gate_step_reused_from_the_cache_keeps_its_verdict(
    tmp_path: Path, runs_root: Path
) -> None:
    nb = _gated(tmp_path)
    cellpipe.run(nb)
    again = cellpipe.run(nb)
    assert again.steps["evaluate"].state is cellpipe.State.CACHED
    assert again.steps["deploy"].state is cellpipe.State.SKIPPED


@pytest.mark.parametrize(
    ("tag", "complaint"),
    [
        ("gate:__import__('os').system('x')", "function calls are not allowed"),
        ("gate:model.score>0.9", "attribute access are not allowed"),
        ("gate:accuracy>=", "is not a Python expression"),
    ],
)
def test_an_unsafe_or_broken_gate_is_a_compile_error_naming_the_cell(
    tmp_path: Path, tag: str, complaint: str
) -> None:
    write(
        tmp_path / "bad.ipynb",
        notebook(("step:a", "accuracy = 1.0"), (f"step:b {tag}", "score = accuracy")),
    )
    with pytest.raises(cellpipe.CompileError) as err:
        cellpipe.compile(tmp_path / "bad.ipynb")
    (d,) = err.value.diagnostics
    assert (d.cell, d.code) == (2, "invalid-tag")
    assert complaint in d.message


def test_a_gate_reading_a_name_its_step_lacks_fails_the_step_and_says_so(
    tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "typo.ipynb",
        notebook(
            ("step:evaluate gate:acuracy>0.5", "accuracy = 1.0"),
            ("step:deploy prev:evaluate", "pass"),
        ),
    )
    status = cellpipe.run(tmp_path / "typo.ipynb")
    assert _states(status) == {"evaluate": "failed", "deploy": "skipped"}
    assert "step evaluate does not define `acuracy`" in status.steps["evaluate"].message


# -- lineage -----------------------------------------------------------------------------


def _chain(tmp_path: Path) -> Path:
    return write(
        tmp_path / "chain.ipynb",
        notebook(
            ("parameters", "scale = 2\nlabel = 'v1'"),
            ("step:load", "raw = [1, 2, 3]"),
            ("step:clean", "clean = [v * scale for v in raw]"),
            ("step:summarise", "total = sum(clean)"),
            ("step:publish", "print(label, total)"),
        ),
    )


def test_lineage_of_a_value_two_steps_downstream_goes_back_to_the_parameters(
    tmp_path: Path, runs_root: Path, cli
) -> None:
    run = cellpipe.run(_chain(tmp_path))
    proc = cli("lineage", run.run_id, "summarise", "total", "--json", check=True)
    total = json.loads(proc.stdout)
    assert (total["name"], total["step"], total["type"]) == ("total", "summarise", "builtins.int")
    (clean,) = total["inputs"]
    assert (clean["name"], clean["step"]) == ("clean", "clean")
    (raw,) = clean["inputs"]
    assert (raw["name"], raw["step"], raw["inputs"]) == ("raw", "load", [])
    assert total["parameters"] == {"scale": 2, "label": "v1"}
    # Each link names the content it was: the hashes the producers saved.
    manifest = json.loads((runs_root / run.run_id / "data/clean/manifest.json").read_text())
    assert clean["sha256"] == manifest["clean"]["sha256"]


def test_lineage_is_printed_as_a_tree_for_people(tmp_path: Path, runs_root: Path, cli) -> None:
    run = cellpipe.run(_chain(tmp_path))
    out = cli("lineage", run.run_id, "summarise", "total", check=True).stdout
    assert "scale=2" in out
    lines = [line for line in out.splitlines() if "made by step" in line]
    assert [line.split("made by step ")[1].split()[0] for line in lines] == [
        "summarise",
        "clean",
        "load",
    ]


def test_lineage_of_a_cached_step_names_the_run_that_computed_it(
    tmp_path: Path, runs_root: Path
) -> None:
    first = cellpipe.run(_chain(tmp_path))
    second = cellpipe.run(_chain(tmp_path), parameters={"scale": 3})
    from cellpipe.execution.lineage import ancestry

    total = ancestry(runs_root, second.run_id, "summarise", "total")
    raw = total.inputs[0].inputs[0]
    assert second.steps["load"].state is cellpipe.State.CACHED
    assert (raw.run, raw.computed_in) == (second.run_id, first.run_id)
    assert total.computed_in == second.run_id  # scale changed: recomputed


def test_lineage_of_an_unknown_value_lists_what_the_step_saved(
    tmp_path: Path, runs_root: Path, cli
) -> None:
    run = cellpipe.run(_chain(tmp_path))
    proc = cli("lineage", run.run_id, "clean", "nope")
    assert proc.returncode == 2
    assert "saved no `nope`; it saved: clean" in proc.stderr


def test_a_new_parameter_value_reruns_only_the_steps_that_read_it(
    tmp_path: Path, runs_root: Path
) -> None:
    cellpipe.run(_chain(tmp_path))
    status = cellpipe.run(_chain(tmp_path), parameters={"label": "v2"})
    assert _states(status) == {
        "load": "cached",
        "clean": "cached",
        "summarise": "cached",
        "publish": "succeeded",  # the only step that reads `label`
    }


# -- audit -------------------------------------------------------------------------------


def test_every_run_records_who_started_it_from_where_and_how(
    tmp_path: Path, runs_root: Path, cli
) -> None:
    nb = _chain(tmp_path)
    cli("run", str(nb), "-p", "scale=5", check=True)
    (run_dir,) = [p for p in runs_root.iterdir() if not p.name.startswith(".")]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["user"] and info["host"] == socket.gethostname()
    assert info["via"] == "cli"
    assert info["cwd"] == str(tmp_path)
    assert info["notebook"] == str(nb.resolve())
    assert info["parameters"] == {"scale": 5}
    assert info["backend"] == "local"
    assert info["engine_version"] == cellpipe.__version__
    assert len(info["notebook_sha256"]) == 64


def test_stored_values_record_their_run_step_code_and_input_hashes(
    tmp_path: Path, runs_root: Path
) -> None:
    run = cellpipe.run(_chain(tmp_path))
    data = runs_root / run.run_id / "data"
    lineage = json.loads((data / "clean" / "lineage.json").read_text())
    raw_sha = json.loads((data / "load" / "manifest.json").read_text())["raw"]["sha256"]
    assert lineage["run"] == run.run_id and lineage["step"] == "clean"
    assert lineage["inputs"] == {"raw": {"step": "load", "run": run.run_id, "sha256": raw_sha}}
    assert len(lineage["code_sha256"]) == 64 and set(lineage["values"]) == {"clean"}
    assert os.environ["CELLPIPE_RUNS_ROOT"] == str(runs_root)
