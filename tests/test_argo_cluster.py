"""The Argo backend end to end on a real cluster: `.ci/cluster up`'s API server, Argo's own
workflow-controller and argoexec, a real kubelet running the pods in containerd, a local
registry the kubelet pulls the step images from, and a hostPath provisioner for the run
volumes (see CONTRIBUTING.md, "The Argo cluster").

The cluster is found through the shell file `.ci/cluster up` prints (`CELLPIPE_CLUSTER_ENV`,
else the harness's default path). Without it these tests are skipped, saying how to start
it, except under CI (`CI` set), where a missing cluster is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from oracle import REPO, differences, run_pipeline, run_top_to_bottom

DEFAULT_ENV = Path(
    os.environ.get("CELLPIPE_CLUSTER_STATE", "/var/lib/cellpipe-cluster")
) / "env.sh"


def _env_file() -> Path | None:
    given = os.environ.get("CELLPIPE_CLUSTER_ENV")
    path = Path(given) if given else DEFAULT_ENV
    return path if path.is_file() else None


def _load(path: Path) -> dict[str, str]:
    """The variables sourcing ``path`` sets (as a user's shell would have them)."""
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "_", str(path)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    path = _env_file()
    if path is None:
        why = (
            "no Argo cluster: run `.ci/cluster up` and source the file it prints "
            f"(CELLPIPE_CLUSTER_ENV is unset and {DEFAULT_ENV} does not exist)"
        )
        if os.environ.get("CI"):
            pytest.fail(why + "; under CI the cluster must be up", pytrace=False)
        pytest.skip(why)
    env = _load(path)
    saved = dict(os.environ)
    keep = ("KUBECONFIG", "PATH")
    os.environ.update({k: v for k, v in env.items() if k.startswith("CELLPIPE_CLUSTER_") or k in keep})
    os.environ["CELLPIPE_ARGO_POLL"] = "2"
    probe = _kubectl("get", "--raw", "/readyz", admin=True, check=False)
    if probe.returncode != 0:
        pytest.fail(f"the cluster of {path} does not answer: {probe.stderr.strip()}", pytrace=False)
    yield env
    os.environ.clear()
    os.environ.update(saved)


def _kubectl(*args: str, admin: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    config = os.environ["CELLPIPE_CLUSTER_ADMIN_KUBECONFIG" if admin else "KUBECONFIG"]
    return subprocess.run(
        ["kubectl", "--kubeconfig", config, "-n", os.environ["CELLPIPE_CLUSTER_NAMESPACE"], *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def _cellpipe(*args: str, cwd: Path, timeout: float = 420, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, CELLPIPE_RUNS_ROOT=str(cwd / "runs"), **env)
    full["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "cellpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        timeout=timeout,
    )


def _push_images(nb: Path) -> None:
    """`cellpipe image build --registry ... --push`, as a user does before a run."""
    proc = _cellpipe(
        "image", "build", "--registry", os.environ["CELLPIPE_CLUSTER_REGISTRY"], "--push", str(nb),
        cwd=nb.parent,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def _run(nb: Path, *extra: str, **env: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    proc = _cellpipe("run", str(nb), "--backend", "argo", "--json", *extra, cwd=nb.parent, **env)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout), proc


def _step_states(run_dir: Path) -> dict[str, dict[str, Any]]:
    """`cellpipe status --json`'s steps: state, duration_s, attempts, cached, message."""
    proc = _cellpipe("status", run_dir.name, "--json", cwd=run_dir.parent.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["steps"]


def test_the_example_runs_on_the_cluster_and_prints_what_a_top_to_bottom_run_prints(
    cluster, tmp_path: Path
) -> None:
    work = tmp_path / "wine"
    work.mkdir()
    nb = work / "wine.ipynb"
    shutil.copy(REPO / "examples" / "wine.ipynb", nb)
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(nb, ref / "wine.ipynb")
    _push_images(nb)

    started = time.monotonic()
    executed, proc = run_pipeline(nb, work, None, ("--backend", "argo"))
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert executed is not None, "--output wrote no executed notebook"
    problems = differences(run_top_to_bottom(ref / "wine.ipynb"), executed)
    assert not problems, "argo outputs differ from top to bottom:\n" + "\n".join(problems)

    (run_dir,) = (work / "runs").iterdir()
    states = _step_states(run_dir)
    assert states and all(s["state"] == "succeeded" for s in states.values()), states
    for step in states:
        assert (run_dir / "logs" / f"{step}.log").exists(), step
        assert (run_dir / "outputs" / f"{step}.json").exists(), step
    print(f"wine on argo: {took:.1f}s for {len(states)} steps")


def test_a_step_over_its_memory_limit_fails_saying_oomkilled(cluster, tmp_path: Path) -> None:
    nb = write(
        tmp_path / "oom.ipynb",
        notebook(
            ("step:fill limit:memory:64Mi", "blob = bytearray(400 * 1024 * 1024)\nprint(len(blob))"),
            ("step:after", "print('never')"),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode != 0
    states = _step_states(tmp_path / "runs" / result["run_id"])
    assert states["fill"]["state"] == "failed", states
    assert "OOMKilled" in (states["fill"]["message"] or ""), states["fill"]


def test_a_user_who_may_not_create_workflows_gets_one_line_naming_verb_and_resource(
    cluster, tmp_path: Path
) -> None:
    nb = write(tmp_path / "nope.ipynb", notebook(("step:one", "print(1)")))
    proc = _cellpipe(
        "run", str(nb), "--backend", "argo", cwd=tmp_path,
        KUBECONFIG=os.environ["CELLPIPE_CLUSTER_VIEWER_KUBECONFIG"],
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "403" in line]
    assert len(lines) == 1, proc.stderr
    assert "create" in lines[0] and "workflows" in lines[0], lines[0]
