"""Shared by the benchmark scripts: timing, tables, notebooks."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KALE_VENV = HERE / ".venv-kale"


def cellpipe_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=False)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def write_notebook(
    path: Path, cells: list[tuple[list[str], str]], metadata: dict | None = None
) -> Path:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{i}",
                "metadata": {"tags": tags} if tags else {},
                "execution_count": None,
                "outputs": [],
                "source": src,
            }
            for i, (tags, src) in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            **(metadata or {}),
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))
    return path


def emit(results: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        print(text)


def python_version() -> str:
    return sys.version.split()[0]
