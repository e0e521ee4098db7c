"""`cellpipe serve` latency vs a cold `cellpipe run` of the same notebook.

An inference notebook: `imports` (numpy), a parameter `x`, a `load_model` step that takes a
while (the model), a `predict` step that reads `x`, and a metrics cell. Three ways to get a
prediction are timed:

- cold: `cellpipe run infer.ipynb -p x=N --no-cache` in a new process, as a script would,
  and the same with the cache (the model step reused: only the process start differs);
- serve, new x: `POST /run` with a value of x not seen before (`predict` and `metrics` run,
  `load_model` comes from the cache);
- serve, repeated x: the same request again (every step cached).

    python benchmarks/serve.py [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import cellpipe_env, median, run, table, write_notebook

MODEL_S = 0.5  # what loading the model costs; serve pays it once


def _notebook(directory: Path) -> Path:
    return write_notebook(
        directory / "infer.ipynb",
        [
            (["imports"], "import time\nimport numpy as np"),
            (["parameters"], "x = 1.0"),
            (["step:load_model"], f"time.sleep({MODEL_S})\nweights = np.arange(1000.0)"),
            (["step:predict"], "prediction = float(weights.sum() * x)"),
            (["metrics"], "prediction"),
        ],
    )


def _post(url: str, x: float) -> dict:
    body = json.dumps({"parameters": {"x": x}, "return": ["prediction"]}).encode()
    request = urllib.request.Request(url + "/run", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="requests per kind (default 20)")
    parser.add_argument(
        "--gap",
        type=float,
        default=1.0,
        help="seconds between requests with a new x (default 1): the time a new warm "
        "process has to start; 0 sends them back to back",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        nb = _notebook(directory)
        env = cellpipe_env(CELLPIPE_RUNS_ROOT=str(directory / "runs"))
        cold, cold_cached = [], []
        command = [sys.executable, "-m", "cellpipe", "run", str(nb)]
        for i in range(max(3, args.repeat // 4)):
            t0 = time.perf_counter()
            run([*command, "-p", f"x={i}", "--no-cache"], env=env, cwd=directory)
            cold.append(time.perf_counter() - t0)
            # With the cache (the model step is reused), a new x: what serve saves is the rest.
            t0 = time.perf_counter()
            run([*command, "-p", f"x={i + 0.5}"], env=env, cwd=directory)
            cold_cached.append(time.perf_counter() - t0)

        server = subprocess.Popen(
            [sys.executable, "-m", "cellpipe", "serve", str(nb), "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=directory,
        )
        try:
            assert server.stderr is not None
            url = re.search(r"(http://\S+:\d+)", server.stderr.readline()).group(1)  # type: ignore[union-attr]
            _post(url, -1.0)  # the first request loads the model
            new, repeated = [], []
            for i in range(args.repeat):
                time.sleep(args.gap)
                t0 = time.perf_counter()
                out = _post(url, 1000.0 + i)
                new.append(time.perf_counter() - t0)
                assert out["steps"]["load_model"] == "cached", out
                t0 = time.perf_counter()
                out = _post(url, 1000.0 + i)
                repeated.append(time.perf_counter() - t0)
                assert set(out["steps"].values()) == {"cached"}, out
        finally:
            server.terminate()
            server.wait()
            server.stderr.close()  # type: ignore[union-attr]

    results = {
        "cold_run_s": round(median(cold), 4),
        "cold_run_cached_model_s": round(median(cold_cached), 4),
        "serve_new_x_s": round(median(new), 4),
        "serve_repeated_x_s": round(median(repeated), 4),
        "speedup_new_x": round(median(cold) / median(new), 1),
        "speedup_new_x_vs_cached_cold": round(median(cold_cached) / median(new), 1),
        "speedup_repeated_x": round(median(cold) / median(repeated), 1),
        "repeat": args.repeat,
        "gap_s": args.gap,
        "model_load_s": MODEL_S,
    }
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    rows = [
        {"how": "cold `cellpipe run -p x=N --no-cache`", "median": f"{median(cold) * 1000:.0f} ms"},
        {
            "how": "cold `cellpipe run -p x=N` (model cached)",
            "median": f"{median(cold_cached) * 1000:.0f} ms",
        },
        {
            "how": f"serve, POST /run, new x (predict runs), {args.gap:g} s apart",
            "median": f"{median(new) * 1000:.0f} ms",
            "vs cold": f"{results['speedup_new_x']}x / "
            f"{results['speedup_new_x_vs_cached_cold']}x (model cached) faster",
        },
        {
            "how": "serve, POST /run, repeated x (all cached)",
            "median": f"{median(repeated) * 1000:.0f} ms",
            "vs cold": f"{results['speedup_repeated_x']}x faster",
        },
    ]
    print(table(rows, ["how", "median", "vs cold"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
