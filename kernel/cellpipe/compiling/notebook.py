"""Read a notebook and turn its cell tags into cells with roles, steps and settings.

Tags and ``metadata.cellpipe`` are parsed here and nowhere else. The grammar is DESIGN's;
Kale's names (``block:``, ``pipeline-parameters``, ``pipeline-metrics``, ...) and papermill's
``parameters`` tag are accepted as they are, so notebooks written for those tools compile
unchanged.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.core.errors import Diagnostic, NotebookError, ParameterError
from cellpipe.core.model import Cell, Parameter, Role, StepSettings

STEP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
#: The name of a referenced notebook's step, qualified by its part (``notebook_a.train``):
#: only cells compose.py inlined carry one.
QUALIFIED_STEP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*$")
#: Name of the step formed by code cells before the first step tag.
IMPLICIT_STEP = "main"
#: Name of the step a metrics cell without a step tag starts.
METRICS_STEP = "metrics"

_STEP_PREFIXES = ("step:", "block:")
_PREV_PREFIXES = ("prev:", "after:")
_ROLE_TAGS = {
    "imports": Role.IMPORTS,
    "functions": Role.FUNCTIONS,
    "parameters": Role.PARAMETERS,
    "pipeline-parameters": Role.PARAMETERS,
    "skip": Role.SKIP,
}
_METRICS_TAGS = ("metrics", "pipeline-metrics")
_SETTING_PREFIXES = (
    "limit:",
    "image:",
    "packages:",
    "retry:",
    "timeout:",
    "cache:",
    "gpu:",
    "gate:",
    "annotation:",
    "label:",
    "secret:",
    "report:",  # Kale 2.3: per-step HTML report; every cellpipe step writes one anyway
)
_KNOWN_PREFIXES = _STEP_PREFIXES + _PREV_PREFIXES + _SETTING_PREFIXES + ("notebook:",)
_KNOWN_WORDS = (*_ROLE_TAGS, *_METRICS_TAGS, "foreach")  # foreach: see compiling/foreach.py
#: Tags of other tools we recognise so they are never mistaken for misspelt ones of ours.
_FOREIGN_TAGS = frozenset(
    {
        "injected-parameters",
        "hide-input",
        "hide-output",
        "hide-cell",
        "remove-cell",
        "remove-input",
        "remove-output",
        "raises-exception",
        "thebe-init",
        "full-width",
        "margin",
        "output_scroll",
        "scroll-output",
        "nbval-ignore-output",
        "nbval-skip",
    }
)
_LIMIT_KEYS = ("memory", "cpu", "ephemeral-storage")
_GPU_LIMIT_KEYS = ("nvidia.com/gpu", "amd.com/gpu", "gpu")  # Kale: limit:nvidia.com/gpu:2
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def read_notebook(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Load and check a notebook.

    Parameters
    ----------
    source
        A path to an ``.ipynb`` file, or the notebook itself as a dict (the server passes
        the open notebook's current content).

    Returns
    -------
    The notebook as plain JSON data, and a label naming it in messages.

    Raises
    ------
    NotebookError
        Unreadable file, invalid JSON, a format older than v4, or no code cells.
    """
    if isinstance(source, Mapping):
        nb, label = dict(source), "notebook"
    else:
        path = Path(source)
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotebookError(f"{label}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise NotebookError(f"{label}: cannot read it: {exc}") from None
        try:
            nb = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotebookError(
                f"{label}: not valid notebook JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}). Was it saved completely?"
            ) from None
    if not isinstance(nb, dict):
        raise NotebookError(f"{label}: not a notebook (the JSON is not an object)")
    major = nb.get("nbformat")
    if major is None:
        raise NotebookError(f"{label}: not a notebook (it has no 'nbformat' field)")
    if not isinstance(major, int) or major < 4:
        raise NotebookError(
            f"{label}: notebook format v{major} is too old; cellpipe reads v4. Convert it with "
            f"`jupyter nbconvert --to notebook --nbformat 4 --output converted.ipynb {label}` "
            "or open and save it in JupyterLab."
        )
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise NotebookError(f"{label}: 'cells' is not a list")
    for i, c in enumerate(cells):
        if not isinstance(c, dict) or "cell_type" not in c:
            raise NotebookError(f"{label}: cell {i + 1} has no cell_type")
    # A cell standing for another notebook counts: Kale's are code cells with no source
    # (see compose.py; `%run x.ipynb` cells have source anyway).
    if not any(
        c["cell_type"] == "code"
        and (_source(c).strip() or any(t.startswith("notebook:") for t in _tags(c)))
        for c in cells
    ):
        raise NotebookError(f"{label}: the notebook has no code cells, so there is nothing to run")
    return nb, label


def notebook_sha256(nb: Mapping[str, Any]) -> str:
    """Hash of the cells' types, sources and tags: what compiling depends on."""
    h = hashlib.sha256()
    for c in nb.get("cells", ()):
        h.update(json.dumps([c.get("cell_type"), _source(c), _tags(c)]).encode())
    h.update(json.dumps(nb.get("metadata", {}).get("cellpipe", {}), sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class TaggedNotebook:
    """The notebook's cells with roles and steps assigned, before data flow is known."""

    cells: list[Cell]
    step_order: list[str]  # steps in order of their first cell
    prev: dict[str, list[tuple[str, int]]]  # step -> [(named upstream step, cell number)]
    settings: dict[str, StepSettings]
    notebook_settings: dict[str, Any]
    parameters: list[Parameter]
    diagnostics: list[Diagnostic] = field(default_factory=list)


def parse_cells(nb: Mapping[str, Any]) -> TaggedNotebook:
    """Assign each cell its role and step from the tags; collect settings and problems."""
    diags: list[Diagnostic] = []
    nb_settings = notebook_settings(nb)
    cells: list[Cell] = []
    step_order: list[str] = []
    prev: dict[str, list[tuple[str, int]]] = {}
    raw_settings: dict[str, dict[str, Any]] = {}
    current: str | None = None
    used_ids: set[str] = set()
    k8s_names: dict[str, str] = {}

    for index, c in enumerate(nb["cells"]):
        number = index + 1
        cid = _cell_id(c, index, used_ids)
        source, tags = _source(c), tuple(_tags(c))
        kind = c["cell_type"]
        if kind != "code":
            cells.append(Cell(index, cid, kind, source, tags, Role.MARKDOWN, current))
            continue

        roles = {_ROLE_TAGS[t] for t in tags if t in _ROLE_TAGS}
        # An empty `step:` / `block:` continues the step above, as in Kale, whose own example
        # notebooks tag continuation cells so; it is no step name of its own.
        step_tags = [
            t.split(":", 1)[1].strip()
            for t in tags
            if t.startswith(_STEP_PREFIXES) and t.split(":", 1)[1].strip()
        ]
        metrics = any(t in _METRICS_TAGS for t in tags)
        _check_spelling(tags, number, cid, diags)

        if Role.SKIP in roles:
            cells.append(Cell(index, cid, kind, source, tags, Role.SKIP, current))
            continue
        if not source.strip():
            # An empty cell does nothing either way; keep it where the user put it.
            cells.append(Cell(index, cid, kind, source, tags, Role.SKIP, current))
            continue
        if len(roles) > 1:
            names = " and ".join(sorted(r.value for r in roles))
            diags.append(_err("conflicting-tags", f"is tagged both {names}", number, cid))
        if roles:
            role = min(roles, key=lambda r: r.value)
            if step_tags:
                diags.append(
                    _err(
                        "conflicting-tags",
                        f"is tagged {role.value} and step:{step_tags[0]}; "
                        f"{role.value} cells run at the start of every step, so they belong to none",
                        number,
                        cid,
                        name=f"step:{step_tags[0]}",
                    )
                )
            for t in tags:
                if t.startswith(_PREV_PREFIXES + _SETTING_PREFIXES):
                    diags.append(
                        _warn(
                            "ignored-tag",
                            f"tag `{t}` has no effect on a {role.value} cell",
                            number,
                            cid,
                            name=t,
                        )
                    )
            cells.append(Cell(index, cid, kind, source, tags, role, None))
            continue

        if step_tags:
            if len(set(step_tags)) > 1:
                diags.append(
                    _err(
                        "conflicting-tags",
                        "names more than one step: " + ", ".join(f"`step:{s}`" for s in step_tags),
                        number,
                        cid,
                    )
                )
            name = step_tags[0]
            inlined = "cellpipe_origin" in (c.get("metadata") or {})  # see compose.py
            if not (QUALIFIED_STEP_NAME if inlined else STEP_NAME).match(name):
                diags.append(
                    _err(
                        "invalid-step-name",
                        f"step name `{name}` is invalid: use letters, digits, `_` and `-`, "
                        "starting with a letter",
                        number,
                        cid,
                        name=f"step:{name}",
                    )
                )
            current = name
        elif metrics and current != METRICS_STEP:
            current = METRICS_STEP
        elif current is None:
            current = IMPLICIT_STEP

        if current not in step_order:
            k8s = k8s_name(current)
            if k8s in k8s_names and k8s_names[k8s] != current:
                diags.append(
                    _err(
                        "duplicate-step-name",
                        f"step `{current}` clashes with step `{k8s_names[k8s]}`: both become "
                        f"`{k8s}` on Kubernetes; rename one",
                        number,
                        cid,
                        step=current,
                        name=f"step:{current}",
                    )
                )
            k8s_names.setdefault(k8s, current)
            step_order.append(current)
        cells.append(Cell(index, cid, kind, source, tags, Role.STEP, current, metrics))
        for t in tags:
            if t.startswith(_PREV_PREFIXES):
                prev.setdefault(current, []).append((t.split(":", 1)[1], number))
            elif t.startswith(_SETTING_PREFIXES):
                _apply_setting(raw_settings.setdefault(current, {}), t, number, cid, current, diags)

    settings = {s: _step_settings(raw_settings.get(s, {}), nb_settings) for s in step_order}
    params = parse_parameters([c for c in cells if c.role is Role.PARAMETERS], diags)
    return TaggedNotebook(cells, step_order, prev, settings, nb_settings, params, diags)


def notebook_settings(nb: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata.cellpipe``, with Kale's ``metadata.kubeflow_notebook`` read as defaults."""
    md = nb.get("metadata", {}) or {}
    out: dict[str, Any] = {}
    kale = md.get("kubeflow_notebook") or {}
    if isinstance(kale, dict):
        image = kale.get("base_image") or kale.get("docker_image")  # Kale 2.x / older Kale
        if image:
            out["image"] = image
        if kale.get("volumes"):
            out["volumes"] = kale["volumes"]
    ours = md.get("cellpipe") or {}
    if isinstance(ours, dict):
        out.update(ours)
    return out


def k8s_name(step: str) -> str:
    """The DNS-1123 label a step becomes on Kubernetes (lowercase, `-` for `_`)."""
    return re.sub(r"[^a-z0-9-]", "-", step.lower()).strip("-")[:63] or "step"


# -- parameters ---------------------------------------------------------------------------


def parse_parameters(cells: list[Cell], diags: list[Diagnostic]) -> list[Parameter]:
    """Names the parameters cell assigns, with literal defaults where they are literals."""
    params: dict[str, Parameter] = {}
    for cell in cells:
        from cellpipe.compiling.analysis import CellSyntaxError, transform

        try:
            tree = ast.parse(transform(cell.source))
        except (SyntaxError, CellSyntaxError) as exc:
            diags.append(
                _err("syntax-error", f"parameters cell does not parse: {exc}", cell.number, cell.id)
            )
            continue
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is None:
                    continue
                expr = ast.get_source_segment(transform(cell.source), node.value) or ""
                try:
                    value = ast.literal_eval(node.value)
                    typ = type(value).__name__
                except (ValueError, SyntaxError, TypeError):
                    value, typ = None, "expression"
                for t in targets:
                    if isinstance(t, ast.Name):
                        params[t.id] = Parameter(t.id, value, expr, typ)
    return list(params.values())


def coerce_parameter(raw: str) -> Any:
    """Type a ``-p NAME=VALUE`` value the way papermill does: bool, None, int, float, str."""
    if raw in ("True", "true"):
        return True
    if raw in ("False", "false"):
        return False
    if raw in ("None", "none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_parameter_options(items: Iterable[str]) -> dict[str, Any]:
    """``-p NAME=VALUE`` options (the CLI's and the ``%cellpipe`` magic's) -> overrides, each
    value typed by :func:`coerce_parameter`. Raises ParameterError for a malformed one."""
    overrides: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ParameterError(f"-p expects NAME=VALUE, got {item!r}")
        overrides[name] = coerce_parameter(value)
    return overrides


def resolve_parameters(declared: list[Parameter], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check overrides against the parameters cell. Unknown names are an error (exit 2).

    Returns the overrides to inject after the parameters cell, in declaration order.
    """
    known = {p.name for p in declared}
    unknown = [n for n in overrides if n not in known]
    if unknown:
        if not known:
            raise ParameterError(
                f"parameter {', '.join(map(repr, unknown))} given, but the notebook has no "
                "cell tagged `parameters`"
            )
        raise ParameterError(
            f"unknown parameter {', '.join(map(repr, unknown))}; the parameters cell declares: "
            + ", ".join(sorted(known))
        )
    for name, value in overrides.items():
        try:
            ast.literal_eval(repr(value))
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"parameter {name!r}: value {value!r} cannot be written as a Python literal"
            ) from None
    return {p.name: overrides[p.name] for p in declared if p.name in overrides}


#: Cell id under which the injected parameter values' outputs are recorded (papermill's tag).
INJECTED = "injected-parameters"


def injected_parameters_source(values: Mapping[str, Any]) -> str:
    """The code papermill would inject for these values (one assignment per line)."""
    lines = ["# Parameters"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


# -- helpers --------------------------------------------------------------------------------


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [str(t).strip() for t in tags if str(t).strip()]


def _cell_id(cell: Mapping[str, Any], index: int, used: set[str]) -> str:
    cid = str(cell.get("id") or f"cell-{index + 1}")
    base, n = cid, 1
    while cid in used:  # duplicate ids exist in hand-edited notebooks; keep ours unique
        n += 1
        cid = f"{base}-{n}"
    used.add(cid)
    return cid


def _check_spelling(tags: tuple[str, ...], number: int, cid: str, diags: list[Diagnostic]) -> None:
    for t in tags:
        if t in _FOREIGN_TAGS or t in _KNOWN_WORDS or t.startswith(_KNOWN_PREFIXES):
            continue
        if ":" in t:
            prefix = t.split(":", 1)[0] + ":"
            close = difflib.get_close_matches(prefix, _KNOWN_PREFIXES, n=1, cutoff=0.7)
        else:
            close = difflib.get_close_matches(t, _KNOWN_WORDS, n=1, cutoff=0.8)
        if close:
            hint = close[0] + (t.split(":", 1)[1] if ":" in t else "")
            diags.append(
                _warn(
                    "unknown-tag",
                    f"tag `{t}` is not a cellpipe tag; did you mean `{hint}`?",
                    number,
                    cid,
                    name=t,
                )
            )


def _apply_setting(
    raw: dict[str, Any], tag: str, number: int, cid: str, step: str, diags: list[Diagnostic]
) -> None:
    key, _, value = tag.partition(":")

    def bad(why: str) -> None:
        diags.append(_err("invalid-tag", f"tag `{tag}`: {why}", number, cid, step=step, name=tag))

    if key == "limit":
        what, _, amount = value.rpartition(":")
        if what in _GPU_LIMIT_KEYS:
            if not amount.isdigit():
                return bad("expects a whole number of GPUs")
            raw["gpu"] = int(amount)
            return None
        if what not in _LIMIT_KEYS:
            return bad(f"unknown limit `{what}`; use one of {', '.join(_LIMIT_KEYS)}")
        if not _QUANTITY.match(amount):
            return bad(f"`{amount}` is not a quantity such as 2Gi, 512Mi, 1 or 500m")
        raw.setdefault("limits", {})[what] = amount
    elif key in ("retry", "gpu"):
        if not value.isdigit():
            return bad("expects a whole number, e.g. `" + key + ":2`")
        raw[key] = int(value)
    elif key == "timeout":
        try:
            seconds = float(value.rstrip("s"))
        except ValueError:
            return bad("expects seconds, e.g. `timeout:600`")
        if seconds <= 0:
            return bad("must be positive")
        raw["timeout"] = seconds
    elif key == "cache":
        flag = value.lower()
        if flag not in ("true", "false", "enabled", "disabled"):  # Kale: enabled / disabled
            return bad("expects `cache:true` or `cache:false`")
        raw["cache"] = flag in ("true", "enabled")
    elif key == "report":
        if value not in ("enabled", "disabled"):
            return bad("expects `report:enabled` or `report:disabled`")
    elif key == "image":
        if not value:
            return bad("expects an image reference, e.g. `image:python:3.11`")
        raw["image"] = value
    elif key == "packages":
        raw.setdefault("packages", []).extend(p for p in value.split(",") if p)
    elif key == "gate":
        if not value:
            return bad("expects a condition, e.g. `gate:accuracy>=0.9`")
        from cellpipe.compiling.gates import GateError, parse_gate

        try:
            parse_gate(value)
        except GateError as exc:
            return bad(str(exc))
        if raw.get("gate") not in (None, value):
            return bad(f"step {step} already has `gate:{raw['gate']}`; combine them with `and`")
        raw["gate"] = value
    elif key in ("annotation", "label"):
        k, sep, v = value.partition(":")
        if not sep or not k:
            return bad(f"expects `{key}:KEY:VALUE`")
        raw.setdefault(key + "s", {})[k] = v
    elif key == "secret":
        parts = value.split(":")
        if len(parts) == 2 and parts[0] and parts[1].startswith("/"):
            raw.setdefault("secrets", []).append((parts[0], parts[1]))  # mounted at a path
        elif len(parts) == 3 and all(parts) and parts[2].isidentifier():
            raw.setdefault("secrets", []).append(tuple(parts))  # Kale 2.3: key as env var
        else:
            return bad("expects `secret:NAME:/mount/path` or `secret:NAME:KEY:ENV_VAR`")
    return None


def _step_settings(raw: dict[str, Any], nb: Mapping[str, Any]) -> StepSettings:
    packages = tuple(nb.get("packages", ())) + tuple(raw.get("packages", ()))
    return StepSettings(
        limits=raw.get("limits", {}),
        image=raw.get("image", nb.get("image")),
        packages=packages,
        retry=raw.get("retry", int(nb.get("retry", 0) or 0)),
        timeout=raw.get("timeout", nb.get("timeout")),
        cache=raw.get("cache", True),
        gpu=raw.get("gpu", 0),
        gate=raw.get("gate"),
        annotations=raw.get("annotations", {}),
        labels=raw.get("labels", {}),
        secrets=tuple(raw.get("secrets", ())),
    )


def _err(code: str, message: str, cell: int, cid: str, **kw: Any) -> Diagnostic:
    return Diagnostic(code, message, "error", cell, cid, **kw)


def _warn(code: str, message: str, cell: int, cid: str, **kw: Any) -> Diagnostic:
    return Diagnostic(code, message, "warning", cell, cid, **kw)
