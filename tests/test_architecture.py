"""The architecture as rules the code must keep (docs/design.md, "Modules and layers").

- No module imports, however indirectly, a module that imports it: the import graph of
  ``kernel/cellpipe`` and ``jupyter_extension/cellpipe_server`` has no cycles. Imports inside
  functions count (they are cycles that only bite later); imports under
  ``if TYPE_CHECKING:`` do not (they never run). A package's implicit import of its parent
  ``__init__`` is not an edge: only what a module spells out is.
- Only the run directory's owner (the ``cellpipe.rundir`` package) spells out the name of a
  file or folder inside a run directory; everyone else asks a ``RunDir``. The names come
  from ``cellpipe.rundir.layout`` itself, so the list cannot fall behind it.
- Imports point down the layers of docs/design.md's picture.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellpipe.rundir import layout

REPO = Path(__file__).resolve().parents[1]
ROOTS = {
    "cellpipe": REPO / "kernel" / "cellpipe",
    "cellpipe_server": REPO / "jupyter_extension" / "cellpipe_server",
}
OWNER = "cellpipe.rundir"

#: The layers, lowest first (docs/design.md). A module may import its own layer and those
#: below; the package ``cellpipe`` itself (the public API) and ``__main__`` sit on top.
LAYERS: list[tuple[str, ...]] = [
    ("cellpipe._version", "cellpipe.core"),
    ("cellpipe.compiling",),
    ("cellpipe.rundir",),
    ("cellpipe.execution", "cellpipe.reports"),
    ("cellpipe.backends",),
    ("cellpipe.driving",),
    ("cellpipe.cli", "cellpipe.ipython", "cellpipe_server"),
    ("cellpipe", "cellpipe.__main__", "cellpipe.runner"),
]
#: Where an import points up on purpose, and why (each also in docs/design.md).
UPWARD = {
    # The pod side of the Argo result protocol: imports only core and compiling itself.
    ("cellpipe.execution.runner", "cellpipe.backends.argo.trailer"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for root in ROOTS.values():
        for f in sorted(root.rglob("*.py")):
            parts = list(f.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            targets = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix
                for a in node.names
            ]
        else:
            continue
        for t in targets:
            known = _known(t)
            if known and known != module:
                out.add(known)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert _cycles(GRAPH) == []


def test_the_cycle_check_sees_imports_inside_functions_but_not_type_checking_ones(tmp_path):
    # The rule's own specification, on a two-module package built for it.
    source = {
        "a": "def f():\n    from pkg import b\n",
        "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "c": "import pkg.a\n",
    }
    for name, text in source.items():
        MODULES[f"pkg.{name}"] = tmp_path / f"{name}.py"
        (tmp_path / f"{name}.py").write_text(text)
    try:
        graph = {f"pkg.{n}": _imports(f"pkg.{n}") for n in source}
        assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": set(), "pkg.c": {"pkg.a"}}
        (tmp_path / "b.py").write_text("from pkg import c\n")
        graph = {f"pkg.{n}": _imports(f"pkg.{n}") for n in source}
        assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    finally:
        for name in source:
            del MODULES[f"pkg.{name}"]


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"{module} is in no layer of LAYERS: add it (and to design.md)"
    return best


def test_imports_point_down_the_layers():
    upward = sorted(
        (m, t)
        for m, targets in GRAPH.items()
        for t in targets
        if _layer(t) > _layer(m) and (m, t) not in UPWARD
    )
    assert upward == []


# -- the run directory's names ------------------------------------------------------------------

#: A name with a dot or underscore (``events.jsonl``, ``cache_key``) is a file of the run
#: wherever it is written; a plain word (``data``, ``logs``) only where a path is built with
#: it, since the same words are keys of JSON documents (a cell's ``outputs``).
NAMES = layout.names()
FILE_NAMES = {n for n in NAMES if not re.fullmatch(r"[a-z]+", n)}
FOLDER_NAMES = NAMES - FILE_NAMES
#: Strings that look like a run directory's names but are not about one.
NOT_THE_RUN_DIRECTORY = {
    ("cellpipe.backends.docker.build", ".cache"),  # the user's cache (XDG), for wheels
    # REST routes: /runs/<id>/steps/<step>/outputs
    ("cellpipe_server.handlers", "/steps/"),
    ("cellpipe_server.handlers", "/outputs"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _path_contexts(tree: ast.AST) -> set[int]:
    """ids of string constants used to build a path: ``x / "data"``, ``"data" / x``, and the
    arguments of ``Path(...)``, ``.joinpath(...)`` and ``os.path.join(...)``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            out.update((id(node.left), id(node.right)))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")
            if name in ("Path", "PurePath", "PurePosixPath", "joinpath", "join"):
                out.update(id(a) for a in node.args)
    return out


def layout_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of each string in ``path``'s code that names a file of a run directory."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs, paths = _docstrings(tree), _path_contexts(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in docs:
            continue
        segments = set(node.value.split("/"))
        if segments & FILE_NAMES or (
            segments & FOLDER_NAMES and ("/" in node.value or id(node) in paths)
        ):
            yield node.lineno, node.value


def test_the_layout_names_every_file_of_a_run_directory():
    # The list the next test enforces is read from the layout module; make sure it is whole.
    assert {"run.json", "events.jsonl", "pipeline.json", "driver.json", "manifest.json"} <= NAMES
    assert {"metrics.json", "notebook.ipynb", "logs", "outputs", "steps", "data"} <= NAMES
    assert {"gate.json", "lineage.json", "cache_key", "reports", "report.html", ".go"} <= NAMES


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m != OWNER and not m.startswith(OWNER + "."))
)
def test_only_the_run_directory_spells_out_its_file_names(module):
    rel = MODULES[module].relative_to(REPO)
    found = [
        f"{rel}:{line}: {text!r}"
        for line, text in layout_literals(MODULES[module])
        if (module, text) not in NOT_THE_RUN_DIRECTORY
    ]
    assert found == [], "ask a RunDir (cellpipe.rundir.runs) instead"


def test_the_literal_check_catches_paths_built_by_hand(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        '"""Writes events.jsonl (a docstring may say so)."""\n'
        'a = rd.path / "driver.json"\n'
        'b = rd.path / "logs" / f"{step}.log"\n'
        'c = f"{RUN_DIR}/data/{step}"\n'
        'd = {"outputs": [], "data": {}}\n'
    )
    assert sorted(line for line, _ in layout_literals(f)) == [2, 3, 4]
