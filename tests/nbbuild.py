"""Build small notebooks in tests: `notebook(("step:load", "x = 1"), ("", "print(x)"))`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def notebook(*cells: tuple[str, str] | str, metadata: dict[str, Any] | None = None) -> dict:
    """Cells as (space-separated tags, source); a plain string is an untagged code cell.

    A source starting with "# md:" becomes a markdown cell.
    """
    out = []
    for i, c in enumerate(cells):
        tags, source = ("", c) if isinstance(c, str) else c
        if source.startswith("# md:"):
            out.append(
                {
                    "cell_type": "markdown",
                    "id": f"c{i + 1}",
                    "metadata": {},
                    "source": source[5:].strip(),
                }
            )
            continue
        out.append(
            {
                "cell_type": "code",
                "id": f"c{i + 1}",
                "metadata": {"tags": tags.split()} if tags else {},
                "execution_count": None,
                "outputs": [],
                "source": source,
            }
        )
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            **(metadata or {}),
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write(path: Path, nb: dict) -> Path:
    path.write_text(json.dumps(nb, indent=1))
    return path
