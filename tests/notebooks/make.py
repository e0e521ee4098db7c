"""Regenerate the adversarial notebooks: `python tests/notebooks/make.py`.

Each notebook is small and fast, stresses one way a pipeline could compute something other
than "Restart and Run All", and ends by printing the values the oracle compares.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent


def code(source: str, *tags: str):
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


NOTEBOOKS = {
    "inplace_dataframe": [
        code("import pandas as pd\nimport numpy as np", "imports"),
        code("df = pd.DataFrame({'a': [1.0, np.nan, 3.0], 'b': [4, 5, 6]})", "step:load"),
        code("df.dropna(inplace=True)\ndf['c'] = df['a'] * df['b']", "step:clean"),
        code("df.loc[:, 'b'] += 1", "step:bump"),
        code("print(df.to_dict())\nprint(df.dtypes.to_dict())", "step:report"),
    ],
    "list_append": [
        code("items = ['a']", "step:start"),
        code("items.append('b')", "step:first"),
        code("items.append('c')\nitems.extend(['d'])", "step:second"),
        code("print(items, len(items))", "step:show"),
    ],
    "augmented_assignment": [
        code("total = 1\ncounts = {'x': 0}", "step:init"),
        code("total += 10\ncounts['x'] += 1", "step:add"),
        code("total *= 3\ncounts['x'] += 2", "step:mul"),
        code("print(total, counts)", "step:show"),
    ],
    "delete_names": [
        code("big = list(range(1000))\ntmp = sum(big)\nkeep = tmp // 2", "step:make"),
        code("del tmp\nresult = keep + 1", "step:use"),
        code("print(result, 'tmp' in dir())", "step:show"),
    ],
    "rebound_name": [
        code("x = 1", "step:a"),
        code("x = x * 10\ny = x + 1", "step:b"),
        code("x = x + y", "step:c"),
        code("print(x, y)", "step:show"),
    ],
    "shared_function": [
        code("import math", "imports"),
        code("scale = 3", "parameters"),
        code(
            "def transform(values):\n    return [math.floor(v * scale) for v in values]",
            "functions",
        ),
        code("a = transform([1.5, 2.5])", "step:one"),
        code("b = transform(a)", "step:two"),
        code("c = transform([sum(b)])\nprint(a, b, c)", "step:three"),
    ],
    "class_across_steps": [
        code(
            "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
            "    def norm2(self):\n        return self.x ** 2 + self.y ** 2",
            "step:define",
        ),
        code("p = Point(3, 4)", "step:make"),
        code("print(isinstance(p, Point), p.norm2(), type(p).__name__)", "step:use"),
    ],
    "magics_and_shell": [
        code("%matplotlib inline\nimport os", "imports"),
        code("%time squares = [i * i for i in range(5)]", "step:compute"),
        code("%%capture captured\nprint('hidden', sum(squares))", "step:capture"),
        code("files = !ls\nmarker = 'magic'\n!echo shell says {marker}", "step:shell"),
        code("%env CELLPIPE_DEMO=on", "step:env"),
        code(
            "print(captured.stdout.strip(), len(files) > 0, os.environ.get('CELLPIPE_DEMO'))",
            "step:show",
        ),
    ],
    "parameters_override": [
        code("n = 2\nlabel = 'default'\nratio = 0.5", "parameters"),
        code("values = [i * ratio for i in range(n)]", "step:make"),
        code("print(label, n, values)", "step:show"),
    ],
    "skip_cells": [
        code("x = 5", "step:a"),
        code("raise RuntimeError('must be skipped')", "skip"),
        code("y = x + undefined_name", "skip"),
        code("y = x * 2", "step:b"),
        code("print(x, y)", "step:show"),
    ],
    "kale_style": [
        code("import statistics", "imports"),
        code("factor = 2", "pipeline-parameters"),
        code("def double(v):\n    return v * factor", "functions"),
        code("data = [3, 1, 2]", "block:load"),
        code(
            "model = sorted(double(v) for v in data)",
            "block:train",
            "prev:load",
            "limit:memory:1Gi",
        ),
        code("print('debugging only')\nraise SystemExit", "skip"),
        code("mean = statistics.mean(model)\nprint(model, mean)", "block:evaluate", "prev:train"),
        code("print(mean)", "pipeline-metrics"),
    ],
    "big_array_chain": [
        code("import numpy as np", "imports"),
        code("arr = np.arange(100 * 2**20 // 8, dtype=np.float64)", "step:make"),
        code("arr[:10] += 1", "step:touch"),
        code("arr *= 2", "step:double"),
        code("print(arr.nbytes, float(arr[:12].sum()), float(arr[-1]))", "step:check"),
    ],
    "random_state": [
        code("import random\nimport numpy as np", "imports"),
        code("np.random.seed(0)\nrandom.seed(1)", "step:seed"),
        code("a = float(np.random.rand())\nr1 = random.random()", "step:first"),
        code("b = float(np.random.rand())\nr2 = random.random()", "step:second"),
        code("print(a, b, r1, r2)", "step:show"),
    ],
    "rich_outputs": [
        code(
            "import pandas as pd\nimport matplotlib.pyplot as plt\nfrom IPython.display import HTML, display",
            "imports",
        ),
        code("frame = pd.DataFrame({'k': ['a', 'b'], 'v': [1, 2]})\nframe", "step:table"),
        code(
            "display(HTML('<b>bold</b>'))\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\nplt.show()",
            "step:plot",
        ),
        code("print(frame.v.sum())", "step:show"),
    ],
    "parallel_writers": [
        code("x = 'from a'", "step:a"),
        code("x = 'from b'", "step:b"),
        code("print(x)", "step:c"),
    ],
    "conditional_and_functions": [
        code("threshold = 3\nseen = []", "step:setup"),
        code("def record(v):\n    seen.append(v)\n    return v > threshold", "step:define"),
        code(
            "flags = [record(v) for v in range(6)]\nif any(flags):\n    status = 'some'", "step:run"
        ),
        code("print(flags, seen, status)", "step:show"),
    ],
}

#: Parameters the invariant test passes with -p (and injects top to bottom).
PARAMETERS = {"parameters_override": {"n": 5, "label": "run2"}}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(f"# {name.replace('_', ' ')}"), *cells]
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:20]}-{i}".replace("_", "-")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = build(name, cells)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
