"""``limit:memory:`` and ``limit:cpu:`` for steps on this machine, with the OS's own means.

memory
    ``RLIMIT_AS`` set to the address space the step has after its prelude plus the limit, so
    the limit bounds what the step's own code allocates (a step that goes past it gets a
    ``MemoryError`` in the cell that allocated). It counts address space, not resident pages.
cpu
    CPU affinity to ``ceil(cpu)`` cores, and the usual thread-count variables for the maths
    libraries that read them at import time.

Whatever cannot be enforced here is reported, never silently dropped.
"""

from __future__ import annotations

import math
import os
import re
import sys

_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 1e-3,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def quantity(text: str) -> float:
    """A Kubernetes quantity ("2Gi", "500m", "1.5") as a number."""
    m = _QUANTITY.match(str(text).strip())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_count(limits: dict[str, str]) -> int | None:
    """Whole cores a step may use, or None when it has no cpu limit."""
    if "cpu" not in limits:
        return None
    return max(1, math.ceil(quantity(limits["cpu"])))


def apply_limits(limits: dict[str, str], cpus: list[int] | None = None) -> list[str]:
    """Limit the current process (and what it starts). Returns notes for the step's log."""
    notes = []
    if "memory" in limits:
        notes.append(_limit_memory(int(quantity(limits["memory"])), limits["memory"]))
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
            notes.append(f"limit cpu={limits.get('cpu')}: pinned to cores {cpus}")
        except (AttributeError, OSError) as exc:
            notes.append(f"limit cpu={limits.get('cpu')} not enforced here: {exc}")
        for var in _THREAD_VARS:
            os.environ.setdefault(var, str(len(cpus)))
    elif "cpu" in limits:
        notes.append(f"limit cpu={limits['cpu']} not enforced: no cores could be assigned")
    for k in limits:
        if k not in ("memory", "cpu"):
            notes.append(f"limit {k}={limits[k]} is not enforced by the local backend")
    for note in notes:
        print(f"cellpipe: {note}", file=sys.stderr, flush=True)
    return notes


def _limit_memory(amount: int, text: str) -> str:
    try:
        import resource
    except ImportError:
        return f"limit memory={text} not enforced: no resource limits on this platform"
    base = _address_space()
    if base is None:
        return f"limit memory={text} not enforced: cannot read this process's memory use"
    soft = base + amount
    try:
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    except (ValueError, OSError) as exc:
        return f"limit memory={text} not enforced: {exc}"
    return (
        f"limit memory={text}: enforced with RLIMIT_AS (address space after the prelude + {text})"
    )


def _address_space() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
