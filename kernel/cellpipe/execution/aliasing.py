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
    group of two or more; ``truncated``: names whose walk hit the limit."""

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
        for key in _reachable(value, limit):
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
    stopped at ``limit``."""
    leaves = _leaf_types()
    seen: set[int] = set()
    todo = [value]
    while todo:
        obj = todo.pop()
        if isinstance(obj, (*_ATOMS, *_SKIP)):
            continue
        if leaves and isinstance(obj, leaves):
            key = _leaf_key(obj)
            if key not in seen:
                seen.add(key)
                yield key
            continue
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        yield key
        if len(seen) > limit:
            yield None
            return
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        else:
            state = getattr(obj, "__dict__", None)
            if isinstance(state, dict):
                todo.extend(state.values())
            for slot in _slots(type(obj)):
                with contextlib.suppress(AttributeError):  # an unset slot
                    todo.append(object.__getattribute__(obj, slot))


def _slots(cls: type) -> list[str]:
    out: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        out += [slots] if isinstance(slots, str) else [s for s in slots if s != "__dict__"]
    return out
