"""Argo runs notify from the cluster (GitHub issue 21): the Workflow's exit handler POSTs the
run's status to the notebook's webhook, so scheduled runs notify too. Without a cluster:
the manifest (strict schema and graph rules, secrets only by reference) and the handler's
own command, run here exactly as the manifest gives it, against a real HTTP receiver.
On the real cluster: tests/test_argo_cluster_notify.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cellpipe.backends.argo.errors import ArgoSettingsError
from cellpipe.backends.argo.manifest import (
    ArgoSettings,
    RunTarget,
    Schedule,
    build_cron_workflow,
    build_workflow,
    to_yaml,
)
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.core.notify import Notify
from nbbuild import notebook, write
from test_argo_manifest import IMAGES, SECRET_SENTINEL, manifest_problems
from test_notify import receiver  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
HOOK = "http://10.0.0.9:8080/hook?token=${HOOK_TOKEN}"
SECRETS = {"notify_secrets": {"HOOK_TOKEN": "team-hooks:token"}}


def _pipeline(tmp_path: Path, argo: dict[str, Any] | None = SECRETS, gate: bool = False):
    meta = {"cellpipe": {"notify": {"webhook": HOOK, "retries": 2}, "argo": argo or {}}}
    nb = notebook(
        ("parameters", "n = 3"),
        ("step:load" + (" gate:n>5" if gate else ""), "values = list(range(n))"),
        ("step:total", "total = sum(values)"),
        ("step:report", "print(total)"),
        metadata=meta,
    )
    return compile_notebook(write(tmp_path / "summing.ipynb", nb))


def _handler(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return next(t for t in spec["templates"] if t["name"] == spec["onExit"])


def test_a_webhook_becomes_the_workflows_exit_handler_with_its_secret_by_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET_SENTINEL)  # set here: must not reach the manifest
    pipeline = _pipeline(tmp_path)
    settings = ArgoSettings.from_notebook(pipeline.settings)
    target = Notify.parse(pipeline.settings["notify"])
    doc = build_workflow(
        pipeline,
        settings,
        target=RunTarget("R1", "cellpipe-summing-r1"),
        images={s.name: IMAGES for s in pipeline.steps},
        notify=target,
    )
    assert manifest_problems(doc) == []
    assert doc["spec"]["onExit"] == "cellpipe-notify"
    handler = _handler(doc)
    container = handler["container"]
    assert container["image"] == IMAGES
    assert container["command"] == ["python3", "-m", "cellpipe.backends.argo.exit_handler"]
    args = container["args"]
    assert json.loads(args[args.index("--notify") + 1])["webhook"] == HOOK  # the template
    for flag, value in [
        ("--status", "{{workflow.status}}"),
        ("--failures", "{{workflow.failures}}"),
        ("--duration", "{{workflow.duration}}"),
    ]:
        assert args[args.index(flag) + 1] == value
    assert "n={{workflow.parameters.n}}" in args
    run = json.loads(args[args.index("--run") + 1])
    assert run["run_id"] == "R1" and run["notebook"] == "summing.ipynb"
    assert [s[0] for s in run["steps"]] == ["load", "total", "report"]
    secret_env = [e for e in container["env"] if "valueFrom" in e]
    assert secret_env == [
        {
            "name": "HOOK_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "team-hooks", "key": "token", "optional": True}},
        }
    ]
    assert handler["activeDeadlineSeconds"] == 10 + 60  # the default timeout, then the pod
    assert SECRET_SENTINEL not in to_yaml(doc)


def test_a_variable_of_the_url_without_a_secret_is_refused_for_argo(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, argo={})
    with pytest.raises(ArgoSettingsError) as err:
        build_workflow(
            pipeline,
            ArgoSettings(),
            images={s.name: IMAGES for s in pipeline.steps},
            notify=Notify.parse(pipeline.settings["notify"]),
        )
    assert "needs ${HOOK_TOKEN}" in str(err.value)
    assert 'notify_secrets to {"HOOK_TOKEN": "SECRET_NAME:KEY"}' in str(err.value)


def test_a_command_cannot_notify_from_the_cluster_and_compile_says_so(cli, tmp_path) -> None:
    nb = write(
        tmp_path / "cmd.ipynb",
        notebook(("step:one", "x = 1"), metadata={"cellpipe": {"notify": "mail me@example.org"}}),
    )
    proc = cli("compile", str(nb), "--target", "argo", check=True)
    assert "a command cannot run on the cluster, so this Argo run will not notify" in proc.stderr
    assert "onExit" not in proc.stdout and "exit_handler" not in proc.stdout


def test_a_scheduled_notebook_notifies_from_each_runs_exit_handler(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    doc = build_cron_workflow(
        pipeline,
        ArgoSettings.from_notebook(pipeline.settings),
        Schedule(crons=("0 3 * * *",)),
        images={s.name: IMAGES for s in pipeline.steps},
        notify=Notify.parse(pipeline.settings["notify"]),
    )
    assert manifest_problems(doc) == []
    handler = _handler(doc)
    run = json.loads(handler["container"]["args"][handler["container"]["args"].index("--run") + 1])
    assert run["run_id"] == "{{workflow.name}}"  # each scheduled run is its own
    assert {"name": "team-hooks", "key": "token", "optional": True} in [
        e["valueFrom"]["secretKeyRef"] for e in handler["container"]["env"] if "valueFrom" in e
    ]


def test_cellpipe_schedule_writes_the_exit_handler_for_notify(cli, tmp_path) -> None:
    nb = write(
        tmp_path / "nightly.ipynb",
        notebook(("step:one", "x = 1"), metadata={"cellpipe": {"argo": SECRETS}}),
    )
    out = tmp_path / "cron.yaml"
    cli("schedule", str(nb), "--cron", "0 3 * * *", "--notify", HOOK, "-o", str(out), check=True)
    text = out.read_text()
    assert "onExit: cellpipe-notify" in text and "secretKeyRef" in text


def _argo_args(doc: dict[str, Any], status: str, failures: list[dict[str, Any]]) -> list[str]:
    """The handler's arguments as the controller gives them: its variables replaced, and
    ``{{workflow.failures}}`` a JSON list quoted once more as a JSON string."""
    values = {
        "{{workflow.status}}": status,
        "{{workflow.failures}}": json.dumps(json.dumps(failures) if failures else "null"),
        "{{workflow.duration}}": "42.500000",
        "{{workflow.creationTimestamp.s}}": "1764800000",
        "{{workflow.name}}": "cellpipe-summing-r1",
        "{{workflow.namespace}}": "team-a",
        "{{workflow.parameters.n}}": "7",
    }
    out = []
    for arg in _handler(doc)["container"]["args"]:
        for k, v in values.items():
            arg = arg.replace(k, v)
        out.append(arg)
    return out


def _run_handler(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellpipe.backends.argo.exit_handler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO / "kernel"), "PATH": "/usr/bin:/bin", **env},
    )


def test_the_handler_posts_a_failed_run_with_its_failed_and_skipped_steps(
    tmp_path: Path,
    receiver,  # noqa: F811
) -> None:
    pipeline = _pipeline(tmp_path)
    url = receiver.url + "?token=${HOOK_TOKEN}"
    doc = build_workflow(
        pipeline,
        ArgoSettings.from_notebook(pipeline.settings),
        target=RunTarget("R1", "cellpipe-summing-r1"),
        images={s.name: IMAGES for s in pipeline.steps},
        notify=Notify(webhook=url),
    )
    receiver.codes[:] = [500]  # once: retried as a local run's notification is
    failures = [
        {"displayName": "cellpipe-summing-r1", "message": "child failed", "templateName": "main"},
        {"displayName": "total", "message": "Error (exit code 1)", "templateName": "total"},
    ]
    proc = _run_handler(_argo_args(doc, "Failed", failures), {"HOOK_TOKEN": SECRET_SENTINEL})
    assert proc.returncode == 0, proc.stderr
    assert receiver.paths == [f"/hook?token={SECRET_SENTINEL}"] * 2
    assert "answered 500 (attempt 1 of 4); retrying in 0.5 s" in proc.stderr
    assert SECRET_SENTINEL not in proc.stderr
    status = receiver.posts[-1]
    assert status["state"] == "failed" and status["run_id"] == "R1"
    assert status["message"] == "step total failed"
    assert {n: s["state"] for n, s in status["steps"].items()} == {
        "load": "succeeded",
        "total": "failed",
        "report": "skipped",
    }
    assert status["steps"]["total"]["message"] == "Error (exit code 1)"
    assert status["steps"]["report"]["message"] == "upstream step total failed"
    assert status["duration_s"] == 42.5 and status["started_at"] == 1764800000
    assert status["parameters"] == {"n": "7"} and status["workflow"] == "cellpipe-summing-r1"


def test_the_handler_counts_a_retried_step_that_succeeded_and_a_stopped_run_as_cancelled(
    tmp_path: Path,
    receiver,  # noqa: F811
) -> None:
    pipeline = _pipeline(tmp_path)
    doc = build_workflow(
        pipeline,
        ArgoSettings.from_notebook(pipeline.settings),
        target=RunTarget("R1", "cellpipe-summing-r1"),
        images={s.name: IMAGES for s in pipeline.steps},
        notify=Notify(webhook=receiver.url),
    )
    retried = [{"displayName": "load(0)", "message": "Error (exit code 1)"}]
    assert _run_handler(_argo_args(doc, "Succeeded", retried), {}).returncode == 0
    stopped = [{"displayName": "total", "message": "workflow shutdown with strategy:  Stop"}]
    assert _run_handler(_argo_args(doc, "Failed", stopped), {}).returncode == 0
    first, second = receiver.posts
    assert first["state"] == "succeeded"
    assert all(s["state"] == "succeeded" for s in first["steps"].values())
    assert second["state"] == "cancelled"
    assert second["steps"]["total"]["state"] == "cancelled"


def test_a_handler_whose_secret_is_missing_says_so_and_still_exits_0(
    tmp_path: Path,
    receiver,  # noqa: F811
) -> None:
    pipeline = _pipeline(tmp_path)
    doc = build_workflow(
        pipeline,
        ArgoSettings.from_notebook(pipeline.settings),
        images={s.name: IMAGES for s in pipeline.steps},
        notify=Notify.parse(pipeline.settings["notify"]),
    )
    proc = _run_handler(_argo_args(doc, "Succeeded", []), {})
    assert proc.returncode == 0
    assert "needs $HOOK_TOKEN, which is not set; not sent" in proc.stderr
    assert receiver.posts == []


# -- the driver against a fake cluster: exactly one notification per run -----------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fake_k8s import FakeCluster

    with FakeCluster(tmp_path / "cluster", execute=False) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        yield cluster


def _drive_on_argo(tmp_path: Path, notify: str, fake) -> Any:
    from cellpipe.driving.driver import drive, prepare_run
    from fake_k8s import Script
    from test_argo_backend import _trailer_log

    for step in ("one", "two"):
        fake.scripts[step] = [Script(log=_trailer_log(step, f"{step} ran\n"))]
    nb = write(tmp_path / "nb.ipynb", notebook(("step:one", "x = 1"), ("step:two", "y = x")))
    rd = prepare_run(tmp_path / "runs", nb, backend="argo", notify=notify)
    drive(rd)
    return rd


def test_an_argo_run_with_a_webhook_leaves_the_post_to_the_exit_handler(
    tmp_path: Path,
    fake,
    receiver,  # noqa: F811
) -> None:
    rd = _drive_on_argo(tmp_path, receiver.url, fake)
    assert rd.status().state.value == "succeeded"
    assert fake.submitted[0]["spec"]["onExit"] == "cellpipe-notify"
    assert receiver.posts == []  # the fake controller runs no exit handler; nor does the driver


def test_an_argo_run_with_a_command_runs_it_here_once_and_submits_no_handler(
    tmp_path: Path, fake, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "status.json"
    rd = _drive_on_argo(tmp_path, f"cat >> {out}", fake)
    assert "onExit" not in fake.submitted[0]["spec"]
    assert json.loads(out.read_text())["state"] == "succeeded"  # one JSON document: once
    assert json.loads(out.read_text())["run_id"] == rd.run_id
    assert (
        "a command cannot run on the cluster; this `cellpipe run` runs it" in capfd.readouterr().err
    )


def test_steps_behind_a_closed_gate_are_skipped_with_its_reason_passed_down() -> None:
    from cellpipe.backends.argo.exit_handler import run_status

    run = {
        "run_id": "R1",
        "steps": [
            ["evaluate", "evaluate", [], True],
            ["deploy", "deploy", ["evaluate"], False],
            ["announce", "announce", ["deploy"], False],
        ],
    }
    verdict = {"open": False, "message": "gate accuracy>=0.9 closed: accuracy=0.5 (step evaluate)"}
    status = run_status(run, "Succeeded", [], verdict_of={"evaluate": verdict}.get)
    assert status["state"] == "succeeded"
    assert {n: (s["state"], s["message"]) for n, s in status["steps"].items()} == {
        "evaluate": ("succeeded", verdict["message"]),
        "deploy": ("skipped", verdict["message"]),
        "announce": ("skipped", verdict["message"]),
    }
    unread = run_status(run, "Succeeded", [], verdict_of=None)  # S3 data: not on a volume
    assert unread["steps"]["deploy"]["state"] == "unknown"
    assert unread["steps"]["announce"]["state"] == "unknown"


def test_an_exit_handler_that_failed_does_not_fail_a_run_whose_steps_succeeded(
    tmp_path: Path,
    fake,
    receiver,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    fake.exit_handler_phase = (
        "Failed"  # e.g. its image could not be pulled: Argo fails the Workflow
    )
    rd = _drive_on_argo(tmp_path, receiver.url, fake)
    assert fake.workflow("team-a", fake.submitted[0]["metadata"]["name"])["status"]["phase"] == (
        "Failed"
    )
    assert rd.status().state.value == "succeeded"
    assert "notify: the exit handler failed: ImagePullBackOff" in capfd.readouterr().err
