"""Per-cell data flow: which names a cell reads, writes, may write, mutates and deletes.

The analysis runs on the source *after IPython's own input transformation*, so ``%time``,
``%%capture out``, ``!pip install`` and ``files = !ls`` parse like the Python IPython executes;
the code inside code-running magics (``%time``, ``%%capture``, ``%%timeit``) is analysed too,
and names interpolated into shell commands (``!echo {path}``) count as reads.

It is deliberately conservative where it cannot be exact: a write under ``if`` is a
*maybe*-write, a method call on a name is a possible mutation unless the method is known not
to mutate, and a function's global reads happen wherever it is called.
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

BUILTINS: frozenset[str] = frozenset(dir(builtins)) | frozenset(
    {
        "display",
        "get_ipython",
        "In",
        "Out",
        "exit",
        "quit",
        "_",
        "__",
        "___",
        "_i",
        "_ii",
        "_iii",
        "_ih",
        "_oh",
        "_dh",
        "_exit_code",
        "__name__",
        "__doc__",
        "__builtins__",
        "__spec__",
        "__loader__",
        "__package__",
        "__file__",
    }
)

#: Methods that do not change the object they are called on (others are assumed to).
NON_MUTATING = frozenset(
    [
        "head",
        "tail",
        "copy",
        "describe",
        "info",
        "mean",
        "median",
        "mode",
        "sum",
        "prod",
        "min",
        "max",
        "std",
        "var",
        "count",
        "index",
        "get",
        "keys",
        "values",
        "items",
        "predict",
        "predict_proba",
        "predict_log_proba",
        "decision_function",
        "score",
        "transform",
        "inverse_transform",
        "format",
        "join",
        "split",
        "rsplit",
        "splitlines",
        "startswith",
        "endswith",
        "strip",
        "lstrip",
        "rstrip",
        "lower",
        "upper",
        "title",
        "replace",
        "find",
        "rfind",
        "encode",
        "decode",
        "to_numpy",
        "to_list",
        "tolist",
        "to_dict",
        "to_csv",
        "to_json",
        "to_parquet",
        "to_pickle",
        "to_excel",
        "to_html",
        "to_string",
        "to_markdown",
        "to_frame",
        "to_records",
        "to_sql",
        "astype",
        "groupby",
        "agg",
        "aggregate",
        "apply",
        "applymap",
        "map",
        "pipe",
        "filter",
        "query",
        "where",
        "mask",
        "drop",
        "drop_duplicates",
        "dropna",
        "fillna",
        "rename",
        "reset_index",
        "set_index",
        "sort_values",
        "sort_index",
        "merge",
        "join",
        "concat",
        "pivot",
        "pivot_table",
        "melt",
        "stack",
        "unstack",
        "explode",
        "assign",
        "loc",
        "iloc",
        "at",
        "iat",
        "isna",
        "isnull",
        "notna",
        "notnull",
        "any",
        "all",
        "nunique",
        "unique",
        "value_counts",
        "corr",
        "cov",
        "cumsum",
        "cumprod",
        "round",
        "abs",
        "clip",
        "diff",
        "shift",
        "rolling",
        "expanding",
        "resample",
        "sample",
        "select_dtypes",
        "memory_usage",
        "equals",
        "isin",
        "between",
        "nlargest",
        "nsmallest",
        "idxmax",
        "idxmin",
        "argmax",
        "argmin",
        "argsort",
        "reshape",
        "ravel",
        "flatten",
        "transpose",
        "dot",
        "matmul",
        "view",
        "squeeze",
        "swapaxes",
        "take",
        "nonzero",
        "searchsorted",
        "get_params",
        "get_feature_names_out",
        "read",
        "readline",
        "readlines",
        "exists",
        "is_file",
        "is_dir",
        "glob",
        "rglob",
        "iterdir",
        "open",
        "stat",
        "resolve",
        "relative_to",
        "with_suffix",
        "with_name",
        "joinpath",
        "as_posix",
        "hexdigest",
        "digest",
        "total_seconds",
        "isoformat",
        "strftime",
        "timestamp",
        "date",
        "time",
        "plot",
        "hist",
        "bar",
        "scatter",
        "boxplot",
        "imshow",
        "show",
        "savefig",
        "legend",
        "grid",
        "subplots",
        "figure",
        "axis",
        "set_title",
        "set_xlabel",
        "set_ylabel",
        "set_xlim",
        "set_ylim",
    ]
)

#: Functions that change their first argument in place.
MUTATING_FUNCTIONS = frozenset(
    {
        "random.shuffle",
        "numpy.random.shuffle",
        "numpy.copyto",
        "numpy.put",
        "numpy.place",
        "numpy.putmask",
        "numpy.fill_diagonal",
        "heapq.heappush",
        "heapq.heappop",
        "heapq.heapify",
        "heapq.heapreplace",
        "heapq.heappushpop",
        "bisect.insort",
        "bisect.insort_left",
        "bisect.insort_right",
    }
)

_NUMPY_OWN_GENERATORS = frozenset(
    {
        "default_rng",
        "Generator",
        "RandomState",
        "SeedSequence",
        "BitGenerator",
        "MT19937",
        "PCG64",
        "PCG64DXSM",
        "Philox",
        "SFC64",
    }
)
_TORCH_RANDOM = frozenset(
    {
        "manual_seed",
        "seed",
        "rand",
        "randn",
        "randint",
        "rand_like",
        "randn_like",
        "randint_like",
        "randperm",
        "normal",
        "bernoulli",
        "multinomial",
        "poisson",
    }
)
_CODE_LINE_MAGICS = frozenset({"time"})
_CODE_CELL_MAGICS = frozenset({"time", "capture", "prun"})
_READ_ONLY_MAGICS = frozenset({"timeit"})
_VAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """What calling a function defined in the notebook does to global names."""

    params: tuple[str, ...]
    reads: frozenset[str]
    writes: frozenset[str]
    mutates: frozenset[str]
    mutated_params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallSite:
    func: str
    args: tuple[str | None, ...]
    kwargs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CellFlow:
    reads: tuple[str, ...]
    writes: frozenset[str]
    maybe_writes: frozenset[str]
    mutates: frozenset[str]
    deletes: frozenset[str]
    imports: dict[str, str]
    functions: dict[str, FunctionInfo]
    calls: tuple[CallSite, ...]
    star_imports: tuple[str, ...]
    lines: dict[str, int]


class CellSyntaxError(Exception):
    def __init__(self, message: str, line: int):
        super().__init__(f"{message} (line {line})")
        self.message, self.line = message, line


@lru_cache(maxsize=8192)
def transform(source: str) -> str:
    """The Python IPython executes for this cell (magics and ``!`` lines turned into calls).

    Everything IPython's transformer rewrites (``%``, ``!``, ``?``, prompts, indented first
    lines) is a syntax error in plain Python, so a cell that already parses is returned as it
    is without importing IPython, which keeps ``cellpipe compile`` fast.
    """
    if _parses(source):
        return source
    from IPython.core.inputtransformer2 import TransformerManager

    return _transformer(TransformerManager).transform_cell(source)


def _parses(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings are the user's business, not ours
        try:
            ast.parse(source)
        except (SyntaxError, ValueError):
            return False
    return True


_TM = None


def _transformer(cls):  # type: ignore[no-untyped-def]
    global _TM
    if _TM is None:
        _TM = cls()
    return _TM


def analyse_cell(source: str, modules: Mapping[str, str] | None = None) -> CellFlow:
    """Analyse one code cell. ``modules``: import aliases bound by earlier cells."""
    return _analyse(source, tuple(sorted((modules or {}).items())))


@lru_cache(maxsize=8192)
def _analyse(source: str, modules: tuple[tuple[str, str], ...]) -> CellFlow:
    code = transform(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except SyntaxError as exc:
        raise CellSyntaxError(exc.msg or "invalid syntax", exc.lineno or 1) from None
    v = _CellVisitor(dict(modules))
    v.statements(tree.body)
    return v.result()


# ---------------------------------------------------------------------------------------------


def _root(node: ast.AST) -> str | None:
    """`x` for `x`, `x.a.b`, `x[0].a` (not through calls: `f().a` has no root)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


_ITERATING_CALLS = frozenset({"enumerate", "zip", "reversed", "iter", "sorted", "list", "tuple"})
_ITERATING_METHODS = frozenset({"items", "values", "iterrows", "itertuples", "iteritems"})


def _iterated_root(node: ast.AST) -> str | None:
    """The name whose elements a for loop hands out: `rows`, `enumerate(rows)`,
    `rows.items()`, `zip(rows, other)` (the first)."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _ITERATING_CALLS and node.args:
            return _iterated_root(node.args[0])
        if isinstance(node.func, ast.Attribute) and node.func.attr in _ITERATING_METHODS:
            return _root(node.func.value)
        return None
    return _root(node)


def _target_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for e in node.elts for n in _target_names(e)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


def _pattern_names(node: ast.AST) -> list[str]:
    names = []
    for n in ast.walk(node):
        if isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            names.append(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            names.append(n.rest)
    return names


def _is_get_ipython_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
    )


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _CellVisitor:
    def __init__(self, modules: dict[str, str]):
        self.modules = modules  # aliases from earlier cells
        self.imports: dict[str, str] = {}
        self.reads: dict[str, int] = {}
        self.definite: set[str] = set()
        self.maybe: set[str] = set()
        self.mutated: set[str] = set()
        self.deleted: set[str] = set()
        self.functions: dict[str, FunctionInfo] = {}
        self.calls: list[CallSite] = []
        self.stars: list[str] = []
        self.aliases: dict[str, str] = {}
        self.cond = 0
        self.line = 1

    def result(self) -> CellFlow:
        return CellFlow(
            reads=tuple(self.reads),
            writes=frozenset(self.definite),
            maybe_writes=frozenset(self.maybe - self.definite),
            mutates=frozenset(self.mutated),
            deletes=frozenset(self.deleted - self.definite - self.maybe),
            imports=dict(self.imports),
            functions=dict(self.functions),
            calls=tuple(self.calls),
            star_imports=tuple(self.stars),
            lines={k: v for k, v in self.reads.items()},
        )

    # -- names -------------------------------------------------------------------------------

    def read(self, name: str) -> None:
        if name not in self.definite and name not in self.reads:
            self.reads[name] = self.line

    def bind(self, name: str) -> None:
        if self.cond:
            if name not in self.definite:
                self.maybe.add(name)
        else:
            self.definite.add(name)
            self.deleted.discard(name)
        self.aliases.pop(name, None)
        self.functions.pop(name, None)
        if name in self.imports:
            del self.imports[name]

    def mutate(self, name: str) -> None:
        if self.is_module(name):
            return
        seen = set()
        while name and name not in seen:
            seen.add(name)
            self.read(name)
            self.mutated.add(name)
            name = self.aliases.get(name)  # type: ignore[assignment]

    def hidden(self, name: str, write: bool) -> None:
        self.read(name)
        if write:
            self.mutated.add(name)

    def is_module(self, name: str) -> bool:
        return name in self.imports or (name in self.modules and name not in self.definite)

    def resolve(self, node: ast.AST) -> str | None:
        """Dotted path of an imported object: `np.random.seed` -> `numpy.random.seed`."""
        if isinstance(node, ast.Name):
            return self.imports.get(node.id) or (
                self.modules.get(node.id) if node.id not in self.definite else None
            )
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # -- statements ----------------------------------------------------------------------------

    def statements(self, body: Iterable[ast.stmt], conditional: bool = False) -> None:
        if conditional:
            self.cond += 1
        try:
            for stmt in body:
                self.statement(stmt)
        finally:
            if conditional:
                self.cond -= 1

    def statement(self, node: ast.stmt) -> None:
        self.line = getattr(node, "lineno", self.line)
        if isinstance(node, ast.Assign):
            self.expr(node.value)
            for t in node.targets:
                self.target(t)
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                src = _root(node.value)
                if src and src != name and not self.is_module(src):
                    self.aliases[name] = src
                if isinstance(node.value, ast.Lambda):
                    self.functions[name] = self.function_info(node.value)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value)
            if isinstance(node.target, ast.Name):
                self.read(node.target.id)
                self.bind(node.target.id)
                self.mutate(node.target.id)
            else:
                self.target(node.target, augmented=True)
        elif isinstance(node, ast.AnnAssign):
            self.expr(node.annotation)
            if node.value is not None:
                self.expr(node.value)
                self.target(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter)
            self.cond += 1
            self.target(node.target)
            self.cond -= 1
            # `for row in rows: row[k] = v` changes `rows`: the loop variable is an alias.
            source = _iterated_root(node.iter)
            if source and not self.is_module(source):
                for name in _target_names(node.target):
                    if name != source:
                        self.aliases[name] = source
            self.statements(node.body, True)
            self.statements(node.orelse, True)
        elif isinstance(node, (ast.While, ast.If)):
            self.expr(node.test)
            self.statements(node.body, True)
            self.statements(node.orelse, True)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.statements(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.statements(node.body, True)
            for h in node.handlers:
                if h.type is not None:
                    self.expr(h.type)
                self.cond += 1
                if h.name:
                    # `except E as e` unbinds e at the end of the handler.
                    was = h.name in self.definite
                    self.definite.add(h.name)
                    self.statements(h.body)
                    if not was:
                        self.definite.discard(h.name)
                else:
                    self.statements(h.body)
                self.cond -= 1
            self.statements(node.orelse, True)
            self.statements(node.finalbody, True)
        elif type(node).__name__ == "Match":
            self.expr(node.subject)  # type: ignore[attr-defined]
            for case in node.cases:  # type: ignore[attr-defined]
                self.cond += 1
                for n in ast.walk(case.pattern):
                    if isinstance(n, ast.MatchValue):
                        self.expr(n.value)
                    elif isinstance(n, ast.MatchClass):
                        self.expr(n.cls)
                for name in _pattern_names(case.pattern):
                    self.bind(name)
                if case.guard is not None:
                    self.expr(case.guard)
                self.statements(case.body)
                self.cond -= 1
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.definition_time(node)
            info = self.function_info(node)
            self.bind(node.name)
            self.functions[node.name] = info
        elif isinstance(node, ast.ClassDef):
            for d in node.decorator_list:
                self.expr(d)
            for b in node.bases:
                self.expr(b)
            for k in node.keywords:
                self.expr(k.value)
            info = self.class_body(node)
            self.bind(node.name)
            self.functions[node.name] = info
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    name, path = a.asname, a.name
                else:
                    name = path = a.name.split(".")[0]
                self.bind(name)
                self.imports[name] = path
        elif isinstance(node, ast.ImportFrom):
            module = "." * (node.level or 0) + (node.module or "")
            for a in node.names:
                if a.name == "*":
                    self.stars.append(module)
                    continue
                name = a.asname or a.name
                self.bind(name)
                self.imports[name] = f"{module}.{a.name}"
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.read(t.id)  # `del x` raises NameError unless x exists
                    if self.cond:
                        self.read(t.id)
                        self.maybe.add(t.id)
                    else:
                        self.definite.discard(t.id)
                        self.maybe.discard(t.id)
                        self.deleted.add(t.id)
                    self.aliases.pop(t.id, None)
                else:
                    self.target(t, augmented=True)
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            return
        else:  # Expr, Return, Raise, Assert, TypeAlias, ...
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def target(self, node: ast.AST, augmented: bool = False) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                self.target(e)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Subscript):
                self.expr(node.slice)
            inner = node.value
            self.expr_inner(inner)
            path = self.resolve(inner if isinstance(node, ast.Subscript) else node)
            if path == "os.environ" or (path or "").startswith("os.environ."):
                self.hidden("@environ", True)
            elif path == "sys.path":
                self.hidden("@sys.path", True)
            root = _root(node)
            if root:
                self.mutate(root)

    def expr_inner(self, node: ast.AST) -> None:
        """Evaluate the parts of an assignment target's object (indices inside it)."""
        if isinstance(node, ast.Subscript):
            self.expr(node.slice)
            self.expr_inner(node.value)
        elif isinstance(node, ast.Attribute):
            self.expr_inner(node.value)
        elif isinstance(node, ast.Name):
            pass  # the root: handled as a mutation
        else:
            self.expr(node)

    def definition_time(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        """Decorators, defaults and annotations are evaluated when `def` runs."""
        args = node.args
        for d in getattr(node, "decorator_list", []):
            self.expr(d)
        for d in [*args.defaults, *args.kw_defaults]:
            if d is not None:
                self.expr(d)
        if not isinstance(node, ast.Lambda):
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    self.expr(a.annotation)
            if node.returns is not None:
                self.expr(node.returns)

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, node: ast.AST | None, local: frozenset[str] = frozenset()) -> None:
        if node is None:
            return
        t = type(node)
        if t is ast.Name:
            if isinstance(node.ctx, ast.Load) and node.id not in local:  # type: ignore[attr-defined]
                self.read(node.id)  # type: ignore[attr-defined]
            return
        if t in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            self.comprehension(node, local)
            return
        if t is ast.Lambda:
            self.definition_time(node)  # type: ignore[arg-type]
            # Inline lambdas are usually called right away (df.apply(lambda r: ...)).
            self.expr(node.body, local | frozenset(_arg_names(node.args)))  # type: ignore[attr-defined]
            return
        if t is ast.NamedExpr:
            self.expr(node.value, local)  # type: ignore[attr-defined]
            if local:
                self.cond += 1
                self.bind(node.target.id)  # type: ignore[attr-defined]
                self.cond -= 1
            else:
                self.bind(node.target.id)  # type: ignore[attr-defined]
            return
        if t is ast.Attribute:
            path = self.resolve(node)
            if path == "os.environ":
                self.hidden("@environ", False)
            elif path == "sys.path":
                self.hidden("@sys.path", False)
        if t is ast.Call and self.call(node, local):  # type: ignore[arg-type]
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child, local)

    def comprehension(self, node: ast.AST, local: frozenset[str]) -> None:
        gens = node.generators  # type: ignore[attr-defined]
        self.expr(gens[0].iter, local)
        inner = set(local)
        for i, g in enumerate(gens):
            if i:
                self.expr(g.iter, frozenset(inner))
            inner |= set(_target_names(g.target))
            for cond in g.ifs:
                self.expr(cond, frozenset(inner))
        scope = frozenset(inner)
        if isinstance(node, ast.DictComp):
            self.expr(node.key, scope)
            self.expr(node.value, scope)
        else:
            self.expr(node.elt, scope)  # type: ignore[attr-defined]

    def call(self, node: ast.Call, local: frozenset[str]) -> bool:
        """Effects of a call. Returns True when the call was fully handled (a magic)."""
        func = node.func
        if isinstance(func, ast.Attribute) and _is_get_ipython_call(func.value):
            self.magic(func.attr, node.args)
            return True
        for kw in node.keywords:  # numpy ufuncs and friends write into `out=`
            if kw.arg == "out":
                for target in kw.value.elts if isinstance(kw.value, ast.Tuple) else [kw.value]:
                    root = _root(target)
                    if root and root not in local:
                        self.mutate(root)
        path = self.resolve(func)
        if path:
            self.hidden_call(path)
            if path in MUTATING_FUNCTIONS and node.args:
                root = _root(node.args[0])
                if root and root not in local:
                    self.mutate(root)
        elif isinstance(func, ast.Attribute):
            root = _root(func.value)
            if root and root not in local and not self.is_module(root):
                inplace = any(
                    k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value
                    for k in node.keywords
                )
                if inplace or func.attr not in NON_MUTATING:
                    self.mutate(root)
        if isinstance(func, ast.Name) and func.id not in local:
            self.calls.append(
                CallSite(
                    func.id,
                    tuple(a.id if isinstance(a, ast.Name) else None for a in node.args),
                    tuple(
                        (k.arg, k.value.id)
                        for k in node.keywords
                        if k.arg and isinstance(k.value, ast.Name)
                    ),
                )
            )
        return False

    def hidden_call(self, path: str) -> None:
        parts = path.split(".")
        if parts[0] == "random" and len(parts) == 2 and parts[1] not in ("Random", "SystemRandom"):
            self.hidden("@random", True)
        elif parts[:2] == ["numpy", "random"] and len(parts) == 3:
            if parts[2] not in _NUMPY_OWN_GENERATORS:
                self.hidden("@random", True)
        elif parts[0] == "torch" and len(parts) == 2 and parts[1] in _TORCH_RANDOM:
            self.hidden("@random", True)
        elif path in ("os.getenv", "os.environ.get", "os.environ.copy", "os.environ.items"):
            self.hidden("@environ", False)
        elif path in ("os.putenv", "os.unsetenv") or (
            parts[:2] == ["os", "environ"] and len(parts) == 3
        ):
            self.hidden("@environ", True)
        elif path == "os.chdir":
            self.hidden("@cwd", True)
        elif path in ("os.getcwd", "pathlib.Path.cwd", "pathlib.Path.cwd"):
            self.hidden("@cwd", False)
        elif parts[:2] == ["sys", "path"] and len(parts) == 3:
            self.hidden("@sys.path", parts[2] not in ("index", "count", "copy"))

    def magic(self, kind: str, args: list[ast.expr]) -> None:
        vals = [_const_str(a) for a in args]
        if kind in ("system", "getoutput", "run_line_magic", "run_cell_magic") and not all(
            v is not None for v in vals
        ):
            for a in args:
                self.expr(a)
            return
        if kind in ("system", "getoutput"):
            self.var_expand(vals[0] or "")
            return
        if kind == "run_line_magic" and len(vals) >= 2:
            name, line = vals[0] or "", vals[1] or ""
            if name in _CODE_LINE_MAGICS:
                self.embedded(line, read_only=False)
            elif name in _READ_ONLY_MAGICS:
                self.embedded(_strip_options(line), read_only=True)
            elif name in ("env", "set_env"):
                text = line.strip()
                write = name == "set_env" or "=" in text or len(text.split()) > 1
                self.hidden("@environ", write)
            elif name == "cd":
                self.hidden("@cwd", True)
            elif name == "pwd":
                self.hidden("@cwd", False)
            else:
                self.var_expand(line)
            return
        if kind == "run_cell_magic" and len(vals) >= 3:
            name, line, body = vals[0] or "", vals[1] or "", vals[2] or ""
            if name in _CODE_CELL_MAGICS:
                self.embedded(body, read_only=False)
                if name == "capture":
                    target = [w for w in line.split() if not w.startswith("-")]
                    if target and target[0].isidentifier():
                        self.bind(target[0])
            elif name in _READ_ONLY_MAGICS:
                self.embedded(body, read_only=True)
            else:
                self.var_expand(line)

    def embedded(self, code: str, read_only: bool) -> None:
        """Code run by a magic: its names count (only its reads, for `%timeit`)."""
        line = self.line
        try:
            tree = ast.parse(transform(code))
        except SyntaxError:
            return
        if read_only:
            sub = _CellVisitor({**self.modules, **self.imports})
            sub.definite = set(self.definite)
            sub.statements(tree.body)
            for name in sub.reads:
                self.read(name)
        else:
            self.statements(tree.body)
        self.line = line

    def var_expand(self, text: str) -> None:
        for m in _VAR.finditer(text):
            self.read(m.group(1))
        for m in _BRACED.finditer(text):
            try:
                expr = ast.parse(m.group(1).strip(), mode="eval")
            except SyntaxError:
                continue
            self.expr(expr.body)

    # -- deferred code: functions and classes --------------------------------------------------

    def function_info(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    ) -> FunctionInfo:
        params = _arg_names(node.args)
        positional = tuple(a.arg for a in [*node.args.posonlyargs, *node.args.args])
        body = node.body if isinstance(node.body, list) else [ast.Expr(node.body)]
        scan = _FunctionScan(set(params), {**self.modules, **self.imports})
        for stmt in body:
            scan.visit(stmt)
        return scan.info(positional)

    def class_body(self, node: ast.ClassDef) -> FunctionInfo:
        bound: set[str] = set()
        reads: dict[str, None] = {}
        writes: set[str] = set()
        mutates: set[str] = set()
        init: FunctionInfo | None = None
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.definition_time(stmt)
                info = self.function_info(stmt)
                reads.update(dict.fromkeys(sorted(info.reads)))
                writes |= info.writes
                mutates |= info.mutates
                if stmt.name == "__init__":
                    init = info
                bound.add(stmt.name)
                continue
            sub = _CellVisitor({**self.modules, **self.imports})
            sub.definite = set(self.definite) | bound
            sub.line = self.line
            sub.statement(stmt)
            for name in sub.reads:
                if name not in bound:
                    self.read(name)
            for name in sub.mutated:
                if name not in bound:
                    self.mutate(name)
            bound |= sub.definite | sub.maybe
        params = init.params[1:] if init and init.params else ()
        mutated = tuple(p for p in (init.mutated_params if init else ()) if p in params)
        return FunctionInfo(
            params, frozenset(reads) - bound, frozenset(writes), frozenset(mutates), mutated
        )


def _arg_names(args: ast.arguments) -> list[str]:
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return names


def _strip_options(line: str) -> str:
    """`-n 10 -r 3 code` -> `code` (timeit's options come first)."""
    words = line.split()
    i = 0
    while i < len(words) and words[i].startswith("-"):
        i += 1
        if i < len(words) and words[i - 1] in ("-n", "-r", "-p") and words[i].isdigit():
            i += 1
    return " ".join(words[i:])


class _FunctionScan:
    """Free names of a function body (and of functions nested in it)."""

    def __init__(self, params: set[str], modules: dict[str, str]):
        self.params = params
        self.modules = modules
        self.bound: set[str] = set(params)
        self.globals: set[str] = set()
        self.loads: dict[str, None] = {}
        self.stores: set[str] = set()
        self.mutation_roots: set[str] = set()
        self.hidden_reads: set[str] = set()
        self.hidden_writes: set[str] = set()

    def visit(self, root: ast.AST) -> None:
        for node in ast.walk(root):
            if isinstance(node, ast.Global):
                self.globals.update(node.names)
            elif isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    self.loads.setdefault(node.id, None)
                else:
                    self.stores.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(node.name)
                if not isinstance(node, ast.ClassDef):
                    self.bound.update(_arg_names(node.args))
            elif isinstance(node, ast.Lambda):
                self.bound.update(_arg_names(node.args))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    name = a.asname or a.name.split(".")[0]
                    self.bound.add(name)
                    if isinstance(node, ast.Import):
                        self.modules[name] = (a.asname and a.name) or name
                    elif node.module:
                        self.modules[name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bound.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = (
                    node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                )
                for t in targets:
                    if isinstance(t, (ast.Attribute, ast.Subscript)):
                        root = _root(t)
                        if root:
                            self.mutation_roots.add(root)
                        self._hidden_target(t)
                    elif isinstance(node, ast.AugAssign) and isinstance(t, ast.Name):
                        self.mutation_roots.add(t.id)
            elif isinstance(node, ast.Call):
                self._call(node)

    def _resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _hidden_target(self, t: ast.AST) -> None:
        path = self._resolve(t.value if isinstance(t, ast.Subscript) else t)  # type: ignore[attr-defined]
        if path == "os.environ":
            self.hidden_reads.add("@environ")
            self.hidden_writes.add("@environ")
        elif path == "sys.path":
            self.hidden_reads.add("@sys.path")
            self.hidden_writes.add("@sys.path")

    def _call(self, node: ast.Call) -> None:
        path = self._resolve(node.func)
        if path:
            v = _CellVisitor({})
            v.hidden_call(path)
            self.hidden_reads.update(v.reads)
            self.hidden_writes.update(v.mutated)
            if path in MUTATING_FUNCTIONS and node.args:
                root = _root(node.args[0])
                if root:
                    self.mutation_roots.add(root)
        elif isinstance(node.func, ast.Attribute):
            root = _root(node.func.value)
            inplace = any(
                k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            )
            if (
                root
                and root not in self.modules
                and (inplace or node.func.attr not in NON_MUTATING)
            ):
                self.mutation_roots.add(root)

    def info(self, positional: tuple[str, ...]) -> FunctionInfo:
        local = (self.bound | self.stores) - self.globals
        reads = [n for n in self.loads if n not in local or n in self.globals]
        mutates = {r for r in self.mutation_roots if (r not in local or r in self.globals)} - set(
            self.modules
        )
        mutated_params = tuple(p for p in positional if p in self.mutation_roots)
        all_params = tuple(p for p in self.params if p in self.mutation_roots)
        return FunctionInfo(
            params=positional,
            reads=frozenset(reads) | frozenset(self.hidden_reads) | frozenset(mutates),
            writes=frozenset(self.stores & self.globals),
            mutates=frozenset(mutates) | frozenset(self.hidden_writes),
            mutated_params=tuple(dict.fromkeys(mutated_params + all_params)),
        )
