"""``foreach`` cells: a ``for`` loop whose iterations run as separate tasks.

The compiler's half: :func:`plan_loop` reads the cell's loop and proves its iterations
independent, so that running them apart, in any order, and merging their effects in
iteration order computes what the loop computes. An iteration may

* bind names (the loop target and anything the body assigns): after the loop they hold the
  last iteration's values, as after a real loop;
* add to an *accumulator*, a name from before the loop that the body only ever writes
  through ``name[key] = value``, ``name.append(x)``, ``name.extend(xs)``, ``name.update(...)``
  or ``name.add(x)``: the merge replays every iteration's additions in iteration order;
* print and display: the outputs are shown in iteration order, in the cell.

Anything else that would let one iteration see another's work is refused with the reason
and the line: reading a name the body assigns before this iteration assigned it (the
previous iteration's value), reading an accumulator, changing an attribute of or adding to
a shared object in another way, ``break`` (the iterations after it would depend on it),
the global random generator (its state passes from iteration to iteration), and a generator
as the iterable. The runner's half is :mod:`cellpipe.execution.fanout`.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cellpipe.core.errors import Diagnostic

#: The tag.
FOREACH = "foreach"
#: Methods through which an iteration adds to an accumulator.
ACCUMULATE = ("append", "extend", "update", "add")
#: ``numpy.random`` names that make or seed a generator of one's own (allowed).
_OWN_GENERATORS = frozenset(
    {"default_rng", "Generator", "RandomState", "SeedSequence", "PCG64", "PCG64DXSM",
     "MT19937", "Philox", "SFC64", "BitGenerator"}
)  # fmt: skip
#: ``random`` names that are classes for a generator of one's own (allowed).
_OWN_RANDOM = frozenset({"Random", "SystemRandom"})


class LoopError(Exception):
    """The cell is not a loop whose iterations can run apart; ``line`` is 1-based in the
    cell."""

    def __init__(self, message: str, line: int | None = None, name: str | None = None):
        super().__init__(message)
        self.line, self.name = line, name


@dataclass(frozen=True)
class LoopPlan:
    target: str  # the loop target as written: "alpha", "i, cfg"
    iterable: str  # the iterable expression as written
    body: str  # the loop body, dedented
    accumulators: tuple[str, ...]
    names: tuple[str, ...]  # names an iteration binds (target first)

    def iteration_source(self, item_name: str) -> str:
        """Code that runs one iteration, on the item bound to ``item_name``: a loop over
        that one item, so the target unpacks and ``continue`` works as in the real loop."""
        return f"for {self.target} in [{item_name}]:\n" + textwrap.indent(self.body, "    ")


def plan_loop(
    source: str,
    random_names: frozenset[str] = frozenset(),
    generator_functions: frozenset[str] = frozenset(),
) -> LoopPlan:
    """The plan of a ``foreach`` cell's loop. Raises LoopError with the reason.

    ``random_names``: names the notebook imported from ``random``/``numpy.random`` (``from
    random import choice``): calling them uses the global generator too.
    ``generator_functions``: functions the notebook defines with ``yield``.
    """
    from cellpipe.compiling.analysis import CellSyntaxError, transform

    try:
        code = transform(source)
        tree = ast.parse(code)
    except (SyntaxError, CellSyntaxError) as exc:
        raise LoopError(f"does not parse: {exc}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.For):
        raise LoopError(
            "a `foreach` cell holds one `for` loop and nothing else (move the other "
            "statements to a cell of their own)",
            tree.body[0].lineno if tree.body else None,
        )
    loop = tree.body[0]
    if loop.orelse:
        raise LoopError("`for ... else` is not supported in a `foreach` cell", loop.lineno)
    _check_iterable(loop, generator_functions)
    lines = code.splitlines()
    first, last = loop.body[0].lineno, loop.body[-1].end_lineno or loop.body[-1].lineno
    # Comments just above the first statement belong to the body too.
    while first - 1 > loop.lineno and lines[first - 2].strip().startswith("#"):
        first -= 1
    body = textwrap.dedent("\n".join(lines[first - 1 : last])) + "\n"
    target_names = _stored(loop.target)
    bound = set(target_names)
    for stmt in loop.body:
        bound |= _bound_in(stmt)
    accumulators = _accumulators(loop.body, bound)
    _check_independent(loop, bound, set(target_names), accumulators, random_names)
    names = [*target_names, *sorted(bound - set(target_names))]
    return LoopPlan(
        target=ast.get_source_segment(code, loop.target) or "",
        iterable=ast.get_source_segment(code, loop.iter) or "",
        body=body,
        accumulators=tuple(sorted(accumulators)),
        names=tuple(names),
    )


def generator_functions(sources: list[str]) -> frozenset[str]:
    """Top-level functions the notebook defines with ``yield``: calling one makes a
    generator."""
    found: set[str] = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _walk_outside_scopes_body(node)
            ):
                found.add(node.name)
    return frozenset(found)


def _walk_outside_scopes_body(fn: ast.FunctionDef):
    for stmt in fn.body:
        yield from _walk_outside_scopes(stmt)


def random_imports(sources: list[str]) -> frozenset[str]:
    """Names the notebook binds with ``from random import ...`` or ``from numpy.random
    import ...`` (the functions of the global generator)."""
    found: set[str] = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("random", "numpy.random"):
                own = _OWN_RANDOM if node.module == "random" else _OWN_GENERATORS
                found |= {a.asname or a.name for a in node.names if a.name not in own}
    return frozenset(found)


# -- the checks -----------------------------------------------------------------------------


def _check_iterable(loop: ast.For, generator_functions: frozenset[str]) -> None:
    it = loop.iter
    calls_generator = (
        isinstance(it, ast.Call)
        and isinstance(it.func, ast.Name)
        and it.func.id in generator_functions
    )
    if isinstance(it, ast.GeneratorExp) or calls_generator:
        raise LoopError(
            "the iterable is a generator: its items exist only while the loop consumes it, "
            "so they cannot be handed out to parallel tasks; iterate over a list "
            "(`[... for ...]`) instead",
            loop.lineno,
        )


def _check_independent(
    loop: ast.For,
    bound: set[str],
    target: set[str],
    accumulators: set[str],
    random_names: frozenset[str],
) -> None:
    allowed = _accumulating_nodes(loop.body, accumulators)
    ctx = (bound, accumulators, allowed, random_names)
    _check_block(loop.body, set(target), ctx, in_inner_loop=False)


_Ctx = tuple[set[str], set[str], set[int], frozenset[str]]


def _check_block(
    stmts: list[ast.stmt], assigned: set[str], ctx: _Ctx, *, in_inner_loop: bool
) -> set[str]:
    """Check statements in order; ``assigned``: names this iteration has bound so far.
    Returns the names bound once the block has run."""
    assigned = set(assigned)
    for stmt in stmts:
        if isinstance(stmt, (ast.If, ast.While)):
            _check_expr(stmt.test, assigned, ctx, stmt)
            inner = isinstance(stmt, ast.While)
            extra = _bound_in(stmt) if inner else set()  # names a loop carries within itself
            _check_block(stmt.body, assigned | extra, ctx, in_inner_loop=in_inner_loop or inner)
            _check_block(stmt.orelse, assigned | extra, ctx, in_inner_loop=in_inner_loop)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            _check_expr(stmt.iter, assigned, ctx, stmt)
            extra = _bound_in(stmt)
            _check_block(stmt.body, assigned | extra, ctx, in_inner_loop=True)
            _check_block(stmt.orelse, assigned | extra, ctx, in_inner_loop=in_inner_loop)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                _check_expr(item.context_expr, assigned, ctx, stmt)
            with_names = {n for item in stmt.items if item.optional_vars
                          for n in _stored(item.optional_vars)}  # fmt: skip
            _check_block(stmt.body, assigned | with_names, ctx, in_inner_loop=in_inner_loop)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            after_body = _check_block(stmt.body, assigned, ctx, in_inner_loop=in_inner_loop)
            for h in stmt.handlers:
                if h.type is not None:
                    _check_expr(h.type, assigned, ctx, stmt)
                names = {h.name} if h.name else set()
                _check_block(h.body, assigned | names, ctx, in_inner_loop=in_inner_loop)
            _check_block(stmt.orelse, after_body, ctx, in_inner_loop=in_inner_loop)
            _check_block(stmt.finalbody, assigned, ctx, in_inner_loop=in_inner_loop)
        elif isinstance(stmt, ast.Break):
            if not in_inner_loop:
                raise LoopError(
                    "`break` ends the loop at an iteration, so whether the later iterations "
                    "run depends on the earlier ones; they cannot run apart",
                    stmt.lineno,
                )
        else:
            _check_simple(stmt, assigned, ctx)
        assigned |= _bound_in(stmt)
    return assigned


def _check_simple(stmt: ast.stmt, assigned: set[str], ctx: _Ctx) -> None:
    bound, accumulators, allowed, _ = ctx
    if isinstance(stmt, (ast.Global, ast.Nonlocal)):
        raise LoopError(f"`{type(stmt).__name__.lower()}` in a foreach body", stmt.lineno)
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        n = stmt.target.id
        if n not in assigned:
            raise LoopError(
                f"`{n} {_op(stmt.op)}= ...` reads `{n}` as the previous iteration left it: "
                "the iterations depend on each other. Collect the values in an accumulator "
                "(`parts.append(...)`) and combine them after the loop",
                stmt.lineno,
                n,
            )
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        targets = stmt.targets if isinstance(stmt, (ast.Assign, ast.Delete)) else [stmt.target]
        for t in targets:
            _check_store(
                t, bound, accumulators, allowed, stmt, augmented=isinstance(stmt, ast.AugAssign)
            )
    _check_expr(stmt, assigned, ctx, stmt)


def _check_expr(node: ast.AST, assigned: set[str], ctx: _Ctx, stmt: ast.AST) -> None:
    bound, accumulators, allowed, random_names = ctx
    local = _local(node)
    for n in _walk_outside_scopes(node):
        if isinstance(n, ast.Call):
            _check_random(n, random_names)
        if not (isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)) or id(n) in allowed:
            continue
        if n.id in accumulators:
            raise LoopError(
                f"reads `{n.id}`, which the iterations add to: an iteration would see what "
                "earlier ones added. Read it after the loop",
                n.lineno,
                n.id,
            )
        if n.id in bound and n.id not in assigned and n.id not in local:
            raise LoopError(
                f"reads `{n.id}` before this iteration assigns it, so it sees the value the "
                "previous iteration left: the iterations depend on each other",
                n.lineno,
                n.id,
            )


def _check_store(
    target: ast.AST,
    bound: set[str],
    accumulators: set[str],
    allowed: set[int],
    stmt: ast.AST,
    *,
    augmented: bool = False,
) -> None:
    """A store into an object (``x.attr = ...``, ``x[k] op= ...``) must be an
    accumulator's ``x[k] = ...`` or go into an object the iteration made itself."""
    if isinstance(target, (ast.Tuple, ast.List)):
        for t in target.elts:
            _check_store(t, bound, accumulators, allowed, stmt)
        return None
    if isinstance(target, ast.Starred):
        return _check_store(target.value, bound, accumulators, allowed, stmt)
    if not isinstance(target, (ast.Attribute, ast.Subscript)):
        return None
    base = target
    while isinstance(base, (ast.Attribute, ast.Subscript)):
        base = base.value
    if not isinstance(base, ast.Name) or base.id in bound:
        return None  # an object this iteration made (or a call's result)
    if id(base) in allowed and not augmented:
        return None
    shown = ast.unparse(target)
    raise LoopError(
        f"changes `{shown}`, part of `{base.id}`, which every iteration shares: only "
        f"`{base.id}[key] = value` and `{base.id}.append/extend/update/add(...)` accumulate "
        "across iterations",
        getattr(stmt, "lineno", None),
        base.id,
    )


def _check_random(call: ast.Call, random_names: frozenset[str]) -> None:
    f = call.func
    chain = []
    while isinstance(f, ast.Attribute):
        chain.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        chain.append(f.id)
    chain.reverse()  # ["np", "random", "rand"]
    bad = None
    module_function = len(chain) == 2 and chain[0] == "random" and chain[1] not in _OWN_RANDOM
    numpy_function = len(chain) == 3 and chain[1] == "random" and chain[2] not in _OWN_GENERATORS
    if module_function or numpy_function:
        bad = ".".join(chain)
    elif len(chain) == 1 and chain[0] in random_names:
        bad = chain[0]
    if bad:
        raise LoopError(
            f"`{bad}(...)` uses the global random generator, whose state passes from one "
            "iteration to the next, so the iterations cannot run apart and give the same "
            "numbers; make a generator per iteration, e.g. "
            "`rng = np.random.default_rng([seed, i])` or `random.Random(i)`",
            call.lineno,
            bad,
        )


# -- helpers --------------------------------------------------------------------------------


def _accumulating_names(body: list[ast.stmt]) -> Iterator[ast.Name]:
    """The ``Name`` node of each accumulating operation in the loop body: the container of a
    ``name[key] = ...`` store, or the receiver of ``name.append(...)`` and its kin."""
    for stmt in body:
        for node in _walk_outside_scopes(stmt):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                        yield t.value
            elif isinstance(node, ast.Call):
                f = node.func
                if (
                    isinstance(f, ast.Attribute)
                    and f.attr in ACCUMULATE
                    and isinstance(f.value, ast.Name)
                ):
                    yield f.value


def _accumulators(body: list[ast.stmt], bound: set[str]) -> set[str]:
    return {n.id for n in _accumulating_names(body) if n.id not in bound}


def _accumulating_nodes(body: list[ast.stmt], accumulators: set[str]) -> set[int]:
    """ids of the ``Name`` nodes that are an accumulator in its accumulating operation."""
    return {id(n) for n in _accumulating_names(body) if n.id in accumulators}


def _walk_outside_scopes(node: ast.AST):
    """``ast.walk`` that does not enter function or class bodies or lambdas (their names
    are their own), but does visit a definition's decorators and defaults."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            if not isinstance(n, ast.Lambda):
                todo.extend(getattr(n, "decorator_list", []))
            args = getattr(n, "args", None)
            if args is not None:
                todo.extend([d for d in args.defaults + args.kw_defaults if d is not None])
            continue
        todo.extend(reversed(list(ast.iter_child_nodes(n))))


def _local(stmt: ast.AST) -> set[str]:
    """Names a statement binds for itself only: comprehension variables."""
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            for gen in node.generators:
                names |= set(_stored(gen.target))
    return names


def _bound_in(stmt: ast.AST) -> set[str]:
    """Names a statement binds in the iteration's scope (not in nested scopes)."""
    names: set[str] = set()
    for node in _walk_outside_scopes(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.NamedExpr):
            names.add(node.target.id)
    return names - _local(stmt)


def _stored(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for t in target.elts for n in _stored(t)]
    if isinstance(target, ast.Starred):
        return _stored(target.value)
    return []


def _op(op: ast.operator) -> str:
    return {
        ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
        ast.Mod: "%", ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
        ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@",
    }.get(type(op), "?")  # fmt: skip


def check_cells(cells: list[Any]) -> list[Diagnostic]:
    """Diagnostics for the notebook's ``foreach`` cells (``cells``: compiled cells)."""
    from cellpipe.core.model import Role

    tagged = [c for c in cells if c.kind == "code" and FOREACH in c.tags]
    if not tagged:
        return []
    sources = [c.source for c in cells if c.kind == "code"]
    randoms, generators = random_imports(sources), generator_functions(sources)
    out = []
    for cell in tagged:
        if cell.role is not Role.STEP:
            out.append(
                Diagnostic(
                    "foreach-not-a-step",
                    f"is tagged foreach and {cell.role.value}: only a step's cell can fan out",
                    "error",
                    cell.number,
                    cell.id,
                    name=FOREACH,
                )
            )
            continue
        try:
            plan_loop(cell.source, randoms, generators)
        except LoopError as exc:
            where = f"line {exc.line}: " if exc.line else ""
            out.append(
                Diagnostic(
                    "foreach-dependent",
                    f"foreach: {where}{exc}",
                    "error",
                    cell.number,
                    cell.id,
                    step=cell.step,
                    name=exc.name,
                    line=exc.line,
                )
            )
    return out
