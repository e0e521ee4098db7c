"""The executed copy of a run's notebook: every cell's outputs in place, like papermill's.

Outputs come from ``outputs/<step>.json`` by cell id. Prelude cells (imports, functions,
parameters) run in every step; their outputs are taken from the first step in run order, as
a top-to-bottom run shows them once. Execution counts are renumbered in notebook order, as
"Restart and Run All" would number them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cellpipe.compiling.notebook import INJECTED, injected_parameters_source
from cellpipe.core.atomic import write_text
from cellpipe.core.model import Role
from cellpipe.rundir.runs import RunDir


def executed_notebook(rd: RunDir) -> dict[str, Any]:
    """The run's notebook snapshot with outputs and ``metadata.cellpipe`` per cell."""
    nb = rd.notebook()
    pipeline = rd.pipeline()
    status = rd.status()
    records: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    for step in pipeline.steps:
        data = rd.read_outputs(step.name) or {}
        for cid, rec in data.get("cells", {}).items():
            if cid not in records:
                records[cid], owner[cid] = rec, step.name

    cells = []
    count = 0
    params = rd.info().get("parameters") or {}
    last_params = max((c.index for c in pipeline.cells if c.role is Role.PARAMETERS), default=None)
    for cell, raw in zip(pipeline.cells, nb["cells"], strict=False):
        out = copy.deepcopy(raw)
        if cell.kind == "code":
            rec = records.get(cell.id)
            out["outputs"] = rec["outputs"] if rec else []
            if rec and rec.get("execution_count") is not None:
                count += 1
                out["execution_count"] = count
            else:
                out["execution_count"] = None
            meta = out.setdefault("metadata", {})
            step = cell.step if cell.role is Role.STEP else owner.get(cell.id)
            if cell.role is Role.SKIP:
                meta["cellpipe"] = {"run_id": rd.run_id, "state": "skipped-cell"}
            elif step:
                st = status.steps.get(step)
                meta["cellpipe"] = {
                    "run_id": rd.run_id,
                    "step": cell.step if cell.role is Role.STEP else None,
                    "role": cell.role.value,
                    "state": (rec or {}).get("status") or (st.state.value if st else None),
                    "duration_s": (rec or {}).get("duration_s"),
                }
        cells.append(out)
        if cell.index == last_params and params:
            rec = records.get(INJECTED)
            count += 1 if rec else 0
            cells.append(
                {
                    "cell_type": "code",
                    "id": INJECTED,
                    "metadata": {"tags": ["injected-parameters"]},
                    "execution_count": count if rec else None,
                    "outputs": rec["outputs"] if rec else [],
                    "source": injected_parameters_source(params),
                }
            )
    nb["cells"] = cells
    if nb.get("nbformat_minor", 0) < 5 and any("id" in c for c in cells):
        nb["nbformat_minor"] = 5  # cell ids need nbformat 4.5
        for c in cells:
            c.setdefault("id", f"cell-{cells.index(c) + 1}")
    md = nb.setdefault("metadata", {})
    md.setdefault("cellpipe", {})
    md["cellpipe"] = dict(md["cellpipe"])
    md["cellpipe"]["run"] = {
        "run_id": rd.run_id,
        "state": status.state.value,
        "parameters": params,
        "backend": status.backend,
        "started_at": status.started_at,
        "ended_at": status.ended_at,
    }
    return nb


def write_executed_notebook(rd: RunDir, dest: Path) -> list[Path]:
    """Write the executed notebook at ``dest``; for a composed notebook, also each
    referenced notebook, executed, beside it (``<dest stem>.<part>.ipynb``). Returns the
    files written."""
    from cellpipe.compiling.compose import split_executed

    dest.parent.mkdir(parents=True, exist_ok=True)
    files = split_executed(executed_notebook(rd), dest)
    for file, nb in files.items():
        write_text(file, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return list(files)
