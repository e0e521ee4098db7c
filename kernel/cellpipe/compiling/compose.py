"""Notebook composition: a cell that stands for another notebook, inlined before compiling.

Two spellings mean the same thing:

* Kale 2.3's: a code cell tagged ``notebook:NAME`` whose metadata key ``notebook_path`` holds
  the referenced notebook's path, relative to the referencing notebook; the cell holds
  nothing but comments;
* Jupyter's: a cell whose only code is ``%run other.ipynb`` (NAME is the file's stem).

The meaning is "Restart and Run All" of the main notebook with each such cell replaced by the
referenced notebook's cells, so that is what :func:`inline` builds: one flat notebook that the
rest of the compiler reads like any other. The referenced notebook's steps are qualified by
NAME (``notebook_a.train``; nested parts ``a.b.train``), its ``imports``/``functions`` cells
stay preludes, and its parameters cell loses the assignments an enclosing notebook's
parameters cell already makes (the main notebook sets them for the whole pipeline).

Each inlined cell keeps where it came from under ``metadata.cellpipe_origin`` (the part, the
notebook, its number and id there, its original tags), and each referencing cell stays in
place as a ``raw`` cell carrying the original cell and the notebook's metadata. From those,
:func:`split_executed` turns an executed flat notebook back into the executed main notebook
and one executed notebook per part, and :func:`locate` reports a problem in an inlined cell
by the notebook and cell number a person can find.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellpipe.core.errors import Diagnostic, NotebookError

#: How many notebooks deep references may go (main -> a -> b -> c). Deeper is refused: a
#: pipeline of notebooks four levels down is more likely a mistake than a design.
MAX_DEPTH = 3
#: The metadata key of an inlined cell's provenance.
ORIGIN = "cellpipe_origin"
#: The metadata key of a referencing cell kept (as a raw cell) in the flat notebook.
REFERENCE = "cellpipe_reference"

_PART_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_RUN = re.compile(r"""^%run\s+(?P<q>["']?)(?P<path>[^\s"']+\.ipynb)(?P=q)\s*$""")
_STEP_PREFIXES = ("step:", "block:")
_PREV_PREFIXES = ("prev:", "after:")
_ROLE_TAGS = frozenset({"imports", "functions", "parameters", "pipeline-parameters", "skip"})
_METRICS_TAGS = frozenset({"metrics", "pipeline-metrics"})
_PARAMETER_TAGS = frozenset({"parameters", "pipeline-parameters"})


@dataclass
class Inlined:
    """The flat notebook, and the problems found while building it."""

    nb: dict[str, Any]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    composed: bool = False  # whether any cell referred to another notebook


def reference(cell: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(kind, name, path)`` when ``cell`` stands for another notebook, else None.

    ``kind`` is ``"tag"`` (Kale's ``notebook:NAME``) or ``"run"`` (``%run x.ipynb``); the
    path is as written, relative to the referencing notebook. A ``notebook:`` tag without
    ``notebook_path`` gives an empty path (the caller reports it).
    """
    if cell.get("cell_type") != "code":
        return None
    meta = cell.get("metadata") or {}
    for tag in meta.get("tags") or ():
        tag = str(tag).strip()
        if tag.startswith("notebook:"):
            return "tag", tag.split(":", 1)[1], str(meta.get("notebook_path") or "")
    lines = [ln.strip() for ln in _source(cell).splitlines()]
    code = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(code) == 1:
        m = _RUN.match(code[0])
        if m:
            path = m.group("path")
            return "run", _stem_name(Path(path).stem), path
    return None


def inline(
    nb: Mapping[str, Any], base: Path | None, *, label: str = "notebook", executed: bool = False
) -> Inlined:
    """The notebook with every reference replaced by the notebook it names, recursively.

    ``base`` is the folder relative paths start from (the notebook's own folder; None: the
    working directory). A notebook without references comes back unchanged (the same dict).
    With ``executed``, a reference whose cell records ``metadata.cellpipe.executed_notebook``
    (the executed copy ``--output`` wrote beside the main one) is read from that file, so
    an executed main notebook inlines to the executed run.
    """
    if not any(reference(c) for c in nb.get("cells", ())):
        return Inlined(dict(nb))
    out = Inlined(copy.deepcopy(dict(nb)), composed=True)
    base = base or Path.cwd()
    out.nb["cells"] = _expand(
        nb,
        base,
        part=None,
        stack=[(label, _identity(base, label))],
        diags=out.diagnostics,
        executed=executed,
        declared=set(),
        ref_cell=None,
    )
    return out


def _expand(
    nb: Mapping[str, Any],
    base: Path,
    *,
    part: str | None,
    stack: list[tuple[str, str]],
    diags: list[Diagnostic],
    executed: bool,
    declared: set[str],
    ref_cell: int | None,
) -> list[dict[str, Any]]:
    """``nb``'s cells, flat, with step tags qualified by ``part`` and references expanded.

    ``declared`` holds the parameter names enclosing notebooks' parameters cells assign;
    ``ref_cell`` is the main notebook's cell that (through any levels) brought ``nb`` in.
    """
    where = stack[-1][0]
    cells: list[dict[str, Any]] = []
    current: str | None = None
    parts: dict[str, int] = {}
    own_steps = _own_steps(nb)
    own_declared = set(declared)
    for index, raw in enumerate(nb.get("cells", ())):
        number = index + 1
        cell = copy.deepcopy(dict(raw))
        tags = [str(t).strip() for t in (cell.get("metadata") or {}).get("tags") or ()]
        cid = str(cell.get("id") or f"cell-{number}")
        top = ref_cell if ref_cell is not None else number
        ref = reference(cell)
        if ref is not None:
            cells += _expand_reference(
                cell,
                ref,
                number,
                cid,
                base,
                part=part,
                stack=stack,
                diags=diags,
                executed=executed,
                declared=own_declared,
                top=top,
                parts=parts,
                own_steps=own_steps,
            )
            continue
        for t in tags:
            if t.startswith(_STEP_PREFIXES) and "." in t.split(":", 1)[1]:
                diags.append(
                    _err(
                        "invalid-step-name",
                        f"{_in(where, number, part)}step name `{t.split(':', 1)[1]}` has a `.`: "
                        "the dot is kept for steps of referenced notebooks "
                        "(`notebook_a.train`); use `_` or `-`",
                        top,
                        cid,
                        name=t,
                    )
                )
        meta = cell.setdefault("metadata", {})
        if cell.get("cell_type") == "code":
            is_step = (
                bool(_source(cell).strip())
                and not any(t in _ROLE_TAGS for t in tags)
                and not any(t.startswith("notebook:") for t in tags)
            )
            if is_step:
                named = [t.split(":", 1)[1] for t in tags if t.startswith(_STEP_PREFIXES)]
                if named:
                    current = named[0]
                elif any(t in _METRICS_TAGS for t in tags) and current != "metrics":
                    current = "metrics"
                elif current is None:
                    current = "main"
                new_tags = [t for t in tags if not t.startswith(_STEP_PREFIXES)]
                new_tags = [_qualify_prev(t, part, own_steps) for t in new_tags]
                meta["tags"] = [f"step:{_qualified(part, current)}", *new_tags]
            if _PARAMETER_TAGS & set(tags):
                if part is not None and declared:
                    cell["source"] = _without_assignments(_source(cell), declared, where)
                own_declared |= _assigned_names(_source(cell))
        meta[ORIGIN] = {
            "part": part,
            "notebook": where,
            "cell": number,
            "id": cid,
            "tags": tags,
            "ref_cell": top,
        }
        if part is not None:
            cell["id"] = _flat_id(part, cid)
        cells.append(cell)
    return cells


def _expand_reference(
    cell: dict[str, Any],
    ref: tuple[str, str, str],
    number: int,
    cid: str,
    base: Path,
    *,
    part: str | None,
    stack: list[tuple[str, str]],
    diags: list[Diagnostic],
    executed: bool,
    declared: set[str],
    top: int,
    parts: dict[str, int],
    own_steps: set[str],
) -> list[dict[str, Any]]:
    kind, name, rel = ref
    where = stack[-1][0]
    spelled = f"`notebook:{name}`" if kind == "tag" else f"`%run {rel}`"
    here = _in(where, number, part)

    def fail(code: str, why: str) -> list[dict[str, Any]]:
        diags.append(_err(code, f"{here}{spelled}: {why}", top, cid, name=name))
        return []

    if not _PART_NAME.match(name):
        return fail(
            "invalid-notebook-name",
            f"`{name}` cannot name a part of the pipeline: use letters, digits, `_` and `-`, "
            "starting with a letter",
        )
    if kind == "tag" and not rel:
        return fail("missing-notebook", "the cell has no `notebook_path` in its metadata")
    if kind == "tag":
        code = [
            ln for ln in _source(cell).splitlines() if ln.strip() and not ln.strip().startswith("#")
        ]
        if code:
            return fail(
                "code-in-notebook-cell",
                "the cell stands for the whole notebook and must hold comments only; move "
                f"`{code[0].strip()}` to a cell of its own",
            )
    if name in parts:
        return fail(
            "duplicate-notebook-name",
            f"the name `{name}` is already used by cell {parts[name]}; give each referenced "
            "notebook its own name",
        )
    if name in own_steps:
        return fail(
            "duplicate-notebook-name",
            f"`{name}` is also a step of {where}; rename the step or the notebook reference",
        )
    parts[name] = number
    qualified = _qualified(part, name)
    path = (base / rel).resolve()
    executed_copy = ((cell.get("metadata") or {}).get("cellpipe") or {}).get("executed_notebook")
    if executed and executed_copy:
        path = (base / executed_copy).resolve()
    identity = str(path)
    chain = [label for label, _ in stack]
    if identity in [i for _, i in stack]:
        loop = [*chain[[i for _, i in stack].index(identity) :], rel]
        return fail("notebook-cycle", "notebooks refer to each other: " + " -> ".join(loop))
    if len(stack) > MAX_DEPTH:
        return fail(
            "notebooks-too-deep",
            f"references nest more than {MAX_DEPTH} notebooks deep "
            f"({' -> '.join([*chain, rel])}); cellpipe supports {MAX_DEPTH} levels",
        )
    from cellpipe.compiling.notebook import read_notebook

    try:
        sub, _ = read_notebook(path)
    except NotebookError as exc:
        message = str(exc).replace(str(path), rel, 1)
        return fail("unreadable-notebook", f"cannot use the referenced notebook: {message}")
    label = _relative(where, rel)
    inner = _expand(
        sub,
        path.parent,
        part=qualified,
        stack=[*stack, (label, identity)],
        diags=diags,
        executed=executed,
        declared=declared,
        ref_cell=top,
    )
    placeholder = {
        "cell_type": "raw",
        "id": _flat_id(qualified, "ref") if part is None else _flat_id(part, cid),
        "metadata": {
            REFERENCE: {
                "part": qualified,
                "parent": part,
                "notebook": label,
                "cell": copy.deepcopy(cell),
                "metadata": copy.deepcopy(sub.get("metadata", {})),
                "nbformat_minor": sub.get("nbformat_minor", 5),
            },
            ORIGIN: {
                "part": part,
                "notebook": where,
                "cell": number,
                "id": cid,
                "tags": [],
                "ref_cell": top,
            },
        },
        "source": f"# notebook {label} (part {qualified}) runs here\n",
    }
    return [placeholder, *inner]


def locate(nb: Mapping[str, Any], diag: Diagnostic) -> Diagnostic:
    """``diag``, about a cell of the flat notebook, told in the notebook the cell came from:
    the cell number becomes the main notebook's (the referencing cell's, for an inlined
    one) and the message starts with the referenced notebook and its own cell number."""
    if diag.cell is None:
        return diag
    cells = nb.get("cells", ())
    if not 0 < diag.cell <= len(cells):
        return diag
    origin = (cells[diag.cell - 1].get("metadata") or {}).get(ORIGIN)
    if not origin:
        return diag
    if origin["part"] is None:
        return replace(diag, cell=origin["cell"])
    prefix = f"{origin['notebook']} cell {origin['cell']}: "
    message = diag.message if diag.message.startswith(prefix) else prefix + diag.message
    return replace(diag, cell=origin["ref_cell"], message=message)


def group_of(step: str) -> str | None:
    """The part a qualified step belongs to (``a.b`` for ``a.b.train``); None: the main
    notebook's own step."""
    return step.rpartition(".")[0] or None


def part_notebooks(nb: Mapping[str, Any]) -> dict[str, str]:
    """Each part of a flat notebook -> its notebook's path (relative to the main one)."""
    out = {}
    for c in nb.get("cells", ()):
        ref = (c.get("metadata") or {}).get(REFERENCE)
        if ref:
            out[ref["part"]] = ref["notebook"]
    return out


def split_executed(flat: Mapping[str, Any], dest: Path) -> dict[Path, dict[str, Any]]:
    """An executed flat notebook -> ``{file: notebook}``: the executed main notebook at
    ``dest`` and, beside it, ``<dest stem>.<part>.ipynb`` for each part, every cell back in
    the notebook it came from with its own id and tags. Each referencing cell of the
    executed copies names the executed part under ``metadata.cellpipe.executed_notebook``,
    so :func:`inline` with ``executed=True`` rebuilds the executed flat notebook."""
    if not any((c.get("metadata") or {}).get(ORIGIN) for c in flat.get("cells", ())):
        return {dest: dict(flat)}
    files: dict[str | None, Path] = {None: dest}
    bodies: dict[str | None, list[dict[str, Any]]] = {None: []}
    headers: dict[str | None, dict[str, Any]] = {
        None: {k: v for k, v in flat.items() if k != "cells"}
    }
    run = ((flat.get("metadata") or {}).get("cellpipe") or {}).get("run")
    for raw in flat.get("cells", ()):
        cell = copy.deepcopy(dict(raw))
        meta = cell.get("metadata") or {}
        ref = meta.get(REFERENCE)
        if ref:
            file = dest.with_name(f"{dest.stem}.{ref['part']}.ipynb")
            files[ref["part"]] = file
            bodies[ref["part"]] = []
            md = copy.deepcopy(ref["metadata"])
            if run:
                md.setdefault("cellpipe", {})
                md["cellpipe"] = {**md["cellpipe"], "run": run}
            headers[ref["part"]] = {
                "metadata": md,
                "nbformat": 4,
                "nbformat_minor": max(ref["nbformat_minor"], 5),
            }
            original = copy.deepcopy(ref["cell"])
            original["outputs"] = []
            original["execution_count"] = None
            original.setdefault("metadata", {})["cellpipe"] = {
                **({"run_id": run["run_id"]} if run else {}),
                "executed_notebook": file.name,
            }
            bodies.setdefault(ref["parent"], []).append(original)
            continue
        origin = meta.pop(ORIGIN, None)
        if origin is None:
            bodies[None].append(cell)
            continue
        cell["id"] = origin["id"]
        if cell.get("cell_type") == "code" or origin["tags"]:
            if origin["tags"]:
                meta["tags"] = origin["tags"]
            else:
                meta.pop("tags", None)
        bodies.setdefault(origin["part"], []).append(cell)
    out = {}
    for part, file in files.items():
        out[file] = {"cells": bodies.get(part, []), **headers[part]}
    return out


# -- helpers --------------------------------------------------------------------------------


def _qualified(part: str | None, name: str) -> str:
    return f"{part}.{name}" if part else name


def _qualify_prev(tag: str, part: str | None, own_steps: set[str]) -> str:
    if part is None or not tag.startswith(_PREV_PREFIXES):
        return tag
    prefix, _, name = tag.partition(":")
    return f"{prefix}:{part}.{name}" if name in own_steps else tag


def _own_steps(nb: Mapping[str, Any]) -> set[str]:
    """The step names a notebook's own cells give (explicit tags and the implicit ones)."""
    steps: set[str] = set()
    for c in nb.get("cells", ()):
        if c.get("cell_type") != "code":
            continue
        tags = [str(t).strip() for t in (c.get("metadata") or {}).get("tags") or ()]
        steps |= {t.split(":", 1)[1] for t in tags if t.startswith(_STEP_PREFIXES)}
        if any(t in _METRICS_TAGS for t in tags):
            steps.add("metrics")
    return steps | {"main"}


def _flat_id(part: str, cid: str) -> str:
    """A cell id unique in the flat notebook and valid for nbformat (``[A-Za-z0-9_-]``,
    at most 64 characters)."""
    flat = re.sub(r"[^A-Za-z0-9_-]", "-", part.replace(".", "--")) + "--" + cid
    if len(flat) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", flat):
        return flat
    return "part-" + hashlib.sha256(flat.encode()).hexdigest()[:24]


def _stem_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    return name if name[:1].isalpha() else f"nb_{name}"


def _relative(where: str, rel: str) -> str:
    """``rel`` (relative to the notebook ``where``) as a path relative to the main one."""
    parent = Path(where).parent
    joined = Path(rel) if str(parent) in ("", ".") or where == "notebook" else parent / rel
    parts: list[str] = []
    for p in joined.parts:
        if p == ".":
            continue
        if p == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(p)
    return "/".join(parts) or rel


def _identity(base: Path, label: str) -> str:
    path = Path(label)
    return str((base / path.name).resolve()) if path.suffix == ".ipynb" else f"<{label}>"


def _in(where: str, number: int, part: str | None) -> str:
    return f"{where} cell {number}: " if part is not None else ""


def _assigned_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _without_assignments(source: str, names: set[str], where: str) -> str:
    """The parameters cell less the top-level assignments of ``names``: an enclosing
    notebook sets those for the whole pipeline, as Kale passes them down."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source  # the compiler reports it
    lines = source.splitlines(keepends=True)
    drop: list[tuple[int, int, list[str]]] = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        ids = [t.id for t in targets if isinstance(t, ast.Name)]
        if ids and len(ids) == len(targets) and set(ids) <= names:
            drop.append((node.lineno, node.end_lineno or node.lineno, ids))
    for start, end, ids in reversed(drop):
        note = f"# {', '.join(ids)}: set by the notebook that uses {Path(where).name}\n"
        lines[start - 1 : end] = [note]
    return "".join(lines)


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _err(code: str, message: str, cell: int, cid: str, **kw: Any) -> Diagnostic:
    return Diagnostic(code, message, "error", cell, cid, **kw)
