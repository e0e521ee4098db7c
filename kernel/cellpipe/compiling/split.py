"""Split a notebook into steps at its markdown headings.

One function decides the split for the sidebar's preview (``POST /split``) and for
``cellpipe tag --at-headings``: each markdown heading of level ``level`` or above starts a
step named from its text, the code cells before the first heading form ``setup``, and code
cells that only import become ``imports`` cells (run at the start of every step). The
result is a plan; nothing is written until the caller applies it.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cellpipe.compiling.notebook import _cell_id, _source, _tags, k8s_name

#: Default heading level: ``#`` and ``##`` headings start steps, ``###`` and below do not.
DEFAULT_LEVEL = 2
#: The step made of the code cells before the first heading.
SETUP_STEP = "setup"
_MAX_NAME = 40

_STEP_PREFIXES = ("step:", "block:")
_PREV_PREFIXES = ("prev:", "after:")
_ROLE_TAGS = ("imports", "functions", "parameters", "pipeline-parameters", "skip")
_METRICS_TAGS = ("metrics", "pipeline-metrics")

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class SplitStep:
    """A step the split creates: its name, the heading it comes from, its code cells."""

    name: str
    heading: str | None  # None for ``setup``
    cells: tuple[str, ...]  # cell ids, notebook order
    numbers: tuple[int, ...]  # 1-based cell numbers

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "heading": self.heading,
            "cells": list(self.cells),
            "numbers": list(self.numbers),
        }


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """What splitting at headings would do to a notebook's tags.

    ``tags`` holds the new tags of every cell whose tags change, by cell id.
    """

    level: int
    steps: tuple[SplitStep, ...]
    imports: tuple[str, ...]  # ids of the cells that become ``imports``
    tags: dict[str, list[str]]

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "steps": [s.to_json() for s in self.steps],
            "imports": list(self.imports),
            "tags": {k: list(v) for k, v in self.tags.items()},
        }


def split_at_headings(nb: Mapping[str, Any], level: int = DEFAULT_LEVEL) -> SplitPlan:
    """Plan the split of ``nb`` (notebook JSON) into steps at its markdown headings.

    Parameters
    ----------
    nb
        The notebook as JSON data (a v4 notebook; ``read_notebook`` checks one).
    level
        Headings of this level or above (``#`` is 1) start a step; 1 to 6.

    Returns
    -------
    SplitPlan
        The steps in notebook order, with names made from the heading text (lowercase,
        ``_`` between words, starting with a letter, unique also as Kubernetes names), and
        the new tags of each cell that changes. Existing step and ``prev:`` tags are
        replaced (the split is the new pipeline; its edges come from the data flow); role,
        metrics, resource and other tools' tags are kept. Pure: ``nb`` is not changed.

    Raises
    ------
    ValueError
        When ``level`` is not 1 to 6.
    """
    if not 1 <= level <= 6:
        raise ValueError(f"heading level must be 1 to 6, not {level}")
    cells = list(nb.get("cells") or [])
    prefix = _step_prefix(cells)
    used: set[str] = set()
    # Sections in order: (heading or None, [(cell index, cell)]).
    sections: list[tuple[str | None, list[int]]] = [(None, [])]
    imports: list[str] = []
    new_tags: dict[str, list[str]] = {}
    ids = _cell_ids(cells)

    for index, cell in enumerate(cells):
        kind = cell.get("cell_type")
        if kind == "markdown":
            heading = _heading(_source(cell), level)
            if heading is not None:
                sections.append((heading, []))
            continue
        if kind != "code":
            continue
        tags = _tags(cell)
        kept = [t for t in tags if not t.startswith(_STEP_PREFIXES + _PREV_PREFIXES)]
        source = _source(cell)
        if any(t in _ROLE_TAGS for t in tags) or not source.strip():
            new_tags[ids[index]] = kept  # a role or empty cell belongs to no step
        elif _only_imports(source):
            imports.append(ids[index])
            new_tags[ids[index]] = ["imports", *kept]
        else:
            sections[-1][1].append(index)

    steps: list[SplitStep] = []
    for number, (heading, members) in enumerate(sections):
        if not members:
            continue
        name = _unique(_name(heading, number), used)
        steps.append(
            SplitStep(name, heading, tuple(ids[i] for i in members), tuple(i + 1 for i in members))
        )
        for position, i in enumerate(members):
            tags = _tags(cells[i])
            kept = [t for t in tags if not t.startswith(_STEP_PREFIXES + _PREV_PREFIXES)]
            # A later metrics cell without a step tag would start a step `metrics`: name ours.
            starts = position == 0 or any(t in _METRICS_TAGS for t in tags)
            new_tags[ids[i]] = [prefix + name, *kept] if starts else kept

    changed = {
        ids[i]: new_tags[ids[i]]
        for i, c in enumerate(cells)
        if ids[i] in new_tags and new_tags[ids[i]] != _tags(c)
    }
    return SplitPlan(level, tuple(steps), tuple(imports), changed)


def apply_split(nb: Mapping[str, Any], plan: SplitPlan) -> dict[str, Any]:
    """A copy of ``nb`` with the plan's tags written (a cell left with none loses the key)."""
    out = dict(nb)
    ids = _cell_ids(list(nb.get("cells") or []))
    cells = []
    for index, cell in enumerate(nb.get("cells") or []):
        tags = plan.tags.get(ids[index])
        if tags is None:
            cells.append(cell)
            continue
        metadata = dict(cell.get("metadata") or {})
        if tags:
            metadata["tags"] = list(tags)
        else:
            metadata.pop("tags", None)
        cells.append({**cell, "metadata": metadata})
    out["cells"] = cells
    return out


# -- headings ------------------------------------------------------------------------------


def _heading(markdown: str, level: int) -> str | None:
    """The text of the cell's first heading of ``level`` or above, outside code blocks."""
    fence: str | None = None
    previous = ""
    for line in markdown.splitlines():
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            previous = ""
            continue
        if opened:
            fence = opened.group(1)
            previous = ""
            continue
        atx = _ATX.match(line)
        if atx:
            if len(atx.group(1)) <= level:
                return _plain(atx.group(2) or "")
            previous = ""
            continue
        setext = _SETEXT.match(line)
        if setext and previous.strip() and not previous.startswith((" " * 4, "\t")):
            depth = 1 if setext.group(1)[0] == "=" else 2
            if depth <= level:
                return _plain(previous)
        previous = line
    return None


def _plain(text: str) -> str:
    """Heading text without its Markdown: links keep their text, emphasis and code marks go."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[*_`~]+", "", text)
    return " ".join(text.split())


def _name(heading: str | None, number: int) -> str:
    if heading is None:
        return SETUP_STEP
    ascii_text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    slug = re.sub(r"^[0-9_]+", "", slug)  # "1. Load data" -> "load_data"
    slug = slug[:_MAX_NAME].rstrip("_")
    return slug or f"section_{number}"


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``...: unique also once it becomes a Kubernetes name."""
    candidate, n = name, 1
    while k8s_name(candidate) in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(k8s_name(candidate))
    return candidate


# -- cells ---------------------------------------------------------------------------------


def _only_imports(source: str) -> bool:
    from cellpipe.compiling.analysis import transform

    try:
        tree = ast.parse(transform(source))
    except SyntaxError:
        return False
    return bool(tree.body) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)


def _step_prefix(cells: list[Any]) -> str:
    """``step:``, or Kale's ``block:`` when the notebook uses only that."""
    block = False
    for cell in cells:
        for t in _tags(cell):
            if t.startswith("step:"):
                return "step:"
            block = block or t.startswith("block:")
    return "block:" if block else "step:"


def _cell_ids(cells: list[Any]) -> list[str]:
    """Each cell's id as the compiler names it (``cell-N`` for a cell without one)."""
    used: set[str] = set()
    return [_cell_id(cell, index, used) for index, cell in enumerate(cells)]
