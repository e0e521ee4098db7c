"""What a step's end costs with alias detection and checked hand-offs, against a revision
before them (default: `main`), for three values a step hands on: a 400 MB array, a
1-million-row DataFrame and a dict of 10,000 small objects.

    python benchmarks/alias_detection.py                 # median of 5, vs main
    python benchmarks/alias_detection.py --before REV --repeat 3 --json

Each side runs in its own interpreter with its own `kernel/` (`git archive REV kernel` for
the revision before). What is timed is what the runner does at a step's end for one output
and at the consumer's start: *detect* (this checkout only: `alias_groups` over the value,
as `_save_outputs` calls it), *save* (`save_value`: format choice, write, hash and, in this
checkout, the layout check) and *load* (`load_value`, plus one full read of the value so a
memory map's lazy pages are counted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _common import REPO, emit, median, table

_CHILD = r"""
import json, sys, tempfile, time, shutil
from pathlib import Path
import numpy as np, pandas as pd
from cellpipe.execution.marshal import load_value, save_value
try:
    from cellpipe.execution.aliasing import alias_groups
except ImportError:  # the revision before
    alias_groups = None

class Point:
    def __init__(self, i):
        self.x, self.y, self.tags = i, i * 0.5, ["p"]

def make(kind):
    if kind == "array 400 MB":
        return np.random.default_rng(0).random(400 * 10**6 // 8)
    if kind == "DataFrame 1M rows":
        rng = np.random.default_rng(0)
        return pd.DataFrame({"id": np.arange(10**6), "x": rng.random(10**6),
                             "k": pd.Categorical(rng.integers(0, 5, 10**6).astype(str))})
    return {f"k{i}": Point(i) for i in range(10_000)}

def touch(v):
    if isinstance(v, np.ndarray):
        return float(v.sum())
    if isinstance(v, pd.DataFrame):
        return float(v["x"].sum())
    return len(v)

kind, repeat = sys.argv[1], int(sys.argv[2])
value = make(kind)
rows = []
for _ in range(repeat):
    d = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").exists() else None))
    t0 = time.perf_counter()
    if alias_groups is not None:
        alias_groups({"v": value})
    t1 = time.perf_counter()
    rec = save_value("v", value, d, producer="p")
    t2 = time.perf_counter()
    touch(load_value(rec, d))
    t3 = time.perf_counter()
    rows.append({"detect": t1 - t0, "save": t2 - t1, "load": t3 - t2, "format": rec.format})
    shutil.rmtree(d)
print(json.dumps(rows))
"""

KINDS = ("array 400 MB", "DataFrame 1M rows", "dict of 10,000 objects")


def _kernel_of(rev: str, into: Path) -> Path:
    archive = into / "kernel.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "kernel"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "kernel"


def _measure(kernel: Path, kind: str, repeat: int) -> list[dict]:
    env = {"PYTHONPATH": str(kernel), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(repeat)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="revision to compare with")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        before = _kernel_of(args.before, Path(tmp))
        for kind in KINDS:
            for side, kernel in (("before", before), ("after", REPO / "kernel")):
                rows = _measure(kernel, kind, args.repeat)
                results.setdefault(kind, {})[side] = {
                    k: median([r[k] for r in rows]) for k in ("detect", "save", "load")
                } | {"format": rows[0]["format"]}
    out = []
    for kind, sides in results.items():
        b, a = sides["before"], sides["after"]
        out.append(
            {
                "value": kind,
                "format before/after": f"{b['format']} / {a['format']}",
                "detect (ms)": f"{1000 * a['detect']:.2f}",
                "save before (ms)": f"{1000 * b['save']:.0f}",
                "save after (ms)": f"{1000 * a['save']:.0f}",
                "load before (ms)": f"{1000 * b['load']:.0f}",
                "load after (ms)": f"{1000 * a['load']:.0f}",
                "step end before/after (ms)": f"{1000 * (b['save']):.0f} / "
                f"{1000 * (a['detect'] + a['save']):.0f}",
            }
        )
    emit(results, args.json, table(out, list(out[0])))


if __name__ == "__main__":
    main()
