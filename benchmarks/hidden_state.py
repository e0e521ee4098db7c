"""What the hidden-state fingerprints cost a step, before and after they existed.

    python benchmarks/hidden_state.py --base /path/to/checkout/before [--repeat 3] [--json]

For a step handing on a 400 MB array, a 1-million-row DataFrame and a dict of 10,000 small
objects to a second step, runs the two-step pipeline with this checkout and with the one at
``--base`` (the engine before the change), taking turns, and reports the seconds both steps
spent outside their cells (saving, loading, and now fingerprinting: the prelude ran before
they were forked), and the time the steps themselves recorded spending on hidden state
(``seconds`` in ``data/<step>/hidden.json``): the whole-run difference is mostly the noise
of writing and reading hundreds of MB on a shared machine; the recorded time is the cost. Then measures the fingerprints directly: the three passes a step makes
(after the prelude, at entry, at exit) and the record it saves, in a process that has
numpy, pandas, scikit-learn and matplotlib imported (every provider of those is active).
Fingerprints read library state only, never the step's values, so their cost does not grow
with the values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import REPO, emit, median, run, table, write_notebook

VALUES = {
    "400 MB array": "value = np.ones(400 * 2**20 // 8)",
    "1M-row DataFrame": (
        "value = pd.DataFrame({'a': np.arange(1_000_000), 'b': np.random.rand(1_000_000), "
        "'c': np.arange(1_000_000) % 7})"
    ),
    "dict of 10,000 small objects": (
        "value = {f'k{i}': {'id': i, 'tags': [i, str(i)], 'w': i / 3} for i in range(10_000)}"
    ),
}


def notebook(make: str) -> list[tuple[list[str], str]]:
    return [
        (["imports"], "import numpy as np\nimport pandas as pd"),
        (["step:make"], make),
        (["step:use"], "print(type(value).__name__, len(value))"),
    ]


def outside_cells(run_dir: Path) -> float:
    own = {
        s["name"]: s["cells"] for s in json.loads((run_dir / "pipeline.json").read_text())["steps"]
    }
    total = 0.0
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("step") and ev["state"] == "succeeded":
            cells = json.loads((run_dir / "outputs" / f"{ev['step']}.json").read_text())["cells"]
            total += ev["duration_s"] - sum(cells[c]["duration_s"] for c in own[ev["step"]])
    return total


def tracking(run_dir: Path) -> float:
    """Seconds the steps spent on hidden state, as they recorded it (0 before the change)."""
    total = 0.0
    for record in (run_dir / "data").glob("*/hidden.json"):
        total += json.loads(record.read_text()).get("seconds", 0.0)
    return total


def run_with(kernel: Path, nb: Path, work: Path) -> tuple[float, float]:
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(work / "runs"))
    env["PYTHONPATH"] = str(kernel) + os.pathsep + env.get("PYTHONPATH", "")
    out = run(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--json", "--no-cache"],
        env=env,
        cwd=work,
    )
    run_dir = work / "runs" / json.loads(out.stdout)["run_id"]
    return outside_cells(run_dir), tracking(run_dir)


DIRECT = textwrap.dedent(
    """
    import sys, tempfile, time, pathlib
    import numpy as np, pandas as pd, sklearn, matplotlib.pyplot
    from cellpipe.execution import hidden_state as h
    times = []
    for _ in range(50):
        t = time.perf_counter()
        tracker = h.Tracker.after_prelude()
        tracker.enter()
        np.random.rand()  # the step draws: one provider changed, its state saved
        tracker.leave()
        with tempfile.TemporaryDirectory() as d:
            h.save_step(pathlib.Path(d), tracker)
        times.append(time.perf_counter() - t)
    times.sort()
    print(times[len(times) // 2] * 1e3)
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="checkout before the change")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kernels = {"before": args.base.resolve() / "kernel", "after": REPO / "kernel"}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, make in VALUES.items():
            nb = write_notebook(work / "nb.ipynb", notebook(make))
            times: dict[str, list[float]] = {"before": [], "after": [], "tracking": []}
            for _ in range(args.repeat):
                for side, kernel in kernels.items():  # taking turns
                    outside, spent = run_with(kernel, nb, work)
                    times[side].append(outside)
                    if side == "after":
                        times["tracking"].append(spent)
            results[label] = {k: median(v) for k, v in times.items()}
        env = dict(os.environ, PYTHONPATH=str(REPO / "kernel"))
        direct_ms = float(run([sys.executable, "-c", DIRECT], env=env).stdout)
    rows = [
        {
            "value handed on": label,
            "outside cells before (s)": f"{r['before']:.3f}",
            "after (s)": f"{r['after']:.3f}",
            "difference (ms)": f"{(r['after'] - r['before']) * 1e3:+.1f}",
            "of which hidden state, recorded (ms, 2 steps)": f"{r['tracking'] * 1e3:.1f}",
        }
        for label, r in results.items()
    ]
    text = table(rows, list(rows[0])) + (
        f"\n\nfingerprints per step (3 passes + record, numpy/pandas/sklearn/matplotlib "
        f"imported): {direct_ms:.2f} ms, whatever the values"
    )
    emit({"handoff": results, "fingerprints_per_step_ms": direct_ms}, args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
