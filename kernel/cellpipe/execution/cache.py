"""Skip unchanged steps: content-addressed keys and an index of results that match them.

A step's key covers everything its results depend on: its code and the prelude's (after
normalisation, so comment and whitespace edits do not count), the parameter values, the
environment settings (image, packages, gpu), the names it must save, and the content hashes
of its inputs. Settings that change how a step is run but not what it computes (retries,
timeouts, limits) are left out.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from cellpipe.core.atomic import write_json, write_text
from cellpipe.core.model import Pipeline, Step

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


class CacheIndex:
    """``<runs root>/.cache/<key>.json`` -> the run directory and step that produced it."""

    def __init__(self, runs_root: Path):
        self.root = Path(runs_root) / ".cache"

    def lookup(self, key: str) -> tuple[Path, str] | None:
        try:
            entry = json.loads((self.root / f"{key}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        run_dir, step = Path(entry["run_dir"]), entry["step"]
        if not (run_dir / "data" / step / "manifest.json").is_file():
            return None  # that run was deleted or its data is incomplete
        return run_dir, step

    def store(self, key: str, run_dir: Path, step: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / f"{key}.json", {"run_dir": str(run_dir), "step": step})


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
            names.update(n for n in flow.reads if n.startswith("@file:"))
            for module in flow.imports.values():
                top = module.split(".")[0]
                if (workdir / f"{top}.py").is_file():
                    names.add(f"@file:{top}.py")
                elif (workdir / top / "__init__.py").is_file():
                    names.add(f"@file:{top}/__init__.py")
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


def record_key(run_dir: Path, step: str, key: str) -> None:
    write_text(run_dir / "data" / step / "cache_key", key + "\n")


def recorded_key(run_dir: Path, step: str) -> str | None:
    try:
        return (run_dir / "data" / step / "cache_key").read_text().strip()
    except FileNotFoundError:
        return None


def reuse(source_run: Path, target_run: Path, step: str) -> None:
    """Bring a cached step's data and outputs into another run (hard links where possible:
    stored values are never modified in place, consumers map them copy-on-write)."""
    src, dst = source_run / "data" / step, target_run / "data" / step
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)
    outputs = source_run / "outputs" / f"{step}.json"
    if outputs.is_file():
        shutil.copy2(outputs, target_run / "outputs" / f"{step}.json")
    with contextlib.suppress(FileNotFoundError):
        log = (source_run / "logs" / f"{step}.log").read_text(encoding="utf-8", errors="replace")
        (target_run / "logs" / f"{step}.log").write_text(
            f"--- cellpipe: cached; output of run {source_run.name} ---\n{log}", encoding="utf-8"
        )
