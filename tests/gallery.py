"""Notebooks written by other people: scikit-learn's example gallery, as its users get it.

scikit-learn publishes its gallery as sphinx-gallery scripts (BSD-3-Clause) inside the
source distribution of every release. Nothing of it is committed here: ``fetch`` downloads
the sdist of the scikit-learn that is installed, from the package index pip is configured
with, checks its sha256 against the index, and keeps the examples in a cache outside the
clone. ``to_notebook`` turns a script into the notebook sphinx-gallery's "Download Jupyter
notebook" gives (text blocks as Markdown, RST section titles as Markdown headings), and
``tagged`` splits it into one step per section with cellpipe's own ``tag --at-headings``
engine: no ``prev:`` tags, as a user who just presses "Split at headings" would have it.

    python tests/gallery.py fetch     # download (once per scikit-learn version)
    python tests/gallery.py show NAME # the tagged notebook, as JSON
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import nbformat

PROJECT = "scikit-learn"
#: Cells are split where sphinx-gallery splits them: ``# %%`` or a line of 20+ ``#``.
_SEPARATOR = re.compile(r"^(# ?%%.*|#{20,})\s*$")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:._])\1{2,}\s*$")


def cache_root() -> Path:
    """Where downloaded galleries live: outside the clone, one folder per version."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cellpipe-tests" / "gallery"


def installed_version() -> str:
    from importlib.metadata import version

    return version(PROJECT)


def _index_url() -> str:
    """The simple index pip uses on this machine: its configuration, else pip's default."""
    for key in ("global.index-url", "install.index-url", "download.index-url"):
        got = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True
        )
        if got.returncode == 0 and got.stdout.strip():
            return got.stdout.strip().rstrip("/")
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].rstrip("/")
    from pip._internal.models.index import PyPI

    return PyPI.simple_url.rstrip("/")


def _sdist(version: str) -> tuple[str, str]:
    """The sdist's download address and sha256, from the index's JSON simple API (PEP 691)."""
    request = urllib.request.Request(
        f"{_index_url()}/{PROJECT}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    names = {f"{PROJECT.replace('-', '_')}-{version}.tar.gz", f"{PROJECT}-{version}.tar.gz"}
    for entry in files:
        if entry["filename"] in names:
            return entry["url"], entry["hashes"]["sha256"]
    raise LookupError(f"the package index has no sdist of {PROJECT} {version}")


def examples_dir(version: str | None = None) -> Path:
    """The gallery of ``version`` (default: the installed one), fetched when missing."""
    version = version or installed_version()
    target = cache_root() / f"{PROJECT}-{version}" / "examples"
    if (target / ".complete").exists():
        return target
    url, sha256 = _sdist(version)
    with urllib.request.urlopen(url, timeout=120) as answer:
        data = answer.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{url}: sha256 differs from the index's")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) > 2 and parts[1] == "examples" and member.isfile():
                dest = target.joinpath(*parts[2:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                dest.write_bytes(source.read())
    (target / ".complete").write_text(url + "\n")
    return target


# -- sphinx-gallery script -> notebook ------------------------------------------------------


def _markdown(rst_lines: list[str], levels: dict[str, int]) -> str:
    """RST text as Markdown, enough for headings: a title over a line of ``=``, ``-``, ``~``…
    becomes ``#``…, levels in order of first appearance, as RST itself orders them."""
    out: list[str] = []
    i = 0
    while i < len(rst_lines):
        line = rst_lines[i]
        over = _UNDERLINE.match(line)
        if (
            over
            and i + 2 < len(rst_lines)
            and rst_lines[i + 1].strip()
            and _UNDERLINE.match(rst_lines[i + 2])
        ):
            style = "over" + over.group(1)
            levels.setdefault(style, len(levels) + 1)
            out.append("#" * min(levels[style], 6) + " " + rst_lines[i + 1].strip())
            i += 3
            continue
        under = _UNDERLINE.match(rst_lines[i + 1]) if i + 1 < len(rst_lines) else None
        if line.strip() and under and len(rst_lines[i + 1].strip()) >= len(line.strip()):
            style = under.group(1)
            levels.setdefault(style, len(levels) + 1)
            out.append("#" * min(levels[style], 6) + " " + line.strip())
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip("\n")


def _code(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def to_notebook(script: str) -> nbformat.NotebookNode:
    """The notebook of a sphinx-gallery script: its docstring and each comment block that
    opens a cell as Markdown, the code between as code cells."""
    lines = script.splitlines()
    levels: dict[str, int] = {}
    cells: list[nbformat.NotebookNode] = []
    start = 0
    body = script.lstrip()
    if body.startswith(('"""', "'''", 'r"""')):
        quote = '"""' if '"""' in body[:4] else "'''"
        first = script.index(quote)
        end = script.index(quote, first + 3)
        cells.append(
            nbformat.v4.new_markdown_cell(_markdown(script[first + 3 : end].splitlines(), levels))
        )
        start = script[: end + 3].count("\n") + 1
    blocks: list[list[str]] = [[]]
    for line in lines[start:]:
        if _SEPARATOR.match(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    for n, block in enumerate(blocks):
        text: list[str] = []
        if n > 0:  # a block after a separator opens with its text
            while block and (block[0].startswith("#") or not block[0].strip()):
                if not block[0].strip() and not text:
                    block = block[1:]
                    continue
                if not block[0].strip():
                    break
                text.append(block[0][2:] if block[0].startswith("# ") else block[0][1:])
                block = block[1:]
        if text:
            cells.append(nbformat.v4.new_markdown_cell(_markdown(text, levels)))
        code = _code(block)
        if code:
            cells.append(nbformat.v4.new_code_cell(code))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    return nb


def tagged(path: Path) -> nbformat.NotebookNode:
    """The example at ``path`` as a notebook split into one step per section by cellpipe's
    ``tag --at-headings`` engine."""
    from cellpipe.compiling.split import apply_split, split_at_headings

    nb = json.loads(nbformat.writes(to_notebook(path.read_text())))
    out: dict[str, Any] = apply_split(nb, split_at_headings(nb))
    notebook = nbformat.reads(json.dumps(out), as_version=4)
    nbformat.validate(notebook)
    return notebook


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "fetch"
    if command == "fetch":
        print(examples_dir())
    elif command == "show":
        print(nbformat.writes(tagged(examples_dir() / sys.argv[2])))
    else:
        sys.exit(__doc__)
