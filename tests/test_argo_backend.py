"""The Argo backend against a fake Kubernetes API server (tests/fake_k8s.py) that speaks real
HTTP to the real ``kubernetes`` client: submit, follow (watch, resumed after a drop), logs
and outputs from the pods, cancel, resume, schedules, and the errors a user must understand.
The real cluster's tests are in tests/test_argo_cluster.py."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cellpipe.backends import RunOptions
from cellpipe.backends.argo.backend import ArgoBackend
from cellpipe.backends.argo.errors import (
    ArgoNotInstalled,
    ClusterError,
    ClusterUnreachable,
    Forbidden,
    NameClash,
    Unauthorized,
)
from cellpipe.backends.argo.trailer import StepResult, encode, split_log
from cellpipe.core.model import State
from cellpipe.driving.driver import prepare_resume, prepare_run
from fake_k8s import FakeCluster, Script
from nbbuild import notebook, write
from test_argo_manifest import manifest_problems

DIAMOND = notebook(
    ("parameters", "n = 2"),
    ("step:load", "x = n * 10\nprint('x is', x)"),
    ("step:double", "y = x * 2"),
    ("step:report", "print('y is', y)\ny"),
)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeCluster(tmp_path / "cluster", execute=False) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        yield cluster


def _run(tmp_path: Path, nb: dict, **params: Any):
    rd = prepare_run(
        tmp_path / "runs", write(tmp_path / "nb.ipynb", nb), backend="argo", parameters=params
    )
    return rd, ArgoBackend().execute(rd, RunOptions())


def _trailer_log(step: str, text: str, state: str = "succeeded", **final: Any) -> str:
    result = StepResult(
        step, [{"state": "running"}, {"state": state, **final}], {"cells": {}}, None
    )
    return text + encode(result)


# -- a whole run, pods executing the real runner ------------------------------------------------


def test_a_run_on_argo_fills_the_local_run_directory_like_a_local_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    with FakeCluster(tmp_path / "cluster", execute=True) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        rd, state = _run(tmp_path, DIAMOND, n=3)
        assert state is State.SUCCEEDED
        status = rd.status()
        assert {n: s.state.value for n, s in status.steps.items()} == {
            "load": "succeeded",
            "double": "succeeded",
            "report": "succeeded",
        }
        log = rd.log_path("load").read_text()
        assert "x is 30" in log  # the -p override reached the pod as a Workflow argument
        assert "::cellpipe-result::" not in log
        cells = rd.read_outputs("report")["cells"]
        assert cells["c4"]["outputs"][-1]["data"]["text/plain"] == "60"
        assert rd.info()["argo"]["namespace"] == "team-a"  # the kubeconfig context's
        submitted = fake.submitted[0]
        assert submitted["metadata"]["labels"]["cellpipe.io/run-id"] == rd.run_id
        assert manifest_problems(submitted) == []
        shown = cli("logs", rd.run_id, "load", env={"CELLPIPE_RUNS_ROOT": str(tmp_path / "runs")})
        assert "x is 30" in shown.stdout


def test_a_failing_cell_in_a_pod_names_the_cell_and_skips_what_depends_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = notebook(("step:a", "x = 1"), ("step:b", "y = x / 0"), ("step:c", "print(y)"))
    with FakeCluster(tmp_path / "cluster", execute=True) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        rd, state = _run(tmp_path, nb)
    steps = rd.status().steps
    assert state is State.FAILED
    assert steps["b"].state is State.FAILED
    assert steps["b"].message == "cell 2: ZeroDivisionError: division by zero"
    assert steps["b"].cell == 2
    assert (steps["c"].state, steps["c"].message) == (State.SKIPPED, "upstream step b failed")
    assert "ZeroDivisionError" in rd.log_path("b").read_text()


# -- following ----------------------------------------------------------------------------------


def test_the_follower_resumes_a_dropped_watch_from_the_last_resource_version(
    tmp_path: Path, fake: FakeCluster
) -> None:
    fake.drop_watch_after = 2
    for step in ("load", "double", "report"):
        fake.scripts[step] = [Script(log=_trailer_log(step, f"{step} ran\n"), delay=0.2)]
    rd, state = _run(tmp_path, DIAMOND)
    assert state is State.SUCCEEDED
    versions = [int(q["resourceVersion"][0]) for q in fake.watch_requests()]
    assert len(versions) >= 2 and versions == sorted(versions) and versions[1] > versions[0]
    assert rd.log_path("double").read_text() == "double ran\n"


def test_a_watch_whose_resource_version_expired_is_followed_on(
    tmp_path: Path, fake: FakeCluster
) -> None:
    fake.expire_next_watch = True
    fake.scripts["a"] = [Script(log=_trailer_log("a", "a ran\n"), delay=0.5)]
    rd, state = _run(tmp_path, notebook(("step:a", "x = 1")))
    assert state is State.SUCCEEDED
    assert rd.log_path("a").read_text() == "a ran\n"
    assert len(fake.watch_requests()) >= 2  # watched again after the 410


def test_a_transient_500_while_following_is_retried(tmp_path: Path, fake: FakeCluster) -> None:
    fake.fail("GET", "workflows", 500)
    rd, state = _run(tmp_path, notebook(("step:a", "x = 1")))
    assert state is State.SUCCEEDED
    assert rd.status().steps["a"].state is State.SUCCEEDED
    assert fake.faults == []  # the 500 was answered, and the follower went on


def test_a_retried_step_records_each_attempt(tmp_path: Path, fake: FakeCluster) -> None:
    fake.scripts["a"] = [
        Script(phase="Failed", log="first try\n", message="Error (exit code 1)"),
        Script(log=_trailer_log("a", "second try\n")),
    ]
    rd, state = _run(tmp_path, notebook(("step:a retry:2", "x = 1")))
    assert state is State.SUCCEEDED
    st = rd.status().steps["a"]
    assert (st.state, st.attempts) == (State.SUCCEEDED, 2)
    assert rd.log_path("a").read_text() == "first try\nsecond try\n"


def test_a_pod_killed_without_a_result_fails_with_the_reason(
    tmp_path: Path, fake: FakeCluster
) -> None:
    fake.scripts["a"] = [
        Script(phase="Failed", log="loading...\n", message="OOMKilled (exit code 137)")
    ]
    rd, state = _run(tmp_path, notebook(("step:a", "x = 1")))
    assert state is State.FAILED
    assert rd.status().steps["a"].message == (
        "the step ran out of memory (OOMKilled (exit code 137)); raise its `limit:memory:` tag"
    )


def test_a_pod_that_cannot_pull_its_image_fails_the_step_with_the_reason(
    tmp_path: Path, fake: FakeCluster
) -> None:
    fake.scripts["a"] = [Script(pending_reason="ImagePullBackOff")]
    nb = notebook(("step:a", "x = 1"), metadata={"cellpipe": {"argo": {"pending_timeout": 1}}})
    rd, state = _run(tmp_path, nb)
    assert state is State.FAILED
    message = rd.status().steps["a"].message
    assert message.startswith("the pod did not start within 1 s: ImagePullBackOff")
    assert fake.workflow("team-a", rd.info()["argo"]["workflow"])["spec"]["shutdown"] == "Terminate"


# -- cancel and resume ----------------------------------------------------------------------------


def test_cancel_stops_the_workflow_and_the_run_ends_cancelled(
    tmp_path: Path, fake: FakeCluster
) -> None:
    fake.scripts["a"] = [Script(runs_until_stopped=True)]
    rd = prepare_run(
        tmp_path / "runs",
        write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1"), ("step:b", "print(x)"))),
        backend="argo",
    )
    result: list[State] = []
    follower = threading.Thread(
        target=lambda: result.append(ArgoBackend().execute(rd, RunOptions()))
    )
    follower.start()
    deadline = time.time() + 30
    while rd.status().steps["a"].state is not State.RUNNING and time.time() < deadline:
        time.sleep(0.05)
    ArgoBackend().cancel(rd)
    follower.join(30)
    assert result == [State.CANCELLED]
    assert {n: s.state for n, s in rd.status().steps.items()} == {
        "a": State.CANCELLED,
        "b": State.CANCELLED,
    }
    patches = [p for m, p, q in fake.requests if m == "PATCH"]
    assert patches == [
        f"/apis/argoproj.io/v1alpha1/namespaces/team-a/workflows/{rd.info()['argo']['workflow']}"
    ]


def test_resume_resubmits_with_succeeded_steps_left_out(tmp_path: Path, fake: FakeCluster) -> None:
    nb = notebook(("step:a", "x = 1"), ("step:b", "y = x + 1"), ("step:c", "print(y)"))
    fake.scripts["a"] = [Script(log=_trailer_log("a", ""))]
    fake.scripts["b"] = [
        Script(
            phase="Failed",
            log=_trailer_log("b", "", "failed", message="cell 2: boom"),
            message="Error (exit code 1)",
        )
    ]
    rd, state = _run(tmp_path, nb)
    assert state is State.FAILED
    first = rd.info()["argo"]["workflow"]
    fake.scripts["b"] = [Script(log=_trailer_log("b", ""))]
    rd = prepare_resume(tmp_path / "runs", rd.run_id)
    state = ArgoBackend().execute(rd, RunOptions(resume=True))
    assert state is State.SUCCEEDED
    second = fake.submitted[-1]
    assert second["metadata"]["name"] == f"{first}-r2"
    tasks = {t["name"]: t for t in second["spec"]["templates"][0]["dag"]["tasks"]}
    assert list(tasks) == ["cellpipe-folder", "b", "c"]  # the folder is shipped again
    assert tasks["b"]["dependencies"] == ["cellpipe-folder"]
    claim = next(v for v in second["spec"]["volumes"] if v["name"] == "data")
    assert claim["persistentVolumeClaim"]["claimName"] == f"{first}-data"
    st = rd.status().steps
    assert (st["a"].state, st["a"].message) == (State.CACHED, "kept from before the resume")


# -- errors a user must understand -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (403, Forbidden, "not allowed to create workflows.argoproj.io in namespace team-a"),
        (409, NameClash, "cannot create workflows.argoproj.io in namespace team-a"),
        (404, ArgoNotInstalled, "Argo Workflows is not installed on the cluster"),
        (500, ClusterError, "the API server answered 500"),
    ],
)
def test_refused_submissions_say_what_was_refused(
    tmp_path: Path, fake: FakeCluster, status: int, error: type, message: str
) -> None:
    fake.fail("POST", "workflows", status)
    rd = prepare_run(
        tmp_path / "runs",
        write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1"))),
        backend="argo",
    )
    with pytest.raises(error, match=message):
        ArgoBackend().execute(rd, RunOptions())
    assert rd.status().state is State.FAILED
    assert message in rd.status().message


def test_rejected_credentials_are_a_401_with_what_to_do(
    tmp_path: Path, fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = json.loads((tmp_path / "kubeconfig").read_text())
    config["users"][0]["user"]["token"] = "expired"
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    rd = prepare_run(
        tmp_path / "runs",
        write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1"))),
        backend="argo",
    )
    with pytest.raises(Unauthorized, match=r"rejected the credentials .* log in again"):
        ArgoBackend().execute(rd, RunOptions())


def test_an_unreachable_api_server_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeCluster(tmp_path / "c") as gone:
        kubeconfig = gone.kubeconfig(tmp_path / "kubeconfig")
        url = gone.url
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    rd = prepare_run(
        tmp_path / "runs",
        write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1"))),
        backend="argo",
    )
    with pytest.raises(
        ClusterUnreachable,
        match=f"cannot reach the Kubernetes API server at {url}: connection refused",
    ):
        ArgoBackend().execute(rd, RunOptions())


def test_without_a_kubeconfig_the_backend_says_it_cannot_run(tmp_path: Path, cli) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    env = {"KUBECONFIG": str(tmp_path / "missing"), "KUBERNETES_SERVICE_HOST": ""}
    proc = cli("run", str(nb), "--backend", "argo", env=env)
    assert proc.returncode == 2
    assert "the argo backend cannot run here: no kubeconfig" in proc.stderr
    assert "point KUBECONFIG at your cluster" in proc.stderr


def test_the_cli_runs_on_argo_in_the_namespace_given(
    tmp_path: Path, fake: FakeCluster, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    fake.scripts["a"] = [Script(log=_trailer_log("a", "hello from the pod\n"))]
    env = {"KUBECONFIG": os.environ["KUBECONFIG"], "CELLPIPE_ARGO_POLL": "1"}
    proc = cli("run", str(nb), "--backend", "argo", "--namespace", "ml", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"]["a"]["state"] == "succeeded"
    assert fake.submitted[0]["metadata"]["namespace"] == "ml"
    fake.fail("POST", "workflows", 403)
    proc = cli("run", str(nb), "--backend", "argo", env=env)
    assert proc.returncode == 1
    assert (
        "not allowed to create workflows.argoproj.io in namespace team-a (403 Forbidden"
        in proc.stderr
    )


# -- schedules -----------------------------------------------------------------------------------------


def test_schedule_submits_a_cron_workflow(tmp_path: Path, fake: FakeCluster, cli) -> None:
    nb = write(tmp_path / "nightly.ipynb", notebook(("step:a", "x = 1")))
    env = {"KUBECONFIG": os.environ["KUBECONFIG"]}
    proc = cli(
        "schedule",
        str(nb),
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
        "--submit",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip()
        == "scheduled cellpipe-nightly in namespace team-a: 0 3 * * * (Europe/Paris)"
    )
    cron = fake.crons[("team-a", "cellpipe-nightly")]
    assert cron["spec"]["schedules"] == ["0 3 * * *"]
    assert manifest_problems(cron) == []
    again = cli("schedule", str(nb), "--cron", "0 3 * * *", "--submit", env=env)
    assert again.returncode == 2
    assert "cronworkflows.argoproj.io" in again.stderr and "409 Conflict" in again.stderr


def test_compile_target_argo_writes_a_valid_workflow_file(tmp_path: Path, cli) -> None:
    nb = write(tmp_path / "nb.ipynb", DIAMOND)
    proc = cli("compile", str(nb), "--target", "argo", "-o", str(tmp_path / "wf.yaml"))
    assert proc.returncode == 0, proc.stderr
    import yaml

    doc = yaml.safe_load((tmp_path / "wf.yaml").read_text())
    assert doc["kind"] == "Workflow"
    assert manifest_problems(doc) == []
    assert "build and push them with: cellpipe image build" in proc.stderr


# -- the result trailer ----------------------------------------------------------------------------------


def test_the_trailer_is_stripped_from_the_log_and_the_last_one_wins() -> None:
    fake_one = encode(StepResult("a", [{"state": "failed", "message": "printed by a cell"}]))
    real = encode(StepResult("a", [{"state": "succeeded"}], {"cells": {"c1": {}}}, {"acc": 0.9}))
    log, result = split_log("hello\n" + fake_one + "no newline" + real)
    assert log == "hello\nno newline\n"
    assert result is not None and result.final == {"state": "succeeded"}
    assert result.metrics == {"acc": 0.9}
    assert split_log("::cellpipe-result:: not-base64!\n") == ("", None)


_S3 = {
    "endpoint": "s3.example.test:9000",
    "bucket": "team-bucket",
    "access_key_secret": "s3-creds:access_key",
    "secret_key_secret": "s3-creds:secret_key",
}


def _s3_failure(tmp_path: Path, fake: FakeCluster, message: str) -> str:
    """The step's message when its pod ran the cells but Argo could not save its values."""
    fake.scripts["a"] = [Script(phase="Error", log=_trailer_log("a", "ran\n"), message=message)]
    nb = notebook(
        ("step:a", "x = 1"), ("step:b", "print(x)"), metadata={"cellpipe": {"argo": {"s3": _S3}}}
    )
    rd, state = _run(tmp_path, nb)
    assert state is State.FAILED
    return rd.status().steps["a"].message


def test_a_missing_s3_bucket_fails_the_step_in_one_line_naming_the_bucket(
    tmp_path: Path, fake: FakeCluster
) -> None:
    message = _s3_failure(
        tmp_path,
        fake,
        "wait: Error (exit code 64): failed to put file: The specified bucket does not exist; "
        "failed to put file: The specified bucket does not exist;",
    )
    assert message.startswith("the S3 bucket `team-bucket` at s3.example.test:9000 does not exist")
    assert "\n" not in message


def test_refused_s3_credentials_fail_the_step_in_one_line_naming_the_secret(
    tmp_path: Path, fake: FakeCluster
) -> None:
    message = _s3_failure(
        tmp_path,
        fake,
        "failed to put file: The request signature we calculated does not match the "
        "signature you provided. Check your key and signing method.",
    )
    assert message.startswith(
        "S3 at s3.example.test:9000 refused the credentials in Secret "
        "s3-creds:access_key and s3-creds:secret_key"
    )
