"""Per-cell data flow: which names a code cell reads, writes, may write, mutates and deletes.

The analysis works on the Python that IPython executes: the cell goes through IPython's own
input transformer first, so ``%time``, ``%%capture out``, ``!pip install`` and ``files = !ls``
are the ``get_ipython()`` calls they become, never text hidden from the parser. The code that
code-running magics execute (``%time``, ``%%capture``, ``%%prun``, ``%timeit``) is analysed
too, and names that IPython interpolates into shell commands and magic lines
(``!ls {folder}``, ``%cd $root``) count as reads.

Where it cannot be exact it errs towards more dependencies: a write under ``if`` or in a loop
is a *maybe*-write, a method call on a name is a possible mutation unless the method is known
not to mutate, and a function's global reads happen wherever it is called. Interpreter state a
top-to-bottom run carries along (random generators, ``os.environ``, ``sys.path``, the working
directory) is read and written through the pseudo-variables of ``model.HIDDEN_STATE``.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import re
import string
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cellpipe.core.pseudo import file_name as pseudo_file_name

__all__ = [
    "BUILTINS",
    "MUTATING_FUNCTIONS",
    "NON_MUTATING_METHODS",
    "CallSite",
    "CellFlow",
    "CellSyntaxError",
    "FunctionInfo",
    "analyse_cell",
    "is_history_name",
    "transform",
]

#: Names every cell can use without defining them: Python's builtins and what IPython puts in
#: the user namespace. The analysis still reports reads of them; callers decide.
BUILTINS: frozenset[str] = frozenset(dir(builtins)) | frozenset(
    {
        "display",
        "get_ipython",
        "In",
        "Out",
        "exit",
        "quit",
        "open",
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
        "__IPYTHON__",
        "__name__",
        "__doc__",
        "__builtin__",
        "__builtins__",
        "__spec__",
        "__loader__",
        "__package__",
    }
)

#: Methods that leave the object they are called on unchanged (unless given ``inplace=True``).
#: Any other method called on a name may change it. Names that mean "mutate" for one common
#: type and "copy" for another (``sort``, ``update``, ``eval``, ``to``) are left out on purpose.
NON_MUTATING_METHODS: frozenset[str] = frozenset(
    {
        # containers and strings
        "copy", "count", "index", "get", "keys", "values", "items", "format", "format_map",
        "join", "split", "rsplit", "splitlines", "partition", "rpartition", "startswith",
        "endswith", "strip", "lstrip", "rstrip", "lower", "upper", "casefold", "title",
        "capitalize", "swapcase", "center", "ljust", "rjust", "zfill", "expandtabs", "replace",
        "find", "rfind", "rindex", "encode", "decode", "isdigit", "isalpha", "isalnum",
        "isspace", "isnumeric", "isdecimal", "isidentifier", "isupper", "islower", "union",
        "intersection", "difference", "symmetric_difference", "issubset", "issuperset",
        "isdisjoint", "hex", "bit_length", "conjugate", "as_integer_ratio", "is_integer",
        # pandas and numpy: return new objects (in place only with inplace=True)
        "head", "tail", "describe", "info", "mean", "median", "mode", "sum", "prod", "min",
        "max", "std", "var", "sem", "skew", "kurt", "quantile", "cumsum", "cumprod", "cummax",
        "cummin", "abs", "round", "clip", "diff", "pct_change", "shift", "rank", "corr", "cov",
        "corrwith", "nunique", "unique", "value_counts", "isna", "isnull", "notna",
        "notnull", "any", "all", "isin", "between", "equals", "nlargest", "nsmallest",
        "idxmax", "idxmin", "argmax", "argmin", "argsort", "astype", "groupby", "agg",
        "aggregate", "apply", "applymap", "map", "pipe", "transform", "filter", "query",
        "where", "mask", "drop", "drop_duplicates", "duplicated", "dropna", "fillna", "ffill",
        "bfill", "interpolate", "rename", "rename_axis", "reset_index", "set_index",
        "reindex", "sort_values", "sort_index", "merge", "combine", "pivot",
        "pivot_table", "melt", "stack", "unstack", "explode", "assign", "rolling",
        "expanding", "ewm", "resample", "sample", "select_dtypes", "memory_usage",
        "iterrows", "itertuples", "first_valid_index", "last_valid_index",
        "reshape", "ravel", "flatten", "transpose", "swapaxes", "squeeze", "dot", "matmul",
        "view", "take", "repeat", "nonzero", "searchsorted", "item", "tobytes", "tolist",
        "trace", "diagonal", "compress", "ptp", "conj", "shape", "size", "ndim",
        "plot", "hist", "boxplot", "scatter", "bar", "barh", "pie", "style",
        # scikit-learn estimators after fitting
        "predict", "predict_proba", "predict_log_proba", "decision_function", "score",
        "score_samples", "inverse_transform", "kneighbors", "staged_predict",
        # files, paths, hashes, dates
        "read", "readline", "readlines", "exists", "is_file", "is_dir", "glob", "rglob",
        "iterdir", "open", "stat", "resolve", "absolute", "relative_to", "with_suffix",
        "with_name", "with_stem", "joinpath", "as_posix", "hexdigest", "digest",
        "total_seconds", "isoformat", "strftime", "timestamp", "date", "time", "weekday",
        "isoweekday", "savefig", "show",
    }
)  # fmt: skip

#: Name prefixes of methods that, by near-universal convention, only read their object.
_NON_MUTATING_PREFIXES = ("to_", "is_", "has_", "get_", "as_")

#: Functions (by dotted path) that change the object passed as their first argument.
MUTATING_FUNCTIONS: frozenset[str] = frozenset(
    {
        "random.shuffle",
        "numpy.random.shuffle",
        "numpy.copyto",
        "numpy.put",
        "numpy.put_along_axis",
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
#: Builtins that change their first argument (`next` advances an iterator).
_MUTATING_BUILTINS = frozenset({"setattr", "delattr", "next"})

# numpy.random names that own their state instead of using the legacy global generator.
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
        "initial_seed",
        "get_rng_state",
        "set_rng_state",
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "normal",
        "bernoulli",
        "multinomial",
        "poisson",
    }
)
_TORCH_RANDOM_INIT = frozenset(
    {
        "uniform_",
        "normal_",
        "trunc_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "orthogonal_",
        "sparse_",
    }
)
# scikit-learn helpers that draw from numpy's global generator unless given random_state.
_SKLEARN_RANDOM = frozenset(
    {
        "sklearn.model_selection.train_test_split",
        "sklearn.utils.shuffle",
        "sklearn.utils.resample",
    }
)
_ENVIRON_READERS = frozenset({"get", "copy", "items", "keys", "values", "__getitem__"})
#: Calls that change a library's settings, by dotted path: the hidden state they write.
_SETTINGS_CALLS = {
    "sklearn.set_config": "@sklearn.config",
    "matplotlib.rc": "@matplotlib.rcParams",
    "matplotlib.rcdefaults": "@matplotlib.rcParams",
    "matplotlib.rc_file": "@matplotlib.rcParams",
    "matplotlib.pyplot.rc": "@matplotlib.rcParams",
    "matplotlib.pyplot.rcdefaults": "@matplotlib.rcParams",
    "matplotlib.style.use": "@matplotlib.rcParams",
    "matplotlib.pyplot.style.use": "@matplotlib.rcParams",
    "matplotlib.rcParams.update": "@matplotlib.rcParams",
    "matplotlib.pyplot.rcParams.update": "@matplotlib.rcParams",
    "seaborn.set": "@matplotlib.rcParams",
    "seaborn.set_theme": "@matplotlib.rcParams",
    "seaborn.set_style": "@matplotlib.rcParams",
    "seaborn.set_context": "@matplotlib.rcParams",
    "pandas.set_option": "@pandas.options",
    "pandas.reset_option": "@pandas.options",
    "numpy.set_printoptions": "@numpy.printoptions",
    "warnings.filterwarnings": "@warnings.filters",
    "warnings.simplefilter": "@warnings.filters",
    "warnings.resetwarnings": "@warnings.filters",
    "logging.basicConfig": "@logging",
    "logging.disable": "@logging",
    "torch.set_default_dtype": "@torch.default_dtype",
    "sys.setrecursionlimit": "@sys.recursionlimit",
}
#: Objects whose items or attributes are settings: storing into them writes that state.
_SETTINGS_OBJECTS = {
    "matplotlib.rcParams": "@matplotlib.rcParams",
    "matplotlib.pyplot.rcParams": "@matplotlib.rcParams",
    "pandas.options": "@pandas.options",
}
#: Calls that reach names the source does not spell out: the cell may read any global.
_DYNAMIC_CALLS = frozenset({"globals", "locals", "vars", "eval", "exec"})


def is_history_name(name: str) -> bool:
    """Whether ``name`` is one IPython's output history binds (``_``, ``Out``, ``_3``)."""
    return name in _HISTORY_NAMES or bool(_HISTORY_NUMBERED.fullmatch(name))


#: IPython's output history: reading these reads `@history`.
_HISTORY_NAMES = frozenset({"_", "__", "___", "Out", "_oh"})
_HISTORY_NUMBERED = re.compile(r"_\d+")
_SYS_PATH_READERS = frozenset({"index", "count", "copy"})

# Magics whose argument is Python code run in the user namespace (IPython does not
# var-expand their line). `timeit` runs it in a function of its own: bindings do not persist.
_CODE_LINE_MAGICS = {"time": ("", ""), "prun": ("DlsT", "rq")}
_CODE_CELL_MAGICS = frozenset({"time", "capture", "prun"})
_TIMEIT_OPTIONS = ("nrp", "tcqo")
_SHELL_CELL_MAGICS = frozenset({"!", "sx", "system"})
_SCRIPT_CELL_MAGICS = frozenset(
    {"bash", "sh", "script", "perl", "ruby", "python", "python2", "python3", "pypy"}
)
_CWD_CHANGING_MAGICS = frozenset({"cd", "pushd", "popd"})
_CWD_READING_MAGICS = frozenset({"pwd", "dirs"})
# Magics that only look things up and never fail on a missing name.
_INSPECTING_MAGICS = frozenset(
    {"pinfo", "pinfo2", "psearch", "pdef", "pdoc", "psource", "pfile", "who", "whos", "who_ls"}
)
_GET_IPYTHON_API = frozenset({"system", "getoutput", "run_line_magic", "run_cell_magic"})

#: Environment variables so common in shell commands that ``$HOME`` in ``!ls $HOME`` is meant
#: for the shell, not a Python name (IPython leaves ``$NAME`` alone when no such name exists).
_SHELL_VARIABLES = frozenset(
    {
        "HOME", "PATH", "PWD", "OLDPWD", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TMPDIR",
        "HOSTNAME", "PYTHONPATH", "LD_LIBRARY_PATH", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
        "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES", "JAVA_HOME", "DISPLAY", "EDITOR",
    }
)  # fmt: skip
_DOLLAR = re.compile(r"\$(\$?[\w.]+)")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_TOKEN = re.compile(r"\s*(\S+)")
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_TRY = (ast.Try, *([ast.TryStar] if hasattr(ast, "TryStar") else []))  # TryStar: 3.11+


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """What calling a ``def``, ``class`` or named ``lambda`` of the cell does to globals.

    ``params``: positional parameter names in order (for a class, its ``__init__``'s without
    ``self``). ``reads``: globals the body may read when called (free names, names declared
    ``global`` that are read, globals it mutates, hidden state). ``writes``: globals it rebinds
    (``global x; x = ...``). ``mutates``: globals whose object it may change in place.
    ``mutated_params``: parameters whose object it may change, in declaration order.
    """

    params: tuple[str, ...]
    reads: frozenset[str]
    writes: frozenset[str]
    mutates: frozenset[str]
    mutated_params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallSite:
    """A call of a plain name, ``f(a, b, key=c)``: ``args`` holds each positional argument's
    name when it is a bare name (else ``None``), ``kwargs`` the (keyword, bare name) pairs."""

    func: str
    args: tuple[str | None, ...]
    kwargs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CellFlow:
    """The data flow of one code cell.

    ``reads``: names whose value from before the cell may be used, in order of first use.
    ``writes``: names bound on every path through the cell's top-level code.
    ``maybe_writes``: names bound on some paths only. ``mutates``: names whose object from
    before the cell may be changed in place (each is also a read). ``deletes``: names the cell
    unbinds with ``del`` and does not bind again. ``imports``: name -> dotted path of what an
    import bound to it. ``functions``: the ``def``/``class``/named ``lambda`` objects the cell
    defines. ``calls``: calls of plain names. ``star_imports``: modules of ``from m import *``.
    ``lines``: name -> 1-based line of its first read. ``guarded``: reads that tolerate the
    name being unbound (every read of it is under ``try``/``except NameError`` or checked by
    ``'x' in globals()``), so a missing or deleted name is no error there, and the value is
    an input only when one exists. ``links``: (holder, held) pairs where the cell leaves
    ``holder``'s value possibly reaching objects of ``held`` (``pair = [a, a]``, ``run =
    {"log": log}``, ``pipe = Pipeline([("m", model)])``, ``box.item = x``,
    ``items.append(x)``), so a later change through one may show through the other. Callers
    must not modify the dicts: the result is cached and shared.
    """

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
    guarded: frozenset[str] = frozenset()
    links: tuple[tuple[str, str], ...] = ()
    #: Line of a ``globals()``, ``locals()``, ``vars()``, ``eval`` or ``exec`` call, if any:
    #: names reached that way are invisible here.
    dynamic: int | None = None


class CellSyntaxError(Exception):
    """The cell is not valid Python even after IPython's transformation.

    ``message`` is the parser's message, ``line`` the 1-based line in the cell's source.
    """

    def __init__(self, message: str, line: int):
        super().__init__(f"{message} (line {line})")
        self.message = message
        self.line = line


@lru_cache(maxsize=4096)
def transform(source: str) -> str:
    """The Python IPython executes for a cell: magics, ``!`` and ``?`` lines become calls.

    Everything IPython's transformer rewrites (escapes at the start of a line, prompts, a
    first line's indentation) is a syntax error in plain Python, so a cell that already parses
    is returned unchanged without importing IPython, which keeps compiling fast.
    """
    if _parses(source):
        return source
    return _transformer().transform_cell(source)  # type: ignore[no-any-return]


def analyse_cell(source: str, modules: Mapping[str, str] | None = None) -> CellFlow:
    """Analyse one code cell.

    Parameters
    ----------
    source
        The cell's source, IPython syntax allowed.
    modules
        Import aliases bound by earlier cells (name -> dotted path), so that ``np.random.seed``
        is known to be numpy's even when ``np`` was imported elsewhere.

    Returns
    -------
    CellFlow
        Cached: analysing the same source with the same relevant aliases is free.

    Raises
    ------
    CellSyntaxError
        When the cell, or code a magic runs, does not parse.
    """
    _, _, identifiers = _parsed(source)
    relevant: tuple[tuple[str, str], ...] = ()
    if modules:
        relevant = tuple(sorted((k, v) for k, v in modules.items() if k in identifiers))
    return _analyse(source, relevant)


# -- parsing -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _transformer() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def _parses(source: str) -> bool:
    try:
        _ast_parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _ast_parse(code: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings are the user's business, not ours
        try:
            return ast.parse(code)
        except RecursionError:  # Python could not compile it either
            raise SyntaxError("too deeply nested to parse") from None


@lru_cache(maxsize=4096)
def _parsed(source: str) -> tuple[ast.Module | CellSyntaxError, int, frozenset[str]]:
    """The tree of the code IPython runs for ``source`` (or the syntax error), how many lines
    IPython dropped from the top (leading blank lines: added back so that reported lines are
    the cell's), and every identifier-like word in the code (magic bodies included)."""
    try:
        tree: ast.Module | CellSyntaxError = _ast_parse(source)
        return tree, 0, frozenset(_IDENTIFIER.findall(source))
    except (SyntaxError, ValueError):
        pass
    code = transform(source)
    offset = 0
    for line in source.splitlines():
        if line and not line.isspace():
            break
        offset += 1
    try:
        tree = _parse_or_raise(code, 1 + offset)
    except CellSyntaxError as exc:
        tree = exc
    return tree, offset, frozenset(_IDENTIFIER.findall(code))


def _tree(source: str, first_line: int) -> tuple[ast.Module, int]:
    """Parsed ``source`` whose first line is line ``first_line`` of the cell, and the number
    to add to its line numbers."""
    tree, offset, _ = _parsed(source)
    if isinstance(tree, CellSyntaxError):  # a fresh exception: the cached one is shared
        raise CellSyntaxError(tree.message, first_line - 1 + tree.line)
    return tree, first_line - 1 + offset


def _parse_or_raise(code: str, first_line: int) -> ast.Module:
    try:
        return _ast_parse(code)
    except SyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise CellSyntaxError(exc.msg or "invalid syntax", line) from None
    except ValueError as exc:  # e.g. a NUL byte in the source
        raise CellSyntaxError(str(exc), first_line) from None


@lru_cache(maxsize=4096)
def _analyse(source: str, modules: tuple[tuple[str, str], ...]) -> CellFlow:
    tree, offset = _tree(source, 1)
    cell = _CellWalker(dict(modules), offset)
    for stmt in tree.body:
        cell.top_level(stmt)
    if _displays_result(source, tree):
        cell.definite.add("@history")  # Out[n] and `_` get the cell's result
    dynamic = next(
        (
            n.lineno - offset
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id in _DYNAMIC_CALLS
            and not (n.func.id == "vars" and n.args)
        ),
        None,
    )
    flow = cell.result()
    if dynamic is not None:
        flow = dataclasses.replace(flow, dynamic=dynamic)
    return flow


def _displays_result(source: str, tree: ast.Module) -> bool:
    """Whether the cell's last statement is an expression IPython shows (and so stores in its
    output history): not ending in ``;``, and not a call that returns None by habit."""
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    value = tree.body[-1].value
    if isinstance(value, ast.Constant) and value.value is None:
        return False
    if isinstance(value, ast.Call):
        func = value.func
        if isinstance(func, ast.Name) and func.id in ("print", "display"):
            return False
        if isinstance(func, ast.Attribute) and _mutating_method(func.attr):
            return False  # `acc.append(1)`: returns None, shows nothing
        if _is_get_ipython_call(func.value if isinstance(func, ast.Attribute) else func):
            return False  # a magic or shell command
    lines = [ln.split("#")[0].rstrip() for ln in source.rstrip().splitlines()]
    return not (lines and lines[-1].endswith(";"))


# -- small AST helpers ---------------------------------------------------------------------------


def _root(node: ast.AST) -> str | None:
    """``x`` for ``x``, ``x.a.b``, ``x[0].a``; ``None`` through calls (``f().a``)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _target_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for e in node.elts for n in _target_names(e)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


def _element_aliases(target: ast.AST, source: ast.AST) -> Iterator[tuple[str, str]]:
    """(name, container) pairs for names bound to elements of a container:
    ``for row in rows``, ``for i, row in enumerate(rows)``, ``for k, v in d.items()``,
    ``for a, b in zip(xs, ys)``. Changing the element changes the container."""
    pairs = isinstance(target, (ast.Tuple, ast.List))
    if isinstance(source, ast.Call):
        func = source.func
        if isinstance(func, ast.Name):
            if func.id == "enumerate" and source.args and pairs and len(target.elts) == 2:  # type: ignore[attr-defined]
                yield from _element_aliases(target.elts[1], source.args[0])  # type: ignore[attr-defined]
            elif func.id == "zip" and pairs and len(target.elts) == len(source.args):  # type: ignore[attr-defined]
                for t, s in zip(target.elts, source.args, strict=True):  # type: ignore[attr-defined]
                    yield from _element_aliases(t, s)
            elif func.id in ("reversed", "sorted", "list", "tuple", "iter") and source.args:
                yield from _element_aliases(target, source.args[0])
            return
        if isinstance(func, ast.Attribute):
            root = _root(func.value)
            if root and func.attr == "items" and pairs and len(target.elts) == 2:  # type: ignore[attr-defined]
                yield from ((n, root) for n in _target_names(target.elts[1]))  # type: ignore[attr-defined]
            elif root and func.attr in ("values", "iterrows", "itertuples"):
                yield from ((n, root) for n in _target_names(target))
        return
    root = _root(source)
    if root:
        yield from ((n, root) for n in _target_names(target))


def _value_aliases(target: ast.AST, value: ast.AST) -> Iterator[tuple[str, str]]:
    """(name, source) pairs for ``a = b``, ``a = b.attr``, ``a = b[k]``, ``a, c = b, d``."""
    if isinstance(target, ast.Name):
        root = _root(value)
        if root and root != target.id:
            yield target.id, root
    elif isinstance(target, (ast.Tuple, ast.List)):
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                yield from _value_aliases(t, v)
        else:
            yield from _element_aliases(target, value)


# Expressions whose result holds no object of their operands (numbers, strings, bools).
_FRESH_RESULTS = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.JoinedStr, ast.Constant)


def _held_names(node: ast.AST | None) -> list[str]:
    """Bare names whose objects the value of ``node`` may hold: elements of displays,
    arguments and receivers of calls (a constructor keeps what it is given; ``fit`` returns
    ``self``), roots of attributes and subscripts. Not the called name itself, nor names
    only used in arithmetic, comparisons or an index."""
    out: list[str] = []
    todo = [node] if node is not None else []
    while todo:
        n = todo.pop()
        if isinstance(n, _FRESH_RESULTS) or n is None:
            continue
        if isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Load):
                out.append(n.id)
        elif isinstance(n, ast.Call):
            if not isinstance(n.func, ast.Name):
                todo.append(n.func)
            todo.extend(n.args)
            todo.extend(k.value for k in n.keywords)
        elif isinstance(n, ast.Subscript):
            todo.append(n.value)
        elif isinstance(n, (ast.Lambda, *_FUNCTIONS, ast.ClassDef)):
            continue
        else:
            todo.extend(c for c in ast.iter_child_nodes(n) if isinstance(c, ast.expr))
    return out


_NAME_ERROR_CATCHERS = frozenset({"NameError", "Exception", "BaseException"})
_NAMESPACE_CALLS = frozenset({"globals", "locals", "vars", "dir"})


def _catches_name_error(handler_type: ast.expr | None) -> bool:
    """Whether ``except <handler_type>:`` catches a NameError (a bare ``except`` does)."""
    if handler_type is None:
        return True
    types = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(isinstance(t, ast.Name) and t.id in _NAME_ERROR_CATCHERS for t in types)


def _presence_name(node: ast.AST) -> str | None:
    """``'x' in globals()`` (or ``not in``, ``locals()``, ``vars()``, ``dir()``): ``x``."""
    if not (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], (ast.In, ast.NotIn))
        and isinstance(node.left, ast.Constant)
        and isinstance(node.left.value, str)
        and _IDENTIFIER.fullmatch(node.left.value)
    ):
        return None
    call = node.comparators[0]
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in _NAMESPACE_CALLS
        and not call.args
        and not call.keywords
    ):
        return node.left.value
    return None


def _presence_checks(test: ast.expr) -> tuple[frozenset[str], frozenset[str]]:
    """Names an ``if`` test proves bound in its body and in its ``else``: ``'x' in
    globals() and 'y' in globals()`` guards both in the body; ``not in`` guards the else."""
    tests = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
    body: set[str] = set()
    orelse: set[str] = set()
    for t in tests:
        name = _presence_name(t)
        if name is not None:
            (body if isinstance(t.ops[0], ast.In) else orelse).add(name)  # type: ignore[attr-defined]
    if len(tests) > 1:
        orelse = set()  # `not (a and b)` proves neither
    return frozenset(body), frozenset(orelse)


def _arg_names(args: ast.arguments) -> list[str]:
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return names


def _is_get_ipython_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
        and not node.args
    )


def _const_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and not node.value


def _mutating_method(name: str) -> bool:
    return name not in NON_MUTATING_METHODS and not name.startswith(_NON_MUTATING_PREFIXES)


def _scope_locals(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> tuple[set, set]:
    """The names local to a function's own scope, and the names it declares ``global``.

    A name is local when the body binds it anywhere (assignment, ``for``/``with``/``except``
    target, import, ``def``, ``class``, ``del``, match capture, walrus, even inside a
    comprehension) unless declared ``global`` or ``nonlocal``; parameters are local.
    """
    local = set(_arg_names(fn.args))
    declared_global: set[str] = set()
    declared_nonlocal: set[str] = set()
    stack: list[ast.AST] = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while stack:
        node = stack.pop()
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            local.add(node.name)
            continue  # their bodies are scopes of their own
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                local.add(node.id)
            continue
        if isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            declared_nonlocal.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*":
                    local.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            local.add(node.rest)
        if isinstance(node, _COMPREHENSIONS):
            # Only a walrus inside binds in this scope; the loop targets are the
            # comprehension's own.
            for g in node.generators:
                stack += [g.iter, *g.ifs]
            stack += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            continue
        stack.extend(ast.iter_child_nodes(node))
    return local - declared_global - declared_nonlocal, declared_global


def _options(line: str, valued: str, flags: str) -> tuple[dict[str, str], str]:
    """Split getopt-style leading options (``-n 10 -r3 -q``) from the rest of a magic's line."""
    opts: dict[str, str] = {}
    pos = 0
    while m := _TOKEN.match(line, pos):
        token = m.group(1)
        if token == "--":
            pos = m.end()
            break
        if len(token) < 2 or token[0] != "-" or token[1] not in valued + flags:
            break
        pos = m.end()
        for i, letter in enumerate(token[1:], 1):
            if letter in valued:
                value = token[i + 1 :]
                if not value and (v := _TOKEN.match(line, pos)):
                    value, pos = v.group(1), v.end()
                opts[letter] = value
                break
            opts[letter] = ""
    return opts, line[pos:].strip()


def _named_values(words: Sequence[str], *names: str) -> list[str]:
    """Values of ``--out NAME`` / ``--out=NAME`` style options among a magic line's words."""
    values = []
    for i, word in enumerate(words):
        key, eq, value = word.partition("=")
        if key in names:
            if eq:
                values.append(value)
            elif i + 1 < len(words):
                values.append(words[i + 1])
    return [v for v in values if v.isidentifier()]


def _expansions(text: str) -> list[ast.expr] | None:
    """Expressions IPython evaluates when it var-expands ``text`` (``{expr}``, ``$name``,
    ``$name.attr``; ``$$`` and ``$`` inside single quotes are left alone), or ``None`` when the
    expansion would fail as a whole and IPython passes the text on unchanged."""
    found: list[ast.expr] = []
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        return None
    for literal, name, spec, _ in parts:
        for m in _DOLLAR.finditer(literal):
            field_text = m.group(1)
            if field_text.startswith("$") or literal.count("'", m.end()) % 2:
                continue
            if field_text in _SHELL_VARIABLES or not field_text[0].isidentifier():
                continue
            expr = _eval_expr(field_text.rstrip("."))
            if expr is not None:
                found.append(expr)
        if name is not None:
            expr = _eval_expr(f"{name}:{spec}" if spec else name)
            if expr is None:
                return None
            found.append(expr)
    return found


def _eval_expr(text: str) -> ast.expr | None:
    try:
        return _ast_parse_expr(text)
    except (SyntaxError, ValueError):
        return None


def _ast_parse_expr(text: str) -> ast.expr:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text.strip(), mode="eval").body


# -- the walker ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Frame:
    """A scope nested in the walker's own: a comprehension, a lambda or nested function, a
    class body, or the private namespace ``%timeit`` runs code in. ``names`` are its locals
    (for "class" frames they grow as the body binds them, since a class body reads globals
    until it binds the name itself)."""

    kind: str  # "comprehension" | "function" | "class"
    names: set[str]
    globals: frozenset[str] | set[str] = frozenset()
    imports: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Walker:
    """Statement and expression rules shared by the cell and function analyses.

    Subclasses decide what happens to names of the walker's own level ("globals" here: the
    cell's module scope for `_CellWalker`, module globals seen from a function body for
    `_FunctionWalker`) through the ``global_*`` hooks.
    """

    def __init__(self) -> None:
        self.frames: list[_Frame] = []
        self.line = 1
        self.base = 0  # added to AST line numbers: lines IPython dropped, or a magic's position
        self.uncertain = 0  # > 0 while evaluating code that may not run (`a and (b := 1)`)
        # Names whose absence the code handles: None = any (a `try` catching NameError), else
        # the names an enclosing `if 'x' in globals():` checks.
        self.name_guards: list[frozenset[str] | None] = []

    # -- hooks -----------------------------------------------------------------------------

    def global_load(self, name: str) -> None:
        raise NotImplementedError

    def global_store(self, name: str, augmented: bool = False) -> None:
        raise NotImplementedError

    def global_delete(self, name: str) -> None:
        raise NotImplementedError

    def global_mutate(self, name: str, seen: set[str]) -> None:
        raise NotImplementedError

    def global_module(self, name: str) -> str | None:
        """Dotted path when a global name is bound by an import."""
        raise NotImplementedError

    def global_import(self, name: str, path: str) -> None:
        raise NotImplementedError

    def global_alias(self, name: str, source: str) -> None:
        raise NotImplementedError

    def local_mutate(self, frame: _Frame, name: str, seen: set[str]) -> None:
        source = frame.aliases.get(name)
        if source:
            self.mutate(source, seen)

    def hidden(self, name: str, write: bool) -> None:
        raise NotImplementedError

    def block(self, body: Sequence[ast.stmt], prelude: Callable[[], None] | None = None) -> None:
        """Statements that run on some paths only."""
        raise NotImplementedError

    def define_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        raise NotImplementedError

    def defers_lambdas(self) -> bool:
        """Whether ``name = lambda ...`` defines a function here (else: an inline lambda)."""
        return False

    def named_lambda(self, name: str, node: ast.Lambda) -> None:
        pass

    def enter_class(self) -> None:
        pass

    def define_class(self, node: ast.ClassDef) -> None:
        pass

    def call_site(self, node: ast.Call, name: str) -> None:
        pass

    def bind_handler_name(self, name: str) -> None:
        """``except E as e``: bound inside the handler only (Python deletes it after)."""
        self.store(name)

    def link(self, holder: str | None, value: ast.AST | None) -> None:
        """``holder``'s object may now hold objects of the names in ``value``."""

    # -- names -----------------------------------------------------------------------------

    def scope_of(self, name: str) -> _Frame | None:
        """The frame that owns ``name`` as seen from here; ``None``: the walker's level."""
        crossed_function = False
        for frame in reversed(self.frames):
            if frame.kind == "class" and crossed_function:
                continue  # methods do not see class-level names
            if name in frame.globals:
                return None
            if name in frame.names:
                return frame
            if frame.kind == "function":
                crossed_function = True
        return None

    def load(self, name: str) -> None:
        frame = self.scope_of(name)
        if frame is None:
            self.global_load(name)
            path = self.global_module(name)
        else:
            path = frame.imports.get(name)
        if path is not None:  # `from os import environ`
            self.hidden_object(path, False)

    def hidden_object(self, path: str, write: bool) -> None:
        """Using (``write``: changing) the object at dotted ``path``."""
        if path == "os.environ" or path.startswith("os.environ."):
            self.hidden("@environ", write)
        elif path == "sys.path":
            self.hidden("@sys.path", write)
        else:
            for prefix, name in _SETTINGS_OBJECTS.items():
                if path == prefix or path.startswith(prefix + "."):
                    self.hidden(name, write)

    def store(self, name: str, walrus: bool = False, augmented: bool = False) -> None:
        crossed_function = False
        for i in range(len(self.frames) - 1, -1, -1):
            frame = self.frames[i]
            if name in frame.globals:
                break
            if frame.kind == "comprehension" and (walrus or name not in frame.names):
                continue  # a walrus binds in the enclosing scope
            if frame.kind == "class" and crossed_function:
                continue
            if (
                frame.kind == "function"
                and name not in frame.names
                and any(f.kind == "function" for f in self.frames[:i])
            ):
                crossed_function = True
                continue  # nonlocal: the enclosing function's
            frame.names.add(name)
            if not augmented:
                frame.aliases.pop(name, None)
            frame.imports.pop(name, None)
            return
        self.global_store(name, augmented)

    def delete(self, name: str) -> None:
        frame = self.scope_of(name)
        if frame is None:
            self.global_delete(name)
        else:
            frame.aliases.pop(name, None)

    def mutate(self, name: str, seen: set[str] | None = None) -> None:
        """``name``'s object may change in place (and so may what it aliases)."""
        seen = set() if seen is None else seen
        if name in seen:
            return
        seen.add(name)
        frame = self.scope_of(name)
        if frame is not None:
            if name not in frame.imports:
                self.local_mutate(frame, name, seen)
        elif self.global_module(name) is None:  # modules and imported objects: never
            self.global_mutate(name, seen)

    def alias(self, name: str, source: str) -> None:
        if self.resolve_name(source) is not None:
            return
        frame = self.scope_of(name)
        if frame is None:
            self.global_alias(name, source)
        else:
            frame.aliases[name] = source

    def resolve_name(self, name: str) -> str | None:
        frame = self.scope_of(name)
        return self.global_module(name) if frame is None else frame.imports.get(name)

    def resolve(self, node: ast.AST) -> str | None:
        """Dotted path of an imported object: ``np.random.seed`` -> ``numpy.random.seed``."""
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.resolve_name(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(attrs)]) if attrs else base

    # -- statements ------------------------------------------------------------------------

    def statements(self, body: Sequence[ast.stmt]) -> None:
        for node in body:
            self.stmt(node)

    def stmt(self, node: ast.stmt) -> None:
        self.line = self.base + node.lineno
        if isinstance(node, ast.Expr):
            self.expr(node.value)
        elif isinstance(node, ast.Assign):
            self.assign(node)
        elif isinstance(node, ast.AugAssign):
            self.augmented(node)
        elif isinstance(node, ast.AnnAssign):
            self.annotated(node)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter)

            def loop_target(target: ast.expr = node.target, source: ast.expr = node.iter) -> None:
                self.target(target)
                for name, container in _element_aliases(target, source):
                    self.alias(name, container)

            self.block(node.body, loop_target)
            self.block(node.orelse)
        elif isinstance(node, ast.If):
            self.expr(node.test)  # always evaluated once
            present, absent = _presence_checks(node.test)
            for body, names in ((node.body, present), (node.orelse, absent)):
                self.name_guards.append(names)
                try:
                    self.block(body)
                finally:
                    self.name_guards.pop()
        elif isinstance(node, ast.While):
            self.expr(node.test)  # always evaluated once
            self.block(node.body)
            self.block(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.statements(node.body)
        elif isinstance(node, _TRY):
            catches = any(_catches_name_error(h.type) for h in node.handlers)
            if catches:
                self.name_guards.append(None)
            try:
                self.block(node.body)
            finally:
                if catches:
                    self.name_guards.pop()
            for handler in node.handlers:
                self.handler(handler)
            self.block(node.orelse)
            self.block(node.finalbody)
        elif isinstance(node, ast.Match):
            self.expr(node.subject)
            for case in node.cases:
                self.block([], lambda case=case: self.case(case))
        elif isinstance(node, _FUNCTIONS):
            self.definition_time(node)
            self.store(node.name)
            self.define_function(node)
        elif isinstance(node, ast.ClassDef):
            self.class_def(node)
        elif isinstance(node, ast.Import):
            for a in node.names:
                name = a.asname or a.name.split(".")[0]
                self.imported(name, a.name if a.asname else name)
        elif isinstance(node, ast.ImportFrom):
            self.import_from(node)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.delete_target(target)
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            pass
        elif type(node).__name__ == "TypeAlias":  # 3.12: `type X = ...`
            self.expr(node.value)  # type: ignore[attr-defined]
            self.store(node.name.id)  # type: ignore[attr-defined]
        else:  # Return, Raise, Assert
            for child in ast.iter_child_nodes(node):
                self.expr(child)

    def assign(self, node: ast.Assign) -> None:
        value = node.value
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if (
            isinstance(value, ast.Lambda)
            and len(names) == len(node.targets)
            and self.defers_lambdas()
        ):
            self.definition_time(value)
            for name in names:
                self.store(name)
                self.named_lambda(name, value)
            return
        self.expr(value)
        for target in node.targets:
            self.target(target)
            for name, source in _value_aliases(target, value):
                self.alias(name, source)
            if isinstance(target, (ast.Attribute, ast.Subscript)):
                self.link(_root(target), value)
            else:
                for name in _target_names(target):
                    self.link(name, value)

    def augmented(self, node: ast.AugAssign) -> None:
        target = node.target
        if isinstance(target, ast.Name):
            self.load(target.id)
            self.mutate(target.id)  # before the store: it is the old object that changes
            self.expr(node.value)
            self.store(target.id, augmented=True)
        else:
            self.target_object(target)
            self.expr(node.value)
            self.target_effects(target)

    def annotated(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.expr(node.value)
        # Annotations of a function's local variables are never evaluated; module and class
        # ones are.
        scope = next((f.kind for f in reversed(self.frames) if f.kind != "comprehension"), None)
        if scope != "function":
            self.expr(node.annotation)
        if node.value is not None:
            self.target(node.target)
            for name, source in _value_aliases(node.target, node.value):
                self.alias(name, source)
        elif not isinstance(node.target, ast.Name):
            self.target_object(node.target)

    def handler(self, handler: ast.ExceptHandler) -> None:
        def prelude() -> None:
            if handler.type is not None:
                self.expr(handler.type)
            if handler.name:
                self.bind_handler_name(handler.name)

        self.block(handler.body, prelude)

    def case(self, case: ast.match_case) -> None:
        for node in ast.walk(case.pattern):
            if isinstance(node, ast.MatchValue):
                self.expr(node.value)
            elif isinstance(node, ast.MatchClass):
                self.expr(node.cls)
            elif isinstance(node, ast.MatchMapping):
                for key in node.keys:
                    self.expr(key)
        for node in ast.walk(case.pattern):
            if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                self.store(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                self.store(node.rest)
        if case.guard is not None:
            self.expr(case.guard)
        self.statements(case.body)

    def imported(self, name: str, path: str) -> None:
        self.store(name)
        frame = self.scope_of(name)
        if frame is None:
            self.global_import(name, path)
        else:
            frame.imports[name] = path

    def import_from(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        for a in node.names:
            if a.name == "*":
                self.star_import(module)
            else:
                sep = "" if module.endswith(".") else "."
                self.imported(a.asname or a.name, f"{module}{sep}{a.name}")

    def star_import(self, module: str) -> None:
        pass

    def class_def(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.expr(d)
        for base in node.bases:
            self.expr(base)
        for k in node.keywords:
            self.expr(k.value)
        self.frames.append(_Frame("class", set()))
        self.enter_class()
        try:
            self.statements(node.body)
        finally:
            self.frames.pop()
        self.store(node.name)
        self.define_class(node)

    def definition_time(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        """What ``def`` / ``lambda`` evaluates where it stands: decorators, defaults,
        annotations."""
        args = node.args
        for d in getattr(node, "decorator_list", ()):
            self.expr(d)
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.expr(default)
        if isinstance(node, ast.Lambda):
            return
        for a in [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]:
            if a is not None and a.annotation is not None:
                self.expr(a.annotation)
        if node.returns is not None:
            self.expr(node.returns)

    # -- targets ---------------------------------------------------------------------------

    def target(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.store(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                self.target(e)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            self.target_object(node)
            self.target_effects(node)

    def target_object(self, node: ast.AST) -> None:
        """Evaluate what ``x.a[i]`` in ``x.a[i] = v`` is stored into: ``x.a`` and ``i``."""
        if isinstance(node, ast.Subscript):
            self.expr(node.value)
            self.expr(node.slice)
        elif isinstance(node, ast.Attribute):
            self.expr(node.value)

    def target_effects(self, node: ast.Attribute | ast.Subscript) -> None:
        """Storing into (or deleting from) an object changes it."""
        path = self.resolve(node.value if isinstance(node, ast.Subscript) else node)
        if path is not None:
            self.hidden_object(path, True)
        root = _root(node)
        if root:
            self.mutate(root)

    def delete_target(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.delete(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                self.delete_target(e)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            self.target_object(node)
            self.target_effects(node)

    # -- expressions -----------------------------------------------------------------------

    def expr(self, node: ast.AST | None) -> None:
        if isinstance(node, ast.BinOp):  # long `a + b + c + ...` chains: no deep recursion
            rights = []
            while isinstance(node, ast.BinOp):
                rights.append(node.right)
                node = node.left
            self.expr(node)
            for right in reversed(rights):
                self.expr(right)
            return
        if node is None:
            return
        t = type(node)
        if t is ast.Name:
            if isinstance(node.ctx, ast.Load):  # type: ignore[attr-defined]
                self.load(node.id)  # type: ignore[attr-defined]
        elif t is ast.Constant:
            pass
        elif t is ast.Compare and _presence_name(node) is not None:  # `'x' in globals()`
            name = _presence_name(node)
            self.name_guards.append(frozenset([name]))  # type: ignore[list-item]
            try:
                self.load(name)  # type: ignore[arg-type]
            finally:
                self.name_guards.pop()
        elif t is ast.Attribute:
            if node.attr in ("environ", "path"):  # type: ignore[attr-defined]
                path = self.resolve(node)
                if path is not None:
                    self.hidden_object(path, False)
            self.expr(node.value)  # type: ignore[attr-defined]
        elif t is ast.Call:
            self.call(node)  # type: ignore[arg-type]
        elif t in _COMPREHENSIONS:
            self.comprehension(node)  # type: ignore[arg-type]
        elif t is ast.Lambda:
            self.lambda_(node)  # type: ignore[arg-type]
        elif t is ast.NamedExpr:
            self.expr(node.value)  # type: ignore[attr-defined]
            self.store(node.target.id, walrus=True)  # type: ignore[attr-defined]
        elif t is ast.BoolOp:
            self.expr(node.values[0])  # type: ignore[attr-defined]
            self.uncertain += 1
            for value in node.values[1:]:  # type: ignore[attr-defined]
                self.expr(value)
            self.uncertain -= 1
        elif t is ast.IfExp:
            self.expr(node.test)  # type: ignore[attr-defined]
            self.uncertain += 1
            self.expr(node.body)  # type: ignore[attr-defined]
            self.expr(node.orelse)  # type: ignore[attr-defined]
            self.uncertain -= 1
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        gens = node.generators
        self.expr(gens[0].iter)  # evaluated in the enclosing scope
        frame = _Frame("comprehension", {n for g in gens for n in _target_names(g.target)})
        self.frames.append(frame)
        self.uncertain += 1
        try:
            for i, g in enumerate(gens):
                if i:
                    self.expr(g.iter)
                for name, container in _element_aliases(g.target, g.iter):
                    if container != name:
                        frame.aliases[name] = container
                for cond in g.ifs:
                    self.expr(cond)
            if isinstance(node, ast.DictComp):
                self.expr(node.key)
                self.expr(node.value)
            else:
                self.expr(node.elt)
        finally:
            self.uncertain -= 1
            self.frames.pop()

    def lambda_(self, node: ast.Lambda) -> None:
        """A lambda that is not named is usually called right away (``df.apply(lambda r:
        ...)``), so its body counts where it stands, with its parameters local."""
        self.definition_time(node)
        local, declared = _scope_locals(node)
        self.frames.append(_Frame("function", local, declared))
        try:
            self.expr(node.body)
        finally:
            self.frames.pop()

    # -- calls -----------------------------------------------------------------------------

    def call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in _GET_IPYTHON_API
            and _is_get_ipython_call(func.value)
            and self.magic(func.attr, node)
        ):
            return
        path = self.resolve(func)
        self.expr(func)
        for arg in node.args:
            self.expr(arg)
        for k in node.keywords:
            self.expr(k.value)
        first = _root(node.args[0]) if node.args else None
        if path is not None:
            self.library_call(path, node, first)
        elif isinstance(func, ast.Attribute):
            root = _root(func.value)
            inplace = any(k.arg == "inplace" and not _is_false(k.value) for k in node.keywords)
            if root and (inplace or _mutating_method(func.attr)):
                self.mutate(root)
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    self.link(root, arg)
        if isinstance(func, ast.Name) and self.scope_of(func.id) is None:
            if func.id in _MUTATING_BUILTINS and first and path is None:
                self.mutate(first)
            self.call_site(node, func.id)
        for k in node.keywords:  # numpy ufuncs and friends write into `out=`
            if k.arg == "out":
                outs = k.value.elts if isinstance(k.value, ast.Tuple) else [k.value]
                for out in outs:
                    root = _root(out)
                    if root:
                        self.mutate(root)
        for name, write in _file_effects(func, path, node):
            self.hidden(name, write)

    def library_call(self, path: str, node: ast.Call, first: str | None) -> None:
        """Effects of calling an imported function (given by its dotted path)."""
        parts = path.split(".")
        head, last = parts[0], parts[-1]
        if first and (
            path in MUTATING_FUNCTIONS
            or (head == "numpy" and last == "at" and len(parts) == 3)  # np.add.at(a, i, v)
            or (path.startswith("torch.nn.init.") and last.endswith("_"))
        ):
            self.mutate(first)
        for name, write in _hidden_effects(path, parts, node):
            self.hidden(name, write)

    # -- IPython ---------------------------------------------------------------------------

    def magic(self, kind: str, node: ast.Call) -> bool:
        """A ``get_ipython()`` call the transformer made. False: not one we understand (a
        computed argument), to be treated as an ordinary call."""
        texts = [_const_str(a) for a in node.args]
        if node.keywords or not texts or None in texts:
            return False
        if kind in ("system", "getoutput"):
            self.var_expand(texts[0])  # type: ignore[arg-type]
            return True
        if kind == "run_line_magic" and len(texts) == 2:
            self.line_magic(texts[0], texts[1])  # type: ignore[arg-type]
            return True
        if kind == "run_cell_magic" and len(texts) == 3:
            self.cell_magic(texts[0], texts[1], texts[2])  # type: ignore[arg-type]
            return True
        return False

    def line_magic(self, name: str, line: str) -> None:
        if name in _CODE_LINE_MAGICS:
            _, code = _options(line, *_CODE_LINE_MAGICS[name])
            self.embedded(code, self.line)
        elif name == "timeit":
            _, code = _options(line, *_TIMEIT_OPTIONS)
            self.embedded(code, self.line, isolated=True)
        elif name in _INSPECTING_MAGICS:
            pass
        else:
            self.var_expand(line)
            words = line.split()
            if name in ("env", "set_env"):
                write = name == "set_env" or len(words) > 1 or "=" in line
                self.hidden("@environ", write)
            elif name in _CWD_CHANGING_MAGICS:
                self.hidden("@cwd", True)
            elif name in _CWD_READING_MAGICS:
                self.hidden("@cwd", False)
            elif name == "xdel":
                for word in words:
                    if word.isidentifier():
                        self.delete(word)
            elif name == "store":
                self.store_magic(words)

    def store_magic(self, words: list[str]) -> None:
        """``%store -r a b`` binds a and b from IPython's store; ``%store a`` reads a."""
        flags = {w for w in words if w.startswith("-")}
        names = [w for w in words if w.isidentifier()]
        if "-r" in flags:
            for name in names:
                self.store(name)
        elif not flags and names:
            self.load(names[0])

    def cell_magic(self, name: str, line: str, body: str) -> None:
        first_body_line = self.line + 1
        if name in _CODE_CELL_MAGICS:
            self.embedded(body, first_body_line)
            if name == "capture":
                outputs = [w for w in line.split() if not w.startswith("-")]
                if outputs and outputs[0].isidentifier():
                    self.store(outputs[0])
            return
        if name == "timeit":
            _, setup = _options(line, *_TIMEIT_OPTIONS)
            self.embedded(f"{setup}\n{body}", self.line, isolated=True)
            return
        self.var_expand(line)
        words = line.split()
        if name in _SHELL_CELL_MAGICS:
            self.var_expand(body)
            outputs = _named_values(words, "--out", "-o")
        elif name in _SCRIPT_CELL_MAGICS:
            outputs = _named_values(words, "--out", "--err", "--proc")
        else:  # %%writefile, %%html, %%javascript, %%latex, %%markdown, %%svg, ...: opaque
            outputs = []
        for output in outputs:
            self.store(output)

    def embedded(self, code: str, first_line: int, isolated: bool = False) -> None:
        """Code a magic runs. ``isolated``: bindings stay in a namespace of their own
        (``%timeit``), while reads, mutations and hidden state still count."""
        tree, base = _tree(code, first_line)
        saved = self.base, self.line
        self.base = base
        if isolated:
            self.frames.append(_Frame("class", set()))
        try:
            self.statements(tree.body)
        finally:
            if isolated:
                self.frames.pop()
            self.base, self.line = saved

    def var_expand(self, text: str) -> None:
        for expr in _expansions(text) or ():
            self.expr(expr)


#: Calls that read or write a file named by a literal path: (position of the path, writes?).
_FILE_FUNCTIONS = {
    "numpy.load": (0, False),
    "numpy.loadtxt": (0, False),
    "numpy.genfromtxt": (0, False),
    "numpy.save": (0, True),
    "numpy.savez": (0, True),
    "numpy.savez_compressed": (0, True),
    "numpy.savetxt": (0, True),
    "joblib.load": (0, False),
    "joblib.dump": (1, True),
    "matplotlib.pyplot.savefig": (0, True),
}
_FILE_METHODS = {  # df.to_csv("x.csv"), fig.savefig("x.png"), Path("x").read_text()
    "to_csv": True,
    "to_parquet": True,
    "to_json": True,
    "to_excel": True,
    "to_pickle": True,
    "to_feather": True,
    "to_hdf": True,
    "savefig": True,
}
_PATH_METHODS = {"read_text": False, "read_bytes": False, "write_text": True, "write_bytes": True}


file_name = pseudo_file_name  # the pseudo-variable for a file a cell reads or writes


def _file_effects(func: ast.expr, path: str | None, node: ast.Call) -> list[tuple[str, bool]]:
    """Files named by a literal path that a call reads or writes: steps that hand data over
    through a file are ordered like steps that hand over a variable."""

    def literal(position: int, *keywords: str) -> str | None:
        for k in node.keywords:
            if k.arg in keywords:
                return _const_str(k.value)
        if position < len(node.args):
            return _const_str(node.args[position])
        return None

    target: str | None = None
    write = False
    if path is not None:
        parts = path.split(".")
        if parts[0] == "pandas" and len(parts) == 2 and parts[1].startswith("read_"):
            target = literal(0, "filepath_or_buffer", "path", "path_or_buf", "io")
        elif path in _FILE_FUNCTIONS:
            position, write = _FILE_FUNCTIONS[path]
            target = literal(position, "file", "fname", "filename")
    elif isinstance(func, ast.Name) and func.id == "open":
        target = literal(0, "file")
        mode = literal(1, "mode") or "r"
        write = any(c in mode for c in "wax+")
    elif isinstance(func, ast.Attribute):
        if func.attr in _FILE_METHODS:
            target, write = literal(0, "path", "path_or_buf", "fname", "excel_writer"), True
        elif (
            func.attr in _PATH_METHODS
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, (ast.Name, ast.Attribute))
            and getattr(func.value.func, "id", getattr(func.value.func, "attr", "")) == "Path"
            and func.value.args
        ):
            target, write = _const_str(func.value.args[0]), _PATH_METHODS[func.attr]
    if not target or "://" in target:
        return []
    return [(file_name(target), write)]


def _hidden_effects(path: str, parts: list[str], node: ast.Call) -> list[tuple[str, bool]]:
    """Hidden state (name, written?) a call of the imported object ``path`` touches."""
    head, n = parts[0], len(parts)
    if path in _SETTINGS_CALLS:
        return [(_SETTINGS_CALLS[path], True)]
    if head == "random" and n == 2 and parts[1] not in ("Random", "SystemRandom"):
        return [("@random", True)]
    if head == "numpy" and n == 3 and parts[1] == "random":
        return [] if parts[2] in _NUMPY_OWN_GENERATORS else [("@random", True)]
    if head == "torch":
        if (
            (n == 2 and parts[1] in _TORCH_RANDOM)
            or (n == 3 and parts[1] in ("random", "cuda") and "seed" in parts[2])
            or (n == 3 and parts[1] == "random" and parts[2].endswith("rng_state"))
            or (n == 4 and parts[1:3] == ["nn", "init"] and parts[3] in _TORCH_RANDOM_INIT)
            or (path == "torch.utils.data.random_split" and not _has_keyword(node, "generator"))
        ):
            return [("@random", True)]
        return []
    if head == "sklearn":
        draws = path in _SKLEARN_RANDOM or path.startswith("sklearn.datasets.make_")
        return [("@random", True)] if draws and not _has_keyword(node, "random_state") else []
    if head == "os":
        if path in ("os.getenv", "os.getenvb"):
            return [("@environ", False)]
        if path in ("os.putenv", "os.unsetenv"):
            return [("@environ", True)]
        if n == 3 and parts[1] == "environ":
            return [("@environ", parts[2] not in _ENVIRON_READERS)]
        if path in ("os.chdir", "os.fchdir"):
            return [("@cwd", True)]
        if path in ("os.getcwd", "os.getcwdb"):
            return [("@cwd", False)]
        return []
    if path == "dotenv.load_dotenv":
        return [("@environ", True)]
    if head == "sys" and n == 3 and parts[1] == "path":
        return [("@sys.path", parts[2] not in _SYS_PATH_READERS)]
    if path == "site.addsitedir":
        return [("@sys.path", True)]
    if path == "pathlib.Path.cwd":
        return [("@cwd", False)]
    if path == "contextlib.chdir":
        return [("@cwd", True)]
    return []


def _has_keyword(node: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and not (isinstance(k.value, ast.Constant) and k.value.value is None)
        for k in node.keywords
    )


# -- the cell ------------------------------------------------------------------------------------


class _CellWalker(_Walker):
    """Module level, in statement order: a load is a read unless the name is bound for sure
    at that point; a store in a block that may not run is a maybe-write."""

    def __init__(self, modules: dict[str, str], offset: int):
        super().__init__()
        self.base = offset
        self.modules = modules
        self.reads: dict[str, int] = {}
        self.unguarded: set[str] = set()  # names read at least once where absence raises
        self.links: dict[tuple[str, str], None] = {}
        self.definite: set[str] = set()
        self.blocks: list[set[str]] = []  # names bound for sure since each open block began
        self.maybe: set[str] = set()
        self.mutated: set[str] = set()
        self.deleted: set[str] = set()
        self.rebound: set[str] = set()  # names rebound by something other than an import
        self.imports: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.pending: dict[str, ast.AST] = {}  # defs, classes and named lambdas, analysed last
        self.methods: list[list[ast.FunctionDef | ast.AsyncFunctionDef]] = []
        self.class_methods: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.calls: list[CallSite] = []
        self.stars: list[str] = []

    def top_level(self, node: ast.stmt) -> None:
        frames, blocks, methods = len(self.frames), len(self.blocks), len(self.methods)
        uncertain, guards = self.uncertain, len(self.name_guards)
        try:
            self.stmt(node)
        except RecursionError:
            # Pathologically deep code: fall back to "every name is read, every bound name
            # may be written" for this statement.
            del self.frames[frames:], self.blocks[blocks:], self.methods[methods:]
            del self.name_guards[guards:]
            self.uncertain = uncertain + 1
            for n in ast.walk(node):
                if isinstance(n, ast.Name):
                    (self.load if isinstance(n.ctx, ast.Load) else self.store)(n.id)
            self.uncertain = uncertain

    def bound(self, name: str) -> bool:
        return name in self.definite or any(name in b for b in self.blocks)

    def conditional(self) -> bool:
        return bool(self.blocks) or self.uncertain > 0

    # -- hooks -----------------------------------------------------------------------------

    def global_load(self, name: str) -> None:
        if self.bound(name):
            return
        if name not in self.reads:
            self.reads[name] = self.line
            if is_history_name(name):
                self.global_load("@history")
        if not any(g is None or name in g for g in self.name_guards):
            self.unguarded.add(name)

    def global_store(self, name: str, augmented: bool = False) -> None:
        self.deleted.discard(name)
        if self.conditional():
            self.maybe.add(name)
            if self.blocks and not self.uncertain:
                self.blocks[-1].add(name)
            return
        self.definite.add(name)
        self.rebound.add(name)
        self.imports.pop(name, None)
        self.pending.pop(name, None)
        self._unlink(name)
        if not augmented:  # `a += [1]` keeps the object, and so what it aliases
            self.aliases.pop(name, None)

    def global_delete(self, name: str) -> None:
        self.global_load(name)  # `del x` fails unless x exists
        if self.conditional():
            self.definite.discard(name)
            for b in self.blocks:
                b.discard(name)
            self.maybe.add(name)
            return
        self.definite.discard(name)
        self.maybe.discard(name)
        self.deleted.add(name)
        self.rebound.add(name)
        for table in (self.imports, self.pending, self.aliases):
            table.pop(name, None)

    def global_mutate(self, name: str, seen: set[str]) -> None:
        if not self.bound(name):
            self.global_load(name)
            self.mutated.add(name)
        source = self.aliases.get(name)
        if source:
            self.mutate(source, seen)

    def global_module(self, name: str) -> str | None:
        if name in self.imports:
            return self.imports[name]
        return None if name in self.rebound else self.modules.get(name)

    def global_import(self, name: str, path: str) -> None:
        self.imports[name] = path
        self.rebound.discard(name)

    def global_alias(self, name: str, source: str) -> None:
        self.aliases[name] = source

    def hidden(self, name: str, write: bool) -> None:
        self.global_load(name)
        if write:
            self.mutated.add(name)

    def block(self, body: Sequence[ast.stmt], prelude: Callable[[], None] | None = None) -> None:
        self.blocks.append(set())
        try:
            if prelude is not None:
                prelude()
            self.statements(body)
        finally:
            self.blocks.pop()

    def bind_handler_name(self, name: str) -> None:
        if self.frames:
            self.store(name)
        else:
            self.blocks[-1].add(name)  # usable in the handler, unbound after it: not a write

    def define_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not self.frames:
            self.pending[node.name] = node
        elif self.methods and self.frames[-1].kind == "class":
            self.methods[-1].append(node)

    def defers_lambdas(self) -> bool:
        return not self.frames

    def named_lambda(self, name: str, node: ast.Lambda) -> None:
        self.pending[name] = node

    def enter_class(self) -> None:
        self.methods.append([])

    def define_class(self, node: ast.ClassDef) -> None:
        methods = self.methods.pop()
        if self.methods:  # a nested class: its methods run as the outer class's do
            self.methods[-1].extend(methods)
        elif not self.frames:
            self.pending[node.name] = node
            self.class_methods[node.name] = methods

    def call_site(self, node: ast.Call, name: str) -> None:
        self.calls.append(
            CallSite(
                name,
                tuple(a.id if isinstance(a, ast.Name) else None for a in node.args),
                tuple(
                    (k.arg, k.value.id)
                    for k in node.keywords
                    if k.arg and isinstance(k.value, ast.Name)
                ),
            )
        )

    def star_import(self, module: str) -> None:
        self.stars.append(module)

    def _unlink(self, name: str) -> None:
        """``name`` is bound to another object: what shared through its old one still
        shares (``same = a; box = [a]; a = []`` leaves ``same`` and ``box`` sharing)."""
        old = [pair for pair in self.links if name in pair]
        if not old:
            return
        others = sorted({h if h != name else d for h, d in old})
        for pair in old:
            del self.links[pair]
        for i, a in enumerate(others):
            for b in others[i + 1 :]:
                self.links[(a, b)] = None

    def link(self, holder: str | None, value: ast.AST | None) -> None:
        if holder is None or self.frames:
            return
        for held in _held_names(value):
            if held != holder and held not in BUILTINS and self.resolve_name(held) is None:
                self.links[(holder, held)] = None

    # -- result ----------------------------------------------------------------------------

    def result(self) -> CellFlow:
        table = {k: v for k, v in self.modules.items() if k not in self.rebound}
        table.update(self.imports)
        functions: dict[str, FunctionInfo] = {}
        for name, node in self.pending.items():
            if isinstance(node, ast.ClassDef):
                info = _class_info(self.class_methods[name], table, functions)
            else:
                info = _function_info(node, table, functions)  # type: ignore[arg-type]
            functions[name] = info
        return CellFlow(
            reads=tuple(self.reads),
            writes=frozenset(self.definite),
            maybe_writes=frozenset(self.maybe - self.definite),
            mutates=frozenset(self.mutated),
            deletes=frozenset(self.deleted),
            imports=dict(self.imports),
            functions=functions,
            calls=tuple(self.calls),
            star_imports=tuple(self.stars),
            lines=dict(self.reads),
            guarded=frozenset(self.reads) - self.unguarded - self.mutated,
            links=tuple(self.links),
        )


# -- functions -----------------------------------------------------------------------------------


class _FunctionWalker(_Walker):
    """A function body, flow-insensitively: what it reads, rebinds and mutates at module
    level when called, and which of its parameters it mutates. Nested functions, lambdas and
    classes are walked in place as frames: their effects happen when (if) they are called."""

    def __init__(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
        modules: Mapping[str, str],
        known: Mapping[str, FunctionInfo],
    ):
        super().__init__()
        self.modules = modules
        self.known = known
        self.params = set(_arg_names(node.args))
        self.reads: dict[str, None] = {}
        self.writes: set[str] = set()
        self.mutated: set[str] = set()
        self.mutated_params: set[str] = set()
        local, declared = _scope_locals(node)
        self.frames.append(_Frame("function", local, declared))

    def global_load(self, name: str) -> None:
        self.reads.setdefault(name, None)

    def global_store(self, name: str, augmented: bool = False) -> None:
        self.writes.add(name)

    def global_delete(self, name: str) -> None:
        self.writes.add(name)

    def global_mutate(self, name: str, seen: set[str]) -> None:
        self.reads.setdefault(name, None)
        self.mutated.add(name)

    def global_module(self, name: str) -> str | None:
        return self.modules.get(name)

    def global_import(self, name: str, path: str) -> None:
        pass

    def global_alias(self, name: str, source: str) -> None:
        pass

    def local_mutate(self, frame: _Frame, name: str, seen: set[str]) -> None:
        if frame is self.frames[0] and name in self.params:
            self.mutated_params.add(name)
        super().local_mutate(frame, name, seen)

    def hidden(self, name: str, write: bool) -> None:
        self.reads.setdefault(name, None)
        if write:
            self.mutated.add(name)

    def block(self, body: Sequence[ast.stmt], prelude: Callable[[], None] | None = None) -> None:
        if prelude is not None:
            prelude()
        self.statements(body)

    def define_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        local, declared = _scope_locals(node)
        self.frames.append(_Frame("function", local, declared))
        try:
            self.statements(node.body)
        finally:
            self.frames.pop()

    def call_site(self, node: ast.Call, name: str) -> None:
        """A call of another function of the same cell passes on its parameter mutations."""
        info = self.known.get(name)
        if info is None:
            return
        for pos, arg in enumerate(node.args[: len(info.params)]):
            if isinstance(arg, ast.Name) and info.params[pos] in info.mutated_params:
                self.mutate(arg.id)
        for k in node.keywords:
            if k.arg in info.mutated_params and isinstance(k.value, ast.Name):
                self.mutate(k.value.id)

    def info(self, positional: tuple[str, ...], ordered: Sequence[str]) -> FunctionInfo:
        return FunctionInfo(
            params=positional,
            reads=frozenset(self.reads),
            writes=frozenset(self.writes),
            mutates=frozenset(self.mutated),
            mutated_params=tuple(p for p in ordered if p in self.mutated_params),
        )


def _function_info(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
    modules: Mapping[str, str],
    known: Mapping[str, FunctionInfo],
) -> FunctionInfo:
    args = node.args
    positional = tuple(a.arg for a in [*args.posonlyargs, *args.args])
    walker = _FunctionWalker(node, modules, known)
    if isinstance(node.body, list):
        body = node.body
    else:
        body = [ast.Expr(node.body, lineno=node.lineno, col_offset=node.col_offset)]
    try:
        walker.statements(body)
    except RecursionError:
        local = walker.frames[0].names
        reads = {
            n.id: None
            for stmt in body
            for n in ast.walk(stmt)
            if isinstance(n, ast.Name) and n.id not in local
        }
        return FunctionInfo(positional, frozenset(reads), frozenset(), frozenset(), ())
    return walker.info(positional, [*positional, *(a.arg for a in args.kwonlyargs)])


def _class_info(
    methods: Sequence[ast.FunctionDef | ast.AsyncFunctionDef],
    modules: Mapping[str, str],
    known: Mapping[str, FunctionInfo],
) -> FunctionInfo:
    """A class called is its ``__init__`` run; any method may run later on the instance, so
    all their global effects are the class's."""
    reads: set[str] = set()
    writes: set[str] = set()
    mutates: set[str] = set()
    params: tuple[str, ...] = ()
    mutated: tuple[str, ...] = ()
    for method in methods:
        info = _function_info(method, modules, known)
        reads |= info.reads
        writes |= info.writes
        mutates |= info.mutates
        if method.name == "__init__":
            params = info.params[1:]
            mutated = tuple(p for p in info.mutated_params if p in params)
    return FunctionInfo(params, frozenset(reads), frozenset(writes), frozenset(mutates), mutated)
