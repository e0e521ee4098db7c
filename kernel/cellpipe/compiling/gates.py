"""Gates: ``gate:EXPR`` on a step stops everything downstream when EXPR is false.

The evaluation gate of continuous training: ``gate:accuracy>=0.9`` on ``evaluate`` lets
``deploy`` run only when the model is good enough. EXPR is checked at compile time (only
names, constants, comparisons, boolean operators and arithmetic: a tag must not be able to
call code) and evaluated by the runner in the step's namespace once its cells succeeded. The
runner has the run directory record the verdict next to the step's values
(``RunDir.record_gate``), so a cached step carries its verdict along; schedulers only ask
:func:`closed_upstream`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellpipe.core.model import Step

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_NODE_WORDS = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "lambdas",
    ast.NamedExpr: "assignments",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.IfExp: "conditional expressions",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
}


class GateError(ValueError):
    """The expression is not a gate cellpipe can evaluate safely."""


@dataclass(frozen=True, slots=True)
class GateResult:
    expression: str
    open: bool
    values: dict[str, str]  # the names the expression read, as reprs
    step: str

    @property
    def message(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        verdict = "open" if self.open else "closed"
        return (
            f"gate {self.expression} {verdict}"
            + (f": {shown}" if shown else "")
            + (f" (step {self.step})")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "open": self.open,
            "values": self.values,
            "step": self.step,
            "message": self.message,
        }


def parse_gate(expression: str) -> ast.Expression:
    """Parse and check ``expression``; raises GateError saying what is not allowed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise GateError(f"`{expression}` is not a Python expression ({exc.msg})") from None
    for node in ast.walk(tree.body):
        if isinstance(node, (ast.Name, ast.Constant, ast.Tuple, ast.List, ast.Set)):
            continue
        if isinstance(node, (ast.expr_context, ast.cmpop, ast.boolop)):
            continue
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            continue
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            continue
        if isinstance(node, (ast.operator, ast.unaryop)) and (
            type(node) in _BINARY or type(node) in _UNARY
        ):
            continue
        what = _NODE_WORDS.get(type(node), f"`{type(node).__name__}`")
        raise GateError(
            f"{what} are not allowed in a gate; use names the step defines, constants, "
            "comparisons, and/or/not and arithmetic, e.g. `gate:accuracy>=0.9`"
        )
    return tree


def gate_names(expression: str) -> list[str]:
    """The names ``expression`` reads, in order of first appearance."""
    tree = parse_gate(expression)
    seen: dict[str, None] = {}
    for node in ast.walk(tree.body):
        if isinstance(node, ast.Name):
            seen.setdefault(node.id)
    return list(seen)


def evaluate_gate(expression: str, namespace: Mapping[str, Any], step: str) -> GateResult:
    """Evaluate ``expression`` over ``namespace``.

    Raises GateError when it reads a name the step does not define or cannot be computed
    (``accuracy >= "a"``), with a message that says which.
    """
    tree = parse_gate(expression)
    values: dict[str, str] = {}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in namespace:
                raise GateError(
                    f"gate {expression}: step {step} does not define `{node.id}`; assign it "
                    "in the step's cells (or read it there) so the gate can see it"
                )
            value = namespace[node.id]
            values[node.id] = _short(value)
            return value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = [ev(e) for e in node.elts]
            return set(items) if isinstance(node, ast.Set) else tuple(items)
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for v in node.values:
                result = ev(v)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = ev(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        raise GateError(f"gate {expression}: cannot evaluate `{ast.unparse(node)}`")

    try:
        verdict = ev(tree.body)
        is_open = bool(verdict)
    except GateError:
        raise
    except Exception as exc:
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        raise GateError(
            f"gate {expression} could not be evaluated in step {step}"
            + (f" ({shown})" if shown else "")
            + f": {type(exc).__name__}: {exc}"
        ) from None
    return GateResult(expression.strip(), is_open, values, step)


def inherited_verdict(message: str) -> dict[str, Any]:
    """The verdict that marks a step skipped by a closed gate upstream, so that its own
    downstream steps are skipped too by whoever runs them next (a backend without a shared
    scheduler)."""
    return {"open": False, "message": message, "inherited": True}


def closed_reason(verdict: Mapping[str, Any] | None) -> str | None:
    """The reason downstream steps must be skipped, when ``verdict`` (a step's recorded
    gate, None without one) is a closed gate; None when it is open or absent."""
    if verdict is None or verdict.get("open", True):
        return None
    return str(verdict.get("message") or f"gate {verdict.get('expression')} closed")


def closed_upstream(
    step: Step, verdict_of: Callable[[str], Mapping[str, Any] | None]
) -> str | None:
    """Why ``step`` must not run: a step it comes after closed its gate (or is itself
    skipped behind a closed gate, recorded with :func:`inherited_verdict`); None otherwise.
    ``verdict_of(step)`` reads a step's recorded verdict (``RunDir.gate_verdict``)."""
    for up in step.after:
        why = closed_reason(verdict_of(up))
        if why:
            return why
    return None


def _short(value: Any) -> str:
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # numpy scalars print as plain numbers
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
