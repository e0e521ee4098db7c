"""Compile speed: cellpipe vs Kubeflow Kale 2.3 on a generated 200-cell notebook.

    python benchmarks/compile.py --setup     # once: benchmarks/.venv-kale with kubeflow-kale==2.3.0
    python benchmarks/compile.py [--repeat 5] [--quick] [--json]

Both tools compile the same notebook: 200 cells, 40 steps, tagged with names both accept
(Kale 2.3's grammar: `step:`, `prev:`, `imports`, `functions`, `pipeline-parameters`,
`pipeline-metrics`, `skip`). What is timed:

- in process: one compile, imports excluded, after one untimed warm-up compile.
  cellpipe: `cellpipe.compile(path)` plus writing `pipeline.json` and the step scripts.
  Kale: `NotebookProcessor(path).run()` (parse, dependency analysis) plus
  `Compiler(...).compile()` (render the KFP DSL script, autopep8 it, write it), which is
  what `kale --nb` does before it hands the script to the KFP SDK. Kale is timed inside a
  subprocess of its own venv.
- end to end: the whole command, interpreter start and imports included.
  cellpipe: `python -m cellpipe compile NB -o DIR`. Kale: a fresh interpreter running the
  same compile as above once.
- For reference, Kale's own CLI, `kale --nb NB`, end to end: it also compiles the DSL script
  to a KFP YAML package with the KFP SDK (offline; no server is contacted).

Every repetition compiles a differently salted copy of the notebook (a comment in each cell),
so no tool gains from a cache keyed on cell source. The ratio is Kale's median time over
cellpipe's: the target is cellpipe at least 20x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import KALE_VENV, REPO, cellpipe_env, emit, median, run, table, timed

KALE_VERSION = "2.3.0"
TARGET_RATIO = 20.0
EXPERIMENTS = 12  # 12 experiments x 3 steps + load, clean, compare, report = 40 steps

# Runs in Kale's venv: argv = [warm|cold, notebook, ...]. With "warm", the first notebook is
# compiled untimed first, so imports and template loading are not counted.
KALE_TIMER = textwrap.dedent(
    """
    import json, sys, time
    from importlib.metadata import version
    from kale.compiler import Compiler
    from kale.processors import NotebookProcessor

    def compile_notebook(path):
        processor = NotebookProcessor(path, {})
        pipeline = processor.run()
        script = Compiler(pipeline, processor.get_imports_and_functions()).compile()
        return len(list(pipeline.steps)), script

    paths = sys.argv[2:]
    if sys.argv[1] == "warm":
        compile_notebook(paths.pop(0))
    times = []
    for path in paths:
        t = time.perf_counter()
        steps, script = compile_notebook(path)
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "steps": steps, "script": script,
                      "version": version("kubeflow-kale")}))
    """
)

SETUP_HINT = f"""\
Kale's venv is missing: {KALE_VENV.relative_to(REPO)}
Create it once (downloads kubeflow-kale=={KALE_VERSION} and its dependencies from PyPI):

    python benchmarks/compile.py --setup
"""

# ---------------------------------------------------------------------------------------
# The notebook. Code is numpy/pandas as people write it; it is only compiled, never run.

FUNCTIONS = """\
def split(X, y, test_size, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(len(X)) < test_size
    return X[~mask], X[mask], y[~mask], y[mask]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(X, y, alpha, lr, epochs):
    w = np.zeros(X.shape[1])
    losses = []
    for _ in range(epochs):
        p = sigmoid(X @ w)
        w -= lr * (X.T @ (p - y) / len(y) + alpha * w)
        losses.append(float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))))
    return w, losses"""

LOAD = [
    "rng = np.random.default_rng(seed)\n"
    "raw = pd.DataFrame(rng.normal(size=(n_rows, 12)), columns=[f'f{i}' for i in range(12)])",
    "raw['tenure'] = rng.integers(1, 72, size=n_rows)\n"
    "raw['plan'] = rng.choice(['basic', 'plus', 'pro'], size=n_rows)\n"
    "raw.loc[rng.random(n_rows) < 0.02, 'f3'] = np.nan",
    "print(raw.shape)\nraw.head()",
]

CLEAN = [
    "df = raw.dropna().copy()\n"
    "df['target'] = (df['f0'] + 0.5 * df['f1'] - 0.01 * df['tenure'] > 0).astype(int)",
    "df = pd.get_dummies(df, columns=['plan'], dtype=float)\ndf.reset_index(drop=True, inplace=True)",
    "feature_cols = [c for c in df.columns if c != 'target']\n"
    "means = df[feature_cols].mean()\n"
    "stds = df[feature_cols].std().replace(0, 1)",
    "df[feature_cols] = (df[feature_cols] - means) / stds\n"
    "print(f'{len(df)} rows after cleaning, {len(feature_cols)} features')",
]

# @K is the experiment number. Each experiment: features -> train -> evaluate.
FEATURES = [
    "cols_@K = feature_cols[@M:@M + 6] + ['tenure']\nX_@K = df[cols_@K].copy()",
    "X_@K['inter_@K'] = X_@K[cols_@K[0]] * X_@K[cols_@K[1]]\n"
    "X_@K['log_tenure'] = np.log1p(X_@K['tenure'].abs())",
    "low_var_@K = [c for c in X_@K.columns if X_@K[c].var() < threshold]\n"
    "X_@K.drop(columns=low_var_@K, inplace=True)",
    "X_@K.insert(0, 'bias', 1.0)\ny_@K = df['target'].to_numpy()",
    "print(X_@K.shape, f'dropped {len(low_var_@K)} low-variance columns')",
]
SCRATCH = "X_@K.describe()"
TRAIN = [
    "X_train_@K, X_test_@K, y_train_@K, y_test_@K = split(X_@K.to_numpy(), y_@K, test_size, seed + @K)",
    "w_@K, losses_@K = fit_logistic(X_train_@K, y_train_@K, alpha * @K / 10, lr, epochs)",
    "history_@K = []\n"
    "for epoch, loss in enumerate(losses_@K):\n"
    "    if epoch % 5 == 0:\n"
    "        history_@K.append((epoch, round(loss, 4)))",
    "print(f'experiment @K: final loss {losses_@K[-1]:.4f}', history_@K)",
]
EVALUATE = [
    "proba_@K = sigmoid(X_test_@K @ w_@K)\npred_@K = (proba_@K > 0.5).astype(int)",
    "accuracy_@K = float(np.mean(pred_@K == y_test_@K))\n"
    "tp_@K = int(((pred_@K == 1) & (y_test_@K == 1)).sum())\n"
    "precision_@K = tp_@K / max(int(pred_@K.sum()), 1)",
    "summary_@K = {'experiment': @K, 'accuracy': accuracy_@K}\n"
    "summary_@K.update(precision=precision_@K, columns=len(X_@K.columns))",
    "print(summary_@K)",
]

COMPARE = [
    "summaries = [" + ", ".join(f"summary_{k}" for k in range(1, EXPERIMENTS + 1)) + "]",
    "results = pd.DataFrame(summaries).set_index('experiment')\n"
    "results.sort_values('accuracy', ascending=False, inplace=True)",
    "best_experiment = int(results.index[0])\nbest_accuracy = float(results['accuracy'].iloc[0])",
]
REPORT = [
    "report = results.round(3).to_string()\nprint(report)",
    "mean_accuracy = float(results['accuracy'].mean())\n"
    "spread = float(results['accuracy'].max() - results['accuracy'].min())",
    "print(f'best: experiment {best_experiment} ({best_accuracy:.3f}), '\n"
    "      f'mean {mean_accuracy:.3f}, spread {spread:.3f}')",
]


def notebook(salt: int = 0) -> dict[str, Any]:
    """The benchmark notebook as nbformat 4.5 JSON: 200 cells, 40 steps.

    ``salt`` goes into a comment at the top of every code cell but the metrics cell (Kale
    accepts nothing but ``print(name)`` lines there), so each salt gives new cell sources.
    """
    cells: list[dict[str, Any]] = []

    def md(text: str) -> None:
        cells.append(
            {"cell_type": "markdown", "id": f"c{len(cells)}", "metadata": {}, "source": text}
        )

    def code(source: str, *tags: str, salted: bool = True) -> None:
        cells.append(
            {
                "cell_type": "code",
                "id": f"c{len(cells)}",
                "metadata": {"tags": list(tags)} if tags else {},
                "execution_count": None,
                "outputs": [],
                "source": (f"# variant {salt}\n" if salted else "") + source,
            }
        )

    def step(name: str, prev: list[str], sources: list[str]) -> None:
        for i, source in enumerate(sources):
            tags = [f"step:{name}", *(f"prev:{p}" for p in prev)] if i == 0 else []
            code(source, *tags)

    md("# Churn model search\n\nA generated notebook for benchmarks/compile.py.")
    code("import math\n\nimport numpy as np\nimport pandas as pd", "imports")
    code(
        "seed = 0\nn_rows = 5000\ntest_size = 0.25\nalpha = 0.1\nlr = 0.05\nepochs = 20\n"
        "threshold = 0.01",
        "pipeline-parameters",
    )
    code(FUNCTIONS, "functions")
    md("## Load and clean")
    step("load", [], LOAD)
    step("clean", ["load"], CLEAN)
    for k in range(1, EXPERIMENTS + 1):
        m = str((k - 1) % 6)
        md(f"## Experiment {k}\n\nSix features from column {m}, an interaction, log tenure.")
        fill = [s.replace("@K", str(k)).replace("@M", m) for s in FEATURES]
        step(f"features_{k}", ["clean"], fill)
        code(SCRATCH.replace("@K", str(k)), "skip")
        step(f"train_{k}", [f"features_{k}"], [s.replace("@K", str(k)) for s in TRAIN])
        step(f"evaluate_{k}", [f"train_{k}"], [s.replace("@K", str(k)) for s in EVALUATE])
    md("## Compare the experiments")
    step("compare", [f"evaluate_{k}" for k in range(1, EXPERIMENTS + 1)], COMPARE)
    step("report", ["compare"], REPORT)
    code("print(best_accuracy)\nprint(mean_accuracy)", "pipeline-metrics", salted=False)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "kubeflow_notebook": {
                "experiment_name": "bench",
                "pipeline_name": "bench",
                "pipeline_description": "compile benchmark",
                "base_image": "python:3.11",
                "volumes": [],
            },
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


# ---------------------------------------------------------------------------------------


def setup() -> int:
    """Create benchmarks/.venv-kale (or reuse it) and install Kale 2.3 there."""
    python = KALE_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {KALE_VENV} ...", file=sys.stderr)
        run([sys.executable, "-m", "venv", str(KALE_VENV)])
    print(f"installing kubeflow-kale=={KALE_VERSION} (a minute or two) ...", file=sys.stderr)
    run([str(python), "-m", "pip", "install", "-q", f"kubeflow-kale=={KALE_VERSION}"])
    print(f"ready: {python}", file=sys.stderr)
    return 0


def measure_cellpipe(notebooks: list[Path], work: Path) -> dict[str, Any]:
    """cellpipe in this process (compile + write scripts) and through its CLI."""
    sys.path.insert(0, str(REPO / "kernel"))
    import cellpipe
    from cellpipe.rundir.runs import RunDir

    warm = cellpipe.compile(notebooks[0])  # warm-up: imports and lazy loads, as for Kale
    RunDir(notebooks[0].with_suffix(".cellpipe")).write_pipeline(warm)
    compile_only, in_process = [], []
    for nb in notebooks[1:]:
        t0 = time.perf_counter()
        pipeline = cellpipe.compile(nb)
        t1 = time.perf_counter()
        RunDir(nb.with_suffix(".cellpipe")).write_pipeline(pipeline)
        t2 = time.perf_counter()
        compile_only.append(t1 - t0)
        in_process.append(t2 - t0)

    def cli(nb: Path) -> None:
        # `python -m cellpipe` rather than a `cellpipe` on PATH, which may be another checkout
        command = [sys.executable, "-m", "cellpipe", "compile", str(nb), "-o", f"{nb}.cli"]
        run(command, env=cellpipe_env(), cwd=work)

    end_to_end = each(cli, notebooks[1:])
    return {
        "version": cellpipe.__version__,
        "steps": len(warm.steps),
        "in_process_s": median(in_process),
        "compile_only_s": median(compile_only),
        "end_to_end_s": median(end_to_end),
        "in_process_all_s": in_process,
        "end_to_end_all_s": end_to_end,
    }


def measure_kale(notebooks: list[Path], work: Path) -> dict[str, Any]:
    """Kale in its own venv: compile timed inside the subprocess, and whole commands."""
    python = str(KALE_VENV / "bin" / "python")
    proc = run([python, "-c", KALE_TIMER, "warm", *map(str, notebooks)], cwd=work)
    inside = json.loads(proc.stdout.strip().splitlines()[-1])
    end_to_end = each(
        lambda nb: run([python, "-c", KALE_TIMER, "cold", str(nb)], cwd=work), notebooks[1:]
    )
    kale = str(KALE_VENV / "bin" / "kale")
    cli = each(lambda nb: run([kale, "--nb", str(nb)], cwd=work), notebooks[1:])
    return {
        "version": inside["version"],
        "steps": inside["steps"],
        "dsl_script_bytes": Path(inside["script"]).stat().st_size,
        "in_process_s": median(inside["times"]),
        "end_to_end_s": median(end_to_end),
        "cli_with_kfp_yaml_s": median(cli),
        "in_process_all_s": inside["times"],
        "end_to_end_all_s": end_to_end,
        "cli_with_kfp_yaml_all_s": cli,
    }


def each(fn: Callable[[Path], object], notebooks: list[Path]) -> list[float]:
    """Seconds ``fn`` takes on each notebook in turn."""
    it = iter(notebooks)
    return timed(lambda: fn(next(it)), len(notebooks))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setup", action="store_true", help="create the Kale venv and exit")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median reported)")
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    if args.setup:
        return setup()
    if not (KALE_VENV / "bin" / "kale").exists():
        print(SETUP_HINT, file=sys.stderr)
        return 2
    repeat = 1 if args.quick else max(args.repeat, 1)

    with tempfile.TemporaryDirectory(prefix="cellpipe-bench-") as tmp:
        work = Path(tmp)
        # notebook 0 is the warm-up; 1..repeat are timed
        notebooks = []
        for salt in range(repeat + 1):
            path = work / f"bench{salt}.ipynb"
            path.write_text(json.dumps(notebook(salt), indent=1))
            notebooks.append(path)
        cp = measure_cellpipe(notebooks, work)
        kale = measure_kale(notebooks, work)

    if kale["version"] != KALE_VERSION:
        print(f"warning: the venv has Kale {kale['version']}, not {KALE_VERSION}", file=sys.stderr)
    ratio_in = kale["in_process_s"] / cp["in_process_s"]
    ratio_e2e = kale["end_to_end_s"] / cp["end_to_end_s"]
    results = {
        "notebook": {
            "cells": len(notebook()["cells"]),
            "kale_steps": kale["steps"],
            "cellpipe_steps": cp["steps"],
        },
        "repeat": repeat,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cellpipe": cp,
        "kale": kale,
        "ratio_in_process": ratio_in,
        "ratio_end_to_end": ratio_e2e,
        "ratio_kale_cli": kale["cli_with_kfp_yaml_s"] / cp["end_to_end_s"],
        "target_ratio": TARGET_RATIO,
    }

    def ms(s: float) -> str:
        return f"{s * 1e3:.1f}" if s < 1 else f"{s * 1e3:.0f}"

    rows = [
        {"tool": f"cellpipe {cp['version']}", "in process (ms)": ms(cp["in_process_s"]),
         "end to end (ms)": ms(cp["end_to_end_s"]), "ratio in process": "1.0x",
         "ratio end to end": "1.0x"},
        {"tool": f"kale {kale['version']}", "in process (ms)": ms(kale["in_process_s"]),
         "end to end (ms)": ms(kale["end_to_end_s"]), "ratio in process": f"{ratio_in:.1f}x",
         "ratio end to end": f"{ratio_e2e:.1f}x"},
        {"tool": "kale CLI (+ KFP YAML)", "in process (ms)": "-",
         "end to end (ms)": ms(kale["cli_with_kfp_yaml_s"]), "ratio in process": "-",
         "ratio end to end": f"{results['ratio_kale_cli']:.1f}x"},
    ]  # fmt: skip

    def verdict(r: float) -> str:
        return "met" if r >= TARGET_RATIO else "NOT met"

    text = "\n".join(
        [
            f"Compile a {results['notebook']['cells']}-cell notebook (steps: Kale "
            f"{kale['steps']}, cellpipe {cp['steps']}); median of {repeat}, "
            f"Python {results['python']}, {results['cpus']} CPUs.",
            "",
            table(rows, list(rows[0])),
            "",
            f"ratio = Kale's time / cellpipe's. Target >= {TARGET_RATIO:.0f}x: "
            f"in process {ratio_in:.1f}x ({verdict(ratio_in)}), "
            f"end to end {ratio_e2e:.1f}x ({verdict(ratio_e2e)}).",
            f"cellpipe in process = compile {ms(cp['compile_only_s'])} ms + writing "
            f"pipeline.json and step scripts; Kale's DSL script: {kale['dsl_script_bytes']:,} bytes.",
        ]
    )
    emit(results, args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
