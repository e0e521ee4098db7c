"""The oracle for the invariant: a notebook run top to bottom vs the same notebook as a pipeline.

Both sides produce an executed notebook; `comparable` reduces each code cell's outputs to what
must not differ between the two (text, mime types, errors) and `differences` says, cell by
cell, where they do.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[1]

PARAMETER_TAGS = frozenset({"parameters", "pipeline-parameters"})
INJECTED_TAG = "injected-parameters"

_ADDRESS = re.compile(r"0x[0-9a-f]+")
_TIMING = re.compile(r"^(CPU times|Wall time):.*$\n?", re.M)
# Warnings name the file a cell was compiled as: ipykernel and IPython name it differently.
# How a kernel (and, alike, a step) names a cell in warnings: IPython 8, ipykernel, cellpipe.
_CELL_FILE = re.compile(
    r"<ipython-input-\d+-[0-9a-f]+>|/tmp/ipykernel_\d+/\d+\.py|/tmp/cellpipe_\d+/[0-9a-f]+\.py"
)


def run_top_to_bottom(
    path: Path, parameters: dict[str, Any] | None = None
) -> nbformat.NotebookNode:
    """Restart and Run All: execute ``path`` with nbclient and a real ipykernel.

    As papermill does, outputs saved in the file are cleared first, ``skip`` cells are not
    run (so they end with no outputs), and ``parameters`` are injected as a new cell tagged
    ``injected-parameters`` right after the last parameters cell. The kernel's working
    directory is the notebook's. A cell that raises stops the run with
    ``nbclient.exceptions.CellExecutionError``. Returns the executed notebook; the file is
    not changed.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    if parameters:
        index = max(
            i for i, c in enumerate(nb.cells) if PARAMETER_TAGS & set(c.metadata.get("tags", []))
        )
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(source)
        cell.id = INJECTED_TAG
        cell.metadata["tags"] = [INJECTED_TAG]
        nb.cells.insert(index + 1, cell)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        skip_cells_with_tag="skip",
        timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    )
    # Our own loop, closed on return: `execute()` leaves one open per thread it runs in.
    asyncio.run(client.async_execute())
    return nb


def run_pipeline(
    path: Path,
    workdir: Path,
    parameters: dict[str, Any] | None = None,
    extra: Sequence[str] = (),
    timeout: float = 300,
) -> tuple[nbformat.NotebookNode | None, subprocess.CompletedProcess[str]]:
    """Run ``cellpipe run PATH --output ...`` as a user would, from ``workdir``.

    Each parameter is passed as ``-p NAME=VALUE`` with ``str(VALUE)``, which papermill's
    typing turns back into the same value for bools, numbers, None and plain strings. Runs
    go under ``workdir/runs``. Returns the executed notebook (None when the command wrote
    none) and the finished process.
    """
    path = path.resolve()
    out = workdir / f"{path.stem}.executed.ipynb"
    args = [sys.executable, "-m", "cellpipe", "run", str(path), "--output", str(out), *extra]
    for k, v in (parameters or {}).items():
        args += ["-p", f"{k}={v}"]
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(workdir / "runs"))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, cwd=workdir, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        # What the run said so far (its step lines) is what tells a stuck pod from a slow one.
        said = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"`cellpipe run` still running after {timeout} s:\n{said}") from None
    nb = nbformat.read(out, as_version=4) if out.exists() else None
    return nb, proc


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def _normal(output: dict[str, Any]) -> dict[str, Any]:
    kind = output["output_type"]
    if kind == "stream":
        text = _CELL_FILE.sub("<cell>", _TIMING.sub("", _text(output["text"])))
        return {"stream": output["name"], "text": text}
    if kind == "error":
        return {"error": output["ename"], "evalue": _ADDRESS.sub("0x?", output["evalue"])}
    data = output.get("data", {})
    norm: dict[str, Any] = {"type": kind, "mime": sorted(data)}
    for mime, value in sorted(data.items()):
        # Image bytes (and SVG's generated ids) differ between two renderings of one figure.
        if mime.startswith("image/") or mime == "application/pdf":
            continue
        text = value if isinstance(value, (str, list)) else json.dumps(value, sort_keys=True)
        norm[mime] = _ADDRESS.sub("0x?", _text(text))
    return norm


def comparable(nb: nbformat.NotebookNode) -> dict[str, list[dict[str, Any]]]:
    """Each code cell's outputs by cell id, reduced to what both runs must agree on.

    Streams are merged per stream name (how output is split into messages is timing);
    ``%time`` lines, memory addresses and the file name a warning gives for a cell are
    masked; rich outputs keep their mime types and every non-image representation;
    errors keep ``ename`` and ``evalue``. Execution counts and metadata are dropped. The
    ``injected-parameters`` cell is left out: it only assigns.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        merged: list[dict[str, Any]] = []
        for o in map(_normal, cell.get("outputs", [])):
            if "stream" in o and not o["text"]:
                continue
            if merged and "stream" in o and merged[-1].get("stream") == o["stream"]:
                merged[-1] = {**merged[-1], "text": merged[-1]["text"] + o["text"]}
            else:
                merged.append(o)
        out[cell.id] = merged
    return out


def _render(outputs: list[dict[str, Any]]) -> list[str]:
    """Normalised outputs as lines, for a diff a person can read."""
    lines: list[str] = []
    for o in outputs:
        if "stream" in o:
            lines.append(f"[{o['stream']}]")
            lines += o["text"].splitlines()
        elif "error" in o:
            lines.append(f"[error] {o['error']}: {o['evalue']}")
        else:
            lines.append(f"[{o['type']}] {', '.join(o['mime'])}")
            for mime, text in o.items():
                if mime not in ("type", "mime"):
                    lines += [f"  {mime}:", *(f"    {line}" for line in text.splitlines())]
    return lines


def figures(nb: nbformat.NotebookNode) -> dict[str, list[str]]:
    """Each code cell's ``image/png`` outputs (base64 text, in output order) by cell id."""
    out: dict[str, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        pngs = [
            _text(o["data"]["image/png"])
            for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})
        ]
        if pngs:
            out[cell.id] = pngs
    return out


def has_figures(nb: nbformat.NotebookNode) -> bool:
    return bool(figures(nb))


def differences(
    expected: nbformat.NotebookNode,
    actual: nbformat.NotebookNode,
    again: nbformat.NotebookNode | None = None,
) -> list[str]:
    """Where ``actual`` (the pipeline's executed copy) departs from ``expected`` (top to bottom).

    One entry per differing cell: its number in the notebook (1-based over all cells, as
    cellpipe's messages count them), its first source line, and a diff of its normalised
    outputs from top to bottom (-) to pipeline (+). Empty when they agree.

    ``again`` is a second top-to-bottom run: every ``image/png`` it drew with the same bytes
    as ``expected`` is deterministic, and the pipeline must draw those bytes too (a figure
    that differs between two kernels' runs is compared by mime type only), and an output
    line that differs between the two (a timing, an address cut short in an HTML repr) is
    held to nothing but being there.
    """
    want, got = comparable(expected), comparable(actual)
    if list(want) != list(got):
        return [f"code cells differ: top to bottom {list(want)}, pipeline {list(got)}"]
    numbers = {
        c.id: n
        for n, c in enumerate(
            (c for c in expected.cells if INJECTED_TAG not in c.metadata.get("tags", [])),
            start=1,
        )
    }
    problems = []
    if again is not None:
        first, second, drawn = figures(expected), figures(again), figures(actual)
        for cid, pngs in first.items():
            for i, png in enumerate(pngs):
                if second.get(cid, [])[i : i + 1] != [png]:
                    continue  # not reproducible top to bottom: nothing to hold the pipeline to
                if drawn.get(cid, [])[i : i + 1] != [png]:
                    first_line = next(c for c in expected.cells if c.id == cid).source
                    problems.append(
                        f"cell {numbers[cid]} `{first_line.splitlines()[0]}`: figure {i + 1} "
                        "differs from the one top to bottom draws (the same bytes in two runs)"
                    )
    twice = comparable(again) if again is not None else {}
    for cid in want:
        if want[cid] != got[cid]:
            wanted, gotten = _render(want[cid]), _render(got[cid])
            if cid in twice and twice[cid] != want[cid]:
                wanted, gotten = _steady(wanted, _render(twice[cid]), gotten)
                if wanted == gotten:
                    continue
            first_line = next(c for c in expected.cells if c.id == cid).source.split("\n")[0]
            diff = difflib.unified_diff(
                wanted,
                gotten,
                "top to bottom",
                "pipeline",
                n=2,
                lineterm="",
            )
            problems.append(f"cell {numbers[cid]} `{first_line}`:\n" + "\n".join(diff))
    return problems


_VARIES = "<differs between two top-to-bottom runs>"


def _steady(first: list[str], second: list[str], pipeline: list[str]) -> tuple[list, list]:
    """Lines of two top-to-bottom runs and of the pipeline, each line that differs between
    the two top-to-bottom runs masked in all three (when the three have as many lines)."""
    if not len(first) == len(second) == len(pipeline):
        return first, pipeline
    varies = [a != b for a, b in zip(first, second, strict=True)]
    mask = [(_VARIES if v else line) for v, line in zip(varies, first, strict=True)]
    return mask, [(_VARIES if v else line) for v, line in zip(varies, pipeline, strict=True)]


def confirmed_differences(
    expected: nbformat.NotebookNode,
    actual: nbformat.NotebookNode,
    run_again: Any,
) -> list[str]:
    """``differences``, running top to bottom a second time (``run_again()``) only when the
    pipeline's outputs or figures are not already the same as the first run's."""
    if figures(expected) == figures(actual) and not differences(expected, actual):
        return []
    return differences(expected, actual, run_again())


def both_ways(
    top: Path, pipe: Path, workdir: Path, extra: Sequence[str] = ()
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``pipe`` as a pipeline (``cellpipe run`` with ``extra``, from ``workdir``) and
    ``top`` top to bottom, two copies of one notebook: the pipeline's process and where its
    outputs differ (``confirmed_differences``; none when it wrote no executed notebook)."""
    executed, proc = run_pipeline(pipe, workdir, None, extra)
    expected = run_top_to_bottom(top)
    if executed is None:
        return proc, []
    return proc, confirmed_differences(expected, executed, lambda: run_top_to_bottom(top))


#: Notebooks on which the engine is known to compute something else, and why. Strict xfail:
#: when the engine is fixed the test passes, fails as XPASS, and the entry must go.
KNOWN_DISCREPANCIES: dict[str, str] = {}


#: Notebooks compile must refuse, with the diagnostic code it must give.
REJECTED = {"interleaved_step_cells": "interleaved-step"}


def invariant_case(name: str) -> Any:
    """The adversarial notebook NAME as a test parameter, a strict xfail when it is a known
    discrepancy (so fixing the engine makes the entry above go)."""
    import pytest

    reason = KNOWN_DISCREPANCIES.get(name)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(name, marks=marks, id=name)


def copy_case(name: str, workdir: Path) -> dict[str, Path]:
    """The adversarial notebook NAME and its support files, copied into two folders of
    ``workdir`` ("top-to-bottom" and "pipeline"), so the two runs never see each other's
    files; returns the notebook's path in each."""
    import shutil

    from notebooks.make import SUPPORT_FILES

    here = Path(__file__).parent / "notebooks"
    copies = {}
    for side in ("top-to-bottom", "pipeline"):
        (workdir / side).mkdir()
        copies[side] = Path(shutil.copy(here / f"{name}.ipynb", workdir / side))
        for file_name in SUPPORT_FILES:
            shutil.copy(here / file_name, workdir / side)
    return copies
