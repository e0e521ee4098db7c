"""A run's status, derived from its events alone (and whether its driver still lives).

``events.jsonl`` is the only record of state: nothing stores a status, so a crashed process
never leaves a lie behind. :func:`derive` is the one place that turns events into a status,
including the one state nobody writes: a run whose driver died (:attr:`RunStatus.driver_lost`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cellpipe.core.model import Pipeline, State


class Driver(Enum):
    """What is known of the process driving a run (``driver.json``)."""

    NONE = "none"  # none recorded: prepared and waiting for one, or steps run by hand
    ALIVE = "alive"  # recorded on this host, and that process still runs
    LOST = "lost"  # recorded on this host, and that process is gone
    UNKNOWN = "unknown"  # recorded, but cannot tell from here (another host, unreadable)


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    run: str
    state: State
    step: str | None = None
    attempt: int = 0
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ts": round(self.ts, 6), "run": self.run}
        if self.step is not None:
            d["step"] = self.step
        d.update(state=self.state.value, attempt=self.attempt, message=self.message)
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Event:
        """The event a record holds; ValueError saying what is wrong with any other record
        (every field is checked: a bad record must not break what reads it later)."""
        if not isinstance(d, dict):
            raise ValueError(f"a record must be a JSON object, not {_json_kind(d)}")
        missing = [k for k in ("ts", "run", "state") if k not in d]
        if missing:
            raise ValueError(f"the record has no {', '.join(map(repr, missing))}")
        ts, run, step = d["ts"], d["run"], d.get("step")
        attempt, message = d.get("attempt", 0), d.get("message", "")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise ValueError(f"'ts' must be a number, not {_json_kind(ts)}")
        if not isinstance(run, str):
            raise ValueError(f"'run' must be a string, not {_json_kind(run)}")
        if step is not None and not isinstance(step, str):
            raise ValueError(f"'step' must be a string, not {_json_kind(step)}")
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise ValueError(f"'attempt' must be a whole number, not {_json_kind(attempt)}")
        if not isinstance(message, str):
            raise ValueError(f"'message' must be a string, not {_json_kind(message)}")
        try:
            state = State(d["state"])
        except (ValueError, TypeError):
            raise ValueError(f"{d['state']!r} is not a state") from None
        known = {"ts", "run", "step", "state", "attempt", "message"}
        return cls(
            ts=float(ts),
            run=run,
            state=state,
            step=step,
            attempt=attempt,
            message=message,
            extra={k: v for k, v in d.items() if k not in known},
        )


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


@dataclass
class StepStatus:
    name: str
    state: State = State.PENDING
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    cached: bool = False
    message: str = ""
    cell: int | None = None
    cell_id: str | None = None
    iterations: dict[str, int] | None = None  # a foreach step's {"done", "total"}

    def to_json(self) -> dict[str, Any]:
        return {
            **({"iterations": self.iterations} if self.iterations else {}),
            "state": self.state.value,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "attempts": self.attempts,
            "cached": self.cached,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "message": self.message,
            "cell": self.cell,
            "cell_id": self.cell_id,
        }


@dataclass
class RunStatus:
    run_id: str
    state: State
    steps: dict[str, StepStatus]
    notebook: str | None = None
    backend: str = "local"
    parameters: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""
    path: str = ""
    #: The driver as last seen; None when the run had ended (nobody asked).
    driver: Driver | None = None
    #: The run's last word was a resume being queued (``driving.driver.prepare_resume``):
    #: whoever starts its next driver must start it with ``--resume``.
    resume_requested: bool = False

    @property
    def driver_lost(self) -> bool:
        """The run did not end: its driver died. ``state`` is then FAILED, derived here and
        written by nobody; the server announces it once (cellpipe_server.manager)."""
        return self.driver is Driver.LOST

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state.value,
            "steps": {n: s.to_json() for n, s in self.steps.items()},
            "notebook": self.notebook,
            "backend": self.backend,
            "parameters": self.parameters,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "message": self.message,
            "path": self.path,
        }


def driver_lost_message(run_id: str) -> str:
    return (
        "the process running this pipeline stopped before the run finished; "
        f"continue it with `cellpipe run --resume {run_id}`"
    )


INTERRUPTED = "interrupted: the run's process died"


def derive(
    run_id: str,
    pipeline: Pipeline,
    info: Mapping[str, Any],
    events: Iterable[Event],
    driver: Any,
    path: str = "",
    problem: str = "",
) -> RunStatus:
    """The status of a run from its events. ``driver()`` is asked only while the run has
    not ended (it reads /proc), and gives a :class:`Driver`. ``problem``: what is wrong
    with the run's files (a record that is not an event): the run is then listed as a
    failed one saying so, never hidden and never taken for a live one."""
    steps = {s.name: StepStatus(s.name) for s in pipeline.steps}
    run_state, run_msg = State.PENDING, ""
    started = ended = None
    last_ts = None
    resume = False
    for ev in events:
        last_ts = ev.ts
        if ev.step is None:
            run_state, run_msg = ev.state, ev.message
            resume = bool(ev.extra.get("resume"))
            if ev.state is State.RUNNING:
                started = started or ev.ts
                ended = None
            elif ev.state.terminal:
                ended = ev.ts
            continue
        st = steps.setdefault(ev.step, StepStatus(ev.step))
        st.state, st.message = ev.state, ev.message
        st.attempts = max(st.attempts, ev.attempt)
        st.cached = ev.state is State.CACHED
        if "iterations" in ev.extra:  # a foreach step's progress (execution/fanout.py)
            st.iterations = ev.extra["iterations"]
        if ev.state is State.RUNNING:
            if st.started_at is None or st.ended_at is not None:
                st.started_at, st.ended_at = ev.ts, None
        elif ev.state.terminal:
            st.ended_at = ev.ts
            st.duration_s = ev.extra.get("duration_s")
            if st.duration_s is None and st.started_at is not None:
                st.duration_s = ev.ts - st.started_at
            st.cell, st.cell_id = ev.extra.get("cell"), ev.extra.get("cell_id")
        elif ev.state is State.PENDING and st.ended_at is not None:
            st.started_at = st.ended_at = None  # queued again (retry or resume)
    seen = None
    if problem:
        run_state, run_msg = State.FAILED, f"this run's folder is broken: {problem}"
        ended = ended or last_ts
    elif not run_state.terminal:
        seen = driver()
        if seen is Driver.LOST:
            run_state = State.FAILED
            run_msg = driver_lost_message(run_id)
            ended = ended or last_ts
            for st in steps.values():
                if st.state is State.RUNNING:
                    st.state, st.message = State.FAILED, INTERRUPTED
    return RunStatus(
        run_id=run_id,
        state=run_state,
        steps=steps,
        notebook=info.get("notebook"),
        backend=info.get("backend", "local"),
        parameters=info.get("parameters", {}),
        started_at=started or info.get("created_at"),
        ended_at=ended,
        message=run_msg,
        path=path,
        driver=seen,
        resume_requested=resume,
    )
