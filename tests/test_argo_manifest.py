"""Argo manifests: every one we generate passes Argo's official schema in strict mode and the
graph rules, and carries what the notebook asked for (resources, GPU, retries, volumes, S3,
parameters, secrets by reference only, schedules)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cellpipe.backends.argo.errors import ArgoSettingsError
from cellpipe.backends.argo.folder import for_settings
from cellpipe.backends.argo.manifest import (
    ArgoSettings,
    RunTarget,
    Schedule,
    build_cron_workflow,
    build_workflow,
    fanned_out,
    file_warnings,
    label_value,
    to_yaml,
    workflow_name,
)
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.core.errors import CompileError
from nbbuild import notebook, write

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "argo_validate", REPO / "tests/data/argo/validate.py"
)
argo_validate = importlib.util.module_from_spec(_spec)
sys.modules["argo_validate"] = argo_validate
_spec.loader.exec_module(argo_validate)
_VALIDATORS = argo_validate.make_validators(True)
SECRET_SENTINEL = "s3cr3t-value-never-in-a-manifest"
IMAGES = "ghcr.io/example/cellpipe-step:0123456789abcdef0123"


def manifest_problems(doc: dict[str, Any]) -> list[str]:
    """Problems of ``doc`` as written to YAML: strict schema + graph rules (Argo's own)."""
    loaded = yaml.load(to_yaml(doc), Loader=argo_validate.Loader)
    kind = loaded["kind"]
    found = list(argo_validate.schema_errors(_VALIDATORS[kind], loaded))
    found += argo_validate.Linter(loaded, kind).run()
    return [f"{path}: {msg}" for path, msg in found]


def _workflow(tmp_path: Path, nb: dict, nb_name: str = "nb", **target: Any) -> dict[str, Any]:
    pipeline = compile_notebook(write(tmp_path / f"{nb_name}.ipynb", nb))
    settings = ArgoSettings.from_notebook(pipeline.settings)
    images = {s.name: IMAGES for s in pipeline.steps}
    run = RunTarget(**target) if target else None
    return build_workflow(pipeline, settings, target=run, images=images)


def _template(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return next(t for t in spec["templates"] if t["name"] == name)


def _tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _template(doc, "main")["dag"]["tasks"]}


def _compiles(path: Path):
    try:
        return compile_notebook(path)
    except CompileError:
        return None


NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb")) + sorted(
    (REPO / "tests/notebooks").glob("*.ipynb")
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_example_and_adversarial_notebook_gives_a_valid_workflow(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLPIPE_TEST_TOKEN", SECRET_SENTINEL)
    pipeline = _compiles(path)
    if pipeline is None:
        return  # notebooks that must not compile are covered by the compile tests
    settings = ArgoSettings.from_notebook(pipeline.settings)
    images = {s.name: IMAGES for s in pipeline.steps}
    docs = [
        build_workflow(pipeline, settings, images=images),
        build_workflow(
            pipeline,
            settings,
            target=RunTarget(
                "20260101-000000-abcdef", workflow_name(pipeline, "20260101-000000-abcdef")
            ),
            images=images,
        ),
        build_cron_workflow(pipeline, settings, Schedule(("0 3 * * *",)), images=images),
        # as `cellpipe run` submits it: the notebook's folder unpacked by a first task
        build_workflow(
            pipeline,
            settings,
            target=RunTarget("20260101-000000-abcdef", "cellpipe-nb-20260101-000000-abcdef"),
            images=images,
            folder=for_settings(settings, path.parent),
        ),
    ]
    for doc in docs:
        assert manifest_problems(doc) == []
        assert SECRET_SENTINEL not in to_yaml(doc)
    tasks = _tasks(docs[0])
    assert sorted(tasks) == sorted(_template(docs[0], t)["name"] for t in tasks)
    # A task per step; a foreach step fans out with two more (<step>-items, -iteration).
    fanned = fanned_out(pipeline, list(pipeline.steps), settings)
    assert len(tasks) == len(pipeline.steps) + 2 * len(fanned)


def test_a_step_runs_the_runner_on_its_own_step_with_the_run_files_inline(tmp_path: Path) -> None:
    doc = _workflow(tmp_path, notebook(("step:load", "x = 1"), ("step:train_model", "y = x + 1")))
    t = _template(doc, "train-model")
    assert t["container"]["command"] == ["python3", "-m", "cellpipe.runner"]
    assert t["container"]["args"][:5] == [
        "--run-dir",
        "/cellpipe/run",
        "--step",
        "train_model",
        "--result-trailer",
    ]
    artifacts = {a["name"]: a for a in t["inputs"]["artifacts"]}
    shipped = json.loads(artifacts["pipeline"]["raw"]["data"])
    assert [s["name"] for s in shipped["steps"]] == ["load", "train_model"]
    # Its own cells' source only; the earlier step's cell is a placeholder that keeps the
    # cells numbered as top to bottom (Out[n]).
    assert [c["source"] for c in shipped["cells"]] == ["", "y = x + 1"]
    assert [c["tags"] for c in shipped["cells"]] == [[], ["step:train_model"]]
    assert artifacts["script"]["path"] == "/cellpipe/run/steps/train_model.py"
    assert "y = x + 1" in artifacts["script"]["raw"]["data"]
    assert _tasks(doc)["train-model"]["dependencies"] == ["load"]
    assert _template(doc, "main")["dag"]["failFast"] is False


def test_a_pod_numbers_its_step_cells_as_a_top_to_bottom_run_does(tmp_path: Path) -> None:
    from cellpipe.core.model import Pipeline
    from cellpipe.execution.hidden_state import execution_counts

    nb = notebook(
        ("imports", "import math"),
        ("step:make", "a = 1"),
        ("skip", "print('not run')"),
        ("step:result", "6 * 7"),
        ("step:show", "print(Out[3])"),
    )
    path = write(tmp_path / "nb.ipynb", nb)
    doc = _workflow(tmp_path, nb)
    everything = execution_counts(compile_notebook(path), {})
    for step in ("make", "result", "show"):
        artifacts = {a["name"]: a for a in _template(doc, step)["inputs"]["artifacts"]}
        shipped = Pipeline.from_json(json.loads(artifacts["pipeline"]["raw"]["data"]))
        own = shipped.step(step).cells
        in_pod = execution_counts(shipped, {})
        assert {c: in_pod[c] for c in own} == {c: everything[c] for c in own}
    assert sorted(everything.values()) == [1, 2, 3, 4]


SEEDED_THEN_LIBRARIES = notebook(
    ("imports", "import numpy as np\nfrom sklearn.model_selection import train_test_split"),
    ("step:load", "X = np.arange(20.0).reshape(10, 2)"),
    ("step:seed", "np.random.seed(0)"),
    ("step:split", "parts = train_test_split(X)"),
    ("step:other", "total = X.sum()"),
    ("step:show", "print(parts[0][0], total)"),
)


def test_after_a_seed_every_step_follows_the_one_before_it_and_starts_from_its_generators(
    tmp_path: Path,
) -> None:
    doc = _workflow(tmp_path, SEEDED_THEN_LIBRARIES)
    assert manifest_problems(doc) == []
    tasks = _tasks(doc)
    # `other` reads only X, yet follows `split`: a library there may draw from np.random.
    assert tasks["split"]["dependencies"] == ["load", "seed"]
    assert tasks["other"]["dependencies"] == ["load", "split"]
    assert sorted(tasks["show"]["dependencies"]) == ["other", "split"]
    # Up to the first cell that seeds or draws, generators are unseeded: no order to keep.
    assert "dependencies" not in tasks["load"] and "dependencies" not in tasks["seed"]
    artifacts = {a["name"]: a for a in _template(doc, "other")["inputs"]["artifacts"]}
    entry = json.loads(artifacts["hidden-entry"]["raw"]["data"])
    assert artifacts["hidden-entry"]["path"] == "/cellpipe/run/hidden/other.json"
    assert set(entry.values()) == {"split"} and "numpy.random" in entry
    for first in ("load", "seed"):
        names = {a["name"] for a in _template(doc, first)["inputs"]["artifacts"]}
        assert "hidden-entry" not in names


def test_without_a_global_generator_parallel_steps_stay_parallel_on_argo(tmp_path: Path) -> None:
    nb = notebook(
        ("step:load", "data = [1, 2, 3]"),
        ("step:left", "left = sum(data)"),
        ("step:right", "right = max(data)"),
        ("step:join", "print(left, right)"),
    )
    tasks = _tasks(_workflow(tmp_path, nb))
    assert tasks["left"]["dependencies"] == tasks["right"]["dependencies"] == ["load"]


def test_a_seed_in_the_imports_cell_chains_every_step(tmp_path: Path) -> None:
    from cellpipe.backends.argo.manifest import hidden_chain

    nb = notebook(
        ("imports", "import random\nrandom.seed(1)"),
        ("step:a", "x = 1"),
        ("step:b", "y = 2"),
        ("step:c", "print(x + y)"),
    )
    pipeline = compile_notebook(write(tmp_path / "nb.ipynb", nb))
    assert hidden_chain(pipeline) == {"b": "a", "c": "b"}


def test_steps_share_a_per_run_volume_for_data_and_the_working_directory(tmp_path: Path) -> None:
    nb = notebook(
        ("step:a", "x = 1"),
        ("step:b", "print(x)"),
        metadata={"cellpipe": {"argo": {"volume_size": "20Gi", "storage_class": "fast-ssd"}}},
    )
    doc = _workflow(tmp_path, nb)
    claim = doc["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert doc["spec"]["volumeClaimGC"] == {"strategy": "OnWorkflowSuccess"}
    mounts = {m["mountPath"]: m for m in _template(doc, "b")["container"]["volumeMounts"]}
    assert mounts["/cellpipe/run/data"]["subPath"] == "{{workflow.name}}/data"
    assert mounts["/cellpipe/work"]["subPath"] == "{{workflow.name}}/work"
    assert _template(doc, "b")["container"]["workingDir"] == "/cellpipe/work"
    assert manifest_problems(doc) == []


def test_an_existing_claim_replaces_the_per_run_volume(tmp_path: Path) -> None:
    nb = notebook(
        ("step:a", "x = 1"), metadata={"cellpipe": {"argo": {"existing_claim": "team-data"}}}
    )
    doc = _workflow(tmp_path, nb, run_id="20260101-000000-abcdef", name="cellpipe-nb-x")
    assert "volumeClaimTemplates" not in doc["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "team-data"}} in doc["spec"][
        "volumes"
    ]
    mounts = {m["mountPath"]: m for m in _template(doc, "a")["container"]["volumeMounts"]}
    assert mounts["/cellpipe/run/data"]["subPath"] == "20260101-000000-abcdef/data"
    assert manifest_problems(doc) == []


def test_resources_gpu_retries_and_timeouts_come_from_the_step_tags(tmp_path: Path) -> None:
    nb = notebook(
        ("step:prep limit:cpu:2 limit:memory:4Gi retry:3 timeout:600", "x = 1"),
        ("step:train gpu:2", "y = x"),
        ("step:kale limit:nvidia.com/gpu:1", "z = y"),
        metadata={
            "cellpipe": {
                "argo": {
                    "gpu_node_selector": {"accelerator": "a100"},
                    "node_selector": {"pool": "batch"},
                }
            }
        },
    )
    doc = _workflow(tmp_path, nb)
    prep = _template(doc, "prep")
    assert prep["container"]["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert prep["retryStrategy"]["limit"] == 3
    assert prep["activeDeadlineSeconds"] == 600
    assert "nodeSelector" not in prep
    train = _template(doc, "train")
    assert train["container"]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert train["nodeSelector"] == {"pool": "batch", "accelerator": "a100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train[
        "tolerations"
    ]
    assert _template(doc, "kale")["container"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert doc["spec"]["nodeSelector"] == {"pool": "batch"}
    assert manifest_problems(doc) == []


def test_parameters_become_workflow_arguments_passed_to_every_step(tmp_path: Path) -> None:
    nb = notebook(
        ("parameters", "rate = 0.5\nname = 'wine'\nsizes = list(range(3))"),
        ("step:a", "print(rate, name, sizes)"),
    )
    doc = _workflow(
        tmp_path, nb, run_id="20260101-000000-abcdef", name="w", parameters={"rate": 0.25}
    )
    args = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    # Overrides as Python literals; untouched parameters as the cell's own text.
    assert args == {"rate": "0.25", "name": "'wine'", "sizes": "list(range(3))"}
    container_args = _template(doc, "a")["container"]["args"]
    assert "rate={{workflow.parameters.rate}}" in container_args
    assert manifest_problems(doc) == []


def test_secrets_are_referenced_by_name_and_never_inlined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", SECRET_SENTINEL)
    nb = notebook(
        ("step:a secret:api-creds:token:API_TOKEN secret:tls-certs:/etc/certs", "import os"),
        ("step:b", "print(1)"),
    )
    doc = _workflow(tmp_path, nb)
    container = _template(doc, "a")["container"]
    env = {e["name"]: e for e in container["env"]}
    assert env["API_TOKEN"] == {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "token"}},
    }
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/certs")
    assert mount["readOnly"] is True
    volume = next(v for v in doc["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "tls-certs"}
    assert "API_TOKEN" not in {e["name"] for e in _template(doc, "b")["container"]["env"]}
    assert SECRET_SENTINEL not in to_yaml(doc)
    assert manifest_problems(doc) == []


def test_kale_annotation_and_label_tags_go_on_the_step_pod(tmp_path: Path) -> None:
    nb = notebook(("step:a annotation:team.io/owner:ml label:tier:gold", "x = 1"))
    meta = _template(_workflow(tmp_path, nb), "a")["metadata"]
    assert meta["annotations"]["team.io/owner"] == "ml"
    assert meta["labels"]["tier"] == "gold"


def test_s3_carries_data_as_keyed_artifacts_with_credentials_by_secret_reference(
    tmp_path: Path,
) -> None:
    s3 = {
        "endpoint": "minio.storage:9000",
        "bucket": "pipelines",
        "insecure": True,
        "access_key_secret": "minio-creds:accesskey",
        "secret_key_secret": "minio-creds:secretkey",
    }
    nb = notebook(
        ("step:a", "x = 1"), ("step:b", "print(x)"), metadata={"cellpipe": {"argo": {"s3": s3}}}
    )
    doc = _workflow(tmp_path, nb, run_id="20260101-000000-abcdef", name="w")
    assert "volumeClaimTemplates" not in doc["spec"]
    out = {a["name"]: a for a in _template(doc, "a")["outputs"]["artifacts"]}
    assert out["data"]["s3"] == {
        "endpoint": "minio.storage:9000",
        "bucket": "pipelines",
        "insecure": True,
        "accessKeySecret": {"name": "minio-creds", "key": "accesskey"},
        "secretKeySecret": {"name": "minio-creds", "key": "secretkey"},
        "key": "cellpipe/20260101-000000-abcdef/a/data.tgz",
    }
    assert out["report"]["path"] == "/cellpipe/run/reports/a.html"
    assert out["report"]["optional"] is True
    inputs = {a["name"]: a for a in _template(doc, "b")["inputs"]["artifacts"]}
    assert inputs["data-a"]["path"] == "/cellpipe/run/data/a"
    assert inputs["data-a"]["s3"]["key"] == "cellpipe/20260101-000000-abcdef/a/data.tgz"
    assert manifest_problems(doc) == []


def test_s3_default_repository_by_config_map_reference(tmp_path: Path) -> None:
    nb = notebook(
        ("step:a", "x = 1"),
        metadata={"cellpipe": {"argo": {"s3": {"repository_ref": "artifacts:minio"}}}},
    )
    doc = _workflow(tmp_path, nb)
    assert doc["spec"]["artifactRepositoryRef"] == {"configMap": "artifacts", "key": "minio"}
    key_only = _template(doc, "a")["outputs"]["artifacts"][0]["s3"]
    assert key_only == {"key": "cellpipe/{{workflow.name}}/a/data.tgz"}
    assert manifest_problems(doc) == []


@pytest.mark.parametrize(
    ("argo", "message"),
    [
        (
            {"s3": {"endpoint": "x", "bucket": "b", "access_key": SECRET_SENTINEL}},
            "credentials never go",
        ),
        ({"password": SECRET_SENTINEL}, "credentials never go"),
        ({"volume_size": "2 GB"}, "volume_size: expects a quantity"),
        ({"storage_clas": "x"}, "did you mean `storage_class`"),
        ({"run_as_user": 0}, "never run as root"),
        ({"s3": {"endpoint": "x", "bucket": "b"}}, "name the credentials' Secret"),
        ({"namespace": "Team_A"}, "expects a Kubernetes name"),
    ],
)
def test_bad_settings_are_refused_naming_the_field_without_echoing_secrets(
    argo: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArgoSettingsError, match=message) as err:
        ArgoSettings.from_notebook({"argo": argo})
    if "credentials" in message:
        assert SECRET_SENTINEL not in str(err.value)


def test_steps_run_as_non_root_and_the_workflow_cleans_up_after_itself(tmp_path: Path) -> None:
    doc = _workflow(tmp_path, notebook(("step:a", "x = 1")))
    assert doc["spec"]["securityContext"]["runAsNonRoot"] is True
    assert doc["spec"]["securityContext"]["runAsUser"] == 1000
    sc = _template(doc, "a")["container"]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert doc["spec"]["podGC"]["strategy"] == "OnWorkflowSuccess"
    assert doc["spec"]["ttlStrategy"] == {
        "secondsAfterSuccess": 3600,
        "secondsAfterFailure": 604800,
    }


def test_service_account_tolerations_and_pull_secrets_from_settings(tmp_path: Path) -> None:
    nb = notebook(
        ("step:a", "x = 1"),
        metadata={
            "cellpipe": {
                "argo": {
                    "service_account": "cellpipe-step",
                    "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                    "image_pull_secrets": ["registry-creds"],
                    "namespace": "ml",
                }
            }
        },
    )
    doc = _workflow(tmp_path, nb)
    assert doc["spec"]["serviceAccountName"] == "cellpipe-step"
    assert doc["spec"]["tolerations"][0]["key"] == "spot"
    assert doc["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert doc["metadata"]["namespace"] == "ml"
    assert manifest_problems(doc) == []


def test_images_are_the_planned_content_hash_references_with_the_registry(tmp_path: Path) -> None:
    nb = notebook(
        ("step:a", "x = 1"),
        ("step:b image:python:3.12-slim", "y = x"),
        metadata={"cellpipe": {"argo": {"registry": "ghcr.io/team"}}},
    )
    pipeline = compile_notebook(write(tmp_path / "nb.ipynb", nb))
    from cellpipe.backends.images import plan_images

    planned = plan_images(pipeline, "ghcr.io/team")
    doc = build_workflow(pipeline, ArgoSettings.from_notebook(pipeline.settings))
    assert _template(doc, "a")["container"]["image"] == planned["a"].ref
    assert _template(doc, "b")["container"]["image"] == planned["b"].ref
    assert planned["a"].ref.startswith("ghcr.io/team/")
    assert planned["a"].ref != planned["b"].ref


def test_names_and_labels_are_sanitised_from_any_notebook_name(tmp_path: Path) -> None:
    name = "My Notebook (v2) — ünïcode & a very long title that goes on and on and on"
    doc = _workflow(tmp_path, notebook(("step:a", "x = 1")), nb_name=name)
    assert doc["metadata"]["generateName"].startswith("cellpipe-my-notebook-v2-")
    assert label_value(name) == "My-Notebook-v2-n-code-a-very-long-title-that-goes-on-and-on-and"
    assert label_value("--__x__--") == "x"
    assert manifest_problems(doc) == []
    pipeline = compile_notebook(tmp_path / f"{name}.ipynb")
    run_name = workflow_name(pipeline, "20260101-000000-abcdef", attempt=2)
    assert len(run_name) <= 63 and run_name.endswith("-20260101-000000-abcdef-r2")


def test_a_resumed_run_leaves_out_succeeded_steps_and_reuses_their_volume(tmp_path: Path) -> None:
    nb = notebook(("step:a", "x = 1"), ("step:b", "y = x + 1"), ("step:c", "print(y)"))
    doc = _workflow(
        tmp_path,
        nb,
        run_id="20260101-000000-abcdef",
        name="w-r2",
        skip=("a",),
        claim="cellpipe-nb-20260101-000000-abcdef-data",
    )
    tasks = _tasks(doc)
    assert sorted(tasks) == ["b", "c"]
    assert "dependencies" not in tasks["b"]
    assert doc["spec"]["volumes"][-1]["persistentVolumeClaim"]["claimName"].endswith("-data")
    assert manifest_problems(doc) == []


def test_a_gate_is_an_output_parameter_that_every_task_downstream_is_conditioned_on(
    tmp_path: Path,
) -> None:
    nb = notebook(
        ("step:train", "accuracy = 0.5"),
        ("step:evaluate gate:accuracy>=0.9", "score = accuracy"),
        ("step:deploy", "model = score"),
        ("step:announce", "print(model)"),
        ("step:elsewhere", "print(accuracy)"),
    )
    doc = _workflow(tmp_path, nb)
    (gate,) = _template(doc, "evaluate")["outputs"]["parameters"]
    assert gate["name"] == "gate"
    assert gate["valueFrom"] == {"path": "/cellpipe/run/outputs/evaluate.gate", "default": "closed"}
    tasks = _tasks(doc)
    opened = "'{{tasks.evaluate.outputs.parameters.gate}}' == 'open'"
    # Argo counts a skipped dependency as done: each task downstream checks the gate itself.
    assert tasks["deploy"]["when"] == opened
    assert tasks["announce"]["when"] == opened
    assert "when" not in tasks["train"] and "when" not in tasks["evaluate"]
    assert "when" not in tasks["elsewhere"]
    assert manifest_problems(doc) == []


def test_cached_producers_are_read_where_their_run_left_them_on_the_claim(
    tmp_path: Path,
) -> None:
    nb = notebook(
        ("step:a", "x = 1"),
        ("step:b", "y = x + 1"),
        ("step:c", "print(x, y)"),
        metadata={"cellpipe": {"argo": {"existing_claim": "shared"}}},
    )
    doc = _workflow(
        tmp_path,
        nb,
        run_id="20260102-000000-bbbbbb",
        name="w",
        skip=("a",),
        reuse={"a": "20260101-000000-aaaaaa"},
    )
    assert sorted(_tasks(doc)) == ["b", "c"]
    for step in ("b", "c"):
        mounts = _template(doc, step)["container"]["volumeMounts"]
        assert {
            "name": "data",
            "mountPath": "/cellpipe/run/data/a",
            "subPath": "20260101-000000-aaaaaa/data/a",
            "readOnly": True,
        } in mounts
        assert {
            "name": "data",
            "mountPath": "/cellpipe/run/data",
            "subPath": "20260102-000000-bbbbbb/data",
        } in mounts
    assert manifest_problems(doc) == []


def test_cached_producers_on_s3_are_read_from_their_run_keys(tmp_path: Path) -> None:
    s3 = {
        "endpoint": "minio:9000",
        "bucket": "b",
        "access_key_secret": "s3:a",
        "secret_key_secret": "s3:s",
    }
    nb = notebook(
        ("step:a", "x = 1"),
        ("step:b", "y = x + 1"),
        metadata={"cellpipe": {"argo": {"s3": s3}}},
    )
    doc = _workflow(tmp_path, nb, run_id="run2", name="w", skip=("a",), reuse={"a": "run1"})
    (artifact,) = [a for a in _template(doc, "b")["inputs"]["artifacts"] if "s3" in a]
    assert artifact["s3"]["key"] == "cellpipe/run1/a/data.tgz"
    assert manifest_problems(doc) == []


class _Yaml11Loader(yaml.SafeLoader):
    """Reads plain y/n/yes/no/on/off as booleans, as kubectl's and Argo's YAML readers do."""


_Yaml11Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:y|Y|n|N|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$"),
    list("yYnNoO"),
)


def test_names_that_yaml_11_reads_as_booleans_stay_strings_in_the_written_manifest(
    tmp_path: Path,
) -> None:
    nb = notebook(("parameters", "n = 3\ny = 'on'"), ("step:a", "print(n, y)"))
    doc = _workflow(tmp_path, nb)
    (read,) = yaml.load_all(to_yaml(doc), Loader=_Yaml11Loader)
    assert read["spec"]["arguments"]["parameters"] == [
        {"name": "n", "value": "3"},
        {"name": "y", "value": "'on'"},
    ]
    assert read == json.loads(json.dumps(doc))


def test_a_schedule_is_a_cron_workflow_with_its_policy_and_history(tmp_path: Path) -> None:
    pipeline = compile_notebook(write(tmp_path / "nightly.ipynb", notebook(("step:a", "x = 1"))))
    doc = build_cron_workflow(
        pipeline,
        ArgoSettings(),
        Schedule(
            ("0 3 * * *", "30 12 * * 1-5"),
            timezone="Europe/Paris",
            concurrency_policy="Replace",
            successful_history=5,
            failed_history=2,
        ),
        images={"a": IMAGES},
    )
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "cellpipe-nightly"
    assert spec["schedules"] == ["0 3 * * *", "30 12 * * 1-5"]
    assert (spec["timezone"], spec["concurrencyPolicy"]) == ("Europe/Paris", "Replace")
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (5, 2)
    assert spec["workflowSpec"]["entrypoint"] == "main"
    assert manifest_problems(doc) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crons": ("0 3 * *",)}, "must have 5 fields"),
        ({"crons": ("0 3 * * *",), "concurrency_policy": "Sometimes"}, "not one of Allow"),
        ({"crons": ("0 3 * * *",), "timezone": "Paris time"}, "not an IANA name"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ArgoSettingsError, match=message):
        Schedule(**kwargs)


def test_the_validator_catches_what_it_should(tmp_path: Path) -> None:
    """The check itself is not vacuous: a misspelt field and a dangling dependency fail."""
    doc = _workflow(tmp_path, notebook(("step:a", "x = 1"), ("step:b", "print(x)")))
    _tasks(doc)["b"]["dependencies"] = ["nope"]
    _template(doc, "a")["retryStratgy"] = {"limit": 1}
    problems = "\n".join(manifest_problems(doc))
    assert "'retryStratgy' was unexpected" in problems
    assert "dependency 'nope' is not a task" in problems


def test_compile_warns_about_files_next_to_the_notebook_that_pods_cannot_see(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.csv").write_text("a\n1\n")
    nb = notebook(
        ("imports", "import pandas as pd"),
        ("step:load", "df = pd.read_csv('train.csv')\ndf.to_csv('clean.csv')"),
        ("step:use", "df2 = pd.read_csv('clean.csv')"),
    )
    pipeline = compile_notebook(write(tmp_path / "nb.ipynb", nb))
    assert file_warnings(pipeline, tmp_path, ArgoSettings()) == []  # shipped with the folder
    ignored = ArgoSettings.from_notebook({"argo": {"folder_ignore": ["*.csv"]}})
    on_volume = file_warnings(pipeline, tmp_path, ignored)
    assert [(d.step, d.name) for d in on_volume] == [("load", "train.csv")]
    assert "leaves it out" in on_volume[0].message
    assert "put it in the image" in on_volume[0].message
    not_shipped = ArgoSettings.from_notebook({"argo": {"ship_folder": False}})
    (off,) = file_warnings(pipeline, tmp_path, not_shipped)
    assert "ship_folder is false" in off.message
    with_s3 = file_warnings(pipeline, tmp_path, ArgoSettings.from_notebook({"argo": {"s3": True}}))
    assert ("use", "clean.csv") in [(d.step, d.name) for d in with_s3]


def _kale(*volumes: dict[str, Any]) -> dict:
    return notebook(
        ("step:a", "x = 1"),
        ("step:b", "print(x)"),
        metadata={"kubeflow_notebook": {"volumes": list(volumes)}},
    )


def test_kale_volumes_of_type_pvc_and_new_pvc_are_mounted_in_every_step(tmp_path: Path) -> None:
    doc = _workflow(
        tmp_path,
        _kale(
            {"type": "pvc", "name": "datasets", "mount_point": "/home/jovyan/data"},
            {
                "type": "new_pvc",
                "name": "scratch",
                "mount_point": "/scratch",
                "size": 5,
                "size_type": "Gi",
                "annotations": [{"key": "team", "value": "ml"}],
            },
        ),
    )
    volumes = {v["name"]: v for v in doc["spec"]["volumes"]}
    assert volumes["kale-datasets"]["persistentVolumeClaim"] == {"claimName": "datasets"}
    scratch = next(
        c for c in doc["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == "kale-scratch"
    )
    assert scratch["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert scratch["metadata"]["annotations"] == {"team": "ml"}
    for step in ("a", "b"):
        mounts = {
            m["mountPath"]: m["name"] for m in _template(doc, step)["container"]["volumeMounts"]
        }
        assert mounts["/home/jovyan/data"] == "kale-datasets"
        assert mounts["/scratch"] == "kale-scratch"
    assert manifest_problems(doc) == []


def test_a_kale_rok_snapshot_volume_is_refused_saying_what_argo_takes(tmp_path: Path) -> None:
    with pytest.raises(ArgoSettingsError, match=r"give type `pvc`.*or `new_pvc`"):
        _workflow(
            tmp_path,
            _kale({"type": "clone", "name": "workspace", "mount_point": "/home/jovyan"}),
        )
