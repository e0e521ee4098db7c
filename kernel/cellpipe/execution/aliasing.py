"""Which of a step's values share objects, so they are saved, and loaded, together.

In a top-to-bottom run ``pair = [a, a]`` and ``same = a`` reach one list: a change through
``a`` shows through ``pair`` and ``same``. Pickled one by one, each value would come back
with its own copy. At the end of a step :func:`alias_groups` finds the names whose values
reach a common object; :mod:`cellpipe.execution.marshal` saves each such group in one file,
so one unpickling gives the consumer one object again.

The walk is bounded: numpy arrays, pandas objects and tensors are leaves (one object each,
never traversed element by element; a numpy view counts as its base array, whose memory it
shares), atoms (numbers, strings, bytes, None) are skipped, and each value's walk stops
after ``limit`` objects (reported, so a group it might have found is not silently missed).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Objects a value's walk may visit before it gives up on that value.
WALK_LIMIT = 200_000

_ATOMS = (int, float, complex, str, bytes, bool, type(None), range, slice)
_SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


@dataclass
class Sharing:
    """``groups``: names (in the order given) whose values reach common objects, each
    group of two or more; ``truncated``: names whose walk hit the limit or met an object whose attributes raise."""

    groups: list[list[str]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def alias_groups(values: Mapping[str, Any], limit: int = WALK_LIMIT) -> Sharing:
    """Group the names of ``values`` whose values reach a common object."""
    owner: dict[int, str] = {}  # object id -> the first name that reached it
    parent = {name: name for name in values}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    truncated = []
    for name, value in values.items():
        complete = True
        try:
            keys = _reachable(value, limit)
        except Exception:  # an object whose attributes raise: never fail the step for it
            keys = [None]
        for key in keys:
            if key is None:
                complete = False
                continue
            first = owner.setdefault(key, name)
            if first != name:
                parent[find(name)] = find(first)
        if not complete:
            truncated.append(name)
    groups: dict[str, list[str]] = {}
    for name in values:
        groups.setdefault(find(name), []).append(name)
    return Sharing([g for g in groups.values() if len(g) > 1], truncated)


def _leaf_types() -> tuple[type, ...]:
    leaves: list[type] = []
    np = sys.modules.get("numpy")
    if np is not None:
        leaves.append(np.ndarray)
    pd = sys.modules.get("pandas")
    if pd is not None:
        leaves += [pd.DataFrame, pd.Series, pd.Index]
    torch = sys.modules.get("torch")
    if torch is not None:
        leaves.append(torch.Tensor)
    return tuple(leaves)


def _leaf_key(obj: Any) -> int:
    """A numpy view shares memory with its base: both count as the base."""
    base = getattr(obj, "base", None)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        while isinstance(base, np.ndarray):
            obj, base = base, base.base
    return id(obj)


def _reachable(value: Any, limit: int) -> Iterable[int | None]:
    """Ids of the objects ``value`` reaches, itself included; a ``None`` when the walk
    stopped at ``limit``. Dispatches on exact types, cached per type (10,000 small objects
    is a walk of ~20,000: tens of milliseconds)."""
    leaves = _leaf_types()
    seen: set[int] = set()
    out: list[int | None] = []
    todo = [value]
    kinds = _KINDS
    while todo:
        obj = todo.pop()
        t = type(obj)
        kind = kinds.get(t)
        if kind is None:
            kind = kinds[t] = _kind(t, leaves)
        if kind is _SKIPPED:
            continue
        key = _leaf_key(obj) if kind is _LEAF else id(obj)
        if key in seen:
            continue
        seen.add(key)
        out.append(key)
        if kind is _LEAF:
            continue
        if len(seen) > limit:
            out.append(None)
            break
        if kind is _MAPPING:
            todo += obj.keys()
            todo += obj.values()
        elif kind is _SEQUENCE:
            todo += obj
        else:
            state = getattr(obj, "__dict__", None)
            if type(state) is dict:
                todo += state.values()
            for slot in kind:  # type: ignore[union-attr]
                with contextlib.suppress(AttributeError):  # an unset slot
                    todo.append(object.__getattribute__(obj, slot))
    return out


_SKIPPED, _LEAF, _MAPPING, _SEQUENCE = "skip", "leaf", "mapping", "sequence"
# type -> how to walk it: one of the above, or the tuple of its slots (an object).
_KINDS: dict[type, Any] = {}


def _kind(t: type, leaves: tuple[type, ...]) -> Any:
    if issubclass(t, _ATOMS) or issubclass(t, _SKIP):
        return _SKIPPED
    if leaves and issubclass(t, leaves):
        return _LEAF
    if issubclass(t, dict):
        return _MAPPING
    if issubclass(t, (list, tuple, set, frozenset)):
        return _SEQUENCE
    return tuple(_slots(t))


def _slots(cls: type) -> list[str]:
    out: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        out += [slots] if isinstance(slots, str) else [s for s in slots if s != "__dict__"]
    return out
