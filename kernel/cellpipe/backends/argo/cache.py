"""Skip unchanged steps on Argo: the local cache's keys, with values that stay on the cluster.

A step's key is the one the local scheduler computes (:func:`cellpipe.execution.cache.step_key`:
code, parameters it reads, settings, its inputs' content hashes, files it reads). What differs
is where things are:

- The **values** stay on the run's storage: the claim's sub-path ``<run>/data/<step>`` or S3
  keys under ``<key_prefix>/<run>/<step>/``. A step reused from an earlier run is left out of
  the submitted DAG, and its consumers read its values where that run left them (the
  manifest mounts that sub-path read-only, or names those S3 keys: ``RunTarget.reuse``).
- The **records** come back in each pod's result trailer (the manifest of the values saved,
  with their hashes, and the gate's verdict) and go into the local run directory
  (``RunDir.record_remote``, ``record_gate``, ``record_cache_key``): the driver computes the
  keys of the steps downstream from them, before submitting (their upstream steps are
  cached) or after a step ran (to index it for the next run).
- The **index** is the runs root's (``CacheIndex``), its keys scoped by the storage: a hit is
  a run whose values are on the same claim or bucket as this one's, never a local run's.

A run on a volume of its own (``volumeClaimTemplates``, deleted with its Workflow) shares no
storage with a later run: there is nothing to reuse, so such runs only resume (``--resume``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.backends.argo.manifest import ArgoSettings
from cellpipe.compiling.gates import closed_upstream, inherited_verdict
from cellpipe.core.model import Pipeline, Step
from cellpipe.core.pseudo import is_file
from cellpipe.execution.cache import input_hashes, parameters_seen, step_key
from cellpipe.rundir.runs import CacheIndex, RunDir


def storage_id(settings: ArgoSettings, namespace: str) -> str | None:
    """What runs must share for one to reuse another's values; None: they share nothing."""
    s3 = settings.s3
    if s3 is not None:
        if s3.endpoint:
            where = f"{s3.endpoint}/{s3.bucket}"
        elif s3.repository_ref:
            where = f"{namespace}/configmap/{s3.repository_ref[0]}:{s3.repository_ref[1] or ''}"
        else:
            where = f"{namespace}/default-repository"
        return f"s3:{where}/{s3.key_prefix}"
    if settings.existing_claim:
        return f"pvc:{namespace}/{settings.existing_claim}"
    return None


def _scoped(storage: str, key: str) -> str:
    return hashlib.sha256(f"{storage}\0{key}".encode()).hexdigest()


def _hashes(record: Mapping[str, Any] | None) -> dict[str, str] | None:
    """name -> sha256 of the values a step saved, from its remote record."""
    if record is None:
        return None
    manifest = record.get("manifest") or {}
    return {n: str(r.get("sha256", "")) for n, r in manifest.items() if isinstance(r, Mapping)}


def _hands_on_files(pipeline: Pipeline, step: Step) -> bool:
    """Whether a step downstream reads a file ``step`` writes: such files are in the run's
    working directory (``<run>/work``), not with the values, so the step cannot be reused."""
    return any(is_file(n) and p == step.name for s in pipeline.steps for n, p in s.inputs.items())


@dataclass
class Plan:
    """What a submission leaves out of the DAG and why."""

    reused: dict[str, tuple[RunDir, str]] = field(default_factory=dict)  # step -> (run, step)
    skipped: dict[str, str] = field(default_factory=dict)  # step -> why (a closed gate)
    keys: dict[str, str] = field(default_factory=dict)  # step -> its key, where known
    run_keys: dict[str, str] = field(default_factory=dict)  # step -> run key of its values

    def left_out(self, kept: Collection[str]) -> set[str]:
        return set(kept) | set(self.reused) | set(self.skipped)


def key_of(rd: RunDir, pipeline: Pipeline, step: Step) -> str | None:
    """``step``'s key from this run directory's records of its producers; None when the
    step is not cached (``cache:false``) or a producer's values are not known yet."""
    if not step.settings.cache:
        return None
    producers = set(step.inputs.values())
    records = {p: _hashes(rd.remote(p)) for p in producers}
    if any(records[p] is None for p in producers):
        return None
    params = rd.info().get("parameters") or {}
    workdir = Path(rd.info().get("workdir") or ".")
    # The files as the pod saw them (the folder shipped with the Workflow), not as they are
    # now: a file edited while the run went on must not be keyed with the older results.
    shipped = ((rd.info().get("argo") or {}).get("folder") or {}).get("files")
    return step_key(
        pipeline,
        step,
        parameters_seen(pipeline, step, params),
        input_hashes(pipeline, step, records.get, workdir, shipped),
    )


def plan(
    rd: RunDir,
    pipeline: Pipeline,
    *,
    kept: Collection[str],
    storage: str | None,
    use_cache: bool,
) -> Plan:
    """Which steps need not run: reused from an earlier run on the same ``storage`` (their
    inputs known, their key indexed), or behind a gate that a kept or reused step closed."""
    out = Plan()
    index = CacheIndex(rd.runs_root)
    known: dict[str, dict[str, str] | None] = {}  # steps not running -> their values' hashes
    verdicts: dict[str, Any] = {}
    for step in pipeline.steps:  # topological order
        name = step.name
        if name in kept:
            record = rd.remote(name)
            verdicts[name] = rd.gate_verdict(name)
            if record is not None:  # else (a run from before records): keys stay unknown
                known[name] = _hashes(record)
                if record.get("run_key"):
                    out.run_keys[name] = str(record["run_key"])
            continue
        why = closed_upstream(step, lambda u: verdicts.get(u))
        if why:
            out.skipped[name] = why
            verdicts[name] = inherited_verdict(why)
            known[name] = {}
            continue
        producers = set(step.inputs.values())
        if not step.settings.cache or not producers <= set(known):
            continue
        workdir = Path(rd.info().get("workdir") or ".")
        params = rd.info().get("parameters") or {}
        key = step_key(
            pipeline,
            step,
            parameters_seen(pipeline, step, params),
            input_hashes(pipeline, step, known.get, workdir),
        )
        out.keys[name] = key
        if not use_cache or storage is None or _hands_on_files(pipeline, step):
            continue
        hit = index.lookup(_scoped(storage, key), remote=True)
        record = hit[0].remote(hit[1]) if hit else None
        if hit is None or record is None or record.get("storage") != storage:
            continue
        out.reused[name] = hit
        out.run_keys[name] = str(record.get("run_key") or hit[0].run_id)
        known[name] = _hashes(record) or {}
        verdicts[name] = hit[0].gate_verdict(hit[1])
    return out


def adopt(rd: RunDir, step: str, source: RunDir, source_step: str, key: str) -> None:
    """A reused step's record, outputs, log and metrics into this run (its values stay on
    the cluster, where ``remote.json`` points)."""
    rd.adopt_step(source, source_step)
    rd.adopt_metrics(step)
    rd.record_cache_key(step, key)


def record_success(
    rd: RunDir,
    pipeline: Pipeline,
    step: str,
    *,
    manifest: Mapping[str, Any] | None,
    gate: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    storage: str | None,
    location: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> None:
    """A step that succeeded in its pod: where its values are (``location``:
    ``manifest.values_location``), their hashes, its verdict, lineage and metrics into this
    run directory; its key indexed for later runs on the same storage."""
    record: dict[str, Any] = {"storage": storage, "run_key": rd.run_id, "manifest": manifest or {}}
    if location:
        record["location"] = dict(location)
    rd.record_remote(step, record)
    if lineage:
        # The pod's run directory is not this one ("run" under /cellpipe): the step ran in
        # this run, and each input comes from where this run directory says its producer's
        # values were made (here, or the earlier run a cached producer was reused from).
        inputs = {
            name: dict(source, run=rd.lineage(source.get("step", "")).get("run", rd.run_id))
            for name, source in (lineage.get("inputs") or {}).items()
            if isinstance(source, Mapping)
        }
        rd.write_lineage(
            step,
            dict(lineage, run=rd.run_id, notebook=rd.info().get("notebook"), inputs=inputs),
        )
    if gate is not None:
        rd.record_gate(step, gate)
    if metrics:
        rd.keep_step_metrics(step, metrics)
    key = key_of(rd, pipeline, pipeline.step(step))
    if key is None:
        return
    rd.record_cache_key(step, key)
    if storage is not None:
        CacheIndex(rd.runs_root).store(_scoped(storage, key), rd, step)
