"""The Docker backend's cost per step over the local backend, images already built.

    python benchmarks/docker.py [--repeat 3] [--json]

The 4-step diamond of benchmarks/local.py runs with `cellpipe run --backend docker` and with
the local backend (cache off for both), after one docker run that builds its image. The
difference, divided by the number of steps, is what a container per step costs: creating and
starting it, a fresh interpreter with IPython and the prelude (the local backend forks steps
from a warm process instead), waiting for it and removing it. Steps after the first start
their containers ahead, while their upstream steps run (see docs/docker.md), so most of the
start is hidden for them. The diamond's critical path is
3 steps long (load, then left and right side by side, then join), so the difference over 3 is
also given: that is what each step on the path adds to a run's wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import cellpipe_env, emit, median, run, table, timed, write_notebook
from local import DIAMOND


def cellpipe_run(nb: Path, workdir: Path, *flags: str) -> dict:
    out = run(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--json", "--no-cache", *flags],
        env=cellpipe_env(CELLPIPE_RUNS_ROOT=str(workdir / "runs")),
        cwd=workdir,
    )
    return json.loads(out.stdout)


def container_step_s(workdir: Path, run_id: str) -> float:
    """Median seconds from a step's `pending` to its verdict, in one docker run."""
    started: dict[str, float] = {}
    spans = []
    for line in (workdir / "runs" / run_id / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if not ev.get("step"):
            continue
        if ev["state"] == "pending":
            started.setdefault(ev["step"], ev["ts"])
        elif ev["state"] in ("succeeded", "failed"):
            spans.append(ev["ts"] - started[ev["step"]])
    return median(spans)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the steps' user (not root) must be able to enter it
        nb = write_notebook(work / "diamond.ipynb", DIAMOND)
        cellpipe_run(nb, work, "--backend", "docker")  # builds the image once
        local = timed(lambda: cellpipe_run(nb, work), r)
        ids: list[str] = []
        docker = timed(
            lambda: ids.append(cellpipe_run(nb, work, "--backend", "docker")["run_id"]), r
        )
        step_s = median([container_step_s(work, i) for i in ids])
    steps = sum(1 for tags, _ in DIAMOND if tags[0].startswith("step:"))
    extra = median(docker) - median(local)
    results = {
        "local_s": median(local),
        "docker_s": median(docker),
        "per_step_overhead_s": extra / steps,
        "per_critical_path_step_overhead_s": extra / 3,
        "docker_step_s": step_s,
    }
    rows = [
        {
            "benchmark": "4-step diamond: local backend",
            "seconds": f"{median(local):.2f}",
            "target": "",
        },
        {
            "benchmark": "4-step diamond: docker backend",
            "seconds": f"{median(docker):.2f}",
            "target": "",
        },
        {
            "benchmark": f"docker overhead per step (difference / {steps})",
            "seconds": f"{extra / steps:.2f}",
            "target": "<= 0.5 s",
        },
        {
            "benchmark": "docker overhead per step on the critical path (difference / 3)",
            "seconds": f"{extra / 3:.2f}",
            "target": "",
        },
        {
            "benchmark": "one docker step, pending to done (median)",
            "seconds": f"{step_s:.2f}",
            "target": "",
        },
    ]
    emit(
        results,
        args.json,
        f"Docker backend, warm images (median of {r} runs each):\n\n" + table(rows, list(rows[0])),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
