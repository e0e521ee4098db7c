"""Compile speed: cellpipe vs Kubeflow Kale 2.3 on a generated 200-cell notebook.

    python benchmarks/compile.py --setup     # once: a venv with kubeflow-kale==2.3.0
    python benchmarks/compile.py [--repeat 5] [--json]

Both tools compile the same notebook, tagged with names both accept (Kale 2.3's). "In process"
times the compile call alone, after imports; "end to end" is the command a user types,
interpreter start and imports included. Kale's compile is what it does offline before talking
to a KFP server: parse the notebook, analyse dependencies, render the KFP DSL script.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import KALE_VENV, REPO, cellpipe_env, emit, median, run, table, timed, write_notebook

KALE_TIMER = textwrap.dedent(
    """
    import json, sys, time, os
    t_import = time.perf_counter()
    from kale.processors import NotebookProcessor
    from kale.compiler import Compiler
    t0 = time.perf_counter()
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        processor = NotebookProcessor(sys.argv[1], {})
        pipeline = processor.run()
        Compiler(pipeline, processor.get_imports_and_functions()).compile()
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "import_s": t0 - t_import}))
    """
)


def generate(path: Path, cells: int = 200, steps: int = 40) -> Path:
    """A realistic notebook: imports, parameters, functions, ~40 steps that assign, read and
    mutate each other's variables, skip cells and a metrics cell."""
    out: list[tuple[list[str], str]] = [
        (["imports"], "import math\nimport json\nimport statistics"),
        (["pipeline-parameters"], "alpha = 0.5\nrounds = 3\nlabel = 'bench'"),
        (
            ["functions"],
            "def scale(values, k):\n    return [v * k for v in values]\n\n"
            "def summarize(values):\n    return {'n': len(values), 'mean': statistics.mean(values)}",
        ),
    ]
    per_step = (cells - len(out) - 1) // steps
    for s in range(steps):
        prev = f"data_{s - 1}" if s else "None"
        for j in range(per_step):
            tags = []
            if j == 0:
                tags = [f"step:step{s}"] + ([f"prev:step{s - 1}"] if s else [])
            if j == 0:
                src = (
                    f"data_{s} = list(range({s + 5}))\n"
                    f"if {prev} is not None:\n    data_{s}.extend({prev}[:3])\n"
                    f"weights_{s} = scale(data_{s}, alpha)"
                )
            elif j == 1:
                src = (
                    f"data_{s}.append(rounds)\nstats_{s} = summarize(weights_{s})\nprint(stats_{s})"
                )
            elif j == 2:
                src = f"total_{s} = sum(data_{s}) + math.floor(alpha * {s})\nresult_{s} = json.dumps({{'t': total_{s}}})"
            else:
                src = f"extra_{s}_{j} = [x ** 2 for x in data_{s} if x % 2]\nfor i in range(rounds):\n    total_{s} += i"
            out.append((tags, src))
    while len(out) < cells - 1:
        out.append((["skip"], "print('scratch work')"))
    out.append((["pipeline-metrics"], f"print(total_{steps - 1})"))
    metadata = {
        "kubeflow_notebook": {
            "experiment_name": "bench",
            "pipeline_name": "bench",
            "base_image": "python:3.11",
            "volumes": [],
        }
    }
    return write_notebook(path, out, metadata)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setup", action="store_true", help="create the Kale venv and exit")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kale_python = KALE_VENV / "bin" / "python"
    if args.setup or not kale_python.exists():
        if not args.setup:
            print(
                f"Kale's venv is missing; creating {KALE_VENV} (kubeflow-kale==2.3.0) ...",
                file=sys.stderr,
            )
        run([sys.executable, "-m", "venv", str(KALE_VENV)])
        run([str(kale_python), "-m", "pip", "install", "-q", "kubeflow-kale==2.3.0"])
        if args.setup:
            return 0
    repeat = 1 if args.quick else args.repeat

    sys.path.insert(0, str(REPO / "kernel"))
    from cellpipe.analysis import _analyse, transform  # caches must not flatter cellpipe
    from cellpipe.compiler import compile_notebook

    with tempfile.TemporaryDirectory() as tmp:
        nb = generate(Path(tmp) / "bench.ipynb")

        def cellpipe_compile() -> None:
            _analyse.cache_clear()
            transform.cache_clear()
            compile_notebook(nb)

        cellpipe_compile()  # import warm-up, as Kale's timer excludes imports too
        cp_in = timed(cellpipe_compile, repeat)
        cp_e2e = timed(
            lambda: run(
                [
                    sys.executable,
                    "-m",
                    "cellpipe",
                    "compile",
                    str(nb),
                    "-o",
                    str(Path(tmp) / "out"),
                ],
                env=cellpipe_env(),
                cwd=tmp,
            ),
            repeat,
        )
        import json

        proc = run([str(kale_python), "-c", KALE_TIMER, str(nb), str(repeat)], cwd=tmp)
        kale_in = json.loads(proc.stdout.strip().splitlines()[-1])["times"]
        kale_e2e = timed(
            lambda: run([str(kale_python), "-c", KALE_TIMER, str(nb), "1"], cwd=tmp), repeat
        )
        steps = len(compile_notebook(nb).steps)

    rows = [
        {
            "tool": "cellpipe",
            "in process (ms)": f"{median(cp_in) * 1e3:.1f}",
            "end to end (ms)": f"{median(cp_e2e) * 1e3:.0f}",
            "vs cellpipe (in process)": "1.0x",
            "vs cellpipe (end to end)": "1.0x",
        },
        {
            "tool": "kale 2.3",
            "in process (ms)": f"{median(kale_in) * 1e3:.1f}",
            "end to end (ms)": f"{median(kale_e2e) * 1e3:.0f}",
            "vs cellpipe (in process)": f"{median(kale_in) / median(cp_in):.1f}x slower",
            "vs cellpipe (end to end)": f"{median(kale_e2e) / median(cp_e2e):.1f}x slower",
        },
    ]
    results = {
        "notebook": {"cells": 200, "steps": steps},
        "repeat": repeat,
        "cellpipe": {"in_process_s": median(cp_in), "end_to_end_s": median(cp_e2e)},
        "kale": {"in_process_s": median(kale_in), "end_to_end_s": median(kale_e2e)},
        "ratio_in_process": median(kale_in) / median(cp_in),
        "ratio_end_to_end": median(kale_e2e) / median(cp_e2e),
    }
    text = f"Compile a 200-cell, {steps}-step notebook (median of {repeat}):\n\n" + table(
        rows, list(rows[0])
    )
    emit(results, args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
