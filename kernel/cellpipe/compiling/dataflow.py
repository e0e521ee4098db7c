"""From per-cell names to steps: inputs, outputs, edges, and the order steps run in.

The rule is DESIGN's: a step's inputs are the names it reads whose last writer, in notebook
order, is another step; a step's outputs are the names it writes or mutates that a later step
reads. Everything is checked against what a top-to-bottom run would see, and every problem is
collected (not just the first) with its cell number.
"""

from __future__ import annotations

import difflib
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from cellpipe.compiling.analysis import (
    BUILTINS,
    CellFlow,
    CellSyntaxError,
    FunctionInfo,
    analyse_cell,
    is_history_name,
)
from cellpipe.core.errors import Diagnostic
from cellpipe.core.model import Cell, Edge, Role, Step, StepSettings
from cellpipe.core.pseudo import IMPLICIT, is_pseudo

#: Hidden state every step implicitly depends on once a step has changed it: imports follow
#: sys.path, relative paths follow the working directory, libraries read the environment and
#: their own settings (display options, rcParams, warning filters, ...).
_IMPLICIT = IMPLICIT


@dataclass
class _Writer:
    cell: Cell
    step: str | None  # None: a prelude cell (imports, functions, parameters)
    deleted: bool = False
    is_import: bool = False


@dataclass
class FlowResult:
    steps: list[Step]  # in run order
    edges: list[Edge]
    diagnostics: list[Diagnostic] = field(default_factory=list)


@dataclass
class _StepFlow:
    inputs: dict[str, tuple[str, int, int]] = field(
        default_factory=dict
    )  # name -> producer, writer idx, reader no.
    writes: dict[str, list[int]] = field(default_factory=dict)  # name -> writing cell indexes
    carried: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # kept earlier values
    bound: set[str] = field(default_factory=set)  # names a cell of the step assigns
    absent: list[str] = field(default_factory=list)  # prelude names unbound before its cells
    metrics: list[str] = field(default_factory=list)


def resolve(
    cells: list[Cell],
    step_order: list[str],
    prev: dict[str, list[tuple[str, int]]],
    settings: dict[str, StepSettings],
) -> FlowResult:
    """Compute every step's inputs, outputs and upstream steps from the cells' data flow."""
    diags: list[Diagnostic] = []
    writers: dict[str, _Writer] = {}
    modules: dict[str, str] = {}
    funcs: dict[str, FunctionInfo] = {}
    stars: list[tuple[str, int]] = []
    flows = {s: _StepFlow() for s in step_order}
    later_definitions = _definitions_by_cell(cells)
    warned_star: set[str] = set()
    prelude_names: set[str] = set()
    shared = _Sharing()

    for cell in cells:
        if cell.kind != "code" or cell.role in (Role.SKIP, Role.MARKDOWN):
            continue
        try:
            flow = analyse_cell(cell.source, modules)
        except CellSyntaxError as exc:
            diags.append(
                Diagnostic(
                    "syntax-error",
                    f"does not parse: {exc.message} (line {exc.line})",
                    cell=cell.number,
                    cell_id=cell.id,
                    step=cell.step,
                    line=exc.line,
                )
            )
            continue
        step = cell.step if cell.role is Role.STEP else None
        for module in flow.star_imports:
            stars.append((module, cell.number))
            if cell.role is not Role.IMPORTS:
                diags.append(
                    Diagnostic(
                        "star-import",
                        f"`from {module} import *` hides which names it defines; import the "
                        "names explicitly, or tag the cell `imports`",
                        cell=cell.number,
                        cell_id=cell.id,
                        step=step,
                        name=module,
                    )
                )

        reads, _writes, mutates = _with_function_effects(flow, funcs)
        mutates = {
            n
            for n in mutates
            if n not in flow.imports and not (n in writers and writers[n].is_import)
        }
        # A change through one name is a change of every name that may reach the same
        # objects (`pair = [a, a]` earlier, `a.append(2)` here): those are passed on too.
        mutates |= {
            n
            for n in shared.reaching(mutates)
            if n in writers
            and not writers[n].deleted
            and not writers[n].is_import
            and n not in funcs
            and n not in flow.writes
        }
        binds = flow.writes | flow.maybe_writes
        # A conditional write or a mutation keeps the earlier value on some paths: pass it on.
        carried = [
            n
            for n in sorted(flow.maybe_writes | mutates)
            if n not in reads and n not in flow.writes
        ]
        implicit = [
            n for n in _IMPLICIT if step and n in writers and writers[n].step not in (None, step)
        ]
        dynamic: list[str] = []
        if flow.dynamic is not None and step:
            # `globals()["x"]`, `eval("x")`: any name defined before may be read.
            dynamic = [
                n
                for n, w in writers.items()
                if not is_pseudo(n)
                and not w.deleted
                and not w.is_import
                and w.step not in (None, step)
                and n not in reads
            ]
            diags.append(
                Diagnostic(
                    "dynamic-names",
                    "uses globals(), locals(), vars(), eval or exec: it is given every name "
                    "earlier steps define, since the names it reaches cannot be seen",
                    "warning",
                    cell.number,
                    cell.id,
                    step,
                    line=flow.dynamic,
                )
            )

        for name in [*reads, *carried, *implicit, *dynamic]:
            # A guarded read (`try: x` / `except NameError:`) takes the value when there is
            # one, and is no error when there is none, as top to bottom.
            guarded = name in flow.guarded
            optional = name in carried or name in implicit or guarded or name in dynamic
            w = writers.get(name)
            if w is None:
                if (
                    optional
                    or name in BUILTINS
                    or is_pseudo(name)
                    or is_history_name(name)
                    or name in binds
                ):
                    continue
                if stars:
                    if name not in warned_star:
                        warned_star.add(name)
                        mods = ", ".join(f"`{m}` (cell {n})" for m, n in stars)
                        diags.append(
                            Diagnostic(
                                "star-import-name",
                                f"reads `{name}`; assuming it comes from `import *` of {mods}",
                                "warning",
                                cell.number,
                                cell.id,
                                step,
                                name,
                            )
                        )
                    continue
                diags.append(_undefined(cell, step, name, flow, later_definitions))
                continue
            if w.deleted:
                if guarded and step and name in prelude_names:
                    # Every step runs the prelude, which binds it again: unbind it, so the
                    # check sees it gone, as it is top to bottom after the `del`.
                    flows[step].absent.append(name)
                if not optional:
                    diags.append(
                        Diagnostic(
                            "deleted-name",
                            f"reads `{name}`, which cell {w.cell.number} deletes with `del`",
                            cell=cell.number,
                            cell_id=cell.id,
                            step=step,
                            name=name,
                            line=flow.lines.get(name),
                        )
                    )
                continue
            if step is None:
                # A prelude cell runs before any step's data is loaded, so even a guarded
                # read would see the name missing where top to bottom it is there.
                if w.step is not None and (guarded or not optional):
                    diags.append(
                        Diagnostic(
                            "prelude-reads-step",
                            f"this {cell.role.value} cell reads `{name}`, which step {w.step} "
                            f"defines in cell {w.cell.number}; {cell.role.value} cells run at "
                            "the start of every step, before any step's data is loaded",
                            cell=cell.number,
                            cell_id=cell.id,
                            name=name,
                            line=flow.lines.get(name),
                        )
                    )
                continue
            if w.step == step and name in flows[step].carried and name not in flows[step].bound:
                # An earlier cell of this step changed `name` without reading it (through a
                # name sharing its objects): the step still holds the earlier step's value.
                flows[step].inputs.setdefault(name, flows[step].carried[name])
                continue
            if w.step is None or w.step == step:
                continue
            if name in carried and name not in implicit:
                # Needed only if a later step takes `name` from this one (resolved below):
                # a loop variable must not chain independent steps together.
                flows[step].carried.setdefault(name, (w.step, w.cell.index, cell.number))
                continue
            own = flows[step].writes.get(name)
            if own:
                c = cells[own[0]]
                diags.append(
                    Diagnostic(
                        "interleaved-step",
                        f"reads `{name}` from step {w.step} (cell {w.cell.number}), but cell "
                        f"{c.number} of this step set it earlier; a step runs all its cells "
                        f"together, so it cannot see {w.step}'s value here. Give cell "
                        f"{cell.number} a step of its own",
                        cell=cell.number,
                        cell_id=cell.id,
                        step=step,
                        name=name,
                    )
                )
                continue
            known = flows[step].inputs.get(name)
            if known is None:
                flows[step].inputs[name] = (w.step, w.cell.index, cell.number)
            elif known[0] != w.step:
                diags.append(
                    Diagnostic(
                        "two-versions",
                        f"reads `{name}` from step {w.step} (cell {w.cell.number}), but an earlier "
                        f"cell of step {step} read it from step {known[0]}; a step gets one "
                        f"version of each name: start a new step at cell {cell.number}",
                        cell=cell.number,
                        cell_id=cell.id,
                        step=step,
                        name=name,
                    )
                )

        if step and cell.metrics:
            flows[step].metrics.extend(
                n
                for n in flow.reads
                if not is_pseudo(n) and n in writers and not writers[n].is_import and n not in funcs
            )
        if step is None:
            prelude_names |= binds
        shared.update(flow, binds)
        for name in sorted(binds | mutates | flow.deletes):
            deleted = name in flow.deletes and name not in binds
            writers[name] = _Writer(cell, step, deleted, name in flow.imports)
            if step:
                flows[step].writes.setdefault(name, []).append(cell.index)
        if step:
            flows[step].bound |= flow.writes
        for name in binds | flow.deletes:
            if name in flow.imports:
                modules[name] = flow.imports[name]
            else:
                modules.pop(name, None)
            if name in flow.functions:
                funcs[name] = flow.functions[name]
            else:
                funcs.pop(name, None)

    _resolve_carried(flows)
    diags += _check_versions(flows, cells)
    upstream, edges = _edges(flows, prev, step_order, cells, diags)
    order = _topological(step_order, upstream, edges, cells, diags)
    if order is None:
        return FlowResult([], edges, diags)
    diags += _race_warnings(flows, upstream, order, cells)

    outputs: dict[str, dict[str, list[str]]] = {s: {} for s in step_order}
    for s in order:
        for name, (producer, _, _) in flows[s].inputs.items():
            outputs[producer].setdefault(name, []).append(s)
    steps = []
    for s in order:
        own = tuple(c.id for c in cells if c.role is Role.STEP and c.step == s)
        steps.append(
            Step(
                name=s,
                cells=own,
                inputs={n: p for n, (p, _, _) in flows[s].inputs.items()},
                outputs=tuple(outputs[s]),
                after=tuple(sorted(upstream[s], key=order.index)),
                settings=settings[s],
                consumers={n: tuple(c) for n, c in outputs[s].items()},
                metrics=tuple(dict.fromkeys(flows[s].metrics)),
                absent=tuple(dict.fromkeys(flows[s].absent)),
            )
        )
    return FlowResult(steps, edges, diags)


class _Sharing:
    """Which names may reach common objects, as far as the source shows (CellFlow.links),
    in notebook order: an undirected graph, since a change through either name of a pair
    may show through the other."""

    def __init__(self) -> None:
        self.edges: dict[str, set[str]] = {}

    def reaching(self, names: Iterable[str]) -> set[str]:
        """Every name connected to one of ``names``, ``names`` left out."""
        seen = set(names)
        todo = [n for n in seen if n in self.edges]
        while todo:
            for other in self.edges.get(todo.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen - set(names)

    def update(self, flow: CellFlow, binds: set[str] | frozenset[str]) -> None:
        for name in flow.writes | flow.deletes:
            if name in binds and name not in flow.writes:
                continue  # a maybe-write keeps the old value on some paths
            self._drop(name)
        for holder, held in flow.links:
            if is_pseudo(holder) or is_pseudo(held):
                continue
            self.edges.setdefault(holder, set()).add(held)
            self.edges.setdefault(held, set()).add(holder)

    def _drop(self, name: str) -> None:
        # Its neighbours may still share objects through the old value (`same = a`,
        # `pair = [a]`, then `a = []`): they stay connected to each other.
        neighbours = self.edges.pop(name, set())
        for n in neighbours:
            self.edges[n].discard(name)
            self.edges[n] |= neighbours - {n}


def _with_function_effects(
    flow: CellFlow, funcs: dict[str, FunctionInfo]
) -> tuple[list[str], set[str], set[str]]:
    """Add what calling notebook-defined functions reads, writes and mutates."""
    reads = list(flow.reads)
    writes, mutates = set(flow.writes), set(flow.mutates)
    visible = {**funcs, **flow.functions}
    called = [n for n in reads if n in visible] + [c.func for c in flow.calls if c.func in visible]
    seen: set[str] = set()
    while called:
        name = called.pop()
        if name in seen:
            continue
        seen.add(name)
        info = visible[name]
        for r in sorted(info.reads):
            if r not in flow.writes and r not in reads:
                reads.append(r)
            if r in visible:
                called.append(r)
        writes |= info.writes
        for m in info.mutates:
            mutates.add(m)
            if m not in reads and m not in flow.writes:
                reads.append(m)
    for call in flow.calls:
        info = visible.get(call.func)
        if info is None:
            continue
        for pos, arg in enumerate(call.args):
            if arg and pos < len(info.params) and info.params[pos] in info.mutated_params:
                mutates.add(arg)
        for kw, arg in call.kwargs:
            if kw in info.mutated_params:
                mutates.add(arg)
    for m in mutates:
        if m not in reads and m not in flow.writes:
            reads.append(m)
    return reads, writes, mutates


def _undefined(
    cell: Cell, step: str | None, name: str, flow: CellFlow, later: dict[str, list[Cell]]
) -> Diagnostic:
    hint = ""
    for other in later.get(name, []):
        if other.index > cell.index and other.role is not Role.SKIP:
            hint = f" (cell {other.number} defines it later: move that cell up)"
            break
        if other.role is Role.SKIP:
            hint = f" (cell {other.number} defines it, but that cell is tagged `skip`)"
            break
    return Diagnostic(
        "undefined-name",
        f"reads `{name}`, which no earlier step, parameter or import defines{hint}",
        cell=cell.number,
        cell_id=cell.id,
        step=step,
        name=name,
        line=flow.lines.get(name),
    )


def _definitions_by_cell(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Which cells bind each name, computed lazily only for hints in error messages."""

    class _Lazy(dict):  # type: ignore[type-arg]
        def get(self, key, default=None):  # type: ignore[override]
            if not self:
                for c in cells:
                    if c.kind != "code":
                        continue
                    try:
                        f = analyse_cell(c.source)
                    except CellSyntaxError:
                        continue
                    for n in f.writes | f.maybe_writes:
                        self.setdefault(n, []).append(c)
            return super().get(key, default)

    return _Lazy()


def _resolve_carried(flows: dict[str, _StepFlow]) -> None:
    """A step that may leave a name as it was passes the earlier value on, but only when a
    later step takes that name from it. Taking one can make another needed: repeat."""
    consumed = {(p, n) for f in flows.values() for n, (p, _, _) in f.inputs.items()}
    changed = True
    while changed:
        changed = False
        for s, f in flows.items():
            for name, entry in f.carried.items():
                if (s, name) in consumed and name not in f.inputs:
                    f.inputs[name] = entry
                    consumed.add((entry[0], name))
                    changed = True


def _check_versions(flows: dict[str, _StepFlow], cells: list[Cell]) -> list[Diagnostic]:
    """A consumer gets the producer's *final* value; that must be the one it read in order."""
    diags = []
    for s, f in flows.items():
        for name, (producer, widx, reader_no) in f.inputs.items():
            last = flows[producer].writes[name][-1]
            if last != widx:
                c = cells[last]
                diags.append(
                    Diagnostic(
                        "changed-after-read",
                        f"step {producer} changes `{name}` again in cell {c.number}, after step "
                        f"{s} reads it in cell {reader_no}; a top-to-bottom run would give {s} "
                        f"the earlier value. Move cell {c.number} into a later step",
                        cell=c.number,
                        cell_id=c.id,
                        step=producer,
                        name=name,
                    )
                )
    return diags


def _edges(
    flows: dict[str, _StepFlow],
    prev: dict[str, list[tuple[str, int]]],
    step_order: list[str],
    cells: list[Cell],
    diags: list[Diagnostic],
) -> tuple[dict[str, set[str]], list[Edge]]:
    upstream: dict[str, set[str]] = {s: set() for s in step_order}
    data: dict[tuple[str, str], list[str]] = {}
    first_cell: dict[tuple[str, str], int] = {}
    for s, f in flows.items():
        for name, (producer, _, reader_no) in f.inputs.items():
            data.setdefault((producer, s), []).append(name)
            first_cell.setdefault((producer, s), reader_no)
    explicit: dict[tuple[str, str], int] = {}
    for s, named in prev.items():
        for target, number in named:
            cid = cells[number - 1].id
            if target == s:
                diags.append(
                    Diagnostic(
                        "self-dependency",
                        f"`prev:{target}` names the step this cell belongs to",
                        cell=number,
                        cell_id=cid,
                        step=s,
                        name=f"prev:{target}",
                    )
                )
            elif target not in upstream:
                close = difflib.get_close_matches(target, step_order, n=1)
                hint = f"; did you mean `prev:{close[0]}`?" if close else ""
                diags.append(
                    Diagnostic(
                        "unknown-step",
                        f"`prev:{target}` names no step{hint} Steps: {', '.join(step_order)}",
                        cell=number,
                        cell_id=cid,
                        step=s,
                        name=f"prev:{target}",
                    )
                )
            else:
                explicit.setdefault((target, s), number)
    edges = []
    for pair in sorted(set(data) | set(explicit), key=lambda p: (step_order.index(p[1]), p[0])):
        src, dst = pair
        upstream[dst].add(src)
        names = tuple(n for n in data.get(pair, ()) if not is_pseudo(n)) + tuple(
            n for n in data.get(pair, ()) if is_pseudo(n)
        )
        kind = "data" if names else "prev"
        edges.append(Edge(src, dst, kind, names, first_cell.get(pair) or explicit.get(pair)))
    return upstream, edges


def _topological(
    step_order: list[str],
    upstream: dict[str, set[str]],
    edges: list[Edge],
    cells: list[Cell],
    diags: list[Diagnostic],
) -> list[str] | None:
    """Kahn's algorithm, ties broken by notebook position so runs are deterministic."""
    position = {s: i for i, s in enumerate(step_order)}
    remaining = {s: set(u) for s, u in upstream.items()}
    downstream: dict[str, set[str]] = {s: set() for s in step_order}
    for s, ups in upstream.items():
        for u in ups:
            downstream[u].add(s)
    ready = [(position[s], s) for s, u in remaining.items() if not u]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, s = heapq.heappop(ready)
        order.append(s)
        for d in downstream[s]:
            remaining[d].discard(s)
            if not remaining[d]:
                heapq.heappush(ready, (position[d], d))
    if len(order) == len(step_order):
        return order
    cycle = _find_cycle({s for s in step_order if s not in order}, upstream)
    by_pair = {(e.source, e.target): e for e in edges}
    why = []
    for a, b in itertools.pairwise(cycle):
        e = by_pair[(a, b)]
        if e.kind == "data":
            why.append(f"{b} reads {', '.join(f'`{n}`' for n in e.names)} from {a} (cell {e.cell})")
        else:
            why.append(f"{b} has `prev:{a}` (cell {e.cell})")
    first = by_pair[(cycle[0], cycle[1])]
    diags.append(
        Diagnostic(
            "cycle",
            "steps form a cycle: " + " -> ".join(cycle) + " (" + "; ".join(why) + ")",
            cell=first.cell,
            cell_id=cells[first.cell - 1].id if first.cell else None,
            step=cycle[1],
        )
    )
    return None


def _find_cycle(nodes: Iterable[str], upstream: dict[str, set[str]]) -> list[str]:
    """A cycle among ``nodes`` as a path a -> b -> ... -> a (following data direction)."""
    nodes = set(nodes)
    down: dict[str, list[str]] = {n: [] for n in nodes}
    for s in nodes:
        for u in upstream[s]:
            if u in nodes:
                down[u].append(s)
    start = min(nodes)
    path, seen = [start], {start: 0}
    while True:
        nxt = sorted(down[path[-1]])[0]
        if nxt in seen:
            return [*path[seen[nxt] :], nxt]
        seen[nxt] = len(path)
        path.append(nxt)


def _race_warnings(
    flows: dict[str, _StepFlow], upstream: dict[str, set[str]], order: list[str], cells: list[Cell]
) -> list[Diagnostic]:
    ancestors: dict[str, set[str]] = {}
    for s in order:
        ancestors[s] = set(upstream[s])
        for u in upstream[s]:
            ancestors[s] |= ancestors[u]
    diags, seen = [], set()
    for reader, f in flows.items():
        for name, (producer, _, reader_no) in f.inputs.items():
            for other, of in flows.items():
                if other in (producer, reader) or name not in of.writes:
                    continue
                if of.writes[name][0] > cells[reader_no - 1].index:
                    continue
                if other in ancestors[producer] or producer in ancestors[other]:
                    continue
                key = (name, producer, other)
                if key in seen:
                    continue
                seen.add(key)
                c = cells[flows[producer].writes[name][-1]]
                diags.append(
                    Diagnostic(
                        "parallel-writers",
                        f"steps {other} and {producer} may run in parallel and both write "
                        f"`{name}`; step {reader} gets {producer}'s version (the later one in "
                        "notebook order), as a top-to-bottom run would",
                        "warning",
                        c.number,
                        c.id,
                        producer,
                        name,
                    )
                )
    return diags
