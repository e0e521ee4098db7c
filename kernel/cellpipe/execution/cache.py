"""Skip unchanged steps: content-addressed keys and an index of results that match them.

A step's key covers everything its results depend on: its code and the prelude's (after
normalisation, so comment and whitespace edits do not count), the parameter values, the
environment settings (image, packages, gpu), the names it must save, and the content hashes
of its inputs. Settings that change how a step is run but not what it computes (retries,
timeouts, limits) are left out.

Where keys and reused results are kept is the run directory's business: a step's key sits in
its data directory (``RunDir.cache_key``), the index of keys in the runs root
(``cellpipe.rundir.runs.CacheIndex``), and a hit is copied over by ``RunDir.adopt_step``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import posixpath
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from cellpipe.core.model import Pipeline, Step
from cellpipe.core.pseudo import file_name, file_path, is_file
from cellpipe.rundir.runs import CacheIndex

__all__ = [
    "CacheIndex",
    "file_hash",
    "files_read",
    "input_hashes",
    "normalized",
    "parameters_seen",
    "step_key",
]

_KEY_VERSION = "2"  # bump when the stored format changes: old results must not be reused


@lru_cache(maxsize=4096)
def normalized(source: str) -> str:
    """The cell's code with comments and formatting removed."""
    from cellpipe.compiling.analysis import transform

    try:
        return ast.dump(ast.parse(transform(source)), annotate_fields=False)
    except Exception:  # the key must not fail where running would (a syntax error, ...)
        return "\n".join(line.rstrip() for line in source.strip().splitlines())


def step_key(
    pipeline: Pipeline,
    step: Step,
    parameters: Mapping[str, Any],
    input_hashes: Mapping[str, str],
) -> str:
    h = hashlib.sha256(_KEY_VERSION.encode())
    for cell in pipeline.prelude:
        h.update(b"\0prelude\0" + normalized(cell.source).encode())
    h.update(b"\0params\0" + json.dumps(dict(parameters), sort_keys=True, default=repr).encode())
    for cell in pipeline.step_cells(step.name):
        h.update(b"\0cell\0" + normalized(cell.source).encode())
    s = step.settings
    h.update(json.dumps([s.image, list(s.packages), s.gpu, list(step.outputs)]).encode())
    for name in sorted(set(step.inputs) | set(input_hashes)):  # inputs, and files read
        h.update(f"\0in\0{name}={input_hashes.get(name, '')}".encode())
    return h.hexdigest()


def parameters_seen(pipeline: Pipeline, step: Step, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter values ``step`` can observe: a new value of one it never reads must not
    make it run again (see cellpipe.execution.lineage.parameters_read)."""
    from cellpipe.execution.lineage import parameters_read

    seen = parameters_read(pipeline, step)
    if seen is None:
        return dict(params)
    return {k: v for k, v in params.items() if k in seen}


def input_hashes(
    pipeline: Pipeline,
    step: Step,
    hashes_of: Callable[[str], Mapping[str, str] | None],
    workdir: Path,
    snapshot: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The content hashes ``step_key`` takes: each input's as its producer saved it
    (``hashes_of(producer)``: name -> sha256, None when it saved nothing), "absent" for one
    it left unset, and each file the step reads by its content. Every backend asks this, so
    a step has one key wherever its producers ran. ``snapshot``: the sha256 of each file of
    ``workdir`` as the step saw it (relative POSIX path -> hash; an Argo run's shipped
    folder), used instead of the files as they are now."""
    hashes: dict[str, str] = {}
    saved: dict[str, Mapping[str, str] | None] = {}
    for name, producer in step.inputs.items():
        if producer not in saved:
            saved[producer] = hashes_of(producer)
        sha = (saved[producer] or {}).get(name)
        hashes[name] = "absent" if sha is None else sha
    # Files count by their content: a changed data.csv must not give a stale cache hit.
    for name in files_read(pipeline, step, workdir):
        if snapshot is None:
            hashes[name] = file_hash(workdir / file_path(name))
        else:
            rel = PurePosixPath(posixpath.normpath(file_path(name).replace(os.sep, "/")))
            hashes[name] = snapshot.get(rel.as_posix(), "missing")
    return hashes


def files_read(pipeline: Pipeline, step: Step, workdir: Path) -> list[str]:
    """Files the step depends on: those its cells (and the prelude) read by literal path, and
    local modules they import (``helper.py`` or a package next to the notebook)."""
    from cellpipe.compiling.analysis import CellSyntaxError, analyse_cell
    from cellpipe.core.model import Role

    mine = {c.id for c in pipeline.prelude} | set(step.cells)
    modules: dict[str, str] = {}
    names: set[str] = set()
    for cell in pipeline.cells:
        if cell.kind != "code" or cell.role in (Role.SKIP, Role.MARKDOWN):
            continue
        try:
            flow = analyse_cell(cell.source, modules)
        except CellSyntaxError:
            continue
        if cell.id in mine:
            names.update(n for n in flow.reads if is_file(n))
            for module in flow.imports.values():
                top = module.split(".")[0]
                if (workdir / f"{top}.py").is_file():
                    names.add(file_name(f"{top}.py"))
                elif (workdir / top / "__init__.py").is_file():
                    names.add(file_name(f"{top}/__init__.py"))
        modules.update(flow.imports)
    return sorted(names)


def file_hash(path: Path) -> str:
    """Content hash of a file a step reads ("missing" when it does not exist yet)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except (FileNotFoundError, IsADirectoryError):
        return "missing"
    return h.hexdigest()
