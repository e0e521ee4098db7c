"""The Argo backend on a real cluster against the Argo floor: the same DAG as a plain Workflow.

    python benchmarks/argo.py [--env FILE] [--repeat 3] [--json]

The 4-step diamond of benchmarks/local.py runs with `cellpipe run --backend argo --no-cache`,
the command a user types, timed from start to exit. Beside it, the floor: a Workflow with
the same DAG (load -> left, right -> join) whose four steps run `true` in the same image,
created through the Kubernetes API with the Python client and watched until it succeeds,
timed from the create call to the watch event saying Succeeded. Whatever Argo and the node
cost (scheduling, pulling nothing since the image is there, starting pods, argoexec's wait
sidecar, the controller's reconcile) is in both; what cellpipe adds (its interpreter and
compile, the raw input artifacts and the init container they need, the run's volume, the
step's IPython and prelude, the result trailer, reading logs, writing the run directory) is
the difference. The ratio cellpipe / floor is the figure; the target is <= 1.3x. A second
floor gives each step one raw input artifact, as cellpipe's steps have theirs: Argo then
starts an init container in every pod, which shows how much of the difference is that.

The local and Docker backends run the same notebook beside them (cache off), for scale.
The four commands take turns, so a slow moment of the machine falls on all of them alike.

The cluster is the one the env file names (default: $CELLPIPE_CLUSTER_ENV, else
/var/lib/cellpipe-cluster/env.sh, which `.ci/cluster up` writes): its KUBECONFIG, and the
profile it selects ($CELLPIPE_PROFILE), which gives the namespace, the registry and the
volume. The step image is built and pushed first (`cellpipe image build --push`), untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import REPO, cellpipe_env, emit, median, run, table, write_notebook
from local import DIAMOND

DEFAULT_ENV = Path(os.environ.get("CELLPIPE_CLUSTER_STATE", "/var/lib/cellpipe-cluster")) / "env.sh"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
#: The diamond's tasks and what each waits for, as in the manifest cellpipe generates.
DAG = {"load": [], "left": ["load"], "right": ["load"], "join": ["left", "right"]}


def cluster_env(path: Path) -> dict[str, str]:
    """The variables sourcing ``path`` sets."""
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "_", str(path)], capture_output=True, check=True
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def cellpipe(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [sys.executable, "-m", "cellpipe", *args],
        env=cellpipe_env(**env, CELLPIPE_RUNS_ROOT=str(workdir / "runs")),
        cwd=workdir,
    )


def cellpipe_run(env: dict[str, str], workdir: Path, nb: Path, *flags: str) -> dict[str, Any]:
    out = cellpipe(env, workdir, "run", str(nb), "--json", "--no-cache", *flags)
    result = json.loads(out.stdout)
    if result["state"] != "succeeded":
        raise RuntimeError(f"cellpipe run {' '.join(flags)} ended {result['state']}")
    return result


class Floor:
    """Plain Workflows of the diamond, each step `true`, through the Kubernetes API."""

    def __init__(self, kubeconfig: str, namespace: str, image: str):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.api = client.CustomObjectsApi(client.ApiClient(cfg))
        self.namespace, self.image = namespace, image

    def body(self, name: str, artifact: bool = False) -> dict[str, Any]:
        """``artifact``: each step also gets one raw input artifact, as cellpipe's get theirs
        (pipeline.json, run.json, the step script): Argo then starts an init container per
        pod to write it."""
        noop: dict[str, Any] = {
            "name": "noop",
            "container": {"image": self.image, "command": ["true"]},
        }
        if artifact:
            noop["inputs"] = {
                "artifacts": [{"name": "input", "path": "/tmp/input/x", "raw": {"data": "x"}}]
            }
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Workflow",
            "metadata": {"name": name, "labels": {"cellpipe.io/benchmark": "argo-floor"}},
            "spec": {
                "entrypoint": "main",
                # The submitter Role may not delete Workflows: Argo removes these itself.
                "ttlStrategy": {"secondsAfterCompletion": 60},
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                "templates": [
                    {
                        "name": "main",
                        "dag": {
                            "tasks": [
                                {
                                    "name": t,
                                    "template": "noop",
                                    **({"dependencies": d} if d else {}),
                                }
                                for t, d in DAG.items()
                            ]
                        },
                    },
                    noop,
                ],
            },
        }

    def once(self, artifact: bool = False) -> float:
        """Seconds from creating one Workflow to the watch event saying it succeeded."""
        from kubernetes import watch

        name = f"argo-floor-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        created = self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.body(name, artifact)
        )
        version = created["metadata"]["resourceVersion"]
        while True:
            stream = watch.Watch().stream(
                self.api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=version,
                timeout_seconds=60,
            )
            for event in stream:
                wf = event["object"]
                version = wf["metadata"]["resourceVersion"]
                phase = (wf.get("status") or {}).get("phase")
                if phase == "Succeeded":
                    return time.perf_counter() - t0
                if phase in ("Failed", "Error"):
                    raise RuntimeError(f"floor workflow {name} {phase}: {wf['status']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", type=Path, help="The cluster's env file (see above).")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    path = args.env or Path(os.environ.get("CELLPIPE_CLUSTER_ENV") or DEFAULT_ENV)
    if not path.is_file():
        print(f"no cluster env file at {path}: run `sudo .ci/cluster up` first", file=sys.stderr)
        return 2
    env = {
        k: v
        for k, v in cluster_env(path).items()
        if k.startswith("CELLPIPE_") or k in ("KUBECONFIG", "PATH")
    }
    sys.path.insert(0, str(REPO / "kernel"))
    from cellpipe.backends.argo.profiles import load_profile, profile_dir

    if not env.get("CELLPIPE_PROFILE"):
        print(f"{path} selects no profile (CELLPIPE_PROFILE)", file=sys.stderr)
        return 2
    profile = load_profile(env["CELLPIPE_PROFILE"], profile_dir(env))
    namespace = profile.argo.get("namespace") or env["CELLPIPE_CLUSTER_NAMESPACE"]
    r = args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the Docker steps' user (not root) must be able to enter it
        nb = write_notebook(work / "diamond.ipynb", DIAMOND)
        built = json.loads(
            cellpipe(env, work, "image", "build", "--push", "--json", str(nb)).stdout
        )
        (image,) = {b["ref"] for b in built}
        floor = Floor(env["KUBECONFIG"], namespace, image)
        # Warm-ups, untimed: the node has the image, Docker has its own build of it.
        floor.once()
        cellpipe_run(env, work, nb, "--backend", "argo")
        cellpipe_run(env, work, nb, "--backend", "docker")
        times: dict[str, list[float]] = {
            "floor": [],
            "floor_artifact": [],
            "argo": [],
            "local": [],
            "docker": [],
        }
        for _ in range(r):
            times["floor"].append(floor.once())
            times["floor_artifact"].append(floor.once(artifact=True))
            for key, flags in (
                ("argo", ("--backend", "argo")),
                ("local", ()),
                ("docker", ("--backend", "docker")),
            ):
                t0 = time.perf_counter()
                cellpipe_run(env, work, nb, *flags)
                times[key].append(time.perf_counter() - t0)
    m = {k: median(v) for k, v in times.items()}
    ratio = m["argo"] / m["floor"]
    results = {
        "argo_s": m["argo"],
        "argo_floor_s": m["floor"],
        "argo_floor_with_artifact_s": m["floor_artifact"],
        "ratio": ratio,
        "overhead_s": m["argo"] - m["floor"],
        "local_s": m["local"],
        "docker_s": m["docker"],
        "runs": times,
        "namespace": namespace,
        "profile": profile.name,
        "image": image,
    }
    rows = [
        {
            "benchmark": "4-step diamond: Argo floor (plain Workflow, steps `true`)",
            "seconds": f"{m['floor']:.2f}",
            "target": "",
        },
        {
            "benchmark": "the floor, each step with one raw input artifact (an init container)",
            "seconds": f"{m['floor_artifact']:.2f}",
            "target": "",
        },
        {
            "benchmark": "4-step diamond: cellpipe run --backend argo",
            "seconds": f"{m['argo']:.2f}",
            "target": "",
        },
        {
            "benchmark": "cellpipe argo / Argo floor",
            "seconds": f"{ratio:.2f}x",
            "target": "<= 1.3x",
        },
        {
            "benchmark": "4-step diamond: local backend",
            "seconds": f"{m['local']:.2f}",
            "target": "",
        },
        {
            "benchmark": "4-step diamond: docker backend",
            "seconds": f"{m['docker']:.2f}",
            "target": "",
        },
    ]
    emit(
        results,
        args.json,
        f"Argo on {namespace} (profile {profile.name}), median of {r} runs each, taking turns:"
        "\n\n" + table(rows, list(rows[0])),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
