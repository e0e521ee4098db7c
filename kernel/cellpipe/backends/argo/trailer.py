"""The result trailer: how a step in a pod hands its record back through the pod log.

A step on Argo writes its run directory inside the pod, which the machine that follows the
run cannot read, and cellpipe does not require an object store. So the runner, asked with
``--result-trailer``, mirrors the step's log to the pod's stdout and ends it with one line::

    ::cellpipe-result:: <base64 of zlib of JSON>

The JSON holds the step's events, its ``outputs/<step>.json``, its metrics, the manifest of
the values it saved (their hashes key the cache of the steps downstream) and its gate's
verdict. The follower
reads the pod log, takes the *last* trailer (a cell printing something that looks like one
cannot hide the real one, which comes after every cell), and strips it from the log the user
sees. Only JSON crosses: nothing from a pod is ever unpickled.
"""

from __future__ import annotations

import ast
import base64
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from cellpipe.core.model import Pipeline

MARK = "::cellpipe-result:: "
VERSION = 1
#: A trailer that inflates to more than this is refused (a log is not a place for gigabytes).
MAX_INFLATED = 256 * 1024 * 1024


@dataclass
class StepResult:
    """What a step in a pod reported about itself."""

    step: str
    events: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None  # the saved values' records, by name
    gate: dict[str, Any] | None = None  # the gate's verdict (cellpipe.compiling.gates)
    lineage: dict[str, Any] | None = None  # the step's lineage record (cellpipe.execution.lineage)

    @property
    def final(self) -> dict[str, Any] | None:
        """The step's last terminal event (``succeeded`` or ``failed``), if it got that far."""
        for ev in reversed(self.events):
            if ev.get("state") in ("succeeded", "failed"):
                return ev
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "step": self.step,
            "events": self.events,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "manifest": self.manifest,
            "gate": self.gate,
            "lineage": self.lineage,
        }


def encode(result: StepResult) -> str:
    """The trailer line for ``result``, newline included."""
    raw = json.dumps(result.to_json(), separators=(",", ":"), default=str).encode()
    return MARK + base64.b64encode(zlib.compress(raw, 6)).decode("ascii") + "\n"


def decode(payload: str) -> StepResult:
    """The result in a trailer's payload (the text after :data:`MARK`). Raises ValueError."""
    try:
        packed = base64.b64decode(payload.strip(), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_INFLATED)
        if inflater.unconsumed_tail:
            raise ValueError(f"result trailer inflates to more than {MAX_INFLATED} bytes")
        data = json.loads(raw)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"unreadable result trailer: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION or "step" not in data:
        raise ValueError("unreadable result trailer: not a cellpipe result of this version")
    return StepResult(
        step=str(data["step"]),
        events=[e for e in data.get("events") or [] if isinstance(e, dict)],
        outputs=data.get("outputs") if isinstance(data.get("outputs"), dict) else None,
        metrics=data.get("metrics") if isinstance(data.get("metrics"), dict) else None,
        manifest=data.get("manifest") if isinstance(data.get("manifest"), dict) else None,
        gate=data.get("gate") if isinstance(data.get("gate"), dict) else None,
        lineage=data.get("lineage") if isinstance(data.get("lineage"), dict) else None,
    )


def split_log(text: str) -> tuple[str, StepResult | None]:
    """A pod log -> (the log a user reads, the step's result or None).

    Every trailer line is removed from the log; the last readable one is the result. Text a
    step printed without a final newline stays in the log, ahead of the trailer's mark.
    """
    kept: list[str] = []
    result: StepResult | None = None
    for line in text.splitlines(keepends=True):
        at = line.find(MARK)
        if at < 0:
            kept.append(line)
            continue
        if at:
            kept.append(line[:at] + "\n")
        try:
            result = decode(line[at + len(MARK) :])
        except ValueError:
            continue
    return "".join(kept), result


class Tee:
    """The step's log file, mirrored to a second stream. Closing closes only the file."""

    def __init__(self, file: TextIO, mirror: TextIO):
        self._file, self._mirror = file, mirror

    def write(self, text: str) -> int:
        self._file.write(text)
        self._mirror.write(text)
        return len(text)

    def flush(self) -> None:
        self._file.flush()
        self._mirror.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._mirror.flush()
        self._file.close()


def parse_overrides(pipeline: Pipeline, items: Iterable[str]) -> dict[str, Any]:
    """``NAME=TEXT`` arguments (Workflow parameters) -> the values to inject after the
    parameters cell. TEXT is a Python literal (``'abc'``, ``0.5``), else typed like
    ``cellpipe run -p`` (``abc``, ``true``). A TEXT equal to the cell's own source for the name
    is no override: the cell computes it, expressions included. Raises ValueError."""
    from cellpipe.compiling.notebook import coerce_parameter

    declared = {p.name: p for p in pipeline.parameters}
    given: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in declared:
            known = ", ".join(declared) or "none"
            raise ValueError(
                f"--parameter {item!r}: not NAME=VALUE of a declared parameter ({known})"
            )
        if text.strip() == declared[name].expression.strip():
            continue
        try:
            given[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            given[name] = coerce_parameter(text)
    return {n: given[n] for n in declared if n in given}
