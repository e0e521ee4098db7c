"""Run reports: how long `cellpipe report` takes for a 100-step pipeline.

    python benchmarks/report.py [--repeat 5] [--steps 100] [--json]

A notebook of N steps in a layered DAG (each step reads one or two values of earlier steps,
prints a line; every tenth step draws a matplotlib figure) is run once with the local
backend. Then, on that run:

1. `render_report` in process (nbconvert already imported): the figure the target is about;
2. `cellpipe report RUN_ID -o FILE` end to end, interpreter start and nbconvert import in;
3. one step's own page, `reports/<step>.html`, as the runner writes it when the step ends.

Target: the 100-step report in under 2 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cellpipe_env, emit, median, run, table, timed, write_notebook


def pipeline_cells(steps: int) -> list[tuple[list[str], str]]:
    cells: list[tuple[list[str], str]] = [
        (["imports"], "import matplotlib.pyplot as plt"),
        (["parameters"], "scale = 2"),
    ]
    for i in range(steps):
        reads = [f"v{j}" for j in (i - 1, i // 2) if 0 <= j < i]
        expr = " + ".join(reads) if reads else "scale"
        body = f"v{i} = {expr} + {i}\nprint('step {i}:', v{i})"
        if i % 10 == 9:
            body += (
                f"\nfig, ax = plt.subplots(figsize=(3, 2))\nax.plot([1, v{i} % 7, 3])\nplt.show()"
            )
        cells.append(([f"step:s{i:03d}"], body))
    cells.append((["metrics"], f"v{steps - 1}"))
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "kernel"))
    from cellpipe.reports.report import render_report, write_step_report
    from cellpipe.rundir.runs import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nb = write_notebook(work / "wide.ipynb", pipeline_cells(args.steps))
        env = cellpipe_env(CELLPIPE_RUNS_ROOT=str(work / "runs"))
        out = run([sys.executable, "-m", "cellpipe", "run", str(nb), "--json"], env=env, cwd=work)
        run_id = json.loads(out.stdout)["run_id"]
        rd = RunDir(work / "runs" / run_id)

        t0 = time.perf_counter()
        page = render_report(rd)  # the first one imports nbconvert and builds its templates
        first = time.perf_counter() - t0
        in_process = timed(lambda: render_report(rd), args.repeat)
        cli = timed(
            lambda: run(
                [sys.executable, "-m", "cellpipe", "report", run_id, "-o", str(work / "r.html")],
                env=env,
                cwd=work,
            ),
            args.repeat,
        )
        status = rd.status().steps["s050"]
        step_page = timed(lambda: write_step_report(rd, "s050", status=status), args.repeat * 20)

    results = {
        "steps": args.steps,
        "report_in_process_s": median(in_process),
        "report_first_in_process_s": first,
        "report_cli_s": median(cli),
        "report_bytes": len(page.encode()),
        "step_page_ms": median(step_page) * 1000,
    }
    rows = [
        {
            "what": f"report of a {args.steps}-step run, in process",
            "time": f"{results['report_in_process_s']:.2f} s",
            "target": "< 2 s",
        },
        {
            "what": "  the first one (nbconvert import, templates)",
            "time": f"{first:.2f} s",
            "target": "",
        },
        {
            "what": "`cellpipe report RUN_ID -o FILE`, end to end",
            "time": f"{results['report_cli_s']:.2f} s",
            "target": "",
        },
        {
            "what": "one step's page (reports/<step>.html)",
            "time": f"{results['step_page_ms']:.1f} ms",
            "target": "a step costs ms",
        },
    ]
    emit(
        results,
        args.json,
        f"Run reports (median of {args.repeat}; page {results['report_bytes'] / 1e6:.1f} MB):"
        "\n\n" + table(rows, list(rows[0])),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
