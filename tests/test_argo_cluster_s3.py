"""On the real cluster, with an S3-compatible artifact repository: moto's S3 server, started
for these tests on the node's address (the pods reach it as they reach the API server), with
IAM checking every request's signature, and a Kubernetes Secret holding its credentials.

A run's values travel between steps as the Workflow's artifacts (``data.tgz`` per step);
the run directory here gets what it gets on a volume, and ``cellpipe.load`` / ``cellpipe
lineage`` read the values back from the bucket with the credentials this machine has (the
standard AWS variables). Fixtures and helpers are ``tests/test_argo_cluster.py``'s."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from oracle import REPO, differences, run_pipeline, run_top_to_bottom
from test_argo_cluster import (  # noqa: F401  (cluster: the fixture)
    _cellpipe,
    _kubectl,
    _pods,
    _push_images,
    _run,
    _step_states,
    _workflows,
    cluster,
)

pytestmark = pytest.mark.usefixtures("cluster")

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, as the pods and this machine reach it
    bucket: str
    secret: str  # the Secret holding the right credentials (keys access_key, secret_key)
    wrong_secret: str  # a Secret with the right access key and a wrong secret key
    access_key: str
    secret_key: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def settings(self, secret: str | None = None, bucket: str | None = None) -> dict[str, Any]:
        name = secret or self.secret
        return {
            "endpoint": self.endpoint,
            "bucket": bucket or self.bucket,
            "region": REGION,
            "insecure": True,
            "access_key_secret": f"{name}:access_key",
            "secret_key_secret": f"{name}:secret_key",
        }

    def local_env(self) -> dict[str, str]:
        """The credentials a user has on this machine, as the AWS tools read them."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def _node_ip() -> str:
    out = _kubectl(
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type=='InternalIP')].address}",
        admin=True,
    ).stdout.strip()
    assert out, "the node has no InternalIP"
    return out


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(cluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """moto's S3 server on the node's InternalIP, a bucket, and the credentials' Secrets."""
    import boto3

    host = _node_ip()
    port = _free_port(host)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # The first three requests (the IAM user, its key, its policy) need no signature; every
    # later one is checked against IAM, so a wrong secret key is refused as S3 refuses it.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.2)
        anonymous = {
            "endpoint_url": f"http://{host}:{port}",
            "region_name": REGION,
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="cellpipe")
        key = iam.create_access_key(UserName="cellpipe")["AccessKey"]
        everything = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName="cellpipe",
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        tag = uuid.uuid4().hex[:8]
        server_info = S3Server(
            endpoint=f"{host}:{port}",
            bucket=f"cellpipe-{tag}",
            secret=f"s3-creds-{tag}",
            wrong_secret=f"s3-wrong-{tag}",
            access_key=key["AccessKeyId"],
            secret_key=key["SecretAccessKey"],
        )
        server_info.client().create_bucket(Bucket=server_info.bucket)
        for name, secret_key in (
            (server_info.secret, server_info.secret_key),
            (server_info.wrong_secret, "not-the-" + server_info.secret_key),
        ):
            _kubectl(
                "create",
                "secret",
                "generic",
                name,
                f"--from-literal=access_key={server_info.access_key}",
                f"--from-literal=secret_key={secret_key}",
                admin=True,
            )
        try:
            yield server_info
        finally:
            for name in (server_info.secret, server_info.wrong_secret):
                _kubectl("delete", "secret", name, "--ignore-not-found", admin=True, check=False)
    finally:
        server.terminate()
        server.wait(timeout=10)


#: Three steps: an array, a frame and an instance of a notebook class, used downstream.
CELLS = (
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
        "p = Point(3, 4)\n"
        "print('made', arr.shape, len(frame))",
    ),
    (
        "step:total",
        "total = arr.sum() + frame.a.sum() + p.norm()\nprint('total', total)\ntotal",
    ),
    ("step:show", "print('double', total * 2, type(p).__name__)"),
)


def _s3_notebook(path: Path, s3_settings: dict[str, Any], *cells: tuple[str, str]) -> Path:
    return write(
        path,
        notebook(*(cells or CELLS), metadata={"cellpipe": {"argo": {"s3": s3_settings}}}),
    )


@dataclass(frozen=True)
class S3Run:
    nb: Path
    run_id: str
    run_dir: Path
    executed: Any
    expected: Any
    took: float


@pytest.fixture(scope="module")
def s3_run(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> S3Run:
    """The three-step notebook run once on S3 (with --output), and top to bottom."""
    work = tmp_path_factory.mktemp("s3run")
    nb = _s3_notebook(work / "points.ipynb", s3.settings())
    ref = work / "ref"
    ref.mkdir()
    shutil.copy(nb, ref / nb.name)
    _push_images(nb)
    started = time.monotonic()
    executed, proc = run_pipeline(nb, work, None, ("--backend", "argo"))
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert executed is not None, "--output wrote no executed notebook"
    (run_dir,) = [d for d in (work / "runs").iterdir() if not d.name.startswith(".")]
    return S3Run(nb, run_dir.name, run_dir, executed, run_top_to_bottom(ref / nb.name), took)


def test_a_run_on_s3_passes_values_as_artifacts_and_prints_what_top_to_bottom_prints(
    s3: S3Server, s3_run: S3Run
) -> None:
    problems = differences(s3_run.expected, s3_run.executed)
    assert not problems, "argo on S3 differs from top to bottom:\n" + "\n".join(problems)
    states = _step_states(s3_run.run_dir)
    assert {s: v["state"] for s, v in states.items()} == dict.fromkeys(states, "succeeded")
    (wf,) = _workflows(s3_run.run_id)
    assert not wf["spec"].get("volumeClaimTemplates")  # no volume: the values are in S3
    # (no Prefix: moto's signature check gets a query string with an encoded `/` wrong)
    listed = s3.client().list_objects_v2(Bucket=s3.bucket)
    keys = {o["Key"] for o in listed.get("Contents", [])}
    for step in ("make", "total"):
        assert f"cellpipe/{s3_run.run_id}/{step}/data.tgz" in keys, keys
    print(f"3 steps on argo with S3 artifacts: {s3_run.took:.1f}s")


def test_an_unchanged_rerun_on_s3_is_all_cached_and_starts_no_pod(
    s3_run: S3Run,
) -> None:
    started = time.monotonic()
    second, proc = _run(s3_run.nb)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rd = s3_run.run_dir.parent / second["run_id"]
    states = _step_states(rd)
    assert {s: v["state"] for s, v in states.items()} == dict.fromkeys(states, "cached")
    assert all(v["message"] == f"unchanged since run {s3_run.run_id}" for v in states.values())
    assert _workflows(second["run_id"]) == [] and _pods(second["run_id"]) == []
    assert "double" in (rd / "logs" / "show.log").read_text()
    print(f"fully cached re-run on S3: {took:.1f}s, no workflow")


def test_a_closed_gate_on_s3_skips_the_steps_downstream_with_its_reason(
    s3: S3Server, tmp_path: Path
) -> None:
    nb = _s3_notebook(
        tmp_path / "gated.ipynb",
        s3.settings(),
        ("step:evaluate gate:accuracy>=0.9", "accuracy = 0.5"),
        ("step:deploy", "deployed = accuracy * 2\nprint('deployed')"),
        ("step:announce", "print('announced', deployed)"),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / result["run_id"])
    reason = "gate accuracy>=0.9 closed: accuracy=0.5 (step evaluate)"
    assert {s: (v["state"], v["message"]) for s, v in states.items()} == {
        "evaluate": ("succeeded", reason),
        "deploy": ("skipped", reason),
        "announce": ("skipped", reason),
    }
    pods = _pods(result["run_id"])
    assert sorted(p["metadata"]["labels"]["cellpipe.io/step"] for p in pods) == ["evaluate"]


def test_cellpipe_report_of_an_s3_run_shows_its_values_from_this_machine(
    s3_run: S3Run,
) -> None:
    proc = _cellpipe("report", s3_run.run_id, "-o", "-", cwd=s3_run.run_dir.parent.parent)
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    for text in ("total", "make", "show", "ndarray", "DataFrame", "Point"):
        assert text in page, text
    assert "double" in page  # the last step's printed output


def _run_failing(nb: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str], float]:
    _push_images(nb)
    started = time.monotonic()
    result, proc = _run(nb)
    return result, proc, time.monotonic() - started


def test_a_missing_bucket_fails_the_step_in_one_line_naming_the_bucket(
    s3: S3Server, tmp_path: Path
) -> None:
    nb = _s3_notebook(
        tmp_path / "nobucket.ipynb",
        s3.settings(bucket="cellpipe-no-such-bucket"),
        ("step:make", "x = 1"),
        ("step:use", "print(x)"),
    )
    result, proc, took = _run_failing(nb)
    assert proc.returncode != 0
    assert took < 180
    message = _step_states(tmp_path / "runs" / result["run_id"])["make"]["message"]
    assert "\n" not in message and "cellpipe-no-such-bucket" in message, message
    assert "does not exist" in message, message
    print(f"missing bucket: failed in {took:.1f}s: {message}")


def test_a_wrong_secret_key_fails_the_step_in_one_line_naming_the_secret(
    s3: S3Server, tmp_path: Path
) -> None:
    nb = _s3_notebook(
        tmp_path / "wrongkey.ipynb",
        s3.settings(secret=s3.wrong_secret),
        ("step:make", "x = 1"),
        ("step:use", "print(x)"),
    )
    result, proc, took = _run_failing(nb)
    assert proc.returncode != 0
    assert took < 180
    message = _step_states(tmp_path / "runs" / result["run_id"])["make"]["message"]
    assert "\n" not in message and f"{s3.wrong_secret}:secret_key" in message, message
    print(f"wrong secret key: failed in {took:.1f}s: {message}")


def _secret_refs(doc: Any) -> set[tuple[str, str, str]]:
    """(field, Secret, key) of every credential reference in ``doc``."""
    out: set[tuple[str, str, str]] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in ("accessKeySecret", "secretKeySecret") and isinstance(v, dict):
                out.add((k, v.get("name"), v.get("key")))
            else:
                out |= _secret_refs(v)
    elif isinstance(doc, list):
        for v in doc:
            out |= _secret_refs(v)
    return out


def test_the_s3_credentials_reach_the_pods_only_as_secret_key_refs(
    s3: S3Server, s3_run: S3Run
) -> None:
    (wf,) = _workflows(s3_run.run_id)
    text = json.dumps(wf)
    assert s3.secret_key not in text and s3.access_key not in text
    refs = _secret_refs(wf)
    assert refs and refs == {
        ("accessKeySecret", s3.secret, "access_key"),
        ("secretKeySecret", s3.secret, "secret_key"),
    }
    for pod in _pods(s3_run.run_id):
        assert s3.secret_key not in json.dumps(pod)
    for path in s3_run.run_dir.rglob("*"):
        if path.is_file():
            assert s3.secret_key.encode() not in path.read_bytes(), path


def local_values(nb: Path, names: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The same notebook run by the local backend, and ``cellpipe.load`` of its values."""
    import cellpipe

    here = nb.parent / "local"
    here.mkdir(exist_ok=True)
    shutil.copy(nb, here / nb.name)
    proc = _cellpipe("run", str(here / nb.name), "--json", cwd=here)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_id = json.loads(proc.stdout)["run_id"]
    return {n: cellpipe.load(run_id, s, n, runs_root=here / "runs") for s, n in names}


def test_cellpipe_load_of_an_s3_run_equals_the_local_runs_values(
    s3: S3Server, s3_run: S3Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cellpipe

    names = (("make", "arr"), ("make", "frame"), ("make", "p"), ("total", "total"))
    local = local_values(s3_run.nb, names)
    for k, v in s3.local_env().items():
        monkeypatch.setenv(k, v)
    root = s3_run.run_dir.parent
    got = {n: cellpipe.load(s3_run.run_id, s, n, runs_root=root) for s, n in names}
    assert (got["arr"] == local["arr"]).all() and got["arr"].dtype == local["arr"].dtype
    assert got["frame"].equals(local["frame"])
    assert type(got["p"]).__name__ == "Point" and vars(got["p"]) == vars(local["p"])
    assert got["p"].norm() == 5.0
    assert got["total"] == local["total"]
    # the values came into the run's own directory, where the pickles are read from
    assert (s3_run.run_dir / "data" / "make" / "manifest.json").is_file()


def test_cellpipe_lineage_of_an_s3_run_names_the_producer_and_the_input_hashes(
    s3: S3Server, s3_run: S3Run
) -> None:
    proc = _cellpipe(
        "lineage",
        s3_run.run_id,
        "total",
        "total",
        "--json",
        cwd=s3_run.run_dir.parent.parent,
        **s3.local_env(),
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    origin = json.loads(proc.stdout)
    assert (origin["step"], origin["run"]) == ("total", s3_run.run_id)
    remote = json.loads((s3_run.run_dir / "data" / "make" / "remote.json").read_text())
    hashes = {n: r["sha256"] for n, r in remote["manifest"].items()}
    inputs = {i["name"]: (i["step"], i["sha256"]) for i in origin["inputs"]}
    assert inputs == {n: ("make", hashes[n]) for n in ("arr", "frame", "p")}


def test_the_example_on_s3_runs_then_runs_again_all_cached_and_reports_from_here(
    s3: S3Server, tmp_path: Path
) -> None:
    nb = tmp_path / "wine.ipynb"
    doc = json.loads((REPO / "examples" / "wine.ipynb").read_text())
    doc["metadata"].setdefault("cellpipe", {}).setdefault("argo", {})["s3"] = s3.settings()
    nb.write_text(json.dumps(doc, indent=1))
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(nb, ref / nb.name)
    _push_images(nb)

    executed, proc = run_pipeline(nb, tmp_path, None, ("--backend", "argo"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert executed is not None, "--output wrote no executed notebook"
    problems = differences(run_top_to_bottom(ref / nb.name), executed)
    assert not problems, "the example on S3 differs from top to bottom:\n" + "\n".join(problems)
    (first,) = [d.name for d in (tmp_path / "runs").iterdir() if not d.name.startswith(".")]
    (wf,) = _workflows(first)
    assert not wf["spec"].get("volumeClaimTemplates")

    second, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    states = _step_states(tmp_path / "runs" / second["run_id"])
    assert {s: v["state"] for s, v in states.items()} == dict.fromkeys(states, "cached")
    assert _workflows(second["run_id"]) == []

    report = _cellpipe("report", first, "-o", "-", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert all(step in report.stdout for step in states), sorted(states)
