"""On the real cluster, a `foreach` step fans out as Argo's `withParam`, a pod per iteration,
and the notebook still computes what its top-to-bottom run computes. Fixtures and helpers
are ``tests/test_argo_cluster.py``'s.

The notebook is the benchmark's (``benchmarks/fanout.py``): a 20-item loop over a
CPU-bound function (about 0.15 s an item), whose iterations add to a dict and a list and
print. ``parallelism: 4`` keeps the single 2-core node (shared with other runs) to a few
iteration pods at once; every iteration still gets a pod of its own."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbbuild import notebook, write
from oracle import differences, run_top_to_bottom
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

WORK = (
    "def work(seed, n=1_000_000):\n"
    "    x = seed\n"
    "    for k in range(n):\n"
    "        x = (x * 31 + k) % 1_000_003\n"
    "    return x"
)
PARALLELISM = 4


def _cpu_notebook(path: Path) -> Path:
    return write(
        path,
        notebook(
            ("functions", WORK),
            ("step:setup", "seeds = list(range(1, 21))\nresults = {}\nchecks = []"),
            (
                "step:loop foreach",
                "for i, seed in enumerate(seeds):\n"
                "    value = work(seed)\n"
                "    results[seed] = value\n"
                "    checks.append(value % 97)\n"
                "    print(i, seed, value)",
            ),
            ("step:report", "print(list(results))\nprint(checks)\nprint(i, seed, value)"),
            metadata={"cellpipe": {"argo": {"parallelism": PARALLELISM}}},
        ),
    )


def _iteration_pods(run_id: str, step: str) -> list[dict[str, Any]]:
    """The pods of the step's `<step>-iteration` fan-out (Argo's node name says which
    template a pod ran: `<workflow>.<step>-iteration(3:index:3,total:20)`)."""
    return [
        p
        for p in _pods(run_id, f"cellpipe.io/step={step}")
        if f".{step}-iteration("
        in p["metadata"]["annotations"].get("workflows.argoproj.io/node-name", "")
    ]


def _index(pod: dict[str, Any]) -> int:
    (main,) = [c for c in pod["spec"]["containers"] if c["name"] == "main"]
    return int(main["args"][main["args"].index("--foreach-iteration") + 1])


def _clean_up(run_id: str) -> None:
    """Delete the run's Workflows (their pods and volume go with them): a failed run's
    would stay for `ttl_after_failure` on the node the other tests share."""
    selector = f"cellpipe.io/run-id={run_id}"
    _kubectl("delete", "workflows", "-l", selector, "--wait=false", admin=True)


def _events(run_dir: Path, step: str) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("step") == step]


def test_a_20_item_foreach_runs_a_pod_per_iteration_and_equals_the_top_to_bottom_run(
    tmp_path: Path,
) -> None:
    work, ref = tmp_path / "argo", tmp_path / "ref"
    work.mkdir()
    ref.mkdir()
    nb = _cpu_notebook(work / "fanout-cpu.ipynb")
    shutil.copy(nb, ref / "fanout-cpu.ipynb")
    _push_images(nb)

    out = work / "fanout-cpu.executed.ipynb"
    started = time.monotonic()
    proc = _cellpipe(
        "run", str(nb), "--backend", "argo", "--json", "--output", str(out), cwd=work, timeout=900
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_id = json.loads(proc.stdout)["run_id"]
    expected = run_top_to_bottom(ref / "fanout-cpu.ipynb")
    executed = nbformat.read(out, as_version=4)
    assert differences(expected, executed) == []
    # After the loop: every iteration's additions in iteration order, the last one's names.
    report = executed.cells[3].outputs[0]["text"].splitlines()
    assert report[0] == str(list(range(1, 21)))
    assert report[2].startswith("19 20 ")

    states = _step_states(work / "runs" / run_id)
    assert states["loop"]["state"] == "succeeded", states["loop"]
    assert states["loop"]["iterations"] == {"done": 20, "total": 20}
    assert "iterations" not in states["setup"]
    # Its duration is the fan-out's, from the `-items` pod to the merge (as a local loop's
    # covers its iterations), not the merging pod's own second.
    assert states["loop"]["duration_s"] > 20, states["loop"]
    # Exactly one pod per iteration, then the step's own pod merged them.
    pods = _iteration_pods(run_id, "loop")
    assert sorted(_index(p) for p in pods) == list(range(20))
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)
    assert len(_pods(run_id, "cellpipe.io/step=loop")) == 20 + 2  # + `-items` + the merge
    log = (work / "runs" / run_id / "logs" / "loop.log").read_text()
    assert "20 iterations, 0 run, 0 from the cache, 20 in pods of their own" in log
    # While the pods ran, the follower told the progress as the local run does.
    told = [e["iterations"] for e in _events(work / "runs" / run_id, "loop") if "iterations" in e]
    assert told[-1] == {"done": 20, "total": 20} and len(told) > 2
    (wf,) = _workflows(run_id)
    print(
        f"20-item foreach on argo: {took:.1f}s, {len(pods)} iteration pods "
        f"(parallelism {PARALLELISM}), workflow {wf['status'].get('phase')}"
    )
    _clean_up(run_id)


def test_a_failed_iteration_fails_the_step_naming_the_item(tmp_path: Path) -> None:
    nb = write(
        tmp_path / "fanout-fail.ipynb",
        notebook(
            ("step:setup", "xs = [4, 2, 0, 1]\nq = []"),
            ("step:loop foreach", "for x in xs:\n    q.append(8 // x)"),
            ("step:after", "print(q)"),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode != 0
    states = _step_states(tmp_path / "runs" / result["run_id"])
    assert states["loop"]["state"] == "failed"
    assert states["loop"]["message"] == (
        "cell 2: ZeroDivisionError: integer division or modulo by zero (in iteration 3 of 4, x = 0)"
    )
    assert states["after"]["state"] == "skipped"
    assert len(_iteration_pods(result["run_id"], "loop")) == 4
    _clean_up(result["run_id"])


def test_retry_on_a_foreach_step_reruns_only_the_iteration_that_failed(tmp_path: Path) -> None:
    nb = write(
        tmp_path / "fanout-retry.ipynb",
        notebook(
            ("imports", "import os"),
            ("step:setup", "xs = [1, 2, 3, 4, 5]\nsq = {}"),
            (
                "step:loop foreach retry:1",
                "for x in xs:\n"
                "    open(f'ran-{x}', 'a').write('.')\n"
                "    if x == 3 and not os.path.exists('tried'):\n"
                "        open('tried', 'w').close()\n"
                "        raise RuntimeError('flaky')\n"
                "    sq[x] = x * x",
            ),
            (
                "step:show",
                "print(sq)\n"
                "print({f: len(open(f).read()) for f in sorted(os.listdir('.')) if f[:4] == 'ran-'})",
            ),
        ),
    )
    _push_images(nb)
    result, proc = _run(nb)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = tmp_path / "runs" / result["run_id"]
    states = _step_states(run_dir)
    assert states["loop"]["state"] == "succeeded", states["loop"]
    assert states["loop"]["attempts"] == 2
    assert states["loop"]["iterations"] == {"done": 5, "total": 5}
    first = [e for e in _events(run_dir, "loop") if e["state"] == "failed"]
    assert [e["message"] for e in first] == [
        "cell 3: RuntimeError: flaky (in iteration 3 of 5, x = 3)"
    ]
    show = (run_dir / "logs" / "show.log").read_text()
    assert "{1: 1, 2: 4, 3: 9, 4: 16, 5: 25}" in show
    # Only the failed iteration ran again (in the step's second pod): the others once each.
    assert "{'ran-1': 1, 'ran-2': 1, 'ran-3': 2, 'ran-4': 1, 'ran-5': 1}" in show
    assert len(_iteration_pods(result["run_id"], "loop")) == 5
    (wf,) = _workflows(result["run_id"])
    attempts = sorted(
        (n["displayName"], n["phase"])
        for n in wf["status"]["nodes"].values()
        if n.get("templateName") == "loop" and n["type"] == "Pod"
    )
    assert attempts == [("loop(0)", "Failed"), ("loop(1)", "Succeeded")]
    _clean_up(result["run_id"])
