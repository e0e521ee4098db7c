"""`foreach` fan-out, side by side with the same loop run serially.

    python benchmarks/fanout.py [--repeat 3] [--json]

1. CPU: a 20-item loop over a CPU-bound function (pure Python, about 0.15 s an item here), the
   cell tagged `foreach` with `--jobs 2`, vs the same notebook with the tag removed (the
   loop runs in the step, as top to bottom). Target: the foreach step takes <= 0.6x the
   serial step. The two take turns, `--no-cache`.
2. Overhead: a 1000-item loop of trivial iterations, `foreach` vs serial. Target: at most
   10 ms per iteration more than the serial loop (iterations go to warm workers in
   batches, not a process each).
3. The outputs: both notebooks' executed copies, and the notebook run top to bottom with
   nbclient, must show the same outputs (tests/oracle.py's comparison).

Times are the step's own duration from `cellpipe run --json` (the loop's step; the rest
of the run is the same in both) and, for reference, the whole command's wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cellpipe_env, emit, median, run, table

sys.path.insert(0, str(REPO / "tests"))

WORK = "def work(seed, n=1_000_000):\n    x = seed\n    for k in range(n):\n        x = (x * 31 + k) % 1_000_003\n    return x"


def cpu_notebook(tagged: bool) -> list[tuple[list[str], str]]:
    return [
        (["functions"], WORK),
        (["step:setup"], "seeds = list(range(1, 21))\nresults = {}\nchecks = []"),
        (
            ["step:loop", *(["foreach"] if tagged else [])],
            "for i, seed in enumerate(seeds):\n"
            "    value = work(seed)\n"
            "    results[seed] = value\n"
            "    checks.append(value % 97)\n"
            "    print(i, seed, value)",
        ),
        (["step:report"], "print(sum(results.values()), checks[:5], i, value)"),
    ]


def trivial_notebook(tagged: bool, n: int = 1000) -> list[tuple[list[str], str]]:
    return [
        (["step:setup"], f"xs = list(range({n}))\nr = {{}}"),
        (
            ["step:loop", *(["foreach"] if tagged else [])],
            "for x in xs:\n    r[x] = x + 1",
        ),
        (["step:report"], "print(len(r), sum(r.values()), x)"),
    ]


def _write(path: Path, cells: list[tuple[list[str], str]]) -> Path:
    from _common import write_notebook

    return write_notebook(path, cells)


def _run(nb: Path, runs: Path) -> tuple[float, float, Path]:
    """(loop step seconds, wall seconds, executed notebook) of one `cellpipe run`."""
    out = nb.with_name(nb.stem + ".executed.ipynb")
    t0 = time.perf_counter()
    proc = run(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--jobs", "2", "--no-cache",
         "--json", "--output", str(out)],
        env=cellpipe_env(CELLPIPE_RUNS_ROOT=str(runs)),
        cwd=nb.parent,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    status = json.loads(proc.stdout)
    assert status["state"] == "succeeded", status
    return status["steps"]["loop"]["duration_s"], wall, out


def _same_outputs(a: Path, b: Path) -> list[str]:
    import nbformat
    from oracle import differences

    # The cells' tags differ (foreach or not); ids are the same.
    return differences(nbformat.read(a, as_version=4), nbformat.read(b, as_version=4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cellpipe-fanout-"))
    rows, results = [], {}
    try:
        for case, make, target in (
            ("cpu: 20 items x 0.15 s", cpu_notebook, "foreach <= 0.6x serial"),
            ("trivial: 1000 items", trivial_notebook, "<= 10 ms/iteration over serial"),
        ):
            d = tmp / case.split(":")[0]
            d.mkdir()
            par = _write(d / "foreach.ipynb", make(True))
            ser_dir = d / "serial"
            ser_dir.mkdir()
            ser = _write(ser_dir / "foreach.ipynb", make(False))
            times: dict[str, list[float]] = {"foreach": [], "serial": []}
            walls: dict[str, list[float]] = {"foreach": [], "serial": []}
            outs = {}
            for _ in range(args.repeat):  # taking turns, so load on the machine hits both
                for label, nb in (("serial", ser), ("foreach", par)):
                    step, wall, out = _run(nb, d / "runs")
                    times[label].append(step)
                    walls[label].append(wall)
                    outs[label] = out
            problems = _same_outputs(outs["serial"], outs["foreach"])
            from oracle import run_top_to_bottom

            top = run_top_to_bottom(ser)
            import nbformat
            from oracle import differences

            problems += differences(top, nbformat.read(outs["foreach"], as_version=4))
            s, f = median(times["serial"]), median(times["foreach"])
            n = 20 if case.startswith("cpu") else 1000
            row = {
                "case": case,
                "serial step": f"{s:.3f} s",
                "foreach step": f"{f:.3f} s",
                "ratio": f"{f / s:.2f}x",
                "overhead/iteration": f"{(f - s) / n * 1000:.2f} ms",
                "wall serial": f"{median(walls['serial']):.2f} s",
                "wall foreach": f"{median(walls['foreach']):.2f} s",
                "outputs equal": "yes" if not problems else "NO",
                "target": target,
            }
            rows.append(row)
            results[case] = {
                "serial_s": s,
                "foreach_s": f,
                "ratio": f / s,
                "overhead_ms_per_iteration": (f - s) / n * 1000,
                "outputs_equal": not problems,
                "problems": problems,
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        results,
        args.json,
        table(rows, ["case", "serial step", "foreach step", "ratio", "overhead/iteration",
                     "wall serial", "wall foreach", "outputs equal", "target"]),
    )  # fmt: skip
    return 0 if all(r["outputs_equal"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
