"""The notebook's folder on Argo: packed into the Workflow at submission, unpacked by a first
task into the run's working directory, so a step finds what top to bottom finds next to the
notebook (a local module, the notebook file, `!ls`). Fast: manifests, the packing and
unpacking, and a run against the fake API server; the real cluster's cases are in
tests/test_argo_cluster.py."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cellpipe.backends import RunOptions
from cellpipe.backends.argo.backend import ArgoBackend
from cellpipe.backends.argo.errors import ArgoSettingsError
from cellpipe.backends.argo.folder import FolderTooBig, for_settings, main, pack, unpack
from cellpipe.backends.argo.manifest import (
    ArgoSettings,
    RunTarget,
    Schedule,
    build_cron_workflow,
    build_workflow,
)
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.core.model import State
from cellpipe.driving.driver import prepare_run
from cellpipe.execution.cache import input_hashes
from fake_k8s import FakeCluster
from nbbuild import notebook, write
from test_argo_manifest import IMAGES, manifest_problems

MODULE_NB = notebook(
    ("imports", "import helpers"),
    ("step:a", "x = helpers.double(21)"),
    ("step:b", "y = helpers.double(x)"),
    ("step:c", "print(x, y)"),
)


def _project(tmp_path: Path, nb: dict = MODULE_NB, metadata: dict | None = None) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helpers.py").write_text("def double(v):\n    return 2 * v\n")
    if metadata:
        nb = dict(nb, metadata={**nb.get("metadata", {}), "cellpipe": metadata})
    return write(folder / "nb.ipynb", nb)


def _files(text: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(text)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _manifest(path: Path, **target: Any) -> dict[str, Any]:
    pipeline = compile_notebook(path)
    settings = ArgoSettings.from_notebook(pipeline.settings)
    folder = for_settings(settings, path.parent)
    images = {s.name: IMAGES for s in pipeline.steps}
    run = RunTarget(**target) if target else None
    return build_workflow(pipeline, settings, target=run, images=images, folder=folder)


def _templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return {t["name"]: t for t in spec["templates"]}


def _tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _templates(doc)["main"]["dag"]["tasks"]}


# -- the manifest ---------------------------------------------------------------------------------


def test_the_first_task_unpacks_the_notebooks_folder_into_the_runs_working_directory(
    tmp_path: Path,
) -> None:
    doc = _manifest(_project(tmp_path), run_id="r1", name="cellpipe-nb-r1")
    assert manifest_problems(doc) == []
    tasks = _tasks(doc)
    assert next(iter(tasks)) == "cellpipe-folder"
    assert tasks["a"]["dependencies"] == ["cellpipe-folder"]
    assert tasks["b"]["dependencies"] == ["a"]  # after it through a
    folder = _templates(doc)["cellpipe-folder"]
    (archive,) = folder["inputs"]["artifacts"]
    shipped = _files(archive["raw"]["data"])
    assert sorted(shipped) == ["helpers.py", "nb.ipynb"]
    assert shipped["helpers.py"] == b"def double(v):\n    return 2 * v\n"
    container = folder["container"]
    assert container["command"] == ["python3", "-m", "cellpipe.backends.argo.folder"]
    assert container["args"] == [archive["path"], "/cellpipe/work"]
    (work,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/cellpipe/work"]
    assert work == {"name": "data", "mountPath": "/cellpipe/work", "subPath": "r1/work"}
    step_work = [
        m
        for m in _templates(doc)["a"]["container"]["volumeMounts"]
        if m["mountPath"] == "/cellpipe/work"
    ]
    assert step_work == [work]  # the steps' working directory is where it unpacked
    assert container["securityContext"]["runAsNonRoot"] is True


def test_the_folder_leaves_out_version_control_checkpoints_caches_and_the_runs(
    tmp_path: Path,
) -> None:
    nb = _project(tmp_path)
    root = nb.parent
    for junk in (
        ".git/config",
        ".ipynb_checkpoints/nb-checkpoint.ipynb",
        "__pycache__/helpers.cpython-311.pyc",
        ".cellpipe/runs/x/run.json",
        "my-runs/r1/run.json",
        "data/raw/big.bin",
        ".venv/bin/python",
    ):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    (root / "data" / "small.csv").write_text("a\n1\n")
    settings = ArgoSettings.from_notebook({"argo": {"folder_ignore": ["data/raw"]}})
    folder = for_settings(settings, root, exclude=[root / "my-runs"])
    assert sorted(folder.files) == ["data/small.csv", "helpers.py", "nb.ipynb"]
    assert sorted(_files(folder.text)) == sorted(folder.files)


def test_a_folder_over_its_limit_is_one_line_naming_the_setting_and_the_largest_file(
    tmp_path: Path,
) -> None:
    nb = _project(tmp_path, metadata={"argo": {"folder_limit": "64Ki"}})
    (nb.parent / "weights.bin").write_bytes(os.urandom(200_000))
    settings = ArgoSettings.from_notebook(compile_notebook(nb).settings)
    with pytest.raises(FolderTooBig) as err:
        for_settings(settings, nb.parent)
    message = str(err.value)
    assert "\n" not in message
    assert "metadata.cellpipe.argo.folder_limit" in message
    assert "over 64Ki compressed" in message
    assert "weights.bin (195.3 KiB)" in message
    assert err.value.exit_code == 2


def test_a_run_whose_folder_is_too_big_fails_before_submitting_with_that_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    nb = _project(tmp_path, metadata={"argo": {"folder_limit": "16Ki"}})
    (nb.parent / "weights.bin").write_bytes(os.urandom(50_000))
    with FakeCluster(tmp_path / "cluster", execute=False) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        shown = cli(
            "run",
            str(nb),
            "--backend",
            "argo",
            env={"CELLPIPE_RUNS_ROOT": str(tmp_path / "runs")},
        )
        assert fake.submitted == []
    assert shown.returncode == 2, shown.stdout + shown.stderr
    errors = [line for line in shown.stderr.splitlines() if "folder_limit" in line]
    assert len(errors) == 1, shown.stderr
    assert "weights.bin" in errors[0]


@pytest.mark.parametrize(
    ("value", "why"),
    [("512Ki", "at most 384Ki"), ("lots", "a size such as 256Ki"), ("0", "above 0")],
)
def test_folder_limit_is_a_size_up_to_384ki(value: str, why: str) -> None:
    with pytest.raises(ArgoSettingsError, match=why):
        ArgoSettings.from_notebook({"argo": {"folder_limit": value}})


def test_ship_folder_false_leaves_the_folder_task_out(tmp_path: Path) -> None:
    doc = _manifest(_project(tmp_path, metadata={"argo": {"ship_folder": False}}))
    assert "cellpipe-folder" not in _tasks(doc)
    assert "dependencies" not in _tasks(doc)["a"]


def test_a_changed_file_is_in_the_next_manifest(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    before = _templates(_manifest(nb))["cellpipe-folder"]
    (nb.parent / "helpers.py").write_text("def double(v):\n    return 3 * v\n")
    after = _templates(_manifest(nb))["cellpipe-folder"]
    text = after["inputs"]["artifacts"][0]["raw"]["data"]
    assert _files(text)["helpers.py"] == b"def double(v):\n    return 3 * v\n"
    sha = "cellpipe.io/folder-sha256"
    assert before["metadata"]["annotations"][sha] != after["metadata"]["annotations"][sha]


def test_the_same_files_give_the_same_manifest(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    assert _manifest(nb) == _manifest(nb)


def test_with_s3_each_step_copies_the_folder_the_first_task_uploaded(tmp_path: Path) -> None:
    settings = {
        "argo": {
            "s3": {
                "endpoint": "minio.example:9000",
                "bucket": "runs",
                "access_key_secret": "s3:key",
                "secret_key_secret": "s3:secret",
            }
        }
    }
    doc = _manifest(_project(tmp_path, metadata=settings), run_id="r1", name="cellpipe-nb-r1")
    assert manifest_problems(doc) == []
    folder = _templates(doc)["cellpipe-folder"]
    (out,) = folder["outputs"]["artifacts"]
    assert out["s3"]["key"] == "cellpipe/r1/cellpipe-folder/folder.tgz"
    assert folder["container"]["args"][1] == out["path"]
    step = _templates(doc)["b"]
    (copied,) = [a for a in step["inputs"]["artifacts"] if a["name"] == "folder"]
    assert copied["s3"]["key"] == out["s3"]["key"]
    args = step["container"]["args"]
    assert args[args.index("--folder") + 1] == copied["path"]


def test_a_schedule_carries_the_folder_as_it_was_when_scheduled(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    pipeline = compile_notebook(nb)
    settings = ArgoSettings()
    doc = build_cron_workflow(
        pipeline,
        settings,
        Schedule(crons=("0 3 * * *",)),
        images={s.name: IMAGES for s in pipeline.steps},
        folder=for_settings(settings, nb.parent),
    )
    assert manifest_problems(doc) == []
    folder = _templates(doc)["cellpipe-folder"]
    assert "helpers.py" in _files(folder["inputs"]["artifacts"][0]["raw"]["data"])
    (work,) = [m for m in folder["container"]["volumeMounts"] if m["mountPath"] == "/cellpipe/work"]
    assert work["subPath"] == "{{workflow.name}}/work"


def test_a_step_named_like_the_folder_task_is_refused(tmp_path: Path) -> None:
    nb = _project(tmp_path, notebook(("step:cellpipe_folder", "x = 1")))
    with pytest.raises(ArgoSettingsError, match="rename the step"):
        _manifest(nb)


def test_notebooks_in_the_folder_are_shipped_without_their_outputs(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    saved = json.loads(nb.read_text())
    saved["cells"][1]["outputs"] = [
        {"output_type": "display_data", "data": {"image/png": "A" * 300_000}, "metadata": {}}
    ]
    saved["cells"][1]["execution_count"] = 7
    nb.write_text(json.dumps(saved))
    folder = pack(nb.parent, limit=64 * 1024, limit_text="64Ki")  # the figure would not fit
    shipped = json.loads(_files(folder.text)["nb.ipynb"])
    assert [c["source"] for c in shipped["cells"]] == [c["source"] for c in saved["cells"]]
    assert shipped["cells"][1]["outputs"] == []
    assert shipped["cells"][1]["execution_count"] is None


# -- the pod side ---------------------------------------------------------------------------------


def test_unpacking_replaces_shipped_files_and_keeps_what_the_steps_wrote(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    (nb.parent / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (nb.parent / "run.sh").chmod(0o755)
    folder = pack(nb.parent, limit=2**20, limit_text="1Mi")
    archive = tmp_path / "folder.tgz.b64"
    archive.write_text(folder.text)
    work = tmp_path / "work"
    work.mkdir()
    (work / "helpers.py").write_text("stale")
    (work / "tried").write_text("written by a step")
    assert main([str(archive), str(work)]) == 0
    assert (work / "helpers.py").read_text() == "def double(v):\n    return 2 * v\n"
    assert (work / "tried").read_text() == "written by a step"
    assert json.loads((work / "nb.ipynb").read_text())["cells"]
    assert (work / "run.sh").stat().st_mode & 0o111


def test_unpacking_refuses_a_path_outside_the_working_directory(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "folder.tgz.b64"
    archive.write_bytes(base64.b64encode(raw.getvalue()))
    (tmp_path / "work").mkdir()
    with pytest.raises(ValueError, match="not a file inside"):
        unpack(archive, tmp_path / "work")
    assert not (tmp_path / "escaped.py").exists()
    assert main([str(archive), str(tmp_path / "work")]) == 1


# -- the cache ------------------------------------------------------------------------------------


def test_a_steps_file_hashes_come_from_the_shipped_folder_not_the_files_now(
    tmp_path: Path,
) -> None:
    nb = _project(tmp_path)
    pipeline = compile_notebook(nb)
    step = pipeline.step("a")
    shipped = pack(nb.parent, limit=2**20, limit_text="1Mi").files
    then = input_hashes(pipeline, step, lambda p: {}, nb.parent, shipped)
    (nb.parent / "helpers.py").write_text("def double(v):\n    return 4 * v\n")
    now = input_hashes(pipeline, step, lambda p: {}, nb.parent)
    assert then["@file:helpers.py"] == shipped["helpers.py"]
    assert now["@file:helpers.py"] != then["@file:helpers.py"]
    assert input_hashes(pipeline, step, lambda p: {}, nb.parent, shipped) == then


# -- a run against the fake API server -------------------------------------------------------------


def test_a_run_imports_the_module_next_to_the_notebook_and_a_rerun_sees_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = _project(tmp_path)
    with FakeCluster(tmp_path / "cluster", execute=True) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        printed = []
        for factor in (2, 3):
            (nb.parent / "helpers.py").write_text(f"def double(v):\n    return {factor} * v\n")
            rd = prepare_run(tmp_path / "runs", nb, backend="argo")
            assert ArgoBackend().execute(rd, RunOptions()) is State.SUCCEEDED
            printed.append(rd.log_path("c").read_text().splitlines()[-1])
            assert rd.info()["argo"]["folder"]["files"]["helpers.py"]
    assert printed == ["42 84", "63 189"]
