"""Regenerate the adversarial notebooks: `python tests/notebooks/make.py`.

Each notebook is small and fast, stresses one way a pipeline could compute something other
than "Restart and Run All", and ends by printing the values the oracle compares. Its first
(markdown) cell says what it stresses. `tests/test_invariant.py` checks that the committed
`.ipynb` files are what this script writes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Case:
    """One adversarial notebook: what it stresses, its code cells, and the `-p` overrides the
    oracle passes (injected papermill-style on the top-to-bottom side)."""

    purpose: str
    cells: list[nbformat.NotebookNode]
    parameters: dict[str, Any] = field(default_factory=dict)


def code(source: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def stale(source: str, *tags: str) -> nbformat.NotebookNode:
    """A code cell saved with outputs from an earlier session, as users commit notebooks."""
    cell = code(source, *tags)
    cell.execution_count = 7
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="stale output of an old session\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "'stale'"}, execution_count=7),
    ]
    return cell


CASES: dict[str, Case] = {
    # -- values that change after they are made ----------------------------------------------
    "inplace_dataframe": Case(
        "A DataFrame changed in place (`inplace=True`, a new column, `.loc` +=) by later steps.",
        [
            code("import pandas as pd\nimport numpy as np", "imports"),
            code("df = pd.DataFrame({'a': [1.0, np.nan, 3.0], 'b': [4, 5, 6]})", "step:load"),
            code("df.dropna(inplace=True)\ndf['c'] = df['a'] * df['b']", "step:clean"),
            code("df.loc[:, 'b'] += 1", "step:bump"),
            code("print(df.to_dict())\nprint(df.dtypes.to_dict())", "step:report"),
        ],
    ),
    "list_append": Case(
        "A list made in one step and appended to by two later steps, in notebook order.",
        [
            code("items = ['a']", "step:start"),
            code("items.append('b')", "step:first"),
            code("items.append('c')\nitems.extend(['d'])", "step:second"),
            code("print(items, len(items))", "step:show"),
        ],
    ),
    "augmented_assignment": Case(
        "`+=` and `*=` on a number and on a dict entry across steps.",
        [
            code("total = 1\ncounts = {'x': 0}", "step:init"),
            code("total += 10\ncounts['x'] += 1", "step:add"),
            code("total *= 3\ncounts['x'] += 2", "step:mul"),
            code("print(total, counts)", "step:show"),
        ],
    ),
    "delete_names": Case(
        "`del` of a name in one step; later steps use the other names.",
        [
            code("big = list(range(1000))\ntmp = sum(big)\nkeep = tmp // 2", "step:make"),
            code("del tmp\nresult = keep + 1", "step:use"),
            code("print(result, 'tmp' in dir())", "step:show"),
        ],
    ),
    "rebound_name": Case(
        "A name rebound from its own value in two steps; a loop variable read after its loop.",
        [
            code("x = 1", "step:a"),
            code("x = x * 10\ny = x + 1", "step:b"),
            code("x = x + y\nfor i in range(3):\n    pass", "step:c"),
            code("print(x, y, i)", "step:show"),
        ],
    ),
    "mutation_by_library_call": Case(
        "Library functions that change their first argument in place.",
        [
            code("import random\nimport heapq\nimport numpy as np", "imports"),
            code("deck = list(range(6))\nheap = [5, 1]\narr = np.zeros(3)", "step:make"),
            code("random.seed(3)\nrandom.shuffle(deck)", "step:shuffle"),
            code("heapq.heappush(heap, 0)", "step:push"),
            code("np.copyto(arr, 2.0)", "step:fill"),
            code("print(deck, heap, arr.tolist())", "step:show"),
        ],
    ),
    "mutation_through_local_alias": Case(
        "A nested object changed through a second name bound in the mutating step.",
        [
            code("cfg = {'model': {'lr': 0.1}}", "step:make"),
            code("inner = cfg['model']\ninner['lr'] = 0.5", "step:tune"),
            code("print(cfg)", "step:show"),
        ],
    ),
    "mutation_through_loop_variable": Case(
        "Rows of a list changed through the loop variable: `for row in rows: row[k] = v`.",
        [
            code("rows = [{'id': 1}, {'id': 2}]", "step:make"),
            code("for row in rows:\n    row['seen'] = True", "step:mark"),
            code("print(rows)", "step:show"),
        ],
    ),
    "mutation_through_out_argument": Case(
        "An array changed by a numpy ufunc's `out=` argument.",
        [
            code("import numpy as np", "imports"),
            code("arr = np.zeros(3)", "step:make"),
            code("np.add(arr, 1, out=arr)\nnp.multiply(arr, 3, out=arr)", "step:update"),
            code("print(arr.tolist())", "step:show"),
        ],
    ),
    "aliases_between_steps": Case(
        "Two names for one object, made in one step and changed through one name in the next.",
        [
            code("a = [1]\npair = [a, a]\nsame = a", "step:make"),
            code("a.append(2)", "step:grow"),
            code("print(pair, same, pair[0] is pair[1])", "step:show"),
        ],
    ),
    "aliases_in_containers": Case(
        "A run record holding a log and a config that later steps change through their own "
        "names; one object in two containers; a numpy view of an array changed in place.",
        [
            code("import numpy as np", "imports"),
            code(
                "log = []\ncfg = {'lr': 0.1}\nrun = {'log': log, 'cfg': cfg}\n"
                "shared = {'n': 0}\nbox1 = [shared]\nbox2 = {'s': shared}\n"
                "arr = np.zeros(6)\nhead = arr[:3]",
                "step:make",
            ),
            code("log.append('epoch 1')\ncfg.update(lr=0.01)", "step:train"),
            code("box1[0]['n'] += 1\narr[0] = 7.0", "step:bump"),
            code("log.append('epoch 2')", "step:more"),
            code(
                "print(run['log'], run['cfg'], run['log'] is log)\n"
                "print(box2, box2['s'] is box1[0], head.tolist())",
                "step:show",
            ),
        ],
    ),
    "aliases_in_estimators": Case(
        "A scikit-learn Pipeline around an estimator whose hyper-parameters the next step sets "
        "through its own name; the same model also kept in a dict.",
        [
            code(
                "from sklearn.datasets import load_digits\n"
                "from sklearn.linear_model import LogisticRegression\n"
                "from sklearn.neural_network import BernoulliRBM\n"
                "from sklearn.pipeline import Pipeline",
                "imports",
            ),
            code(
                "X, y = load_digits(return_X_y=True)\nX, y = X[:300] / 16, y[:300]\n"
                "rbm = BernoulliRBM(random_state=0, verbose=False)\n"
                "lr = LogisticRegression(max_iter=300)\n"
                "pipe = Pipeline([('rbm', rbm), ('lr', lr)])\nmodels = {'rbm': rbm}",
                "step:build",
            ),
            code("rbm.n_components = 16\nrbm.n_iter = 3\nlr.C = 5.0", "step:tune"),
            code(
                "pipe.fit(X, y)\nprint(pipe.named_steps['rbm'].n_components, "
                "models['rbm'].components_.shape, round(pipe.score(X, y), 4))",
                "step:fit",
            ),
        ],
    ),
    "dynamic_names": Case(
        "Names read through `globals()` and `eval`, which the source does not spell out.",
        [
            code("alpha = 1\nbeta = 2", "step:make"),
            code(
                "total = sum(globals()[n] for n in ['alpha', 'beta']) + eval('alpha')", "step:use"
            ),
            code("print(total)", "step:show"),
        ],
    ),
    "interleaved_step_cells": Case(
        "A step whose cells are split by another step's cell that rebinds a name it reads.",
        [
            code("x = 1", "step:a"),
            code("x = 2", "step:b"),
            code("print(x)", "step:a"),
        ],
    ),
    # -- functions, classes and the prelude --------------------------------------------------
    "shared_function": Case(
        "A `functions` cell used by three steps, reading a parameter overridden with -p.",
        [
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
        {"scale": 5},
    ),
    "global_in_function": Case(
        "A `functions` cell function that rebinds a global with `global`, called in two steps.",
        [
            code("def bump(step=1):\n    global count\n    count += step", "functions"),
            code("count = 0", "step:init"),
            code("bump()", "step:a"),
            code("bump(2)\nbump(3)", "step:b"),
            code("print(count)", "step:show"),
        ],
    ),
    "prelude_state": Case(
        "Names the prelude defines, rebound or mutated by steps: the prelude runs once top to "
        "bottom but at the start of every step in a pipeline.",
        [
            code("import numpy as np\nSEED = 42\nregistry = []", "imports"),
            code("def register(v):\n    registry.append(v)\n    return len(registry)", "functions"),
            code("SEED += 1\nregister('a')", "step:a"),
            code("n = register('b')", "step:b"),
            code("print(SEED, registry, n)", "step:show"),
        ],
    ),
    "prelude_output": Case(
        "Output printed by `imports` and `functions` cells appears once, in those cells.",
        [
            code(
                "import sys\nprint('imports ran')\nprint('to stderr', file=sys.stderr)", "imports"
            ),
            code("def one():\n    return 1\n\nprint('functions ran')", "functions"),
            code("x = one()", "step:a"),
            code("print(x + 1)", "step:b"),
        ],
    ),
    "late_binding_globals": Case(
        "A lambda and a function made in one step read a global rebound by a later step.",
        [
            code("k = 1\nf = lambda v: v + k\n\ndef g(v):\n    return v * k", "step:define"),
            code("k = 100", "step:rebind"),
            code("print(f(1), g(2))", "step:use"),
        ],
    ),
    "conditional_and_functions": Case(
        "A step-defined function appending to a global; a name bound only under `if`.",
        [
            code("threshold = 3\nseen = []", "step:setup"),
            code("def record(v):\n    seen.append(v)\n    return v > threshold", "step:define"),
            code(
                "flags = [record(v) for v in range(6)]\nif any(flags):\n    status = 'some'",
                "step:run",
            ),
            code("print(flags, seen, status)", "step:show"),
        ],
    ),
    "class_across_steps": Case(
        "A class and an Enum defined in one step, instantiated in another, checked in a third.",
        [
            code("import enum", "imports"),
            code(
                "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n\n"
                "    def norm2(self):\n        return self.x ** 2 + self.y ** 2\n\n\n"
                "class Color(enum.Enum):\n    RED = 1\n    BLUE = 2",
                "step:define",
            ),
            code("p = Point(3, 4)\nc = Color.RED", "step:make"),
            code(
                "print(isinstance(p, Point), p.norm2(), type(p).__name__, c is Color.RED, c)",
                "step:use",
            ),
        ],
    ),
    "dataclass_across_steps": Case(
        "A dataclass defined in one step, instantiated in another, printed in a third.",
        [
            code("import dataclasses", "imports"),
            code("@dataclasses.dataclass\nclass Box:\n    w: int\n    h: int", "step:define"),
            code("box = Box(2, 3)", "step:make"),
            code("print(box, dataclasses.asdict(box), box == Box(2, 3))", "step:use"),
        ],
    ),
    # -- the interpreter and the notebook around the code ------------------------------------
    "magics_and_shell": Case(
        "Line and cell magics and shell escapes, including names they bind.",
        [
            code("%load_ext autoreload\n%autoreload 2\n%matplotlib inline\nimport os", "imports"),
            code("%time squares = [i * i for i in range(5)]", "step:compute"),
            code("%%capture captured\nprint('hidden', sum(squares))", "step:capture"),
            code("files = !ls\nmarker = 'magic'\n!echo hello {marker}", "step:shell"),
            code("%env CELLPIPE_DEMO=on", "step:env"),
            code(
                "print(captured.stdout.strip(), len(files) > 0, os.environ.get('CELLPIPE_DEMO'))",
                "step:show",
            ),
        ],
    ),
    "working_directory": Case(
        "`__name__`, the working directory, relative paths, `os.chdir`, `os.environ` and "
        "`sys.path` changed by one step and seen by the next.",
        [
            code("import json\nimport os\nimport sys", "imports"),
            code(
                "print(__name__, get_ipython() is not None)\n"
                "with open('working_directory.ipynb') as fh:\n"
                "    cells = len(json.load(fh)['cells'])",
                "step:where",
            ),
            code(
                "os.mkdir('sub')\nos.chdir('sub')\nos.environ['CELLPIPE_ORACLE'] = 'set'\n"
                "sys.path.append('/nonexistent/cellpipe-oracle')",
                "step:move",
            ),
            code(
                "print(cells, os.path.basename(os.getcwd()), os.environ.get('CELLPIPE_ORACLE'), "
                "sys.path[-1])",
                "step:show",
            ),
        ],
    ),
    "library_options": Case(
        "Display and warning settings of libraries changed by one step, used by later ones.",
        [
            code("import warnings\nimport numpy as np\nimport pandas as pd", "imports"),
            code(
                "np.set_printoptions(precision=2)\npd.set_option('display.precision', 1)\n"
                "warnings.filterwarnings('ignore', message='quiet')",
                "step:configure",
            ),
            code(
                "arr = np.array([1 / 3, 2 / 3])\nframe = pd.DataFrame({'v': [1 / 3]})", "step:make"
            ),
            code("print(arr)\nprint(frame)\nwarnings.warn('quiet please')", "step:show"),
        ],
    ),
    "output_history": Case(
        "IPython's output history: `_` is the last cell's result.",
        [
            code("41 + 1", "step:a"),
            code("answer = _\nprint(answer)", "step:b"),
        ],
    ),
    "iterator_position": Case(
        "An iterator advanced with `next()` in a later step; the rest read in a third.",
        [
            code("it = iter([1, 2, 3, 4])\nfirst = next(it)", "step:make"),
            code("second = next(it)", "step:advance"),
            code("print(first, second, list(it))", "step:show"),
        ],
    ),
    "local_module": Case(
        "A module next to the notebook, imported by the `imports` cell; its function and "
        "class cross steps.",
        [
            code("import local_helpers\nfrom local_helpers import Scaler, double", "imports"),
            code("x = double(21)\nscaler = Scaler(3)\nop = double", "step:a"),
            code(
                "print(x, scaler.apply(x), op(1), local_helpers.__name__, type(scaler).__module__)",
                "step:b",
            ),
        ],
    ),
    "file_handoff": Case(
        "One step writes a file that a later step reads; no variable connects them.",
        [
            code("import time\nimport pandas as pd", "imports"),
            code(
                "time.sleep(0.5)  # a slow producer: a reader started alongside finds no file\n"
                "pd.DataFrame({'v': [1, 2, 3]}).to_csv('handoff.csv', index=False)",
                "step:write",
            ),
            code("back = pd.read_csv('handoff.csv')", "step:read"),
            code("print(back.v.sum())", "step:show"),
        ],
    ),
    "parameters_override": Case(
        "A parameters cell overridden with -p n=5 -p label=run2.",
        [
            code("n = 2\nlabel = 'default'\nratio = 0.5", "parameters"),
            code("values = [i * ratio for i in range(n)]", "step:make"),
            code("print(label, n, values)", "step:show"),
        ],
        {"n": 5, "label": "run2"},
    ),
    "parameter_types": Case(
        "-p values typed as papermill types them: True, a float, a string, an int, None.",
        [
            code(
                "flag = False\nratio = 0.5\nname = 'x'\ncount = 1\nnothing = 'something'",
                "parameters",
            ),
            code("summary = (flag, ratio * 2, name.upper(), count + 1, nothing)", "step:use"),
            code("print(summary, [type(v).__name__ for v in summary])", "step:show"),
        ],
        {"flag": True, "ratio": 0.25, "name": "abc", "count": 3, "nothing": None},
    ),
    "skip_cells": Case(
        "`skip` cells that would break the run if executed.",
        [
            code("x = 5", "step:a"),
            code("raise RuntimeError('must be skipped')", "skip"),
            code("y = x + undefined_name", "skip"),
            code("y = x * 2", "step:b"),
            code("print(x, y)", "step:show"),
        ],
    ),
    "stale_outputs": Case(
        "A notebook saved with outputs of an old session: every cell's outputs are replaced, "
        "a skipped cell's are cleared.",
        [
            stale("x = 1", "step:a"),
            stale("raise RuntimeError('must be skipped')", "skip"),
            stale("y = x + 1", "step:b"),
            stale("print(y)", "step:c"),
        ],
    ),
    "kale_style": Case(
        "Only Kale's tag names: imports, pipeline-parameters, functions, block:, prev:, skip, "
        "limit:, pipeline-metrics.",
        [
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
            code(
                "mean = statistics.mean(model)\nprint(model, mean)", "block:evaluate", "prev:train"
            ),
            code("print(mean)", "pipeline-metrics"),
        ],
    ),
    # -- values of particular types ----------------------------------------------------------
    "big_array_chain": Case(
        "A 100 MB numpy array changed in place by each step of a chain.",
        [
            code("import numpy as np", "imports"),
            code("arr = np.arange(100 * 2**20 // 8, dtype=np.float64)", "step:make"),
            code("arr[:10] += 1", "step:touch"),
            code("arr *= 2", "step:double"),
            code("print(arr.nbytes, float(arr[:12].sum()), float(arr[-1]))", "step:check"),
        ],
    ),
    "array_type": Case(
        "A numpy array received from another step is a plain ndarray: its type and its repr.",
        [
            code("import numpy as np", "imports"),
            code("arr = np.arange(6).reshape(2, 3)", "step:make"),
            code("arr[0, 0] = 10\narr", "step:touch"),
            code("print(type(arr).__name__, repr(arr))", "step:show"),
        ],
    ),
    "wide_dataframe": Case(
        "A DataFrame with 30 columns, displayed and printed: pandas truncates columns in a "
        "notebook.",
        [
            code("import pandas as pd", "imports"),
            code(
                "wide = pd.DataFrame([range(30)], columns=[f'c{i}' for i in range(30)])",
                "step:make",
            ),
            code("print(wide)\nwide", "step:show"),
        ],
    ),
    "memory_layout": Case(
        "Values whose memory layout a library reads: a C-ordered DataFrame (load_diabetes) fed "
        "to LassoLarsIC, whose path depends on it; a strided view; a read-only array.",
        [
            code(
                "import numpy as np\nfrom sklearn.datasets import load_diabetes\n"
                "from sklearn.linear_model import LassoLarsIC",
                "imports",
            ),
            code(
                "X, y = load_diabetes(return_X_y=True, as_frame=True)\n"
                "strided = np.arange(24.0).reshape(4, 6)[:, ::2]\n"
                "frozen = np.arange(3.0)\nfrozen.flags.writeable = False",
                "step:load",
            ),
            code(
                "model = LassoLarsIC(criterion='aic').fit(X, y)\n"
                "print(repr(float(model.coef_.sum())), repr(float(model.criterion_.min())))",
                "step:fit",
            ),
            code(
                "print(np.asarray(X).flags.c_contiguous, strided.flags.c_contiguous, "
                "strided.strides, frozen.flags.writeable)",
                "step:show",
            ),
        ],
    ),
    "kernel_from_first_import": Case(
        "Libraries first imported while a step loads its inputs, not by a cell: a wide "
        "DataFrame shown as the last expression (pandas picks its display mode at import), "
        "rich and a notebook-detection check that ask what kind of shell runs them.",
        [
            code(
                "import pandas as pd\n"
                "wide = pd.DataFrame([range(30)], columns=[f'c{i}' for i in range(30)])",
                "step:make",
            ),
            code("wide", "step:show"),
            code(
                "print(pd.get_option('display.max_columns'))\n"
                "print(get_ipython().__class__.__name__, hasattr(get_ipython(), 'kernel'))",
                "step:detect",
            ),
            code(
                "from rich.console import Console\n"
                "print(Console().is_jupyter)\nConsole().print({'wide': wide.shape})",
                "step:rich",
            ),
        ],
    ),
    "datetime_index": Case(
        "A time series whose DatetimeIndex has a frequency; a categorical column.",
        [
            code("import pandas as pd", "imports"),
            code(
                "ts = pd.DataFrame(\n    {'v': [1.0, 2.0, 3.0], 'k': pd.Categorical(['a', 'b', "
                "'a'])},\n    index=pd.date_range('2024-01-01', periods=3, freq='D'),\n)",
                "step:make",
            ),
            code("print(ts.index.freq, ts.dtypes.to_dict())\nprint(ts)", "step:show"),
        ],
    ),
    "random_state": Case(
        "Global RNGs seeded in one step and drawn from in two later ones; a Generator object.",
        [
            code("import random\nimport numpy as np", "imports"),
            code("np.random.seed(0)\nrandom.seed(1)\nrng = np.random.default_rng(5)", "step:seed"),
            code(
                "a = float(np.random.rand())\nr1 = random.random()\ng1 = int(rng.integers(1000))",
                "step:first",
            ),
            code(
                "b = float(np.random.rand())\nr2 = random.random()\ng2 = int(rng.integers(1000))",
                "step:second",
            ),
            code("print(a, b, r1, r2, g1, g2)", "step:show"),
        ],
    ),
    "rng_inside_libraries": Case(
        "The global generator seeded in one step, then drawn from inside libraries that are "
        "given no random_state: scikit-learn's train_test_split, a random forest's fit, "
        "KFold(shuffle=True), FastICA, and scipy.stats rvs. Most of these steps may run in "
        "parallel, and the source of none says it draws.",
        [
            code(
                "import numpy as np\nfrom scipy import stats\n"
                "from sklearn.decomposition import FastICA\n"
                "from sklearn.ensemble import RandomForestClassifier\n"
                "from sklearn.model_selection import KFold, train_test_split",
                "imports",
            ),
            code("np.random.seed(0)", "step:seed"),
            code(
                "X = np.column_stack([np.linspace(0, 1, 40) ** k for k in range(1, 5)])\n"
                "y = (np.arange(40) % 3 == 0).astype(int)",
                "step:data",
            ),
            code(
                "X_train, X_test, y_train, y_test = train_test_split(X, y)\nprint(y_train)",
                "step:split",
            ),
            code(
                "forest = RandomForestClassifier(n_estimators=5).fit(X_train, y_train)\n"
                "print(forest.feature_importances_.round(6))",
                "step:forest",
            ),
            code(
                "folds = [test.tolist() for _, test in KFold(3, shuffle=True).split(X)]\n"
                "print(folds[0])",
                "step:kfold",
            ),
            code("print(stats.norm.rvs(size=3).round(6))", "step:rvs"),
            code(
                "ica = FastICA(n_components=2, whiten='unit-variance', max_iter=500)\n"
                "print(abs(ica.fit_transform(X)[:2]).round(4))",
                "step:ica",
            ),
            code("print(float(np.random.rand()))", "step:last"),
        ],
    ),
    "library_settings": Case(
        "Settings of libraries made by one step, used by later ones: scikit-learn's "
        "transform_output, matplotlib rc and rcParams, pandas display options, logging, "
        "the recursion limit.",
        [
            code(
                "import logging\nimport sys\nimport matplotlib\nimport matplotlib.pyplot as plt\n"
                "import pandas as pd\nimport sklearn\n"
                "from sklearn.preprocessing import StandardScaler",
                "imports",
            ),
            code("sklearn.set_config(transform_output='pandas')", "step:sklearn_config"),
            code(
                "matplotlib.rc('font', size=15)\nplt.rcParams['lines.linewidth'] = 3",
                "step:plot_config",
            ),
            code("pd.set_option('display.max_rows', 4)", "step:pandas_config"),
            code(
                "logging.basicConfig(level=logging.INFO, format='%(levelname)s|%(message)s', "
                "force=True)",
                "step:logging_config",
            ),
            code("sys.setrecursionlimit(2345)", "step:limit"),
            code(
                "scaled = StandardScaler().fit_transform(pd.DataFrame({'a': [1.0, 2.0, 3.0]}))\n"
                "print(type(scaled).__name__, list(scaled.columns))",
                "step:scale",
            ),
            code(
                "print(plt.rcParams['font.size'], plt.rcParams['lines.linewidth'])\n"
                "print(pd.DataFrame({'v': range(10)}))\nprint(sys.getrecursionlimit())",
                "step:show",
            ),
            # Its own step: how a kernel interleaves stderr with stdout is timing.
            code("logging.info('logged')\nlogging.debug('not shown')", "step:log"),
        ],
    ),
    "names_reached_dynamically": Case(
        "Names reached only through `vars()`, `locals()`, `exec` and `'name' in globals()`, "
        "and IPython's `_`, `Out[n]` and `_n` steps after the result they hold.",
        [
            code("alpha = 1\nbeta = 2", "step:make"),
            code("6 * 7", "step:result"),
            code("gamma = 3", "step:quiet"),
            code(
                "print(vars()['alpha'] + locals()['beta'])\nexec('print(alpha * 10)')\n"
                "print('gamma' in globals(), _)",
                "step:use",
            ),
            code("print(Out[2], _2, sorted(Out))", "step:numbered"),
        ],
    ),
    "seed_in_imports": Case(
        "Global RNGs seeded once in the `imports` cell, drawn from in two steps.",
        [
            code("import random\nimport numpy as np\nnp.random.seed(0)\nrandom.seed(0)", "imports"),
            code("a = float(np.random.rand())\nr1 = random.random()", "step:first"),
            code("b = float(np.random.rand())\nr2 = random.random()", "step:second"),
            code("print(a, b, r1, r2)", "step:show"),
        ],
    ),
    "rich_outputs": Case(
        "Rich outputs: DataFrame HTML, HTML, Markdown, a PNG and an SVG figure, an Axes result.",
        [
            code(
                "import pandas as pd\nimport matplotlib.pyplot as plt\n"
                "from IPython.display import HTML, Markdown, display",
                "imports",
            ),
            code("frame = pd.DataFrame({'k': ['a', 'b'], 'v': [1, 2]})\nframe", "step:table"),
            code(
                "display(HTML('<b>bold</b>'))\ndisplay(Markdown('*it*'))\n"
                "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\nplt.show()",
                "step:plot",
            ),
            code("%config InlineBackend.figure_formats = ['svg']\nframe.plot()", "step:svg"),
            code("print(frame.v.sum())", "step:show"),
        ],
    ),
    "figures": Case(
        "Figures drawn from values other steps made, and a figure shown again by a later "
        "step (matplotlib imported by unpickling it): the oracle compares their PNG bytes.",
        [
            code("import numpy as np\nimport matplotlib.pyplot as plt", "imports"),
            code("x = np.linspace(0, 6, 50)\ny = np.sin(x)", "step:make"),
            code("y = y * 2", "step:scale"),
            code(
                "fig, ax = plt.subplots(figsize=(3, 2), dpi=60)\nax.plot(x, y)\n"
                "ax.set_title(f'max {y.max():.2f}')\nplt.show()",
                "step:plot",
            ),
            code("ax.set_xlabel('x')\nfig", "step:again"),
        ],
    ),
    "last_expression": Case(
        "What a cell displays: its last expression, not one ending in `;`, `display()`.",
        [
            code("value = 41", "step:make"),
            code("value + 1;", "step:quiet"),
            code("value\nvalue + 1", "step:loud"),
            code("from IPython.display import display\ndisplay(value)\nNone", "step:shown"),
            code("print(value)", "step:show"),
        ],
    ),
    "display_updates": Case(
        "Displays updated in place (`display_id`), `clear_output(wait=True)`, LaTeX and JSON "
        "outputs, and a notebook class with `_repr_html_` displayed by a later step.",
        [
            code("from IPython.display import JSON, Latex, clear_output, display", "imports"),
            code(
                "handle = display('starting', display_id=True)\nfor i in range(3):\n"
                "    handle.update(f'step {i}')",
                "step:update",
            ),
            code(
                "for i in range(3):\n    clear_output(wait=True)\n    print('progress', i)",
                "step:clear",
            ),
            code("display(Latex(r'$x^2$'))\ndisplay(JSON({'a': 1}))", "step:misc"),
            code(
                "class Card:\n    def __init__(self, text):\n        self.text = text\n\n"
                "    def _repr_html_(self):\n        return f'<i>{self.text}</i>'\n\n"
                "    def __repr__(self):\n        return f'Card({self.text!r})'\n\n\n"
                "card = Card('hi')",
                "step:define",
            ),
            code("card", "step:show"),
        ],
    ),
    # -- names that may be missing, Kale's continuation tag ----------------------------------
    "guarded_names": Case(
        "Steps that check for names an earlier step deleted or never made: `try: x` / "
        "`except NameError`, `'x' in globals()`, a prelude name deleted by a step.",
        [
            code("scratch = 'prelude value'", "parameters"),
            code("tmp = [1, 2]\nkeep = 3", "step:make"),
            code("del tmp\ndel scratch", "step:drop"),
            code(
                "try:\n    print('tmp is', tmp)\nexcept NameError:\n    print('tmp is gone')\n"
                "print('scratch' in globals(), 'never' in globals())",
                "step:check",
            ),
            code(
                "if 'keep' in globals():\n    print('keep', keep)\n"
                "try:\n    cache\nexcept NameError:\n    cache = {}\ncache['k'] = keep",
                "step:fallback",
            ),
            code("print(cache)", "step:show"),
        ],
    ),
    "kale_continuation": Case(
        "Kale's empty `block:` / `step:` tags continue the step above.",
        [
            code("data = [3, 1, 2]", "block:load"),
            code("data.append(4)", "block:"),
            code("total = sum(data)", "step:train", "prev:load"),
            code("print(total, sorted(data))", "step:"),
        ],
    ),
    # -- the race rule -----------------------------------------------------------------------
    "parallel_writers": Case(
        "Two steps that may run in parallel both write `x`; the reader gets the later one's.",
        [
            code("x = 'from a'", "step:a"),
            code("x = 'from b'", "step:b"),
            code("print(x)", "step:c"),
        ],
    ),
    # -- fan-out -----------------------------------------------------------------------------
    "foreach_accumulators": Case(
        "A `foreach` loop whose iterations run on parallel workers: dict, list, set and "
        "`.update` accumulators, tuple unpacking, `continue`, prints and displays per item, "
        "and the loop's names after it.",
        [
            code("import math\nfrom IPython.display import Markdown, display", "imports"),
            code("alphas = [0.5, 1.0, 1.5, 2.0, 2.5]", "parameters"),
            code("results = {}\nscores = []\nbest = {}\nseen = set()", "step:setup"),
            code(
                "for i, alpha in enumerate(alphas):\n"
                "    score = round(math.log(alpha + 1) * 100, 2)\n"
                "    if i == 2:\n"
                "        continue\n"
                "    results[alpha] = score\n"
                "    scores.append(score)\n"
                "    best.update({f'a{i}': score})\n"
                "    seen.add(int(score) % 7)\n"
                "    print(f'alpha={alpha} score={score}')\n"
                "    display(Markdown(f'**{alpha}**'))",
                "step:sweep",
                "foreach",
            ),
            code(
                "print(results, scores, best, sorted(seen))\nprint(i, alpha, score)",
                "step:report",
            ),
        ],
    ),
}


#: Files the notebooks use, written next to them (a local module, as users keep helpers).
SUPPORT_FILES = {
    "local_helpers.py": (
        '"""A helper module next to the notebooks (written by make.py)."""\n\n\n'
        "def double(v):\n    return 2 * v\n\n\n"
        "class Scaler:\n    def __init__(self, factor):\n        self.factor = factor\n\n"
        "    def apply(self, v):\n        return v * self.factor\n"
    ),
}


def build(name: str, case: Case) -> nbformat.NotebookNode:
    """The notebook for ``case``: a markdown title cell, then its cells, ids ``NAME-INDEX``."""
    nb = new_notebook()
    title = new_markdown_cell(f"# {name.replace('_', ' ')}\n\n{case.purpose}")
    nb.cells = [title, *copy.deepcopy(case.cells)]
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name.replace('_', '-')}-{i}"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def main() -> None:
    for stale_file in HERE.glob("*.ipynb"):
        if stale_file.stem not in CASES:
            stale_file.unlink()
    for name, case in CASES.items():
        nbformat.write(build(name, case), HERE / f"{name}.ipynb")
    for file_name, text in SUPPORT_FILES.items():
        (HERE / file_name).write_text(text)


if __name__ == "__main__":
    main()
