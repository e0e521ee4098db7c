"""The scheduler's check that every step started from the hidden state notebook order gives.

Steps run as the DAG allows. Each step records, in ``data/<step>/hidden.json``, the
fingerprints of every hidden-state provider after the prelude, at its entry and at its exit
(see :mod:`cellpipe.execution.hidden_state`). In notebook order, once a step and every step
before it have finished, the step is *verified*: for each provider, the state a top-to-bottom
run would have given it is the exit state of the last earlier step that changed it (else the
prelude's). A step whose entry differed and that consumed the state (for a generator: it drew
from it, so its state changed; for a setting, which can be read without a trace: it had the
library imported) runs again, from exactly that state, before anything downstream uses its
outputs. Downstream steps of a step that changed hidden state wait for it to be verified;
steps that neither found nor left any hidden state changed hand on their outputs at once, so
branches that do not touch hidden state stay parallel.

Every start is also given the best state known so far (the exit states of the finished
earlier steps that changed each provider), so a re-run is needed only when an earlier step
that changes hidden state was still running when a later one that consumes it started.
"""

from __future__ import annotations

import json
from typing import Any

from cellpipe.core.model import Pipeline, State
from cellpipe.core.pseudo import HIDDEN
from cellpipe.execution.hidden_state import BY_NAME, read_fingerprints
from cellpipe.rundir.runs import RunDir

#: At most this many runs again per step: a state that cannot be restored exactly (a
#: provider whose set() is lossy) must not loop.
MAX_RERUNS = 1


class HiddenOrder:
    """Tracks finished steps' hidden-state fingerprints for one run (driver side)."""

    def __init__(self, rd: RunDir, pipeline: Pipeline):
        self.rd = rd
        self.pipeline = pipeline
        position = {c.id: c.index for c in pipeline.cells}
        self.order = sorted(
            (s.name for s in pipeline.steps),
            key=lambda n: min((position.get(c, 0) for c in pipeline.step(n).cells), default=0),
        )
        self.rank = {n: i for i, n in enumerate(self.order)}
        self.records: dict[str, dict[str, Any] | None] = {}
        self.verified: set[str] = set()
        self.reruns: dict[str, int] = {}

    # -- records ---------------------------------------------------------------------------

    def finished(self, step: str, state: State) -> None:
        self.records[step] = read_fingerprints(self.rd.data_dir(step)) if state.ok else None

    def forget(self, step: str) -> None:
        """``step`` runs again: its record and verification no longer hold."""
        self.records.pop(step, None)
        self.verified.discard(step)

    def _changed(self, step: str) -> list[str]:
        rec = self.records.get(step)
        return list(rec.get("changed") or ()) if rec else []

    def drew(self, step: str) -> bool:
        """It changed a generator: it drew from it, so its outputs depend on the state it
        started from, which only the in-order check can confirm."""
        return any(HIDDEN[BY_NAME[p].pseudo].drawn for p in self._changed(step) if p in BY_NAME)

    def usable(self, step: str) -> bool:
        """Whether steps downstream of ``step`` may use its outputs now: once verified, or
        at once when it drew from no generator (then only a setting changed where the
        analysis could not see it can make it run again, and the scheduler then runs
        again what already used it)."""
        return step in self.verified or (step in self.records and not self.drew(step))

    def unblock(self, states: dict[str, State]) -> bool:
        """Nothing runs and nothing can start: a `prev:` edge against notebook order waits
        on a check that waits on it. Count every finished step as verified; True if that
        changed anything."""
        waiting = [s for s in self.records if s not in self.verified]
        self.verified.update(waiting)
        return bool(waiting)

    # -- entry -----------------------------------------------------------------------------

    def write_entry(self, step: str) -> None:
        """Tell the runner whose state ``step`` continues from: for each provider, the last
        finished step before it (notebook order) that changed it."""
        sources: dict[str, str] = {}
        for earlier in self.order[: self.rank[step]]:
            for provider in self._changed(earlier):
                if self._declared_rank(step, provider) < self.rank[earlier]:
                    sources[provider] = earlier
        path = self.rd.hidden_entry_path(step)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(sources), encoding="utf-8")

    def _declared_rank(self, step: str, provider: str) -> int:
        """Notebook position of the step whose state of ``provider`` the analysis gives
        ``step`` as an input (-1: none); the runner restores that one first."""
        producer = self.pipeline.step(step).inputs.get(BY_NAME[provider].pseudo)
        return self.rank.get(producer, -1) if producer else -1

    # -- verification ------------------------------------------------------------------------

    def verify(self, states: dict[str, State]) -> list[tuple[str, str]]:
        """Verify steps in notebook order as far as they have finished; return the steps that
        must run again, with why (at most the first one found: later ones wait for it)."""
        chain: dict[str, tuple[str, str | None]] = {}  # provider -> (step, exit fingerprint)
        for step in self.order:
            if not states.get(step, State.PENDING).terminal:
                return []
            # Skipped or cancelled without running (no task reported it): hands nothing on.
            self.records.setdefault(step, None)
            rec = self.records[step]
            if rec and step not in self.verified:
                why = self._mismatch(step, rec, chain, self._declared_rank)
                if why and self.reruns.get(step, 0) < MAX_RERUNS:
                    self.reruns[step] = self.reruns.get(step, 0) + 1
                    return [(step, why)]
            self.verified.add(step)
            for provider in self._changed(step):
                chain[provider] = (step, (rec or {}).get("exit", {}).get(provider))
        return []

    def _mismatch(
        self,
        step: str,
        rec: dict[str, Any],
        chain: dict[str, tuple[str, str | None]],
        declared_rank: Any,
    ) -> str | None:
        entry, exit_ = rec.get("entry") or {}, rec.get("exit") or {}
        # Where the analysis named a producer (or nothing changed it), the state the
        # declared inputs gave is the one notebook order gives.
        declared = rec.get("declared") or rec["prelude"]
        changed = set(rec.get("changed") or ())
        for provider, fp in entry.items():
            source = chain.get(provider)
            if source and declared_rank(step, provider) > self.rank[source[0]]:
                source = None
            expected = source[1] if source else declared.get(provider)
            if fp == expected or provider not in BY_NAME:
                continue
            kind = HIDDEN[BY_NAME[provider].pseudo]
            consumed = (
                provider in changed
                if kind.drawn
                else fp is not None or exit_.get(provider) is not None
            )
            if source is None and fp is None:
                consumed = False  # not imported when it started: as fresh as top to bottom
            if consumed:
                after = f"after step {source[0]} changed it" if source else "from the prelude"
                return (
                    f"it started from a different {provider} state than a top-to-bottom run "
                    f"({after}) and used it"
                )
        return None
