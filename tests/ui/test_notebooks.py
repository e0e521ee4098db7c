"""The browser tests' notebooks are what tests/ui/notebooks/make.py writes."""

from __future__ import annotations

import json

import pytest

from .harness import NOTEBOOKS
from .notebooks.make import NOTEBOOKS as BUILT


@pytest.mark.parametrize("name", sorted(BUILT))
def test_committed_notebook_matches_its_definition(name: str) -> None:
    committed = json.loads((NOTEBOOKS / name).read_text())
    assert committed == BUILT[name], f"run `python tests/ui/notebooks/make.py` and commit {name}"
