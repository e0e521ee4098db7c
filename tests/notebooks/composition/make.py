"""Regenerate the composition notebooks: `python tests/notebooks/composition/make.py`.

They are shaped exactly like Kale 2.3's composition example (a main notebook whose code cells
are tagged `notebook:NAME`, with `notebook_path` in the cell metadata and no source, the
referenced notebooks' steps tagged `step:`/`prev:`, a `pipeline-metrics` cell, Kale's
`kubeflow_notebook` metadata), with content of our own: three parts that share variables
across notebooks and reuse step names (`summary`) that only qualification keeps apart.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
KALE = {"experiment_name": "composed", "volumes": []}


def cell(cid: str, tags: list[str], source: str, **meta: str) -> dict:
    lines = source.splitlines(keepends=True)
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": cid,
        "metadata": {**meta, "tags": tags},
        "outputs": [],
        "source": lines,
    }


def ref(cid: str, name: str) -> dict:
    return cell(cid, [f"notebook:{name}"], "", notebook_path=f"./{name}.ipynb")


def markdown(cid: str, text: str) -> dict:
    return {"cell_type": "markdown", "id": cid, "metadata": {}, "source": text}


def nb(cells: list[dict], name: str, image: str = "kale-runtime:2.1.0") -> dict:
    """A notebook with Kale's metadata; a referenced notebook's (its image among them) is
    not used: the main notebook's settings are the pipeline's, as in Kale."""
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "kubeflow_notebook": {**KALE, "docker_image": image, "pipeline_name": name},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


NOTEBOOKS = {
    "notebook_a": nb(
        [
            cell("a1", ["imports"], "import statistics"),
            cell("a2", ["pipeline-parameters"], "scale = 2\nlabel = 'from a'"),
            cell(
                "a3",
                ["step:cities"],
                "cities = ['Lyon', 'Oslo', 'Quito']\nprint('cities:', cities)",
            ),
            cell(
                "a4",
                ["step:readings"],
                "readings = [(1, 4.0), (2, 6.5), (3, 8.5), (4, 11.0)]\nprint('readings:', readings)",
            ),
            cell(
                "a5",
                ["step:table", "prev:readings"],
                "table = [{'t': t, 'v': v * scale} for t, v in readings]\nprint('table:', table)",
            ),
            cell(
                "a6",
                ["step:summary"],
                "spread = statistics.pstdev(v for _, v in readings)\nprint(label, 'spread', round(spread, 3))",
            ),
        ],
        "notebook-a",
    ),
    "notebook_b": nb(
        [
            cell("b1", ["step:greet"], "print('cities:', ', '.join(cities))"),
            cell(
                "b2",
                ["step:fit"],
                "ts = [r['t'] for r in table]\nvs = [r['v'] for r in table]\nk = len(ts)\nslope = (k * sum(t * v for t, v in zip(ts, vs)) - sum(ts) * sum(vs)) / (k * sum(t * t for t in ts) - sum(ts) ** 2)\nintercept = (sum(vs) - slope * sum(ts)) / k\nprint('slope', slope, 'intercept', intercept)",
            ),
            cell(
                "b3",
                ["step:model", "prev:fit"],
                "model = {'slope': slope, 'intercept': intercept}\nprint('model:', model)",
            ),
            cell("b4", ["step:summary"], "print('summary of b: spread was', round(spread, 3))"),
        ],
        "notebook-b",
    ),
    "notebook_c": nb(
        [
            cell(
                "c1",
                ["step:predict"],
                "t_new = 10\nprediction = model['slope'] * t_new + model['intercept']\nprint('prediction at', t_new, '->', prediction)",
            ),
            cell(
                "c2",
                ["step:summary", "prev:predict"],
                "city = cities[int(prediction) % len(cities)]\nprint('city for the prediction:', city)",
            ),
            cell("c3", ["pipeline-metrics"], "print(prediction)"),
        ],
        "notebook-c",
    ),
    "main": nb(
        [
            markdown("intro", "# Composed pipeline\n\nEach code cell stands for a notebook."),
            ref("ref-a", "notebook_a"),
            ref("ref-b", "notebook_b"),
            ref("ref-c", "notebook_c"),
        ],
        "composed",
        image="",
    ),
    "main_mixed": nb(
        [
            markdown("intro", "# Mixed composition\n\nReferences plus a step of its own."),
            cell("params", ["pipeline-parameters"], "scale = 3"),
            ref("ref-a", "notebook_a"),
            ref("ref-b", "notebook_b"),
            ref("ref-c", "notebook_c"),
            cell("final", ["step:final"], "print('final prediction:', prediction, 'scale', scale)"),
        ],
        "composed-mixed",
        image="",
    ),
    "main_run": nb(
        [
            markdown("intro", "# Composed with %run\n\nThe way a Jupyter user composes."),
            cell("run-a", [], "%run notebook_a.ipynb"),
            cell("run-b", [], "# the model\n%run ./notebook_b.ipynb"),
            cell("run-c", [], "%run notebook_c.ipynb"),
            cell("final", ["step:final"], "print('final prediction:', prediction)"),
        ],
        "composed-run",
        image="",
    ),
}

if __name__ == "__main__":
    for name, content in NOTEBOOKS.items():
        (HERE / f"{name}.ipynb").write_text(json.dumps(content, indent=1) + "\n")
