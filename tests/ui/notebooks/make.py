"""Regenerate the browser tests' own notebooks: `python tests/ui/notebooks/make.py`.

They are small on purpose (a run takes about a second), and committed, so that a person can
open them in JupyterLab and see what the tests see. `test_notebooks_are_current` checks that
the committed files are what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for nbbuild

from nbbuild import notebook, write  # noqa: E402

# The raising cell is the second of its step, so "jump to the error" must pick it, not the
# step's first cell; `report` reads `total` from `check`, so it ends up skipped.
RAISING_SOURCE = (
    "limit = 50\n"
    "if total > limit:\n"
    '    raise ValueError(f"total {total} is over the limit {limit}")\n'
    'print("within the limit")'
)
FIXED_SOURCE = RAISING_SOURCE.replace("limit = 50", "limit = 100")

NOTEBOOKS = {
    "failing.ipynb": notebook(
        "# md: # A step that fails\nThe second cell of `check` raises; `report` depends on it.",
        ("step:load", 'numbers = list(range(1, 11))\nprint(f"loaded {len(numbers)} numbers")'),
        ("step:check", 'total = sum(numbers)\nprint(f"total {total}")'),
        ("", RAISING_SOURCE),
        ("step:report", 'print(f"report: total {total}")'),
    ),
    # `wait` runs long enough to be cancelled by hand; if Cancel does not work, the test
    # fails on its 60 s wait and the step ends by itself soon after.
    "slow.ipynb": notebook(
        "# md: # A slow step\n`wait` sleeps; `after` needs it.",
        ("step:prepare", 'seconds = 90\nprint("prepared")'),
        ("step:wait", "import time\n\ntime.sleep(seconds)\ndone = True"),
        ("step:after", "print(done)"),
    ),
    # Two compile errors, in cells 3 and 4 (1-based, markdown counted, as users count).
    "compile_error.ipynb": notebook(
        "# md: # Two compile errors\nAn invalid step name and a name nothing defines.",
        ("step:load", "x = 1"),
        ("step:2nd", "y = x + 1"),
        ("step:use", "print(z)"),
    ),
    # No tags at all, as a notebook arrives before anyone heard of cellpipe: a title, an
    # imports cell, setup code before the first section, and three `##` sections whose
    # headings make the step names ("1. Load the readings" -> load_the_readings).
    "untagged.ipynb": notebook(
        "# md: # Sensor readings\nA small analysis, written top to bottom.",
        "import statistics\nfrom collections import Counter",
        'SENSORS = ["north", "south", "east"]\nprint(f"{len(SENSORS)} sensors")',
        "# md: ## 1. Load the readings",
        "readings = {s: [i * (n + 1) % 7 for i in range(12)] for n, s in enumerate(SENSORS)}\n"
        'print(f"loaded {sum(map(len, readings.values()))} readings")',
        "# md: ## Clean *outliers*\nValues of 6 are glitches.",
        "clean = {s: [v for v in vs if v != 6] for s, vs in readings.items()}",
        'dropped = sum(map(len, readings.values())) - sum(map(len, clean.values()))\nprint(f"dropped {dropped}")',
        "# md: ### A note\nA level-3 heading does not start a step.",
        "# md: ## Summary",
        "means = {s: round(statistics.mean(vs), 2) for s, vs in clean.items()}\n"
        'print("means", means)\nprint("most common", Counter(v for vs in clean.values() for v in vs).most_common(1))',
    ),
    # Explicit `prev:` edges for renaming: renaming `load` must rewrite both dependants'.
    "renaming.ipynb": notebook(
        "# md: # Renaming a step\n`sort` and `report` name `load` in `prev:` tags.",
        ("step:load", "values = [3, 1, 2]"),
        ("step:sort prev:load", "ordered = sorted(values)"),
        ("step:report prev:load prev:sort hide-input", "print(values, ordered)"),
    ),
    # A parameter and a metric that depends on it, for comparing runs: two runs with
    # different `scale` differ in `total` too.
    "params.ipynb": notebook(
        "# md: # Scaling\n`scale` is a parameter; `total` is recorded as a metric.",
        ("parameters", "scale = 2"),
        ("step:compute", 'total = sum(range(10)) * scale\nprint(f"total {total}")'),
        ("metrics", "total"),
    ),
}


def main() -> None:
    for name, nb in NOTEBOOKS.items():
        write(HERE / name, nb)


if __name__ == "__main__":
    main()
