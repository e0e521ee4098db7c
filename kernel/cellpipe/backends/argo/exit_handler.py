"""The Argo Workflow's exit handler: tell the run's webhook how the run ended, from the cluster.

The manifest (``manifest.notify_template``) adds a template that Argo runs once the DAG has
ended, whatever its outcome, in the image of the first step (it has python3 and cellpipe)::

    python3 -m cellpipe.backends.argo.exit_handler --notify JSON --run JSON \
        --status {{workflow.status}} --failures {{workflow.failures}} \
        --duration {{workflow.duration}} --created {{workflow.creationTimestamp.s}} \
        [--parameter NAME={{workflow.parameters.NAME}}]...

So a run nobody follows (a CronWorkflow's, ``cellpipe schedule``) notifies too. The status it
POSTs has the shape of the local driver's (``RunStatus.to_json``), built from what the
controller tells an exit handler, and is sent by :func:`cellpipe.core.notify.send`: the
same retries, backoff and timeout as a local run's notification. ``${NAME}`` in the URL is
read from this pod's environment, where a ``secretKeyRef`` put it. The pod always exits 0:
a notification never changes the Workflow's outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cellpipe.rundir import layout

#: Where the pod sees the run's values (and the gates' verdicts next to them), when the run's
#: data is on a volume.
DATA_ROOT = layout.data_root(Path("/cellpipe/run"))  # manifest.RUN_DIR
#: How the controller words a node it stopped (``cellpipe cancel`` sets ``shutdown: Stop``):
#: a pending node, a running pod (``exec_control.go``, two spaces), a pod not yet created.
_STOPPED = re.compile(r"^(Stopped with strategy|workflow shutdown with strategy:)")
_RETRY_ATTEMPT = re.compile(r"\(\d+\)$")


def failures(raw: str) -> list[dict[str, Any]]:
    """``{{workflow.failures}}``: Argo gives a JSON list, itself quoted as a JSON string (and
    ``null`` when nothing failed). Anything unreadable counts as no failure."""
    value: Any = raw
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [f for f in value if isinstance(f, dict)] if isinstance(value, list) else []


def run_status(
    run: Mapping[str, Any],
    workflow_status: str,
    failed_nodes: list[dict[str, Any]],
    *,
    duration_s: float | None = None,
    created: float | None = None,
    parameters: Mapping[str, str] | None = None,
    verdict_of: Callable[[str], Mapping[str, Any] | None] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The run's status as the local driver would POST it, from what Argo tells the handler.

    ``run`` (written by the manifest): ``run_id``, ``notebook``, ``workflow``, ``namespace``,
    ``steps`` (``[name, task, [upstream steps], gated]`` in topological order) and
    ``planned`` (the states of the steps left out of the Workflow: cached, skipped).
    A step is failed when its node (its retries' parent, or its fan-out merge) is in
    ``{{workflow.failures}}``, cancelled when Argo stopped it; a step downstream of one that
    did not succeed is skipped, as locally; one downstream of a gate is skipped when the
    gate's recorded verdict (``verdict_of``) is closed, and ``unknown`` when the verdict
    cannot be read (S3 data). Every other step succeeded.
    """
    now = time.time() if now is None else now
    by_task: dict[str, dict[str, Any]] = {}
    for node in failed_nodes:
        task = str(node.get("displayName") or "")
        if _RETRY_ATTEMPT.search(task):
            continue  # one attempt of a retried step: its parent says whether it failed
        by_task.setdefault(task, node)
    planned = dict(run.get("planned") or {})
    cancelled = workflow_status != "Succeeded" and any(
        _STOPPED.match(str(n.get("message", ""))) for n in failed_nodes
    )
    graph = [tuple(s) for s in run.get("steps") or []]
    gated = {s[0] for s in graph if s[3]}
    steps: dict[str, dict[str, Any]] = {}
    closed: set[str] = set()
    for name, task, after, _ in graph:
        if name in planned:
            state, message = planned[name], ""
        elif task in by_task:
            message = str(by_task[task].get("message") or "")
            state = "cancelled" if _STOPPED.match(message) else "failed"
        else:
            state, message, gate = _downstream(after, steps, gated, planned, closed, verdict_of)
            if gate:
                closed.add(name)  # skipped behind a closed gate: its reason passes down
            if state == "succeeded" and name in gated and verdict_of is not None:
                message = str((verdict_of(name) or {}).get("message") or "")  # as locally
        steps[name] = {"state": state, "message": message}
    if workflow_status == "Succeeded":
        state = "succeeded"
    elif cancelled:
        state = "cancelled"
    else:
        state = "failed"
    bad = [n for n, s in steps.items() if s["state"] == "failed"]
    message = {"succeeded": "", "cancelled": "cancelled"}.get(state, "")
    if state == "failed":  # as the follower words it (backend._Follower.finish)
        many = "s" if len(bad) > 1 else ""
        message = f"step{many} {', '.join(bad)} failed" if bad else f"workflow {workflow_status}"
    started = created if created is not None else (now - duration_s if duration_s else None)
    return {
        "run_id": run.get("run_id"),
        "state": state,
        "steps": steps,
        "notebook": run.get("notebook"),
        "backend": "argo",
        "parameters": dict(parameters or {}),
        "started_at": started,
        "ended_at": now,
        "duration_s": None if duration_s is None else round(duration_s, 3),
        "message": message,
        "path": "",
        "workflow": run.get("workflow"),
        "namespace": run.get("namespace"),
    }


def _downstream(
    after: list[str],
    steps: Mapping[str, Mapping[str, Any]],
    gated: set[str],
    planned: Mapping[str, str],
    closed: set[str],
    verdict_of: Callable[[str], Mapping[str, Any] | None] | None,
) -> tuple[str, str, bool]:
    """The state and message of a step that did not fail, from its upstream steps, in the
    order the follower decides it (``backend._Follower._skip_reason``): a closed gate first
    (then True: skipped behind a gate), then an upstream step that did not succeed."""
    from cellpipe.compiling.gates import closed_reason

    for up in after:
        if up in closed:
            return "skipped", steps[up]["message"], True
        if up in gated and up not in planned and steps[up]["state"] == "succeeded":
            verdict = verdict_of(up) if verdict_of else None
            if verdict is None:
                return "unknown", f"behind the gate of step {up}, whose verdict is unknown", False
            why = closed_reason(verdict)
            if why:
                return "skipped", why, True
    for up in after:
        up_state = steps[up]["state"]
        if up_state in ("failed", "cancelled", "skipped"):
            return "skipped", f"upstream step {up} {up_state}", False
        if up_state == "unknown":
            return "unknown", steps[up]["message"], False
    return "succeeded", "", False


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _verdict_from(root: Path) -> Callable[[str], Mapping[str, Any] | None]:
    def read(step: str) -> Mapping[str, Any] | None:
        try:
            return json.loads((root / step / layout.GATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cellpipe.backends.argo.exit_handler")
    parser.add_argument("--notify", required=True, help="the target, as run.json keeps it")
    parser.add_argument("--run", required=True, help="the run's id, notebook and steps (JSON)")
    parser.add_argument("--status", default="", help="{{workflow.status}}")
    parser.add_argument("--failures", default="", help="{{workflow.failures}}")
    parser.add_argument("--duration", default="", help="{{workflow.duration}}")
    parser.add_argument("--created", default="", help="{{workflow.creationTimestamp.s}}")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        from cellpipe.core.notify import Notify, send

        target = Notify.parse(json.loads(args.notify))
        if target is None:
            return 0
        run = json.loads(args.run)
        status = run_status(
            run,
            args.status,
            failures(args.failures),
            duration_s=_number(args.duration),
            created=_number(args.created),
            parameters=dict(p.partition("=")[::2] for p in args.parameter),
            verdict_of=_verdict_from(DATA_ROOT) if run.get("data_on_volume") else None,
        )
        print(f"cellpipe: run {status['run_id']} {status['state']}", file=sys.stderr)
        send(target, status)
    except Exception as exc:  # the Workflow's outcome never depends on its notification
        print(f"cellpipe: warning: notify: {type(exc).__name__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
