"""On the real cluster, Argo runs do what local runs do: gates the controller itself obeys,
unchanged steps reused from an earlier run on the same claim, and parameters given in
Argo's own terms (``spec.arguments.parameters``). Fixtures and helpers are
``tests/test_argo_cluster.py``'s; each notebook is small, so each test takes a few pods."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cellpipe.backends.argo.manifest import to_yaml
from nbbuild import notebook, write
from oracle import differences, run_pipeline, run_top_to_bottom
from test_argo_cluster import (  # noqa: F401  (cluster: the fixture)
    _cellpipe,
    _kubectl,
    _pods,
    _push_images,
    _run,
    _step_states,
    _wait,
    _workflows,
    cluster,
)

pytestmark = pytest.mark.usefixtures("cluster")


def _run_dirs(runs: Path) -> list[Path]:
    """The run directories under ``runs`` (not the cache index beside them)."""
    return [d for d in runs.iterdir() if not d.name.startswith(".")]


def _local_states(nb: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """The same notebook run by the local backend, in a folder of its own."""
    here = nb.parent / "local"
    here.mkdir()
    copy = here / nb.name
    shutil.copy(nb, copy)
    proc = _cellpipe("run", str(copy), "--json", *extra, cwd=here)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (run_dir,) = _run_dirs(here / "runs")
    return _step_states(run_dir)


def test_a_closed_gate_skips_every_step_downstream_in_the_controller_with_its_reason(
    tmp_path: Path,
) -> None:
    nb = write(
        tmp_path / "gated.ipynb",
        notebook(
            ("step:evaluate gate:accuracy>=0.9", "accuracy = 0.5"),
            ("step:deploy", "deployed = accuracy * 2\nprint('deployed')"),
            ("step:announce", "print('announced', deployed)"),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / result["run_id"])
    reason = "gate accuracy>=0.9 closed: accuracy=0.5 (step evaluate)"
    assert states["evaluate"]["state"] == "succeeded"
    assert states["evaluate"]["message"] == reason
    assert {s: states[s]["state"] for s in ("deploy", "announce")} == {
        "deploy": "skipped",
        "announce": "skipped",
    }
    assert states["deploy"]["message"] == states["announce"]["message"] == reason
    # The controller skipped them: no pod was made for a step behind the gate.
    pods = _pods(result["run_id"])
    assert sorted(p["metadata"]["labels"]["cellpipe.io/step"] for p in pods) == ["evaluate"]
    # Exactly what the local backend says of the same notebook.
    local = _local_states(nb)
    assert {s: (v["state"], v["message"]) for s, v in local.items()} == {
        s: (v["state"], v["message"]) for s, v in states.items()
    }


def _claim_notebook(path: Path, total: str) -> Path:
    return write(
        path,
        notebook(
            ("step:make", "x = list(range(5))"),
            ("step:total", total),
            ("step:show", "print('double', y * 2)"),
            metadata={
                "cellpipe": {"argo": {"existing_claim": os.environ["CELLPIPE_CLUSTER_CLAIM"]}}
            },
        ),
    )


def test_an_unchanged_rerun_on_an_existing_claim_is_all_cached_and_starts_no_pod(
    tmp_path: Path,
) -> None:
    nb = _claim_notebook(tmp_path / "again.ipynb", "y = sum(x)")
    _push_images(nb)
    first, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout

    started = time.monotonic()
    second, proc = _run(nb)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / second["run_id"])
    assert {s: v["state"] for s, v in states.items()} == dict.fromkeys(states, "cached")
    assert all(v["message"] == f"unchanged since run {first['run_id']}" for v in states.values())
    assert _workflows(second["run_id"]) == [] and _pods(second["run_id"]) == []
    log = (tmp_path / "runs" / second["run_id"] / "logs" / "show.log").read_text()
    assert "double 20" in log
    print(f"fully cached re-run on argo: {took:.1f}s, no workflow")


def test_changing_one_cell_reruns_only_that_step_and_downstream_reading_cached_values(
    tmp_path: Path,
) -> None:
    nb = _claim_notebook(tmp_path / "edit.ipynb", "y = sum(x)")
    _push_images(nb)
    first, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout

    _claim_notebook(nb, "y = sum(x) + 1")
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(nb, ref / nb.name)
    executed, proc = run_pipeline(nb, tmp_path, None, ("--backend", "argo"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (second,) = [d for d in _run_dirs(tmp_path / "runs") if d.name != first["run_id"]]
    states = _step_states(second)
    assert {s: v["state"] for s, v in states.items()} == {
        "make": "cached",
        "total": "succeeded",
        "show": "succeeded",
    }
    steps = sorted(p["metadata"]["labels"]["cellpipe.io/step"] for p in _pods(second.name))
    assert steps == ["show", "total"]
    # `total` read `x` from the first run's folder on the claim: outputs as top to bottom.
    problems = differences(run_top_to_bottom(ref / nb.name), executed)
    assert not problems, "argo outputs differ from top to bottom:\n" + "\n".join(problems)


def test_cache_false_and_no_cache_run_again_on_argo_as_locally(tmp_path: Path) -> None:
    nb = write(
        tmp_path / "nocache.ipynb",
        notebook(
            ("step:make", "x = list(range(5))"),
            ("step:side cache:false", "print('side', sum(x))"),
            metadata={
                "cellpipe": {"argo": {"existing_claim": os.environ["CELLPIPE_CLUSTER_CLAIM"]}}
            },
        ),
    )
    _push_images(nb)
    _, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    second, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / second["run_id"])
    assert {s: v["state"] for s, v in states.items()} == {"make": "cached", "side": "succeeded"}
    third, proc = _run(nb, "--no-cache")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / third["run_id"])
    assert {s: v["state"] for s, v in states.items()} == {"make": "succeeded", "side": "succeeded"}


def test_a_workflow_created_with_new_arguments_computes_what_cellpipe_run_p_computes(
    tmp_path: Path,
) -> None:
    nb = write(
        tmp_path / "params.ipynb",
        notebook(
            ("parameters", "n = 3\nlabel = 'small'"),
            ("step:count", "total = sum(range(n))"),
            ("step:show", "print('result', label, total)"),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb, "-p", "n=7", "-p", "label=big")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    log = (tmp_path / "runs" / result["run_id"] / "logs" / "show.log").read_text()
    (expected,) = [line for line in log.splitlines() if line.startswith("result ")]
    assert expected == "result big 21"

    # The manifest `cellpipe compile --target argo` writes, its arguments changed as one
    # changes them in Argo's UI or with `argo submit -p`, created through the API.
    compiled = _cellpipe("compile", str(nb), "--target", "argo", "-o", "wf.yaml", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    doc = yaml.safe_load((tmp_path / "wf.yaml").read_text())
    arguments = {p["name"]: p for p in doc["spec"]["arguments"]["parameters"]}
    assert set(arguments) == {"n", "label"}
    arguments["n"]["value"] = "7"
    arguments["label"]["value"] = "big"
    (tmp_path / "wf.yaml").write_text(to_yaml(doc))
    created = _kubectl("create", "-f", str(tmp_path / "wf.yaml"), "-o", "json")
    name = json.loads(created.stdout)["metadata"]["name"]
    try:
        phase = _wait(
            f"workflow {name} to end",
            300,
            lambda: (
                json.loads(_kubectl("get", "workflow", name, "-o", "json").stdout)
                .get("status", {})
                .get("phase")
                in ("Succeeded", "Failed", "Error")
                and json.loads(_kubectl("get", "workflow", name, "-o", "json").stdout)["status"][
                    "phase"
                ]
            ),
        )
        assert phase == "Succeeded"
        pods = json.loads(
            _kubectl(
                "get",
                "pods",
                "-l",
                f"workflows.argoproj.io/workflow={name},cellpipe.io/step=show",
                "-o",
                "json",
                admin=True,
            ).stdout
        )["items"]
        (pod,) = pods
        text = _kubectl("logs", pod["metadata"]["name"], "-c", "main", admin=True).stdout
        got = [line for line in text.splitlines() if line.startswith("result ")]
        assert got == [expected]
    finally:
        _kubectl("delete", "workflow", name, "--wait=false", admin=True, check=False)


def test_cellpipe_load_of_a_run_on_an_existing_claim_equals_the_local_runs_values(
    tmp_path: Path,
) -> None:
    import cellpipe
    from test_argo_cluster_s3 import CELLS, local_values

    claim = {"cellpipe": {"argo": {"existing_claim": os.environ["CELLPIPE_CLUSTER_CLAIM"]}}}
    nb = write(tmp_path / "points.ipynb", notebook(*CELLS, metadata=claim))
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    names = (("make", "arr"), ("make", "frame"), ("make", "p"), ("total", "total"))
    local = local_values(nb, names)
    started = time.monotonic()
    got = {n: cellpipe.load(result["run_id"], s, n, runs_root=tmp_path / "runs") for s, n in names}
    took = time.monotonic() - started
    assert (got["arr"] == local["arr"]).all() and got["arr"].dtype == local["arr"].dtype
    assert got["frame"].equals(local["frame"])
    assert type(got["p"]).__name__ == "Point" and vars(got["p"]) == vars(local["p"])
    assert got["total"] == local["total"]
    # two steps' folders, each read by a one-pod Workflow
    print(f"load from the claim: {took:.1f}s for 2 steps")


def test_loading_from_a_succeeded_run_whose_own_volume_argo_deleted_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    import cellpipe
    from cellpipe.backends.argo.values import ValuesUnavailable

    nb = write(tmp_path / "own.ipynb", notebook(("step:make", "x = 41"), ("step:use", "x + 1")))
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with pytest.raises(ValuesUnavailable) as err:
        cellpipe.load(result["run_id"], "make", "x", runs_root=tmp_path / "runs")
    message = str(err.value)
    assert "\n" not in message and "when its Workflow succeeded" in message, message
    assert "existing_claim" in message and "s3" in message


def test_a_kale_pvc_volume_is_mounted_in_every_step_at_its_mount_point(tmp_path: Path) -> None:
    name = f"kale-{tmp_path.name}.txt"
    nb = write(
        tmp_path / "kale.ipynb",
        notebook(
            ("step:write", f"open('/mnt/shared/{name}', 'w').write('from write')"),
            (
                "step:read prev:write",
                f"import os\nprint('read:', open('/mnt/shared/{name}').read())\n"
                f"os.remove('/mnt/shared/{name}')",
            ),
            metadata={
                "kubeflow_notebook": {
                    "volumes": [
                        {
                            "type": "pvc",
                            "name": os.environ["CELLPIPE_CLUSTER_CLAIM"],
                            "mount_point": "/mnt/shared",
                        }
                    ]
                }
            },
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    log = (tmp_path / "runs" / result["run_id"] / "logs" / "read.log").read_text()
    assert "read: from write" in log
