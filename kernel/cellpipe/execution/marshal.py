"""Values between steps: saved by the producing step, loaded by each consumer.

A step's values live in ``data/<step>/``, one file per value, listed in ``manifest.json``.
Each type gets the format that keeps it faithful and fast:

- exact ``numpy.ndarray`` (no object dtype): ``.npy``, loaded memory-mapped copy-on-write, so
  a consumer may change its array in place and the file never changes; a strided view comes
  back with its strides, a read-only array read-only;
- ``pandas.DataFrame`` / ``Series``: parquet when that round trip is exact, else pickle;

A hand-off returns what was given: values, dtypes, index, column order, and for arrays and
frames the memory layout too (C/F order, strides, the frame's blocks) and the flags, since
solvers read the layout (a C-ordered frame back F-ordered changed LassoLarsIC's AIC). Each
format is checked at save time against what a consumer would load; one that fails falls back
to the next (npy or parquet -> pickle).
- ``torch.Tensor`` / ``torch.nn.Module`` (only when torch is already imported): ``torch.save``;
- modules: their name, imported again on load;
- everything else: cloudpickle;
- values that share objects (``pair = [a, a]`` and ``a``, see cellpipe.execution.aliasing):
  one cloudpickle of them all (format ``group``), so they share them again when loaded.

Every file is written to a temporary name in the same directory and renamed into place, so a
reader never sees a partial file, also when saving fails half way.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from cellpipe.core.errors import UnpicklableValue

# The manifest is the run directory's (see cellpipe.rundir.data); the value files it lists
# are named here, inside the data directory a RunDir hands over. Re-exported for callers.
from cellpipe.rundir.data import ValueRecord, read_manifest, write_manifest

__all__ = [
    "ValueRecord",
    "file_stem",
    "layout",
    "load_value",
    "read_manifest",
    "save_group",
    "save_value",
    "write_manifest",
]

# Below this size the hash runs inline: starting a thread costs more than it saves.
_THREADED_HASH_MIN = 1 << 22


_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def file_stem(name: str) -> str:
    """A file name stem for variable ``name``.

    Identifiers are kept as they are; hidden-state names become ``hidden-<name>``
    (``"@sys.path"`` -> ``"hidden-sys.path"``), with any character that is unsafe in a file
    name replaced by ``_``. An identifier cannot contain ``-``, so the two never collide.
    """
    if name.isidentifier():
        return name
    return "hidden-" + _UNSAFE_IN_FILE_NAME.sub("_", name.lstrip("@"))


def save_value(
    name: str,
    value: Any,
    directory: Path,
    *,
    producer: str,
    consumers: Sequence[str] = (),
    references: Mapping[int, str] | None = None,
) -> ValueRecord:
    """Save ``value`` as ``directory/<file_stem(name)>.<ext>`` and return its record.

    Parameters
    ----------
    producer, consumers
        The step saving the value and the steps that will load it; used in error messages.
    references
        ``id(obj) -> name`` for objects that every step defines again (the notebook's
        ``functions`` cells). Such objects, wherever they occur inside ``value``, are saved
        as a reference that :func:`load_value` resolves to ``namespace[name]``, so an
        instance of a notebook class loads as an instance of the *consuming* step's class.

    Raises
    ------
    UnpicklableValue
        The value cannot be saved (a generator, an open file, a lock, a connection, a
        module that cannot be imported by name, ...). No file is left behind.
    OSError
        The disk refused the write. No partial file is left behind.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = directory / file_stem(name)
    if isinstance(value, types.ModuleType):
        return _save_module(name, value, producer, consumers)
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray and _npy_holds(value.dtype):
        npy = base.with_name(base.name + ".npy")
        record = _save_npy(name, value, npy)
        if layout(load_value(record, directory)) == layout(value):
            return record
        npy.unlink(missing_ok=True)
    pd = sys.modules.get("pandas")
    if pd is not None and type(value) in (pd.DataFrame, pd.Series):
        record = _save_parquet(name, value, base.with_name(base.name + ".parquet"))
        if record is not None:
            return record
    torch = sys.modules.get("torch")
    if torch is not None and _torch_saves_faithfully(torch, value):
        record = _save_torch(torch, name, value, base.with_name(base.name + ".pt"))
        if record is not None:
            return record
    record = _save_pickle(
        name, value, base.with_name(base.name + ".pkl"), producer, consumers, references or {}
    )
    if layout(value) is not None:
        # The last format: what it cannot keep is said, not hidden.
        back = load_value(record, directory)
        if layout(back) != layout(value):
            record = _with_info(record, inexact="memory layout")
    return record


def layout(value: Any) -> tuple | None:
    """What a consumer could tell apart in a value's memory beyond its values: for a numpy
    array its dtype, shape, strides (not of length-1 axes or empty arrays: they address
    nothing), C/F
    contiguity, and writeable and aligned flags; for a pandas frame or series, each block's
    columns and array layout. ``None`` for other values."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        f = value.flags
        strides = (
            tuple(s if n > 1 else None for s, n in zip(value.strides, value.shape, strict=True))
            if value.size
            else None  # an empty array's strides address nothing
        )
        kinds = (f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
        return (value.dtype.str, value.dtype.descr, value.shape, strides, kinds)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series)):
        blocks = getattr(getattr(value, "_mgr", None), "blocks", None)
        if blocks is None:  # a pandas without block managers: nothing to compare
            return None
        # Sorted: the order of blocks in the manager is invisible, their columns are not.
        return tuple(
            sorted(
                (
                    tuple(b.mgr_locs.as_array.tolist()),
                    layout(b.values)
                    if isinstance(b.values, np.ndarray)
                    else type(b.values).__name__,
                )
                for b in blocks
            )
        )
    return None


def _with_info(record: ValueRecord, **info: Any) -> ValueRecord:
    return ValueRecord(
        record.name,
        record.file,
        record.format,
        record.type,
        record.bytes,
        record.sha256,
        {**record.info, **info},
    )


def save_group(
    values: Mapping[str, Any],
    directory: Path,
    *,
    producer: str,
    consumers: Mapping[str, Sequence[str]] | None = None,
    references: Mapping[int, str] | None = None,
) -> list[ValueRecord]:
    """Save values that share objects as one pickle, so they share them when loaded.

    Returns one record per name, all naming the same file (format ``group``; ``info.group``
    lists the names). Raises UnpicklableValue naming the first value that cannot be saved.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = list(values)
    path = directory / f"{file_stem(names[0])}.group.pkl"
    consumers = consumers or {}
    try:
        np = sys.modules.get("numpy")
        # Arrays of the group by id: a view of one is saved as a view of it, not a copy.
        bases = {id(v): v for v in values.values() if np is not None and type(v) is np.ndarray}
        record = _save_pickle(
            names[0],
            dict(values),
            path,
            producer,
            consumers.get(names[0], ()),
            references or {},
            bases,
        )
    except UnpicklableValue:
        for name, value in values.items():  # say which one
            _save_pickle(name, value, path, producer, consumers.get(name, ()), references or {})
        raise
    return [
        ValueRecord(
            name,
            path.name,
            "group",
            _qualified_type(value),
            record.bytes,
            record.sha256,
            {"group": names},
        )
        for name, value in values.items()
    ]


def load_value(
    record: ValueRecord,
    directory: Path,
    *,
    namespace: Mapping[str, Any] | None = None,
    groups: dict[Path, dict[str, Any]] | None = None,
) -> Any:
    """Load the value ``record`` describes from ``directory``.

    Arrays come back as plain ``numpy.ndarray`` objects backed by a copy-on-write memory
    map of the file: loading costs nothing up front, pages are read on first use, and
    changes stay in this process.

    ``namespace`` is the consuming step's global namespace: references (see
    :func:`save_value`) resolve to its entries, and functions defined in the notebook get
    it as their globals, as in a top-to-bottom run where all cells share one namespace.
    Without it, references resolve in the ``__main__`` module (the notebook's namespace
    when called from a kernel) and functions share a fresh namespace.

    ``groups`` caches the groups loaded so far: pass the same dict for every value a step
    loads, so members of one group are one unpickling and share their objects again.

    Raises
    ------
    pickle.UnpicklingError
        A reference names an object ``namespace`` does not define.
    ValueError
        The record has a format this version does not know.
    """
    path = directory / record.file
    if record.format == "module":
        import importlib

        return importlib.import_module(record.info["module"])
    if record.format == "npy":
        import numpy as np

        # A view, so the consumer sees the type a top-to-bottom run gives (ndarray, not
        # np.memmap); the map stays open as the view's base.
        arr = np.load(path, mmap_mode="c", allow_pickle=False).view(np.ndarray)
        if "strides" in record.info:
            arr = _restrided(arr, tuple(record.info["strides"]))
        if record.info.get("writeable") is False:
            arr.flags.writeable = False
        return arr
    if record.format == "parquet":
        return _read_parquet(path, record.info)
    if record.format == "torch":
        import torch

        return torch.load(path, weights_only=False)
    if record.format == "pickle":
        return _load_pickle(path, namespace)
    if record.format == "group":
        groups = {} if groups is None else groups
        if path not in groups:
            groups[path] = _load_pickle(path, namespace)
        return groups[path][record.name]
    raise ValueError(f"`{record.name}` was saved in format {record.format!r}, unknown here")


# -- files -------------------------------------------------------------------------------------


def _qualified_type(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` when the block succeeds and vanishes otherwise."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp's 0600 is kept: values are the user's own data (step containers run as the
        # same uid, see cellpipe.backends.docker.backend).
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through, so no second pass over the file is needed."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        view = memoryview(b)
        self._f.write(view)
        self.hash.update(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size


def _save_stream(
    name: str, value: Any, path: Path, fmt: str, dump: Callable[[BinaryIO], None], info: dict
) -> ValueRecord:
    with _atomic_file(path) as f:
        out = _HashingWriter(f)
        dump(out)  # type: ignore[arg-type]
    return ValueRecord(
        name, path.name, fmt, _qualified_type(value), out.size, out.hash.hexdigest(), info
    )


# -- modules -----------------------------------------------------------------------------------


def _save_module(
    name: str, module: types.ModuleType, producer: str, consumers: Sequence[str]
) -> ValueRecord:
    module_name = module.__name__
    if sys.modules.get(module_name) is not module:
        raise UnpicklableValue(
            name,
            _qualified_type(module),
            producer,
            list(consumers),
            f"module {module_name!r} cannot be imported again by its name",
        )
    digest = hashlib.sha256(module_name.encode()).hexdigest()
    return ValueRecord(
        name, "", "module", _qualified_type(module), 0, digest, {"module": module_name}
    )


# -- numpy -------------------------------------------------------------------------------------


def _npy_holds(dtype: Any) -> bool:
    """Whether ``.npy`` stores this dtype without pickling (no objects, no user dtypes)."""
    if dtype.hasobject or dtype.isbuiltin == 2:
        return False
    if dtype.fields:
        return all(_npy_holds(f[0]) for f in dtype.fields.values())
    if dtype.subdtype:
        return _npy_holds(dtype.subdtype[0])
    return True


def _save_npy(name: str, arr: Any, path: Path) -> ValueRecord:
    import numpy as np

    fmt = np.lib.format
    info: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if not arr.flags.writeable:
        info["writeable"] = False
    if arr.flags.c_contiguous:
        memory = arr
    elif arr.flags.f_contiguous:
        memory = arr.T  # .npy stores Fortran order as the transpose's C-order bytes
    else:
        # Strided views: numpy writes them in buffered chunks, hashed as they pass; the
        # consumer lays the values out again with the same strides.
        info["strides"] = list(arr.strides)
        return _save_stream(
            name,
            arr,
            path,
            "npy",
            lambda f: fmt.write_array(f, arr, allow_pickle=False),
            info,
        )
    header_fields = fmt.header_data_from_array_1_0(arr)
    header = io.BytesIO()
    try:
        fmt.write_array_header_1_0(header, header_fields)  # what np.save writes
    except ValueError:  # the header of a very wide structured dtype needs format 2.0
        header = io.BytesIO()
        fmt.write_array_header_2_0(header, header_fields)
    head = header.getvalue()
    data = memoryview(memory.reshape(-1).view(np.uint8)) if arr.nbytes else memoryview(b"")
    digest = hashlib.sha256(head)
    # The write and the hash both release the GIL: on two cores they overlap, so saving
    # costs one pass over memory instead of two.
    hasher = None
    if data.nbytes >= _THREADED_HASH_MIN:
        import threading

        hasher = threading.Thread(target=digest.update, args=(data,), name="cellpipe-sha256")
        hasher.start()
    else:
        digest.update(data)
    try:
        with _atomic_file(path) as f:
            f.write(head)
            f.write(data)
    finally:
        if hasher is not None:
            hasher.join()
    size = len(head) + data.nbytes
    return ValueRecord(name, path.name, "npy", _qualified_type(arr), size, digest.hexdigest(), info)


def _restrided(compact: Any, strides: tuple[int, ...]) -> Any:
    """``compact``'s values in a new array with ``strides`` (negative and zero ones too),
    over a buffer just large enough to hold them."""
    import numpy as np

    itemsize, shape = compact.dtype.itemsize, compact.shape
    low = sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s < 0 and n)
    high = sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s > 0 and n) + itemsize
    buffer = np.empty(max(high - low, 0), dtype=np.uint8)
    out = np.ndarray(shape, compact.dtype, buffer=buffer, offset=-low, strides=strides)
    if 0 in strides:
        # Broadcast views repeat one element: write through a view without the zero strides.
        index = tuple(0 if s == 0 else slice(None) for s in strides)
        out[index] = compact[index]
    else:
        out[...] = compact
    return out


# -- pandas ------------------------------------------------------------------------------------


def _save_parquet(name: str, value: Any, path: Path) -> ValueRecord | None:
    """Parquet when it gives ``value`` back exactly; None means: use pickle."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return None
    import pandas as pd

    series = isinstance(value, pd.Series)
    if series and not (value.name is None or type(value.name) is str):
        return None
    frame = value.to_frame(name=value.name or "value") if series else value
    if not _parquet_may_hold(value, frame):
        return None
    info: dict[str, Any] = {"rows": int(frame.shape[0]), "columns": int(frame.shape[1])}
    if series:
        info = {"rows": int(frame.shape[0]), "series": True, "name": value.name}
    # The file serves one hand-off on a local disk: compression, dictionary attempts and
    # statistics cost several times the write itself and save little. Categoricals keep
    # dictionary encoding, which is how parquet gives their categories back.
    categorical = any(
        isinstance(t, pd.CategoricalDtype) for t in [*frame.dtypes, frame.index.dtype]
    )
    options = {"compression": None, "write_statistics": False, "use_dictionary": categorical}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our choice of format is no concern of the user
            record = _save_stream(
                name, value, path, "parquet", lambda f: frame.to_parquet(f, **options), info
            )
    except Exception:  # pyarrow refused a dtype: pickle will take it
        return None
    # The rules above are necessary, not sufficient: compare what a consumer would load.
    try:
        back = _read_parquet(path, info)
        same = _identical(value, back) and layout(back) == layout(value)
    except Exception:
        same = False
    if not same:
        path.unlink(missing_ok=True)
        return None
    return record


def _parquet_may_hold(value: Any, frame: Any) -> bool:
    import pandas as pd

    if value.attrs or not value.flags.allows_duplicate_labels:
        return False
    columns, index = frame.columns, frame.index
    if isinstance(columns, pd.MultiIndex) or isinstance(index, pd.MultiIndex):
        return False
    if columns.has_duplicates or any(type(c) is not str for c in columns):
        return False
    for names in (columns.names, index.names):
        if any(n is not None and type(n) is not str for n in names):
            return False
    if index.dtype == object and not _only_strings(index):
        return False
    # Parquet turns None and NaN alike into null, and str subclasses (StrEnum) into str.
    return all(_only_strings(frame[c]) for c in columns if frame[c].dtype == object)


def _only_strings(values: Any) -> bool:
    return set(map(type, values)) <= {str}


def _read_parquet(path: Path, info: Mapping[str, Any]) -> Any:
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = pd.read_parquet(path)
    if not info.get("series"):
        return frame
    series = frame.iloc[:, 0]
    series.name = info.get("name")
    return series


def _identical(a: Any, b: Any) -> bool:
    """``a.equals(b)`` plus what ``equals`` ignores: dtypes, index types, names, freq."""
    import pandas as pd

    if type(a) is not type(b) or not a.equals(b) or not _same_index(a.index, b.index):
        return False
    if isinstance(a, pd.Series):
        return _same_dtype(a.dtype, b.dtype) and a.name == b.name
    return _same_index(a.columns, b.columns) and all(
        _same_dtype(x, y) for x, y in zip(a.dtypes, b.dtypes, strict=True)
    )


def _same_index(a: Any, b: Any) -> bool:
    return (
        type(a) is type(b)
        and _same_dtype(a.dtype, b.dtype)
        and list(a.names) == list(b.names)
        and a.equals(b)
        and getattr(a, "freq", None) == getattr(b, "freq", None)
    )


def _same_dtype(a: Any, b: Any) -> bool:
    if a != b or str(a) != str(b):
        return False
    categories = getattr(a, "categories", None)
    if categories is None:
        return True
    # CategoricalDtype == ignores the order of unordered categories, which user code sees.
    return a.ordered == b.ordered and _same_index(categories, b.categories)


# -- torch -------------------------------------------------------------------------------------


def _torch_saves_faithfully(torch: Any, value: Any) -> bool:
    """Tensors and modules whose classes a consumer can import. Classes defined in the
    notebook go through the pickler instead, which saves them as references."""
    if isinstance(value, torch.Tensor):
        classes = {type(value)}
    elif isinstance(value, torch.nn.Module):
        classes = {type(m) for m in value.modules()}
    else:
        return False
    return all(c.__module__ != "__main__" for c in classes)


def _save_torch(torch: Any, name: str, value: Any, path: Path) -> ValueRecord | None:
    info: dict[str, Any] = {}
    if isinstance(value, torch.Tensor):
        info = {"shape": list(value.shape), "dtype": str(value.dtype), "device": str(value.device)}
    try:
        return _save_stream(name, value, path, "torch", lambda f: torch.save(value, f), info)
    except OSError:
        raise
    except Exception:  # an attribute torch's pickler cannot take: cloudpickle may
        return None


# -- pickle ------------------------------------------------------------------------------------


def _save_pickle(
    name: str,
    value: Any,
    path: Path,
    producer: str,
    consumers: Sequence[str],
    references: Mapping[int, str],
    bases: Mapping[int, Any] | None = None,
) -> ValueRecord:
    pickler = _pickler_class()
    try:
        return _save_stream(
            name,
            value,
            path,
            "pickle",
            lambda f: pickler(f, references, bases).dump(value),
            {},
        )
    except MemoryError:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the disk, not the value
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise UnpicklableValue(
            name, _qualified_type(value), producer, list(consumers), reason
        ) from exc


# Set while a pickle loads: the consuming step's namespace (see load_value).
_namespace: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cellpipe_marshal_namespace", default=None
)
_references: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "cellpipe_marshal_references", default=None
)


def _load_pickle(path: Path, namespace: Mapping[str, Any] | None) -> Any:
    import pickle

    if namespace is None:
        refs: Mapping[str, Any] = _main_namespace()
        globals_: dict[str, Any] = {"__name__": "__main__"}
    else:
        refs = namespace
        globals_ = namespace if isinstance(namespace, dict) else dict(namespace)
    ns_token, refs_token = _namespace.set(globals_), _references.set(refs)
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    finally:
        _namespace.reset(ns_token)
        _references.reset(refs_token)


@functools.cache
def _pickler_class() -> type:
    """cloudpickle's Pickler with two changes for notebook code.

    Objects listed in ``references`` are saved by name. Functions defined in the notebook
    (module ``__main__``, methods of notebook classes included) are rebuilt with the
    consuming step's namespace as their globals, as in a top-to-bottom run where every
    function sees the one global namespace; cloudpickle alone would give each a private
    copy of the globals it used when it was saved.

    Both are done in ``reducer_override`` rather than ``persistent_id``: pickle calls the
    latter for every object (each int of a list), which made object-heavy values 2x slower
    to save; the former is only called for objects that are not ints, strings or builtin
    containers, which is where functions, classes and instances are.
    """
    import cloudpickle

    class NotebookPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def __init__(
            self,
            f: BinaryIO,
            references: Mapping[int, str],
            bases: Mapping[int, Any] | None = None,
        ):
            super().__init__(f, protocol=5)
            self._refs = references
            self._bases = bases

        def reducer_override(self, obj: Any) -> Any:
            ref = self._refs.get(id(obj)) if self._refs else None
            if ref is not None:
                return _resolve_reference, (ref,)
            if self._bases:
                view = _reduce_view(obj, self._bases)
                if view is not None:
                    return view
            if type(obj) is types.FunctionType and _defined_in_notebook(obj):
                return _reduce_notebook_function(obj)
            return super().reducer_override(obj)

    return NotebookPickler


def _reduce_view(obj: Any, bases: Mapping[int, Any]) -> tuple | None:
    """A numpy view of an array saved in the same group, as a view of it again."""
    np = sys.modules["numpy"]
    if not isinstance(obj, np.ndarray) or type(obj) is not np.ndarray:
        return None
    base = obj.base
    while isinstance(base, np.ndarray) and id(base) not in bases:
        base = base.base
    contiguous = isinstance(base, np.ndarray) and (
        base.flags.c_contiguous or base.flags.f_contiguous
    )
    if not contiguous or base is obj:
        return None
    offset = obj.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return _array_view, (base, obj.dtype, obj.shape, obj.strides, offset, obj.flags.writeable)


def _array_view(base: Any, dtype: Any, shape: tuple, strides: tuple, offset: int, writeable: bool):
    import numpy as np

    flat = base.reshape(-1, order="A").view(np.uint8)  # the base's memory, as bytes
    view = np.ndarray(shape, dtype, buffer=flat, offset=offset, strides=strides)
    view.flags.writeable = writeable and base.flags.writeable
    return view


def _main_namespace() -> Mapping[str, Any]:
    return getattr(sys.modules.get("__main__"), "__dict__", {})


def _resolve_reference(name: str) -> Any:
    import pickle

    refs = _references.get()
    if refs is None:
        refs = _main_namespace()
    try:
        return refs[name]
    except KeyError:
        raise pickle.UnpicklingError(
            f"the value refers to `{name}` from the notebook's functions cells, which is not "
            "defined here"
        ) from None


def _defined_in_notebook(fn: types.FunctionType) -> bool:
    # Both: functools.wraps copies __module__ == "__main__" onto wrappers that live in
    # library modules (dataclasses' __repr__); those keep cloudpickle's private globals
    # rather than spilling their module's names into the step's namespace.
    return fn.__module__ == "__main__" and fn.__globals__.get("__name__") == "__main__"


def _reduce_notebook_function(fn: types.FunctionType) -> tuple:
    g = fn.__globals__
    try:
        annotations = dict(fn.__annotations__)
    except Exception:  # lazily evaluated annotations (3.14) may name what is gone
        annotations = {}
    state = {
        "globals": {n: g[n] for n in _global_names(fn.__code__) if n in g},
        "cells": [_cell_contents(c) for c in fn.__closure__ or ()],
        "defaults": fn.__defaults__,
        "kwdefaults": fn.__kwdefaults__,
        "qualname": fn.__qualname__,
        "doc": fn.__doc__,
        "annotations": annotations,
        "dict": dict(fn.__dict__),
        "type_params": getattr(fn, "__type_params__", ()),
    }
    # The function is made first and filled in from ``state`` afterwards (protocol 5's
    # state setter), so a function reachable from its own globals, closure or defaults
    # (recursion, mutual recursion) is the pickle's memoized object, not endless recursion.
    ncells = len(fn.__closure__ or ())
    return _function_skeleton, (fn.__code__, fn.__name__, ncells), state, None, None, _fill_function


def _cell_contents(cell: types.CellType) -> tuple:
    try:
        return (cell.cell_contents,)
    except ValueError:  # an empty cell: a free variable not yet assigned
        return ()


def _global_names(code: types.CodeType) -> set[str]:
    """Names the code reads or writes as globals. Precise (bytecode, not ``co_names``, which
    also holds attribute names) so that no unrelated global is saved with the function."""
    import dis

    names: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        for ins in dis.get_instructions(c):
            if "GLOBAL" in ins.opname or ins.opname in ("LOAD_NAME", "STORE_NAME"):
                names.add(ins.argval)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def _function_skeleton(code: types.CodeType, name: str, ncells: int) -> types.FunctionType:
    namespace = _namespace.get()
    if namespace is None:  # unpickled outside load_value
        namespace = {"__name__": "__main__"}
    closure = tuple(types.CellType() for _ in range(ncells)) if ncells else None
    return types.FunctionType(code, namespace, name, None, closure)


def _fill_function(fn: types.FunctionType, state: dict[str, Any]) -> None:
    # Globals the function used when it was saved fill in only what the consuming namespace
    # lacks: the step's own values (its inputs) are the ones a top-to-bottom run would see.
    for key, value in state["globals"].items():
        fn.__globals__.setdefault(key, value)
    for cell, contents in zip(fn.__closure__ or (), state["cells"], strict=True):
        if contents:
            cell.cell_contents = contents[0]
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__qualname__ = state["qualname"]
    fn.__doc__ = state["doc"]
    fn.__annotations__ = state["annotations"]
    fn.__dict__.update(state["dict"])
    fn.__module__ = "__main__"
    if state["type_params"]:
        fn.__type_params__ = state["type_params"]
