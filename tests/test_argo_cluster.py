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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from notebooks.make import CASES
from oracle import (
    REJECTED,
    REPO,
    copy_case,
    differences,
    invariant_case,
    run_pipeline,
    run_top_to_bottom,
)

DEFAULT_ENV = Path(os.environ.get("CELLPIPE_CLUSTER_STATE", "/var/lib/cellpipe-cluster")) / "env.sh"


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
    os.environ.update(
        {k: v for k, v in env.items() if k.startswith("CELLPIPE_CLUSTER_") or k in keep}
    )
    os.environ["CELLPIPE_ARGO_POLL"] = "2"
    probe = _kubectl("get", "--raw", "/readyz", admin=True, check=False)
    if probe.returncode != 0:
        pytest.fail(f"the cluster of {path} does not answer: {probe.stderr.strip()}", pytrace=False)
    yield env
    os.environ.clear()
    os.environ.update(saved)


def _kubectl(
    *args: str, admin: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    config = os.environ["CELLPIPE_CLUSTER_ADMIN_KUBECONFIG" if admin else "KUBECONFIG"]
    return subprocess.run(
        ["kubectl", "--kubeconfig", config, "-n", os.environ["CELLPIPE_CLUSTER_NAMESPACE"], *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def _cellpipe(
    *args: str, cwd: Path, timeout: float = 420, **env: str
) -> subprocess.CompletedProcess[str]:
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
        "image",
        "build",
        "--registry",
        os.environ["CELLPIPE_CLUSTER_REGISTRY"],
        "--push",
        str(nb),
        cwd=nb.parent,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def _run(
    nb: Path, *extra: str, **env: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
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
            (
                "step:fill limit:memory:64Mi",
                "blob = bytearray(400 * 1024 * 1024)\nprint(len(blob))",
            ),
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
        "run",
        str(nb),
        "--backend",
        "argo",
        cwd=tmp_path,
        KUBECONFIG=os.environ["CELLPIPE_CLUSTER_VIEWER_KUBECONFIG"],
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "403" in line]
    assert len(lines) == 1, proc.stderr
    assert "create" in lines[0] and "workflows" in lines[0], lines[0]


def _workflows(run_id: str) -> list[dict[str, Any]]:
    out = _kubectl(
        "get", "workflows", "-l", f"cellpipe.io/run-id={run_id}", "-o", "json", admin=True
    ).stdout
    return json.loads(out)["items"]


def _pods(run_id: str, *selectors: str) -> list[dict[str, Any]]:
    """The step pods of every Workflow of the run (its pods carry only the step's label, not
    the run's: Argo does not copy a Workflow's labels to its pods; the pod unpacking the
    notebook's folder has no step label)."""
    pods = []
    for wf in _workflows(run_id):
        selector = ",".join(
            [
                f"workflows.argoproj.io/workflow={wf['metadata']['name']}",
                "cellpipe.io/step",
                *selectors,
            ]
        )
        out = _kubectl("get", "pods", "-l", selector, "-o", "json", admin=True).stdout
        pods += json.loads(out)["items"]
    return pods


def _wait(what: str, seconds: float, check) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds:.0f} s")


def _run_with_a_running_pod(runs: Path) -> str:
    """The id of the one run under ``runs``, once one of its step pods is Running."""
    run_id = _wait(
        "the run directory", 60, lambda: runs.exists() and next(runs.iterdir(), None)
    ).name
    _wait(
        "the step's pod running",
        180,
        lambda: any(p["status"].get("phase") == "Running" for p in _pods(run_id)),
    )
    return run_id


def _cancelled_once_a_pod_runs(
    nb: Path, tmp_path: Path
) -> tuple[subprocess.Popen[str], str, str, str]:
    """`cellpipe run NB --backend argo --json` in the background, `cellpipe cancel` as soon
    as a step's pod is Running: the ended process, its stdout and stderr, and the run id."""
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(tmp_path / "runs"))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    with subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--backend", "argo", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        run_id = _run_with_a_running_pod(tmp_path / "runs")
        cancel = _cellpipe("cancel", run_id, cwd=tmp_path)
        assert cancel.returncode == 0, cancel.stderr
        out, err = run.communicate(timeout=180)
    return run, out, err, run_id


def test_cancel_mid_run_stops_the_pods_and_the_workflow_and_marks_the_step_cancelled(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "slow.ipynb",
        notebook(
            ("step:slow", "import time\nprint('started', flush=True)\ntime.sleep(300)\ny = 1"),
            ("step:after", "print(y)"),
        ),
    )
    _push_images(nb)
    run, out, err, run_id = _cancelled_once_a_pod_runs(nb, tmp_path)
    runs = tmp_path / "runs"
    assert run.returncode != 0, out + err
    states = _step_states(runs / run_id)
    assert states["slow"]["state"] == "cancelled", states
    assert states["after"]["state"] in ("cancelled", "skipped"), states
    _wait(
        "no pod of the run running",
        90,
        lambda: (
            not [p for p in _pods(run_id) if p["status"].get("phase") in ("Pending", "Running")]
        ),
    )
    (wf,) = _workflows(run_id)
    assert wf["spec"].get("shutdown") == "Terminate", wf["spec"]
    assert wf["status"]["phase"] in ("Failed", "Error"), wf["status"].get("phase")


def test_resume_after_a_failure_reruns_only_what_failed_on_the_same_volume(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "flaky.ipynb",
        notebook(
            ("step:first", "x = 21\nprint('first ran')"),
            (
                "step:second",
                "import os\n"
                "if not os.path.exists('tried'):\n"
                "    open('tried', 'w').close()\n"
                "    raise RuntimeError('fails the first time')\n"
                "print('x is', x * 2)",
            ),
        ),
    )
    _push_images(nb)
    failed, proc = _run(nb)
    assert proc.returncode != 0
    run_id = failed["run_id"]
    states = _step_states(tmp_path / "runs" / run_id)
    assert (states["first"]["state"], states["second"]["state"]) == ("succeeded", "failed"), states

    resumed, proc = _cellpipe_json("run", "--resume", run_id, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rd = tmp_path / "runs" / resumed["run_id"]
    states = _step_states(rd)
    assert states["second"]["state"] == "succeeded", states
    assert "x is 42" in (rd / "logs" / "second.log").read_text()
    # the step that had succeeded ran in one pod only: the failed run's
    assert len(_pods(run_id, "cellpipe.io/step=first")) == 1


def _cellpipe_json(
    *args: str, cwd: Path
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    proc = _cellpipe(*args, cwd=cwd)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout), proc


def test_a_step_that_fails_once_with_retry_succeeds_on_its_second_attempt(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "retry.ipynb",
        notebook(
            (
                "step:flaky retry:2",
                "import os\n"
                "if not os.path.exists('attempted'):\n"
                "    open('attempted', 'w').close()\n"
                "    raise RuntimeError('first attempt')\n"
                "print('second attempt')",
            ),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    steps = _step_states(tmp_path / "runs" / result["run_id"])
    assert steps["flaky"]["state"] == "succeeded", steps
    assert steps["flaky"]["attempts"] == 2, steps


def test_a_step_over_its_timeout_is_killed_and_fails_saying_so(cluster, tmp_path: Path) -> None:
    nb = write(
        tmp_path / "deadline.ipynb",
        notebook(("step:slow timeout:10", "import time\ntime.sleep(300)")),
    )
    _push_images(nb)
    started = time.monotonic()
    result, proc = _run(nb)
    assert proc.returncode != 0
    assert time.monotonic() - started < 150
    steps = _step_states(tmp_path / "runs" / result["run_id"])
    assert steps["slow"]["state"] == "failed", steps
    assert "deadline" in (steps["slow"]["message"] or "").lower(), steps["slow"]


def test_a_step_whose_image_is_missing_fails_with_the_pull_error_within_pending_timeout(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "noimage.ipynb",
        notebook(
            ("step:one image:127.0.0.1:5000/no-such-base:1", "print(1)"),
            metadata={"cellpipe": {"argo": {"pending_timeout": 30}}},
        ),
    )
    started = time.monotonic()
    result, proc = _run(nb)  # its image was never built nor pushed
    assert proc.returncode != 0
    assert time.monotonic() - started < 150
    steps = _step_states(tmp_path / "runs" / result["run_id"])
    assert steps["one"]["state"] == "failed", steps
    assert any(w in (steps["one"]["message"] or "") for w in ("ImagePullBackOff", "ErrImagePull"))


def test_a_killed_cellpipe_run_is_followed_again_by_resume_while_the_workflow_runs(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "follow.ipynb",
        notebook(("step:slow", "import time\ntime.sleep(40)\nprint('done sleeping')")),
    )
    _push_images(nb)
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(tmp_path / "runs"))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    runs = tmp_path / "runs"
    with subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--backend", "argo", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as run:
        run_id = _run_with_a_running_pod(runs)
        run.kill()
    _, proc = _cellpipe_json("run", "--resume", run_id, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert len(_workflows(run_id)) == 1  # followed again, not submitted again
    assert "done sleeping" in (runs / run_id / "logs" / "slow.log").read_text()


def test_labels_annotations_cpu_limit_and_secrets_are_on_the_pod_the_cluster_ran(
    cluster, tmp_path: Path
) -> None:
    _kubectl("delete", "secret", "api-creds", "--ignore-not-found", admin=True)
    _kubectl("create", "secret", "generic", "api-creds", "--from-literal=token=s3cr3t", admin=True)
    nb = write(
        tmp_path / "podmeta.ipynb",
        notebook(
            (
                "step:a annotation:team.io/owner:ml label:tier:gold limit:cpu:500m "
                "secret:api-creds:token:API_TOKEN",
                "import os\nprint('token has', len(os.environ['API_TOKEN']), 'characters')",
            ),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rd = tmp_path / "runs" / result["run_id"]
    assert "token has 6 characters" in (rd / "logs" / "a.log").read_text()
    (pod,) = _pods(result["run_id"], "cellpipe.io/step=a")
    assert pod["metadata"]["labels"]["tier"] == "gold"
    assert pod["metadata"]["annotations"]["team.io/owner"] == "ml"
    (main,) = [c for c in pod["spec"]["containers"] if c["name"] == "main"]
    assert main["resources"]["limits"]["cpu"] == "500m"
    assert main["resources"]["requests"]["cpu"] == "500m"
    (token,) = [e for e in main["env"] if e["name"] == "API_TOKEN"]
    assert token == {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "token"}},
    }
    assert "s3cr3t" not in json.dumps(pod)


def test_a_gpu_step_on_a_node_without_gpus_fails_unschedulable_within_pending_timeout(
    cluster, tmp_path: Path
) -> None:
    nb = write(
        tmp_path / "gpu.ipynb",
        notebook(
            ("step:train gpu:1", "print('no')"),
            metadata={"cellpipe": {"argo": {"pending_timeout": 20}}},
        ),
    )
    _push_images(nb)
    started = time.monotonic()
    result, proc = _run(nb)
    assert proc.returncode != 0
    assert time.monotonic() - started < 120
    steps = _step_states(tmp_path / "runs" / result["run_id"])
    assert steps["train"]["state"] == "failed", steps
    assert "Unschedulable" in (steps["train"]["message"] or ""), steps["train"]


# -- the invariant suite's adversarial notebooks ----------------------------------------------

#: Each adversarial notebook the engine runs, on the cluster: the same oracle as local and
#: Docker (tests/oracle.py), with no differences of Argo's own (the notebook's folder is
#: shipped into the run's working directory: a module next to the notebook, the notebook
#: file and `!ls` of the folder are there as top to bottom).
ARGO_CASES = tuple(name for name in CASES if name not in REJECTED)


def _both_ways_on_argo(name: str, workdir: Path) -> tuple[Any, Any, Any]:
    copies = copy_case(name, workdir)
    params = CASES[name].parameters or None
    _push_images(copies["pipeline"])
    executed, proc = run_pipeline(copies["pipeline"], workdir, params, ("--backend", "argo"))
    return run_top_to_bottom(copies["top-to-bottom"], params), executed, proc


@pytest.fixture(scope="module")
def argo_both_ways(cluster, request: pytest.FixtureRequest, tmp_path_factory):
    # only the cases this session selected (`-k`), three at a time
    chosen = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", "") == _ADVERSARIAL and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(3) as pool:
        yield {n: pool.submit(_both_ways_on_argo, n, tmp_path_factory.mktemp(n)) for n in chosen}


_ADVERSARIAL = "test_adversarial_notebook_on_argo_gives_the_outputs_of_a_top_to_bottom_run"


@pytest.mark.slow
@pytest.mark.parametrize("name", [invariant_case(n) for n in ARGO_CASES])
def test_adversarial_notebook_on_argo_gives_the_outputs_of_a_top_to_bottom_run(
    name: str, argo_both_ways
) -> None:
    expected, executed, proc = argo_both_ways[name].result()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    problems = differences(expected, executed)
    assert not problems, "argo outputs differ from top to bottom:\n" + "\n".join(problems)


def test_a_run_on_an_existing_claim_passes_values_between_steps_on_it(
    cluster, tmp_path: Path
) -> None:
    claim = os.environ["CELLPIPE_CLUSTER_CLAIM"]
    nb = write(
        tmp_path / "claim.ipynb",
        notebook(
            ("step:make", "x = list(range(5))"),
            ("step:use", "print('sum is', sum(x))"),
            metadata={"cellpipe": {"argo": {"existing_claim": claim}}},
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rd = tmp_path / "runs" / result["run_id"]
    assert "sum is 10" in (rd / "logs" / "use.log").read_text()
    (wf,) = _workflows(result["run_id"])
    assert not wf["spec"].get("volumeClaimTemplates")


def test_after_sourcing_env_sh_a_plain_notebook_runs_on_the_cluster_through_its_profile(
    cluster, tmp_path: Path
) -> None:
    """`.ci/cluster up` writes a profile and env.sh selects it: a notebook without any
    metadata.cellpipe.argo is built, pushed and run with no option naming the cluster."""
    assert cluster.get("CELLPIPE_PROFILE"), (
        "env.sh exports no CELLPIPE_PROFILE: it was written by an older .ci/cluster; "
        "run `sudo .ci/cluster up` of this checkout again"
    )
    shell = {k: cluster[k] for k in ("CELLPIPE_PROFILE", "CELLPIPE_PROFILE_DIR")}
    nb = write(
        tmp_path / "plain.ipynb",
        notebook(("step:make", "x = list(range(5))"), ("step:use", "print('sum is', sum(x))")),
    )
    assert "argo" not in json.loads(nb.read_text())["metadata"].get("cellpipe", {})
    built = _cellpipe("image", "build", "--push", str(nb), cwd=tmp_path, timeout=900, **shell)
    assert built.returncode == 0, built.stderr + built.stdout
    registry = os.environ["CELLPIPE_CLUSTER_REGISTRY"]
    assert f"images named for registry {registry}" in built.stderr

    result, proc = _run(nb, **shell)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rd = tmp_path / "runs" / result["run_id"]
    kept = json.loads((rd / "run.json").read_text())["options"]["profile"]
    assert kept["name"] == cluster["CELLPIPE_PROFILE"]
    assert "sum is 10" in (rd / "logs" / "use.log").read_text()
    (wf,) = _workflows(result["run_id"])
    assert wf["metadata"]["namespace"] == os.environ["CELLPIPE_CLUSTER_NAMESPACE"]
    images = {t["container"]["image"] for t in wf["spec"]["templates"] if "container" in t}
    assert images and all(i.startswith(f"{registry}/cellpipe-step:") for i in images), images
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in wf["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    assert claims == [os.environ["CELLPIPE_CLUSTER_CLAIM"]]


_ENDED = ("Succeeded", "Failed", "Error")


def test_a_schedule_every_minute_starts_a_workflow_that_succeeds_with_the_notebooks_folder(
    cluster, tmp_path: Path
) -> None:
    (tmp_path / "greeting.py").write_text("WORDS = 'hello from the folder'\n")
    nb = write(
        tmp_path / "every_minute.ipynb",
        notebook(
            ("imports", "import greeting"),
            ("step:make", "words = greeting.WORDS.split()"),
            ("step:show", "print('scheduled:', ' '.join(words))"),
        ),
    )
    _push_images(nb)
    name = f"argo-folder-cron-{os.getpid()}-{int(time.time()) % 100000}"
    started = time.monotonic()
    try:
        proc = _cellpipe(
            "schedule", str(nb), "--cron", "* * * * *", "--name", name, "--submit", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert proc.stdout.startswith(f"scheduled {name} in namespace "), proc.stdout
        selector = f"workflows.argoproj.io/cron-workflow={name}"

        def started_workflows() -> list[dict[str, Any]]:
            out = _kubectl("get", "workflows", "-l", selector, "-o", "json", admin=True).stdout
            return json.loads(out)["items"]

        (first, *_) = _wait("a Workflow from the CronWorkflow", 150, started_workflows)
        created = time.monotonic() - started
        wf_name = first["metadata"]["name"]

        def phase() -> str | None:
            out = _kubectl("get", "workflow", wf_name, "-o", "json", admin=True).stdout
            status = json.loads(out).get("status") or {}
            return status.get("phase") if status.get("phase") in _ENDED else None

        assert _wait(f"workflow {wf_name} to end", 300, phase) == "Succeeded"
        ran = time.monotonic() - started
        pods = _kubectl(
            "get",
            "pods",
            "-l",
            f"workflows.argoproj.io/workflow={wf_name},cellpipe.io/step=show",
            "-o",
            "json",
            admin=True,
        ).stdout
        (show,) = json.loads(pods)["items"]
        log = _kubectl("logs", show["metadata"]["name"], "-c", "main", admin=True).stdout
        assert "scheduled: hello from the folder" in log
        print(f"cron: workflow created after {created:.0f} s, succeeded after {ran:.0f} s")
        # whoever scheduled it may remove it (deploy/submitter-rbac.yaml)
        removed = _kubectl("delete", "cronworkflow", name, check=False)
        assert removed.returncode == 0, removed.stderr
    finally:
        _kubectl("delete", "cronworkflow", name, "--ignore-not-found", admin=True, check=False)
        _kubectl(
            "delete",
            "workflows",
            "-l",
            f"workflows.argoproj.io/cron-workflow={name}",
            "--ignore-not-found",
            admin=True,
            check=False,
        )
