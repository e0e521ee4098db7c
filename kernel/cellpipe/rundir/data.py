"""A step's data directory as the run directory lists it: ``manifest.json`` and its records.

The manifest is part of the run directory's contract (the cache, lineage, reports and every
consuming step read it); the files it points at are named and written by
cellpipe.execution.marshal, which is handed the directory and owns what goes inside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.core.atomic import write_json
from cellpipe.rundir.layout import MANIFEST


@dataclass(frozen=True, slots=True)
class ValueRecord:
    """One saved value, as ``manifest.json`` lists it.

    ``file`` is relative to the step's data directory (``""`` for modules); ``sha256`` is
    the hash of the file's bytes (of the module name for modules); ``info`` holds small,
    human-readable details (``shape``/``dtype`` of arrays, ``rows``/``columns`` of frames).
    """

    name: str
    file: str
    format: str  # "npy" | "parquet" | "pickle" | "torch" | "module" | "group"
    type: str
    bytes: int
    sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "format": self.format,
            "type": self.type,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "info": dict(self.info),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ValueRecord:
        return cls(
            name=d["name"],
            file=d["file"],
            format=d["format"],
            type=d["type"],
            bytes=d["bytes"],
            sha256=d["sha256"],
            info=dict(d.get("info", {})),
        )


def write_manifest(directory: Path, records: Iterable[ValueRecord]) -> None:
    """Write ``directory/manifest.json`` listing ``records`` by name, atomically."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(directory / MANIFEST, {r.name: r.to_json() for r in records})


def read_manifest(directory: Path) -> dict[str, ValueRecord]:
    """The records of ``directory/manifest.json`` by name.

    Raises ``FileNotFoundError`` when the step has saved nothing (yet).
    """
    data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    return {k: ValueRecord.from_json(v) for k, v in data.items()}


def has_manifest(directory: Path) -> bool:
    return (directory / MANIFEST).is_file()


@dataclass(frozen=True, slots=True)
class StepInput:
    """One input of a step, as its producer saved it in this run."""

    name: str
    producer: str
    directory: Path  # the producer's data directory
    saved: bool  # False: the producer has saved no data at all (it did not run, or failed)
    record: ValueRecord | None  # None: not saved (the producer left the name unset)
