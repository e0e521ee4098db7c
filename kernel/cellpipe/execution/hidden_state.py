"""Interpreter state a top-to-bottom run carries from cell to cell: one registry of providers.

Each kind of hidden state (``cellpipe.core.pseudo.HIDDEN``) has one or more providers here,
each with ``get`` (a plain picklable value), ``set`` and ``fingerprint`` (a short digest, cheap
enough to take before and after every step). A provider is *active* only when its library is
imported: nothing here imports a library to look at it.

Two uses:

- The data flow treats hidden state like variables: a step that is known (from its source) to
  use or change it reads or writes the pseudo-variable, which the runner :func:`capture`\\ s
  after the producing step and :func:`restore`\\ s before each consumer.
- :class:`Tracker` fingerprints every active provider when a step starts and when it ends,
  so the engine knows at run time which steps really changed which state, whatever library
  did it (scikit-learn drawing from numpy's global generator with ``random_state=None``).
  The scheduler uses that to check every step started from the state notebook order gives
  (see ``cellpipe.execution.scheduling``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cellpipe.core.pseudo import HIDDEN
from cellpipe.rundir import layout

#: os.environ as the step's process had it after the prelude: ``@environ`` is saved as the
#: difference from it, so the environment the process inherited (the server's secrets among
#: it) never reaches the disk. Until the runner marks it, the environment this module found.
_ENVIRON_BASE: dict[str, str] = dict(os.environ)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Provider:
    """Get, set and fingerprint one piece of hidden state. ``pseudo``: the pseudo-variable it
    belongs to; ``module``: it is active only once this module is imported."""

    name: str
    pseudo: str
    get: Callable[[], Any]
    set: Callable[[Any], None]
    fingerprint: Callable[[], str]
    module: str | None = None
    importer: Callable[[], None] | None = None  # makes it active, to restore into it
    #: The fingerprint its state has when its library has just been imported, where that is
    #: always the same (a counter at 0; not a generator's fresh seed): a step that imports
    #: the library and leaves another state has changed it.
    fresh: str | None = None

    def active(self) -> bool:
        return self.module is None or self.module in sys.modules

    def activate(self) -> None:
        if not self.active():
            (self.importer or (lambda: __import__(self.module)))()  # type: ignore[arg-type]


def _mod(name: str) -> Any:
    return sys.modules[name]


# -- generators --------------------------------------------------------------------------------


def _random_get() -> Any:
    import random

    return random.getstate()


def _random_set(state: Any) -> None:
    import random

    random.setstate(state)


def _random_fp() -> str:
    import random

    return _digest(repr(random.getstate()))


def _np_fp() -> str:
    s = _mod("numpy").random.get_state()
    return _digest(s[1].tobytes(), repr(s[2:]))


def _np_set(state: Any) -> None:
    import numpy

    numpy.random.set_state(state)


def _torch_set(state: Any) -> None:
    import torch

    torch.set_rng_state(state)


def _cuda_active() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


# -- settings ------------------------------------------------------------------------------------


def _recursion_set(limit: int) -> None:
    sys.setrecursionlimit(limit)


def _warnings_get() -> list[Any]:
    import warnings

    return list(warnings.filters)


def _warnings_set(filters: list[Any]) -> None:
    import warnings

    warnings.filters[:] = filters
    warnings._filters_mutated()  # type: ignore[attr-defined]  # forget cached decisions


class _CurrentStream:
    """A logging handler's stream that is whatever ``sys.<name>`` is when it writes: in a
    kernel a handler made by ``basicConfig`` writes to the cell's stream, and so must one
    restored before the cells run."""

    def __init__(self, name: str):
        self.name = name  # as ipykernel's streams (and the step shell's) are named
        self._which = name

    def write(self, text: str) -> int:
        return getattr(sys, self._which).write(text)

    def flush(self) -> None:
        getattr(sys, self._which).flush()


def _stream_name(stream: Any) -> str | None:
    for which in ("stderr", "stdout"):
        if stream in (getattr(sys, which), getattr(sys, f"__{which}__")):
            return which
        if getattr(stream, "name", None) in (which, f"<{which}>"):
            return which
    return None


def _logging_get() -> dict[str, Any]:
    root = logging.getLogger()
    handlers = []
    for h in root.handlers:
        fmt = h.formatter
        spec: dict[str, Any] = {
            "class": type(h).__name__,
            "level": h.level,
            "format": getattr(fmt, "_fmt", None),
            "datefmt": getattr(fmt, "datefmt", None),
            "style": type(getattr(fmt, "_style", None)).__name__,
        }
        if isinstance(h, logging.FileHandler):
            spec.update(file=h.baseFilename, encoding=h.encoding)
        elif isinstance(h, logging.StreamHandler):
            spec["stream"] = _stream_name(h.stream)
        handlers.append(spec)
    return {"level": root.level, "disable": root.manager.disable, "handlers": handlers}


_STYLES = {"PercentStyle": "%", "StrFormatStyle": "{", "StringTemplateStyle": "$"}


def _logging_set(state: dict[str, Any]) -> None:
    root = logging.getLogger()
    root.setLevel(state["level"])
    logging.disable(state["disable"])
    for h in list(root.handlers):
        if isinstance(h, (logging.StreamHandler, logging.FileHandler)):
            root.removeHandler(h)
    for spec in state["handlers"]:
        handler: logging.Handler
        if "file" in spec:
            handler = logging.FileHandler(spec["file"], encoding=spec.get("encoding"))
        elif spec.get("stream"):
            handler = logging.StreamHandler(_CurrentStream(spec["stream"]))  # type: ignore[arg-type]
        else:
            continue  # a handler we cannot make again (a socket, a queue): left out
        handler.setLevel(spec["level"])
        if spec["format"] is not None:
            style = _STYLES.get(spec["style"], "%")
            handler.setFormatter(logging.Formatter(spec["format"], spec["datefmt"], style))  # type: ignore[arg-type]
        root.addHandler(handler)


def _np_print_set(options: dict[str, Any]) -> None:
    import numpy

    numpy.set_printoptions(**options)


def _pandas_get() -> dict[str, Any]:
    from pandas._config import config

    return {k: config.get_option(k) for k in sorted(config._registered_options)}


def _pandas_set(options: dict[str, Any]) -> None:
    import pandas

    for k, v in options.items():
        try:
            if pandas.get_option(k) != v:
                pandas.set_option(k, v)
        except Exception:  # an option this pandas does not have, or deprecated
            continue


def _sklearn_set(config: dict[str, Any]) -> None:
    import sklearn

    known = sklearn.get_config()
    sklearn.set_config(**{k: v for k, v in config.items() if k in known})


#: rcParams that belong to the process, not to the notebook's settings.
_RC_OWN = ("backend", "backend_fallback", "interactive")


def _rc_get() -> dict[str, Any]:
    rc = _mod("matplotlib").rcParams
    return {k: v for k, v in dict.items(rc) if k not in _RC_OWN}


def _rc_set(params: dict[str, Any]) -> None:
    import matplotlib

    current = matplotlib.rcParams
    changed = {k: v for k, v in params.items() if dict.get(current, k) != v}
    if changed:
        dict.update(current, changed)  # validated when they were set; no deprecation noise


def _torch_dtype_set(name: str) -> None:
    import torch

    torch.set_default_dtype(getattr(torch, name))


# -- environment, paths, directory -----------------------------------------------------------


def mark_environ_base() -> None:
    """Remember os.environ as it is now (after the prelude): ``@environ`` is saved relative
    to it."""
    global _ENVIRON_BASE
    _ENVIRON_BASE = dict(os.environ)


def _environ_get() -> dict[str, Any]:
    base, now = _ENVIRON_BASE, os.environ
    return {
        "set": {k: v for k, v in now.items() if base.get(k) != v},
        "unset": sorted(k for k in base if k not in now),
    }


def _environ_set(state: dict[str, Any]) -> None:
    target = dict(_ENVIRON_BASE)
    target.update(state["set"])
    for k in state["unset"]:
        target.pop(k, None)
    for k in set(os.environ) - set(target):
        del os.environ[k]
    for k, v in target.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


def _environ_fp() -> str:
    return _digest(repr(sorted(os.environ.items())))


# -- IPython's output history ------------------------------------------------------------------


#: The IPython shell the step's cells run in (it is ``get_ipython()`` only while one runs).
_SHELL: Any = None


def _shell() -> Any:
    if _SHELL is not None:
        return _SHELL
    from IPython.core.getipython import get_ipython

    return get_ipython()


def _history_get() -> dict[str, Any]:
    shell = _shell()
    if shell is None:
        return {}
    import cloudpickle

    def keeps(value: Any) -> bool:  # a figure or a generator shown earlier must not fail it
        try:
            cloudpickle.dumps(value)
        except Exception:
            return False
        return True

    ns = shell.user_ns
    state = {k: ns.get(k, "") for k in ("_", "__", "___")}
    state = {k: (v if keeps(v) else "") for k, v in state.items()}
    state["Out"] = {n: v for n, v in dict(ns.get("Out", {})).items() if keeps(v)}
    return state


def _history_set(state: dict[str, Any]) -> None:
    shell = _shell()
    if shell is None or not state:
        return
    hook = shell.displayhook
    hook._, hook.__, hook.___ = state["_"], state["__"], state["___"]  # shifted on next result
    shell.user_ns.update({k: state[k] for k in ("_", "__", "___")})
    shell.user_ns.setdefault("Out", {}).update(state["Out"])  # the history manager's dict
    shell.user_ns.update({f"_{n}": v for n, v in state["Out"].items()})


def _history_fp() -> str:
    shell = _shell()
    if shell is None:
        return ""
    return _digest(repr(sorted(shell.user_ns.get("Out", {}))))


def execution_counts(pipeline: Any, parameters: dict[str, Any]) -> dict[str, int]:
    """Cell id -> the execution count "Restart and Run All" gives it: code cells are
    numbered in notebook order, ``skip`` cells not, and injected parameters take the number
    after the last parameters cell. A step's cells run with these numbers, so ``Out[n]``,
    ``_n`` and ``In[n]`` mean what they mean top to bottom."""
    from cellpipe.core.model import Role

    counts: dict[str, int] = {}
    n = 0
    last_params = max((c.index for c in pipeline.cells if c.role is Role.PARAMETERS), default=None)
    for cell in pipeline.cells:
        if cell.kind != "code" or cell.role in (Role.SKIP, Role.MARKDOWN):
            continue
        n += 1
        counts[cell.id] = n
        if parameters and cell.index == last_params:
            n += 1
    return counts


# -- the registry ------------------------------------------------------------------------------


def _sklearn_ids() -> tuple[Any, Any]:
    html = _mod("sklearn.utils._repr_html.estimator")
    return html._CONTAINER_ID_COUNTER, html._ESTIMATOR_ID_COUNTER


def _sklearn_ids_get() -> tuple[int, int]:
    container, estimator = _sklearn_ids()
    return container.count, estimator.count


def _sklearn_ids_set(counts: tuple[int, int]) -> None:
    for counter, count in zip(_sklearn_ids(), counts, strict=True):
        counter.count = count


def _fp_of(get: Callable[[], Any]) -> Callable[[], str]:
    return lambda: _digest(repr(get()))


PROVIDERS: tuple[Provider, ...] = (
    Provider("random", "@random", _random_get, _random_set, _random_fp),
    Provider(
        "numpy.random",
        "@random",
        lambda: _mod("numpy").random.get_state(),
        _np_set,
        _np_fp,
        module="numpy",
    ),
    Provider(
        "torch.random",
        "@random",
        lambda: _mod("torch").get_rng_state(),
        _torch_set,
        lambda: _digest(_mod("torch").get_rng_state().numpy().tobytes()),
        module="torch",
    ),
    Provider(
        "torch.cuda.random",
        "@random",
        lambda: _mod("torch").cuda.get_rng_state_all(),
        lambda s: _mod("torch").cuda.set_rng_state_all(s),
        lambda: _digest(*(t.numpy().tobytes() for t in _mod("torch").cuda.get_rng_state_all())),
        module="torch.cuda",  # and active only once CUDA is initialised (see _active)
    ),
    Provider("environ", "@environ", _environ_get, _environ_set, _environ_fp),
    Provider(
        "sys.path",
        "@sys.path",
        lambda: list(sys.path),
        lambda s: sys.path.__setitem__(slice(None), s),
        lambda: _digest(repr(sys.path)),
    ),
    Provider("cwd", "@cwd", os.getcwd, os.chdir, lambda: _digest(os.getcwd())),
    Provider(
        "sys.recursionlimit",
        "@sys.recursionlimit",
        sys.getrecursionlimit,
        _recursion_set,
        lambda: str(sys.getrecursionlimit()),
    ),
    Provider(
        "warnings.filters",
        "@warnings.filters",
        _warnings_get,
        _warnings_set,
        _fp_of(_warnings_get),
        module="warnings",
    ),
    Provider(
        "logging", "@logging", _logging_get, _logging_set, _fp_of(_logging_get), module="logging"
    ),
    Provider(
        "numpy.printoptions",
        "@numpy.printoptions",
        lambda: _mod("numpy").get_printoptions(),
        _np_print_set,
        _fp_of(lambda: sorted(_mod("numpy").get_printoptions().items())),
        module="numpy",
    ),
    Provider(
        "pandas.options",
        "@pandas.options",
        _pandas_get,
        _pandas_set,
        _fp_of(_pandas_get),
        module="pandas",
    ),
    Provider(
        "sklearn.config",
        "@sklearn.config",
        lambda: _mod("sklearn").get_config(),
        _sklearn_set,
        _fp_of(lambda: sorted(_mod("sklearn").get_config().items())),
        module="sklearn",
    ),
    Provider(
        # The HTML of a displayed estimator numbers its elements with two process-wide
        # counters (``sk-container-id-3``): top to bottom they go on from cell to cell.
        "sklearn.html_ids",
        "@sklearn.html_ids",
        _sklearn_ids_get,
        _sklearn_ids_set,
        lambda: repr(_sklearn_ids_get()),
        module="sklearn.utils._repr_html.estimator",
        fresh=repr((0, 0)),
    ),
    Provider(
        "matplotlib.rcParams",
        "@matplotlib.rcParams",
        _rc_get,
        _rc_set,
        _fp_of(lambda: sorted(_rc_get().items())),
        module="matplotlib",
    ),
    Provider(
        "torch.default_dtype",
        "@torch.default_dtype",
        lambda: str(_mod("torch").get_default_dtype()).rpartition(".")[2],
        _torch_dtype_set,
        lambda: str(_mod("torch").get_default_dtype()),
        module="torch",
    ),
    Provider(
        "history",
        "@history",
        _history_get,
        _history_set,
        _history_fp,
        module="IPython",
    ),
)
BY_NAME = {p.name: p for p in PROVIDERS}
assert {p.pseudo for p in PROVIDERS} == set(HIDDEN), "a hidden state without a provider"


def _active(p: Provider) -> bool:
    if p.name == "torch.cuda.random":
        return _cuda_active()
    return p.active()


def fingerprints() -> dict[str, str | None]:
    """Every provider's fingerprint now; None for one whose library is not imported (or whose
    state cannot be read)."""
    out: dict[str, str | None] = {}
    for p in PROVIDERS:
        if p.pseudo == "@history" or not _active(p):
            out[p.name] = None  # the output history is ordered by the analysis alone
            continue
        try:
            out[p.name] = p.fingerprint()
        except Exception:
            out[p.name] = None
    return out


def get_states(names: list[str]) -> dict[str, Any]:
    """The states of providers ``names`` (those active), as :func:`set_states` takes them."""
    return {n: BY_NAME[n].get() for n in names if _active(BY_NAME[n])}


def set_states(states: dict[str, Any]) -> None:
    """Make each provider's state what :func:`get_states` returned, importing its library
    when needed (the step that saved it had it imported)."""
    for name, state in states.items():
        p = BY_NAME.get(name)
        if p is None:
            continue
        if p.module and not _active(p):
            p.activate()
        p.set(state)


def capture(name: str) -> Any:
    """The current value of hidden state ``name`` (a pseudo-variable), as plain picklable
    data: the states of its active providers. Capturing never imports a library.

    Raises ``KeyError`` for a name that is not hidden state.
    """
    if name not in HIDDEN:
        raise KeyError(f"unknown hidden state {name!r}")
    return get_states([p.name for p in PROVIDERS if p.pseudo == name])


def restore(name: str, state: Any) -> None:
    """Make hidden state ``name`` what :func:`capture` returned.

    Providers whose state was captured are restored, importing numpy or torch when the
    producing step had it and this process has not yet. ``os.environ`` becomes the
    process's own environment after the prelude plus what the producer changed; ``sys.path``
    is changed in place, so it stays the object other modules hold.

    Raises ``KeyError`` for a name that is not hidden state.
    """
    if name not in HIDDEN:
        raise KeyError(f"unknown hidden state {name!r}")
    set_states(state)


def generator_cells(pipeline: Any, only: str | None = None) -> tuple[bool, frozenset[str]]:
    """Whether a prelude cell seeds or draws from a global generator (the analysis'
    ``@random``: ``np.random.seed``, ``random.random()``, scikit-learn without
    ``random_state`` ...), and the steps with a cell that does (``only``: look at that
    step's cells and the prelude only). What a library does inside without the source
    showing it is for the run-time check."""
    from cellpipe.compiling.analysis import CellSyntaxError, analyse_cell
    from cellpipe.core.model import Role

    modules: dict[str, str] = {}
    prelude, steps = False, set()
    for cell in pipeline.cells:
        if cell.kind != "code" or cell.role is Role.SKIP:
            continue
        if only is not None and not cell.role.prelude and cell.step != only:
            continue
        try:
            flow = analyse_cell(cell.source, modules)
        except CellSyntaxError:
            continue
        modules.update(flow.imports)
        if "@random" not in flow.mutates and "@random" not in flow.writes:
            continue
        if cell.role.prelude:
            prelude = True
        elif cell.step is not None:
            steps.add(cell.step)
    return prelude, frozenset(steps)


@dataclass
class Tracker:
    """Fingerprints of every provider around one step: after the prelude, at the step's
    entry (its inputs restored) and at its exit. ``seeds``: the step's source seeds or draws
    from a global generator (:func:`generator_cells`)."""

    prelude: dict[str, str | None]
    declared: dict[str, str | None] | None = None  # after the declared inputs' restore
    entry: dict[str, str | None] | None = None
    exit: dict[str, str | None] | None = None
    seconds: float = 0.0  # what tracking cost the step (fingerprints, restoring, saving)
    seeds: bool = False

    def timed_fingerprints(self) -> dict[str, str | None]:
        t = time.perf_counter()
        try:
            return fingerprints()
        finally:
            self.seconds += time.perf_counter() - t

    @classmethod
    def after_prelude(cls, shell: Any = None) -> Tracker:
        """Start tracking a step whose prelude has run in ``shell`` (an IPython shell)."""
        global _SHELL
        _SHELL = shell
        t = time.perf_counter()
        mark_environ_base()
        tracker = cls(fingerprints())
        tracker.seconds = time.perf_counter() - t
        return tracker

    def enter(self) -> None:
        self.entry = self.timed_fingerprints()

    def leave(self) -> list[str]:
        """Take the exit fingerprints; the providers the step changed."""
        self.exit = self.timed_fingerprints()
        return self.changed()

    def changed(self) -> list[str]:
        """Providers active at the exit whose state differs from the entry's. A library
        the step merely imported is not a change: a setting holds its defaults and a
        generator a fresh seed, which the next step's own import gives again. A generator
        that became active in a step whose source seeds or draws from it is one
        (``import numpy as np; np.random.seed(0)``): the next steps continue from it. So is
        a state other than the fresh one of a provider whose fresh state is always the same."""
        entry, exit_ = self.entry or {}, self.exit or {}
        return [
            n
            for n, fp in exit_.items()
            if fp is not None
            and entry.get(n) != fp
            and (
                entry.get(n) is not None
                or (
                    BY_NAME[n].fresh != fp
                    if BY_NAME[n].fresh is not None
                    else self.seeds and HIDDEN[BY_NAME[n].pseudo].drawn
                )
            )
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "prelude": self.prelude,
            "declared": self.declared,
            "entry": self.entry,
            "exit": self.exit,
            "changed": self.changed(),
            "seconds": round(self.seconds, 6),
        }


# -- a step's record ---------------------------------------------------------------------------

#: In ``data/<step>/``: the states of the providers the step changed, and its fingerprints.
STATES_FILE = layout.HIDDEN_STATES
FINGERPRINTS_FILE = layout.HIDDEN_FINGERPRINTS


def enter_step(rd: Any, step: str, tracker: Tracker) -> None:
    """Start ``step`` from the hidden state the scheduler chose (``rd.hidden_entry_path``:
    provider -> the finished step, earlier in notebook order, whose state it continues from),
    then take the entry fingerprints. Without that file (a backend without the scheduler's
    check), the step starts from what its declared inputs restored."""
    import json

    tracker.declared = tracker.timed_fingerprints()
    t = time.perf_counter()
    path = rd.hidden_entry_path(step)
    if path.is_file():
        sources: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        by_producer: dict[str, list[str]] = {}
        for provider, producer in sources.items():
            by_producer.setdefault(producer, []).append(provider)
        for producer, names in by_producer.items():
            states = load_states(rd.data_dir(producer))
            set_states({n: states[n] for n in names if n in states})
    tracker.seconds += time.perf_counter() - t
    tracker.enter()


def save_step(directory: Any, tracker: Tracker) -> None:
    """Write the step's fingerprints and the states of the providers it changed, owner-only
    (0600): they are the user's data, and an environment may hold secrets. The global
    generators' states are saved whenever active, changed or not (a few KiB): on Argo the
    next step in notebook order continues from them (``backends/argo/manifest.hidden_chain``)."""
    import pickle

    from cellpipe.core.atomic import write_json

    t = time.perf_counter()
    states: dict[str, Any] = {}
    generators = [p.name for p in PROVIDERS if p.pseudo == "@random"]
    for name, state in get_states(list(dict.fromkeys(tracker.changed() + generators))).items():
        try:
            states[name] = pickle.dumps(state)
        except Exception:  # a filter naming a class of the notebook: kept out, noted below
            continue
    blob = pickle.dumps(states)
    path = directory / STATES_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    tracker.seconds += time.perf_counter() - t
    record = tracker.to_json()
    record["saved"] = sorted(states)
    write_json(directory / FINGERPRINTS_FILE, record)


def load_states(directory: Any) -> dict[str, Any]:
    """The provider states a finished step saved (empty if it saved none)."""
    import pickle

    try:
        raw = (directory / STATES_FILE).read_bytes()
    except FileNotFoundError:
        return {}
    return {k: pickle.loads(v) for k, v in pickle.loads(raw).items()}


def read_fingerprints(directory: Any) -> dict[str, Any] | None:
    """What :func:`save_step` recorded for a finished step, or None (an older run, a step
    that failed)."""
    import json

    try:
        return json.loads((directory / FINGERPRINTS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
