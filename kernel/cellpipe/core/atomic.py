"""Writes that readers never see half done: the run directory's rule for every file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``; readers see the old or the new content, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line with a single ``write`` on an ``O_APPEND`` descriptor.

    Several processes (the scheduler and the steps it starts) append to the same
    ``events.jsonl``; one write per record keeps records whole, and readers ignore a last
    line without its newline. A process killed mid-write (or a full disk) can leave such a
    torn last line: the next record then starts on a fresh line rather than being glued
    onto it, so only the torn record is lost. A short write is finished or raises OSError,
    never silently left half done.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(f"could not append to {path}: nothing written")
            view = view[written:]
    finally:
        os.close(fd)
