"""``cellpipe.load`` of an Argo run's values, which stay on the cluster's storage: read from an
S3-compatible server (moto's, in this process) into the run's own directory, checked against
the hashes the step reported. The run directory is a local run's made to look as an Argo
run leaves it: per step only ``remote.json`` (and ``lineage.json``), the values in S3 as the
Workflow's ``data`` artifact (a tar.gz of the folder under its own name)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import cellpipe
import numpy as np
import pytest
from cellpipe.backends.argo.values import ValuesUnavailable, fetch
from cellpipe.rundir.runs import RunDir
from nbbuild import notebook, write

BUCKET = "cellpipe-values"
NB = notebook(
    (
        "step:make",
        "import numpy as np\nimport pandas as pd\n\n"
        "class Point:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "    def norm(self):\n"
        "        return (self.x ** 2 + self.y ** 2) ** 0.5\n\n"
        "arr = np.arange(6).reshape(2, 3) * 1.5\n"
        "frame = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\n"
        "p = Point(3, 4)",
    ),
    ("step:total", "total = arr.sum() + frame.a.sum() + p.norm()"),
    ("step:show", "print(total)"),
)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client, f"{host}:{port}"
    server.stop()


def _as_argo_left_it(rd: RunDir, client: Any, endpoint: str) -> None:
    """Each step's values into S3 as its data artifact; here only what the follower writes."""
    for step in ("make", "total"):
        directory = rd.data_dir(step)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(directory, arcname=step)
        key = f"cellpipe/{rd.run_id}/{step}/data.tgz"
        client.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
        manifest = json.loads((directory / "manifest.json").read_text())
        remote = {
            "storage": f"s3:{endpoint}/{BUCKET}/cellpipe",
            "run_key": rd.run_id,
            "manifest": manifest,
            "location": {
                "s3": {"endpoint": endpoint, "bucket": BUCKET, "insecure": True, "key": key}
            },
        }
        for item in directory.iterdir():
            if item.name != "lineage.json":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        (directory / "remote.json").write_text(json.dumps(remote))


@pytest.fixture
def argo_run(s3, cli, runs_root: Path, tmp_path: Path) -> tuple[RunDir, dict[str, Any]]:
    """A run whose values are only in S3, and the values a local run of it loads."""
    client, endpoint = s3
    nb = write(tmp_path / "points.ipynb", NB)
    proc = cli("run", str(nb), "--json", check=True)
    run_id = json.loads(proc.stdout)["run_id"]
    local = {
        "arr": np.array(cellpipe.load(run_id, "make", "arr", runs_root=runs_root)),
        "frame": cellpipe.load(run_id, "make", "frame", runs_root=runs_root),
        "p": vars(cellpipe.load(run_id, "make", "p", runs_root=runs_root)),
        "total": cellpipe.load(run_id, "total", "total", runs_root=runs_root),
    }
    rd = RunDir.open(runs_root, run_id)
    _as_argo_left_it(rd, client, endpoint)
    return rd, local


def test_load_of_an_argo_runs_values_reads_them_from_s3_equal_to_the_local_ones(
    argo_run, runs_root: Path
) -> None:
    rd, local = argo_run
    arr = cellpipe.load(rd.run_id, "make", "arr", runs_root=runs_root)
    assert arr.dtype == local["arr"].dtype and (arr == local["arr"]).all()
    assert cellpipe.load(rd.run_id, "make", "frame", runs_root=runs_root).equals(local["frame"])
    p = cellpipe.load(rd.run_id, "make", "p", runs_root=runs_root)
    assert type(p).__name__ == "Point" and vars(p) == local["p"] and p.norm() == 5.0
    assert cellpipe.load(rd.run_id, "total", "total", runs_root=runs_root) == local["total"]
    # they were copied into the run's own directory, where later loads read them
    assert (rd.data_dir("make") / "manifest.json").is_file()
    assert not list(rd.data_dir("make").glob(".fetch-*"))


def test_load_of_a_name_the_step_did_not_save_names_what_it_saved(
    argo_run, runs_root: Path
) -> None:
    rd, _ = argo_run
    with pytest.raises(KeyError, match="it saved: arr, frame, p"):
        cellpipe.load(rd.run_id, "make", "nope", runs_root=runs_root)


def test_a_value_gone_from_the_bucket_is_one_line_naming_its_key(s3, argo_run) -> None:
    client, _ = s3
    rd, _ = argo_run
    key = f"cellpipe/{rd.run_id}/make/data.tgz"
    client.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ValuesUnavailable) as err:
        fetch(rd, "make")
    assert "\n" not in str(err.value)
    assert f"s3://{BUCKET}/{key}" in str(err.value) and "is gone" in str(err.value)


def test_without_credentials_here_loading_says_which_variables_to_set(
    argo_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rd, _ = argo_run
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValuesUnavailable, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        fetch(rd, "make")
    assert not (rd.data_dir("make") / "manifest.json").exists()


def test_an_object_replaced_in_the_bucket_is_refused_before_anything_is_loaded(
    s3, argo_run
) -> None:
    client, _ = s3
    rd, _ = argo_run
    key = f"cellpipe/{rd.run_id}/total/data.tgz"
    made = f"cellpipe/{rd.run_id}/make/data.tgz"
    client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": made})
    with pytest.raises(ValuesUnavailable, match="refusing to load it"):
        fetch(rd, "total")
    assert {p.name for p in rd.data_dir("total").iterdir()} == {"lineage.json", "remote.json"}


def test_a_succeeded_run_whose_own_volume_is_gone_names_the_settings_that_keep_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argo_run
) -> None:
    from fake_k8s import FakeCluster

    rd, _ = argo_run
    rd.update_info(argo={"workflow": "cellpipe-points-x", "namespace": "team-a"})
    remote = rd.remote("make")
    remote["location"] = {
        "claim": "cellpipe-points-x-data",
        "namespace": "team-a",
        "sub_path": f"{rd.run_id}/data/make",
    }
    rd.record_remote("make", remote)
    with FakeCluster(tmp_path / "cluster", execute=False) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        with pytest.raises(ValuesUnavailable) as err:
            fetch(rd, "make")
    message = str(err.value)
    assert "\n" not in message
    assert "volume cellpipe-points-x-data when its Workflow succeeded" in message
    assert "existing_claim" in message


@pytest.fixture
def fake_argo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The notebook run on the fake cluster (a volume of its own), its pods running the
    real runner."""
    from cellpipe.backends import RunOptions
    from cellpipe.backends.argo.backend import ArgoBackend
    from cellpipe.driving.driver import prepare_run
    from fake_k8s import FakeCluster

    with FakeCluster(tmp_path / "cluster", execute=True) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        nb = write(tmp_path / "points.ipynb", NB)
        rd = prepare_run(tmp_path / "runs", nb, backend="argo")
        ArgoBackend().execute(rd, RunOptions())
        yield fake, rd


def test_lineage_of_an_argo_run_names_this_run_the_producer_and_the_input_hashes(
    fake_argo, cli, tmp_path: Path
) -> None:
    _, rd = fake_argo
    proc = cli(
        "lineage",
        rd.run_id,
        "total",
        "total",
        "--json",
        env={"CELLPIPE_RUNS_ROOT": str(tmp_path / "runs")},
        check=True,
    )
    origin = json.loads(proc.stdout)
    assert (origin["step"], origin["run"], origin["computed_in"]) == ("total", rd.run_id, rd.run_id)
    made = rd.remote("make")["manifest"]
    assert {i["name"]: (i["step"], i["computed_in"], i["sha256"]) for i in origin["inputs"]} == {
        n: ("make", rd.run_id, made[n]["sha256"]) for n in ("arr", "frame", "p")
    }


def test_load_of_a_run_on_a_volume_reads_the_values_through_a_one_pod_workflow(
    fake_argo, tmp_path: Path
) -> None:
    fake, rd = fake_argo
    assert not (rd.data_dir("make") / "manifest.json").exists()
    arr = cellpipe.load(rd.run_id, "make", "arr", runs_root=tmp_path / "runs")
    reader = fake.submitted[-1]
    assert arr.tolist() == [[0.0, 1.5, 3.0], [4.5, 6.0, 7.5]]
    (mount,) = reader["spec"]["templates"][1]["container"]["volumeMounts"]
    assert mount["subPath"] == f"{rd.run_id}/data/make" and mount["readOnly"] is True
    assert (rd.data_dir("make") / "manifest.json").is_file()
