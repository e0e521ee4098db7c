"""The oracle for the invariant: a notebook run top to bottom vs the same notebook as a pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[1]
_ADDRESS = re.compile(r"0x[0-9a-f]+")
_TIMING = re.compile(r"^(CPU times|Wall time):.*$\n?", re.M)
# Warnings name the file a cell was compiled as: ipykernel and IPython name it differently.
_CELL_FILE = re.compile(r"<ipython-input-\d+-[0-9a-f]+>|/tmp/ipykernel_\d+/\d+\.py")


def run_top_to_bottom(
    path: Path, parameters: dict[str, Any] | None = None
) -> nbformat.NotebookNode:
    """Restart and Run All with nbclient and a real ipykernel; `skip` cells are not run and
    parameters are injected after the parameters cell, as papermill does."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if parameters:
        index = max(
            i
            for i, c in enumerate(nb.cells)
            if {"parameters", "pipeline-parameters"} & set(c.metadata.get("tags", []))
        )
        src = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(src)
        cell.id = "injected-parameters"
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(index + 1, cell)
    NotebookClient(
        nb,
        kernel_name="python3",
        skip_cells_with_tag="skip",
        timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return nb


def run_pipeline(
    path: Path, workdir: Path, parameters: dict[str, Any] | None = None, *extra: str
) -> tuple[nbformat.NotebookNode | None, subprocess.CompletedProcess[str]]:
    out = workdir / f"{path.stem}.executed.ipynb"
    args = [sys.executable, "-m", "cellpipe", "run", str(path), "--output", str(out), *extra]
    for k, v in (parameters or {}).items():
        args += ["-p", f"{k}={v}"]
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(workdir / "runs"))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(args, capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    nb = nbformat.read(out, as_version=4) if out.exists() else None
    return nb, proc


def _normal(output: dict[str, Any]) -> dict[str, Any]:
    kind = output["output_type"]
    if kind == "stream":
        text = _CELL_FILE.sub("<cell>", _TIMING.sub("", output["text"]))
        return {"stream": output["name"], "text": text}
    if kind == "error":
        return {"error": output["ename"], "evalue": output["evalue"]}
    data = output.get("data", {})
    norm: dict[str, Any] = {"type": kind, "mime": sorted(data)}
    for mime in ("text/plain", "text/html"):
        if mime in data and not any(k.startswith("image/") for k in data):
            text = data[mime]
            norm[mime] = _ADDRESS.sub("0x?", "".join(text) if isinstance(text, list) else text)
    return norm


def comparable(nb: nbformat.NotebookNode) -> dict[str, list[dict[str, Any]]]:
    """Normalised outputs by cell id: timings, addresses and image bytes do not count."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged: list[dict[str, Any]] = []
        for o in map(_normal, cell.get("outputs", [])):
            if merged and "stream" in o and merged[-1].get("stream") == o["stream"]:
                merged[-1] = {**merged[-1], "text": merged[-1]["text"] + o["text"]}
            elif not (o.get("stream") and not o["text"]):
                merged.append(o)
        out[cell.id] = merged
    return out


def describe(nb: nbformat.NotebookNode) -> str:
    return json.dumps(comparable(nb), indent=1)
