"""Running a ``foreach`` cell: its loop's iterations as tasks on warm worker processes.

The step's process has run the prelude, loaded the inputs and run the step's earlier cells;
it evaluates the loop's iterable, then forks up to ``--jobs`` workers. A fork starts with
all of that state (nothing is pickled to start an iteration, items included) and runs
iterations in batches it is handed, each as a one-item loop in its IPython shell, so the
target unpacks and ``continue`` work as in the real loop. While an iteration runs, each
accumulator (see :mod:`cellpipe.compiling.foreach`) is a stand-in that records what the
iteration adds; the worker sends back the iteration's outputs and additions (and, for the
last iteration, the names it bound). The step's process merges them in iteration order:
outputs into the cell, additions replayed on the real accumulators, the last iteration's
names into the namespace: what the loop, run top to bottom, leaves.

Each successful iteration is also kept in ``<runs root>/.foreach-cache`` under a key made of
the code that leads to it (prelude, the step's cells up to the loop), the parameters, the
step's input values' hashes and the item: a retry or a resume of the run re-runs only the
iterations that did not succeed, and a later run (skip-unchanged) only the new or changed
ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import time
import types
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any

from cellpipe.compiling.foreach import FOREACH, LoopPlan, plan_loop, random_imports
from cellpipe.core.model import Cell, Role, State, Step

#: The names an iteration's item and the iterable's items have in the shell meanwhile.
_ITEM = "__cellpipe_item__"
_ITEMS = "__cellpipe_items__"
_PROGRESS_INTERVAL_S = 0.5
_CACHE = ".foreach-cache"
_FAILED = "failed"  # in the run's own store: iterations an Argo fan-out's pod saw fail


@dataclass
class Iteration:
    """What one iteration did, as the worker sends it back."""

    index: int
    ok: bool
    outputs: list[dict[str, Any]]
    ops: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]
    values: dict[str, Any] | None = None  # the names it bound (the last iteration only)
    error: dict[str, Any] | None = None
    cached: bool = False
    in_pod: bool = False  # run by an Argo fan-out's pod of its own (pod_main)
    run_id: str | None = None  # the run that kept it, once read back from a store


@dataclass
class FanoutResult:
    outputs: list[dict[str, Any]]
    execution_count: int | None
    error: dict[str, Any] | None  # {"ename", "evalue", "traceback"} of the first failure
    total: int = 0
    ran: int = 0
    cached: int = 0
    in_pods: int = 0  # of this run, each in an Argo fan-out pod of its own
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class _Accumulator:
    """Stands for an accumulator while an iteration runs: records what is added to it."""

    __slots__ = ("_log", "_name")

    def __init__(self, name: str, log: list[Any]):
        self._name, self._log = name, log

    def __setitem__(self, key: Any, value: Any) -> None:
        self._log.append((self._name, "__setitem__", (key, value), {}))

    def append(self, value: Any) -> None:
        self._log.append((self._name, "append", (value,), {}))

    def add(self, value: Any) -> None:
        self._log.append((self._name, "add", (value,), {}))

    def extend(self, values: Any) -> None:
        self._log.append((self._name, "extend", (list(values),), {}))

    def update(self, *args: Any, **kwargs: Any) -> None:
        fixed = tuple(dict(a) if hasattr(a, "keys") else list(a) for a in args)
        self._log.append((self._name, "update", fixed, dict(kwargs)))

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(
            f"`{self._name}.{attr}`: inside a foreach iteration `{self._name}` only "
            "accumulates (`[key] = value`, .append, .extend, .update, .add); read it after "
            "the loop"
        )


def run_foreach(
    rd: Any,
    step: Step,
    cell: Cell,
    shell: Any,
    *,
    attempt: int = 1,
    jobs: int | None = None,
    log: Any = None,
) -> FanoutResult:
    """Run ``cell``'s loop with its iterations spread over worker processes.

    ``rd``: the run directory; ``shell``: the step's shell, every earlier cell of the step
    run. Never raises for an error in the notebook's code: the result's ``error`` holds it.
    """
    started = time.perf_counter()
    prep = _prepare(rd, step, cell, shell)
    if isinstance(prep, FanoutResult):
        return prep
    plan, items, keys, (own, shared), done, count = prep
    total = len(items)
    result = FanoutResult([], count, None, total=total)
    # An Argo fan-out's pod that saw its iteration fail left the failure (outputs and
    # error): this attempt reports it as a local run's first attempt would, without running
    # the iteration again. Taken once: a retry of the step runs the iteration again.
    for i in range(total):
        if i not in done:
            failed = _take_failure(own, keys[i], rd.run_id)
            if failed is not None:
                failed.index = i
                done[i] = failed
    if total == 0:
        return result
    opts = rd.info().get("options") or {}
    jobs = jobs or opts.get("jobs") or len(os.sched_getaffinity(0))
    pending = [i for i in range(total) if i not in done]
    progress = _Progress(rd, step.name, attempt, total)
    progress.update(len(done), force=True)
    if pending:
        _fan_out(
            shell,
            plan,
            items,
            pending,
            min(jobs, len(pending)),
            done,
            progress,
            lambda it: _keep(own, shared, keys[it.index], rd.run_id, it),
        )
    # Merge, in iteration order, up to and including the first that failed.
    ns = shell.user_ns
    for i in range(total):
        it = done.get(i)
        if it is None:
            break
        _extend(result.outputs, it.outputs)
        if log is not None:
            for o in it.outputs:
                if o.get("output_type") == "stream":
                    log.write(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
        replayed = _replay(ns, it)
        if it.in_pod and it.run_id == rd.run_id:
            result.in_pods += 1
        else:
            result.cached += it.cached
            result.ran += not it.cached
        if not it.ok or replayed is not None:
            err = dict(replayed or it.error or {})
            err["evalue"] = (
                f"{err.get('evalue', '')} (in iteration {i + 1} of {total}, "
                f"{plan.target} = {_short(items[i])})"
            )
            result.error = err
            break
        if i == total - 1:
            ns.update({k: _received(v) for k, v in (it.values or {}).items()})
    progress.update(len([i for i in done if done[i].ok]), force=True)
    result.duration_s = time.perf_counter() - started
    return result


def _replay(ns: dict[str, Any], it: Iteration) -> dict[str, Any] | None:
    """Apply what the iteration added to the real accumulators; the error a real loop
    would have raised in that iteration (``lst[9] = x`` on a short list), if any."""
    for name, method, args, kwargs in it.ops:
        try:
            getattr(ns[name], method)(*args, **kwargs)
        except Exception as exc:
            shown = f"{name}[{args[0]!r}] = ..." if method == "__setitem__" else f"{name}.{method}"
            return {
                "ename": type(exc).__name__,
                "evalue": f"{exc} (adding to the accumulator: `{shown}`)",
                "traceback": [],
            }
    return None


def _prepare(rd: Any, step: Step, cell: Cell, shell: Any) -> Any:
    """Plan the loop, evaluate its iterable in the step's shell, key each item and take
    what the caches hold: ``(plan, items, keys, (own, shared), done, execution_count)``,
    or a FanoutResult carrying the error."""
    pipeline = rd.pipeline()
    randoms = random_imports([c.source for c in pipeline.cells if c.kind == "code"])
    plan = plan_loop(cell.source, randoms)
    made = shell.execute(f"{_ITEMS} = ({plan.iterable})")
    if not made.success:
        return FanoutResult(made.outputs, made.execution_count, made.error)
    iterable = shell.user_ns.pop(_ITEMS)
    if isinstance(iterable, types.GeneratorType):
        why = (
            f"the iterable `{plan.iterable}` is a generator: its items exist only while a "
            "loop consumes it, so they cannot be handed out to parallel tasks; make it a list"
        )
        error = {"ename": "ForeachError", "evalue": why, "traceback": []}
        return FanoutResult([], made.execution_count, error)
    items = list(iterable)
    total = len(items)
    keys = _cache_keys(shell, pipeline, plan, items)
    opts = rd.info().get("options") or {}
    use_cache = step.settings.cache and not opts.get("no_cache")
    # The run's own (retries, resume, an Argo fan-out's pods: inside the run's data, which
    # every backend shares between a run's steps) and the one runs share (skip-unchanged).
    own, shared = rd.foreach_dir(step.name), rd.path.parent / _CACHE
    done: dict[int, Iteration] = {}
    for i, key in enumerate(keys):
        last = i == total - 1
        hit = _cache_read(own, key, rd.run_id, True, need_values=last)
        if hit is None and use_cache:
            hit = _cache_read(shared, key, rd.run_id, True, need_values=last)
        if hit is not None:
            hit.index = i
            done[i] = hit
    return plan, items, keys, (own, shared), done, made.execution_count


def pod_main(
    rd: Any,
    step_name: str,
    *,
    items_only: bool,
    index: int | None,
    warm_up: Any,
    load_inputs: Any,
) -> int:
    """What an Argo fan-out's pods run (``python -m cellpipe.runner --foreach-items`` /
    ``--foreach-iteration N``): the step's prelude, inputs and cells before its foreach
    cell, then either print the indices of the iterations still to run (a JSON list, the
    task's ``outputs.result`` that ``withParam`` reads) or run iteration ``index`` and keep
    it in the run's own cache. The step's own pod then finds every iteration there and
    merges them. Exits 0 whatever the notebook's code does: an iteration that failed is
    simply not kept, and the step's pod runs it again and reports the failure.
    ``warm_up`` and ``load_inputs`` are the runner's (passed in: the runner imports this
    module)."""
    pipeline = rd.pipeline()
    step = pipeline.step(step_name)
    nothing = "[]"
    warm = warm_up(rd, None)
    shell = warm.shell
    if warm.failure or load_inputs(rd, step, shell, warm.references):
        print(nothing)
        return 0
    for cell in pipeline.step_cells(step_name):
        if FOREACH in cell.tags:
            break
        if not shell.execute(cell.source).success:
            print(nothing)
            return 0
    else:
        print(nothing)
        return 0
    prep = _prepare(rd, step, cell, shell)
    if isinstance(prep, FanoutResult):
        print(nothing)
        return 0
    plan, items, keys, (own, shared), done, _ = prep
    if items_only:
        total = len(items)
        print(json.dumps([{"index": i, "total": total} for i in range(total) if i not in done]))
        return 0
    if index is None or not 0 <= index < len(items) or index in done:
        return 0
    it = _iterate(shell, plan, plan.iteration_source(_ITEM), items[index], index,
                  index == len(items) - 1)  # fmt: skip
    it.in_pod = True
    if it.ok:
        _keep(own, shared, keys[index], rd.run_id, it)
    else:
        _cache_write(own / _FAILED, keys[index], rd.run_id, it)
    return 0


def _fan_out(
    shell: Any,
    plan: LoopPlan,
    items: list[Any],
    pending: list[int],
    workers: int,
    done: dict[int, Iteration],
    progress: _Progress,
    keep: Any,
) -> None:
    """Run the ``pending`` iterations on ``workers`` forked processes; fill ``done``."""
    last = len(items) - 1
    batch = max(1, min(64, len(pending) // (workers * 4)))
    queue = list(pending)
    procs: dict[Connection, tuple[int, list[int]]] = {}  # conn -> (pid, its unfinished batch)
    step_pid = os.getpid()
    for _ in range(workers):
        mine, theirs = Pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            mine.close()
            _worker(shell, plan, items, theirs, last, step_pid)
        theirs.close()
        procs[mine] = (pid, [])
    first_failure: int | None = None

    def hand_out(conn: Connection) -> None:
        pid, open_batch = procs[conn]
        if open_batch:
            return
        if queue and first_failure is None:
            chunk, queue[:] = queue[:batch], queue[batch:]
            procs[conn] = (pid, chunk)
            conn.send(chunk)
        else:
            with contextlib.suppress(OSError):
                conn.send(None)
            _reap(conn, procs.pop(conn)[0])

    try:
        for conn in list(procs):
            hand_out(conn)
        while procs:
            if first_failure is not None and all(i in done for i in range(first_failure)):
                break  # every iteration before the failed one is in: the loop ends there
            for conn in wait(list(procs)):
                pid, open_batch = procs[conn]
                try:
                    it: Iteration = conn.recv()
                except (EOFError, OSError):
                    lost = open_batch[0] if open_batch else None
                    procs.pop(conn)
                    _reap(conn, pid)
                    if lost is not None:
                        done[lost] = Iteration(lost, False, [], [], error={
                            "ename": "WorkerDied",
                            "evalue": "the process running the iteration died (out of memory, "
                            "or killed)",
                            "traceback": [],
                        })  # fmt: skip
                        first_failure = lost if first_failure is None else min(first_failure, lost)
                        queue[:0] = [i for i in open_batch[1:] if i not in done]
                    continue
                done[it.index] = it
                open_batch.remove(it.index)
                if it.ok:
                    keep(it)
                elif first_failure is None or it.index < first_failure:
                    first_failure = it.index
                progress.update(sum(1 for d in done.values() if d.ok))
                hand_out(conn)
    finally:
        for conn, (pid, _) in list(procs.items()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _reap(conn, pid)


def _worker(
    shell: Any, plan: LoopPlan, items: list[Any], conn: Connection, last: int, parent: int
) -> None:
    """A forked worker's life: run the iterations it is handed, send each one back."""
    code = 0
    try:
        _own_session(parent)
        shell.step_log = None  # the step's process writes the log, in iteration order
        shell.on_output = None
        source = plan.iteration_source(_ITEM)
        while True:
            chunk = conn.recv()
            if chunk is None:
                break
            for i in chunk:
                conn.send(_iterate(shell, plan, source, items[i], i, i == last))
    except (EOFError, OSError, KeyboardInterrupt):
        code = 1
    finally:
        os._exit(code)


def _own_session(parent: int) -> None:
    """A worker gets a session of its own, as each step has: Linux's autogroup scheduling
    shares the CPU between sessions, so workers left in the step's session would split one
    step's share however many cores are free. It still dies with the step (cancel, timeout,
    a crash), by the parent-death signal, since the step's process-group kill no longer
    reaches it."""
    with contextlib.suppress(OSError):
        os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the step ended before the signal was armed
        os._exit(1)


def _iterate(
    shell: Any, plan: LoopPlan, source: str, item: Any, index: int, last: bool
) -> Iteration:
    ns = shell.user_ns
    ops: list[Any] = []
    saved = {a: ns[a] for a in plan.accumulators if a in ns}
    for a in saved:
        ns[a] = _Accumulator(a, ops)
    ns[_ITEM] = item
    try:
        run = shell.execute(source)
    finally:
        ns.update(saved)
        ns.pop(_ITEM, None)
    values = None
    if last and run.success:
        values = {n: _sendable(ns[n]) for n in plan.names if n in ns}
    it = Iteration(index, run.success, run.outputs, ops, values, run.error)
    try:
        pickle.dumps(it, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return Iteration(index, False, run.outputs, [], None, {
            "ename": "UnpicklableValue",
            "evalue": f"what the iteration made cannot be sent back to the step: {exc}",
            "traceback": [],
        })  # fmt: skip
    return it


@dataclass(frozen=True)
class _ModuleRef:
    """A module the body imported, sent by name (modules do not pickle)."""

    name: str


def _sendable(value: Any) -> Any:
    return _ModuleRef(value.__name__) if isinstance(value, types.ModuleType) else value


def _received(value: Any) -> Any:
    if isinstance(value, _ModuleRef):
        import importlib

        return importlib.import_module(value.name)
    return value


def _reap(conn: Connection, pid: int) -> None:
    with contextlib.suppress(OSError):
        conn.close()
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


class _Progress:
    """``7/20`` for the sidebar and ``cellpipe status``: a running event at most twice a
    second, with ``iterations: {done, total}``."""

    def __init__(self, rd: Any, step: str, attempt: int, total: int):
        self.rd, self.step, self.attempt, self.total = rd, step, attempt, total
        self._last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_INTERVAL_S:
            return
        self._last = now
        self.rd.emit(
            State.RUNNING,
            self.step,
            attempt=self.attempt,
            message=f"{done}/{self.total} iterations",
            pid=os.getpid(),
            iterations={"done": done, "total": self.total},
        )


# -- the cache ------------------------------------------------------------------------------


def _cache_keys(shell: Any, pipeline: Any, plan: LoopPlan, items: list[Any]) -> list[str | None]:
    """One key per item: the loop's code, the notebook's imports and functions cells, the
    values the body reads (and those the notebook's functions it calls read), and the item.
    Not the iterable: a list that grew by one item keeps the other items' keys."""
    ns = shell.user_ns
    h = hashlib.sha256()
    h.update(json.dumps([plan.target, plan.body, list(plan.names)]).encode())
    for c in pipeline.cells:
        if c.role in (Role.IMPORTS, Role.FUNCTIONS):
            h.update(c.source.encode())
    seen: set[str] = set()
    todo = sorted(_names_read(plan.body))
    while todo:
        name = todo.pop()
        if name in seen or name in plan.names or name in plan.accumulators or name not in ns:
            continue
        seen.add(name)
        value = ns[name]
        if isinstance(value, types.ModuleType):
            h.update(f"{name}=module {value.__name__}".encode())
        elif isinstance(value, types.FunctionType):
            code = value.__code__
            h.update(f"{name}=function {code.co_code.hex()} {code.co_consts!r}".encode())
            todo.extend(code.co_names)
        else:
            try:
                h.update(name.encode() + b"=" + pickle.dumps(value, protocol=4))
            except Exception:
                return [None] * len(items)  # cannot tell the value apart: no cache
    head = h.digest()
    keys: list[str | None] = []
    for item in items:
        try:
            blob = pickle.dumps(item, protocol=4)
        except Exception:
            keys.append(None)
            continue
        keys.append(hashlib.sha256(head + b"\0" + blob).hexdigest())
    return keys


def _names_read(body: str) -> set[str]:
    import ast

    return {
        n.id
        for n in ast.walk(ast.parse(body))
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


def _cache_read(
    directory: Path, key: str | None, run_id: str, use_cache: bool, need_values: bool
) -> Iteration | None:
    if key is None:
        return None
    try:
        with open(directory / key[:2] / f"{key}.pkl", "rb") as f:
            entry = pickle.load(f)
    except Exception:
        return None
    if entry.get("run_id") != run_id and not use_cache:
        return None
    it: Iteration = entry["iteration"]
    if need_values and it.values is None:
        return None
    it.cached = True
    it.run_id = entry.get("run_id")
    return it


def _take_failure(own: Path, key: str | None, run_id: str) -> Iteration | None:
    """The failure an Argo fan-out's pod of this run kept for ``key``, removed as it is
    read (see :func:`run_foreach`)."""
    if key is None:
        return None
    path = own / _FAILED / key[:2] / f"{key}.pkl"
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f)
        path.unlink()
    except Exception:
        return None
    if entry.get("run_id") != run_id:
        return None
    it: Iteration = entry["iteration"]
    it.run_id = run_id
    return it


def _keep(own: Path, shared: Path, key: str | None, run_id: str, it: Iteration) -> None:
    _cache_write(own, key, run_id, it)
    _cache_write(shared, key, run_id, it)


def _cache_write(directory: Path, key: str | None, run_id: str, it: Iteration) -> None:
    if key is None:
        return
    path = directory / key[:2] / f"{key}.pkl"
    with contextlib.suppress(Exception):  # a cache that cannot be written only costs time
        blob = pickle.dumps({"run_id": run_id, "iteration": it}, protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(blob)
        os.replace(tmp, path)


def _extend(outputs: list[dict[str, Any]], more: list[dict[str, Any]]) -> None:
    """Append ``more``, joining a stream to the one before it as a kernel's client does
    (one loop's prints are one output, as in the notebook)."""
    for o in more:
        prev = outputs[-1] if outputs else None
        if (
            prev is not None
            and o.get("output_type") == "stream" == prev.get("output_type")
            and o.get("name") == prev.get("name")
        ):
            prev["text"] = _text(prev["text"]) + _text(o["text"])
        else:
            outputs.append(dict(o))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "".join(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
