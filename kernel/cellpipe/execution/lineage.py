"""Lineage: where every stored value came from.

When a step saves its values the runner also records their lineage next to them
(``RunDir.write_lineage``): the run and step that computed them, the hash of the step's code
and of the prelude, the parameter values, and for each input the step it came from, the run
that computed it and its hash. The record sits next to the values, so a step reused from the cache keeps pointing at the run
that really computed it. :func:`ancestry` follows the inputs back, step by step, to the
steps that read nothing but the parameters (``cellpipe lineage RUN_ID STEP NAME``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.core.model import Pipeline, Step
from cellpipe.core.pseudo import is_file, is_pseudo
from cellpipe.rundir import layout
from cellpipe.rundir.runs import RunDir, effective_parameters

#: Names through which code can reach any global by name: a step using one may see every
#: parameter, whatever names it spells out.
_DYNAMIC = frozenset(
    {
        "globals",
        "locals",
        "vars",
        "eval",
        "exec",
        "dir",
        "get_ipython",
        "__main__",
        "__builtins__",
        "__import__",
        "importlib",
        "inspect",
    }
)


def parameters_read(pipeline: Pipeline, step: Step) -> frozenset[str] | None:
    """The parameters whose values ``step`` can observe; None when that cannot be told
    (then it depends on all of them).

    Every step runs the parameters cell, but a step that never mentions ``lr`` (nor a
    parameter computed from it, nor a prelude name that could hide it) computes the same
    whatever ``lr`` is, so a new ``lr`` must not make it run again: this is what lets
    ``cellpipe serve`` re-execute only the steps that depend on a request's parameters.
    The answer is conservative: mentioning a name anywhere counts as reading it.
    """
    from cellpipe.compiling.analysis import transform
    from cellpipe.core.model import Role

    names = {p.name for p in pipeline.parameters}
    if not names:
        return frozenset()
    # A parameter computed from others (`steps = 2 * epochs`) carries their values.
    influence = {n: {n} for n in names}
    for cell in pipeline.prelude:
        mentioned = _mentions(transform(cell.source))
        if mentioned is None:
            return None
        if cell.role is Role.PARAMETERS:
            if not _only_assignments(transform(cell.source)):
                return None  # it does more than assign values: anything may depend on it
            continue
        if mentioned & (names | _DYNAMIC):
            return None  # an imports/functions cell uses a parameter: every step may see it
    for p in pipeline.parameters:
        if p.type == "expression":
            reads = _mentions(p.expression)
            if reads is None or reads & _DYNAMIC:
                return None
            for other in reads & names:
                influence[other].add(p.name)
    changed = True
    while changed:  # close over chains: a -> b -> c
        changed = False
        for reached in influence.values():
            more = set().union(*(influence[m] for m in reached)) - reached
            if more:
                reached |= more
                changed = True
    used: set[str] = set()
    for cell in pipeline.step_cells(step.name):
        if cell.kind != "code" or cell.role is not Role.STEP:
            continue
        mentioned = _mentions(transform(cell.source))
        if mentioned is None or mentioned & _DYNAMIC:
            return None
        used |= mentioned
    return frozenset(n for n in names if influence[n] & used)


def _mentions(source: str) -> set[str] | None:
    """Every identifier ``source`` spells (None when it does not parse)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.isidentifier():
                found.add(node.value)  # getattr(module, "lr"), sys.modules["__main__"]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.update(node.names)
    return found


def _only_assignments(source: str) -> bool:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            continue
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        return False
    return True


def code_sha256(sources: Iterable[str]) -> str:
    h = hashlib.sha256()
    for source in sources:
        h.update(source.encode())
        h.update(b"\0")
    return h.hexdigest()


def record_lineage(rd: RunDir, step: Step, values: Mapping[str, str]) -> None:
    """Write ``data/<step>/lineage.json`` for the values just saved (name -> sha256)."""
    pipeline = rd.pipeline()
    inputs: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, Any]] = {}
    for inp in rd.step_inputs(step):
        if inp.producer not in origins:
            origins[inp.producer] = rd.lineage(inp.producer) if inp.saved else {}
        inputs[inp.name] = {
            "step": inp.producer,
            "run": origins[inp.producer].get("run", rd.run_id),
            "sha256": inp.record.sha256 if inp.record else None,
        }
    rd.write_lineage(
        step.name,
        {
            "run": rd.run_id,
            "step": step.name,
            "created_at": time.time(),
            "notebook": rd.info().get("notebook"),
            "notebook_sha256": pipeline.notebook_sha256,
            "code_sha256": code_sha256(c.source for c in pipeline.step_cells(step.name)),
            "prelude_sha256": code_sha256(c.source for c in pipeline.prelude),
            "parameters": effective_parameters(pipeline, rd.info().get("parameters") or {}),
            "inputs": inputs,
            "values": dict(values),
        },
    )


@dataclass
class Origin:
    """One value and the step that made it; ``inputs`` are the values that step read."""

    name: str
    step: str
    run: str  # the run asked about
    computed_in: str  # the run that executed the step (differs when it was cached)
    type: str
    sha256: str
    info: dict[str, Any]
    code_sha256: str
    parameters: dict[str, Any]
    inputs: list[Origin] = field(default_factory=list)
    stored: bool = True  # False for a file hand-off or a name the producer left unset

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": self.step,
            "run": self.run,
            "computed_in": self.computed_in,
            "type": self.type,
            "sha256": self.sha256,
            "info": self.info,
            "code_sha256": self.code_sha256,
            "parameters": self.parameters,
            "inputs": [i.to_json() for i in self.inputs],
            "stored": self.stored,
        }


def ancestry(root: Path, run_id: str, step: str, name: str) -> Origin:
    """The value ``name`` saved by ``step`` in run ``run_id``, and recursively its inputs.

    Raises RunNotFound for an unknown run, KeyError naming what exists otherwise.
    """
    rd = RunDir.open(root, run_id)
    steps = [s.name for s in rd.pipeline().steps]
    if step not in steps:
        raise KeyError(f"run {run_id} has no step {step!r}; steps: {', '.join(steps)}")
    return _origin(rd, step, name, set())


def _origin(rd: RunDir, step: str, name: str, seen: set[tuple[str, str]]) -> Origin:
    try:
        manifest = rd.saved_records(step)
    except FileNotFoundError:
        raise KeyError(
            f"step {step} of run {rd.run_id} saved no values (it did not succeed, or no later "
            "step reads anything it defines)"
        ) from None
    if name not in manifest:
        saved = ", ".join(n for n in manifest if not is_pseudo(n)) or "nothing"
        raise KeyError(f"step {step} of run {rd.run_id} saved no `{name}`; it saved: {saved}")
    lineage = rd.lineage(step)
    if not lineage:
        raise KeyError(
            f"run {rd.run_id} predates lineage records: step {step} has no {layout.LINEAGE}"
        )
    record = manifest[name]
    node = Origin(
        name=name,
        step=step,
        run=rd.run_id,
        computed_in=lineage.get("run", rd.run_id),
        type=record.type,
        sha256=record.sha256,
        info=dict(record.info),
        code_sha256=lineage.get("code_sha256", ""),
        parameters=dict(lineage.get("parameters") or {}),
    )
    seen = seen | {(step, name)}
    for input_name, source in (lineage.get("inputs") or {}).items():
        key = (source["step"], input_name)
        if key in seen:
            continue  # a cycle cannot happen in a DAG; guard against a hand-edited record
        if source.get("sha256") is None:
            # A file hand-off (the file is the value), or a name the producer left unset.
            kind = "file" if is_file(input_name) else "unset on this run"
            node.inputs.append(
                Origin(
                    input_name,
                    source["step"],
                    rd.run_id,
                    source.get("run", rd.run_id),
                    kind,
                    "",
                    {},
                    "",
                    {},
                    stored=False,
                )
            )
            continue
        node.inputs.append(_origin(rd, source["step"], input_name, seen))
    return node


def render(origin: Origin) -> Any:
    """A rich Tree of the ancestry, the parameters at its root."""
    from rich.markup import escape
    from rich.tree import Tree

    def label(o: Origin) -> str:
        shape = ", ".join(f"{k} {v}" for k, v in o.info.items() if k in ("shape", "dtype"))
        cached = f", cached from run {o.computed_in}" if o.computed_in != o.run else ""
        return (
            f"[bold]{escape(o.name)}[/] ({escape(o.type)}{', ' + escape(shape) if shape else ''}"
            f", sha256 {o.sha256[:12]})\n"
            f"made by step [bold]{escape(o.step)}[/] (code sha256 {o.code_sha256[:12]}{cached})"
        )

    def add(tree: Tree, o: Origin) -> None:
        if not o.stored:
            tree.add(f"[bold]{escape(o.name)}[/] ({o.type}) from step {escape(o.step)}")
            return
        branch = tree.add(label(o))
        for i in o.inputs:
            add(branch, i)
        if not o.inputs:
            branch.add("[dim]reads no earlier step: only the prelude and the parameters[/]")

    params = ", ".join(f"{k}={v!r}" for k, v in origin.parameters.items()) or "none"
    root = Tree(f"run [bold]{origin.run}[/] · parameters: {escape(params)}")
    add(root, origin)
    return root
