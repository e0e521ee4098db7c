"""Values between steps: saved by the producing step, loaded by each consumer.

Each type gets the format that keeps it faithful and fast: numpy arrays as ``.npy`` (loaded
memory-mapped copy-on-write, so a consumer may change its copy in place and the file never
changes), pandas objects as parquet when that round trip is exact (else pickle), torch
objects with torch's own format, modules as their name (re-imported), and everything else
with cloudpickle. ``manifest.json`` records each value's type, size and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import sys
import tempfile
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UnpicklableValue

MANIFEST = "manifest.json"
_CHUNK = 1 << 24


@dataclass(frozen=True, slots=True)
class ValueRecord:
    name: str
    file: str
    format: str  # "npy" | "parquet" | "pickle" | "torch" | "module"
    type: str
    bytes: int
    sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "format": self.format,
            "type": self.type,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "info": self.info,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ValueRecord:
        return cls(
            d["name"], d["file"], d["format"], d["type"], d["bytes"], d["sha256"], d.get("info", {})
        )


def file_stem(name: str) -> str:
    """A file name for a variable: identifiers as they are, ``@sys.path`` -> ``hidden-sys.path``."""
    return name if name.isidentifier() else "hidden-" + name.lstrip("@")


def type_name(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def save_value(
    name: str,
    value: Any,
    directory: Path,
    *,
    producer: str,
    consumers: Sequence[str] = (),
    references: Mapping[int, str] | None = None,
) -> ValueRecord:
    """Save ``value`` under ``directory``; return its manifest record.

    Raises
    ------
    UnpicklableValue
        The value cannot be saved (a generator, an open file, a lock, a connection, ...).
        No partial file is left behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = file_stem(name)
    if isinstance(value, types.ModuleType):
        digest = hashlib.sha256(value.__name__.encode()).hexdigest()
        return ValueRecord(name, "", "module", "module", 0, digest, {"module": value.__name__})
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        return _save_npy(name, value, directory / f"{stem}.npy")
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series)):
        record = _save_parquet(name, value, directory / f"{stem}.parquet")
        if record is not None:
            return record
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, (torch.Tensor, torch.nn.Module)):
        return _write(
            name, value, directory / f"{stem}.pt", "torch", lambda f: torch.save(value, f)
        )

    def dump(f: BinaryIO) -> None:
        _Pickler(f, references or {}).dump(value)

    try:
        return _write(name, value, directory / f"{stem}.pkl", "pickle", dump)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise UnpicklableValue(
            name, type_name(value), producer, list(consumers), _reason(exc)
        ) from None


def load_value(
    record: ValueRecord, directory: Path, *, namespace: Mapping[str, Any] | None = None
) -> Any:
    """Load a saved value. ``namespace`` resolves values saved as references."""
    path = directory / record.file
    if record.format == "module":
        import importlib

        return importlib.import_module(record.info["module"])
    if record.format == "npy":
        import numpy as np

        # Copy-on-write: the consumer may modify the array; the file stays as produced.
        return np.load(path, mmap_mode="c", allow_pickle=False)
    if record.format == "parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if record.info.get("series"):
            series = frame.iloc[:, 0]
            series.name = record.info.get("series_name")
            return series
        return frame
    if record.format == "torch":
        import torch

        return torch.load(path, weights_only=False)
    with open(path, "rb") as f:
        return _Unpickler(f, namespace).load()


def write_manifest(directory: Path, records: Iterable[ValueRecord]) -> None:
    from .atomic import write_json

    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / MANIFEST, {r.name: r.to_json() for r in records})


def read_manifest(directory: Path) -> dict[str, ValueRecord]:
    """Records by name. Raises FileNotFoundError when the step saved nothing (yet)."""
    data = json.loads((directory / MANIFEST).read_text())
    return {k: ValueRecord.from_json(v) for k, v in data.items()}


# -- formats ---------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    def __init__(self, f: BinaryIO):
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        self.hash.update(b)
        n = self.f.write(b)
        self.size += len(memoryview(b).cast("B"))
        return n if n is not None else len(b)


def _write(
    name: str, value: Any, path: Path, fmt: str, dump: Any, info: dict | None = None
) -> ValueRecord:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            w = _HashingWriter(raw)
            dump(w)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return ValueRecord(
        name, path.name, fmt, type_name(value), w.size, w.hash.hexdigest(), info or {}
    )


def _save_npy(name: str, arr: Any, path: Path) -> ValueRecord:
    import numpy as np

    info = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if not arr.flags.c_contiguous:
        return _write(
            name,
            arr,
            path,
            "npy",
            lambda w: np.lib.format.write_array(w, arr, allow_pickle=False),
            info,
        )
    # Fast path: the header, then the array's memory written directly while another thread
    # hashes the same memory (both release the GIL), instead of one pass after the other.
    import threading

    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, np.lib.format.header_data_from_array_1_0(arr))
    digest = hashlib.sha256(header.getvalue())
    data = memoryview(arr.reshape(-1).view(np.uint8))
    hasher = threading.Thread(target=digest.update, args=(data,), name="cellpipe-hash")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        hasher.start()
        with os.fdopen(fd, "wb") as f:
            f.write(header.getvalue())
            arr.tofile(f)
        hasher.join()
        os.replace(tmp, path)
    except BaseException:
        hasher.join()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    size = len(header.getvalue()) + arr.nbytes
    return ValueRecord(name, path.name, "npy", type_name(arr), size, digest.hexdigest(), info)


def _parquet_faithful(df: Any) -> bool:
    import pandas as pd

    cols = df.columns
    if isinstance(cols, pd.MultiIndex) or not all(isinstance(c, str) for c in cols):
        return False
    if cols.has_duplicates or df.attrs or cols.name is not None:
        return False
    if isinstance(df.index, pd.MultiIndex):
        return False
    for dtype_name, col in ((str(df[c].dtype), df[c]) for c in cols):
        if dtype_name == "object":
            kinds = {type(v) for v in col.dropna()}
            if len(kinds) > 1 or not kinds <= {str}:
                return False
            if col.isna().any():
                return False  # None vs NaN in object columns does not survive parquet
    if str(df.index.dtype) == "object":
        kinds = {type(v) for v in df.index}
        if not kinds <= {str}:
            return False
    return True


def _save_parquet(name: str, value: Any, path: Path) -> ValueRecord | None:
    """Parquet for DataFrames whose round trip is exact; None means: use pickle."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return None
    import pandas as pd

    series = isinstance(value, pd.Series)
    if series and value.name is not None and not isinstance(value.name, str):
        return None
    frame = value.to_frame(name="value") if series else value
    if not _parquet_faithful(frame):
        return None
    info: dict[str, Any] = {"rows": int(frame.shape[0]), "columns": int(frame.shape[1])}
    if series:
        info.update(series=True, series_name=value.name)
    try:
        record = _write(name, value, path, "parquet", lambda f: frame.to_parquet(f), info)
    except Exception:
        return None
    # Belt and braces: check the round trip on what parquet gave back.
    try:
        back = pd.read_parquet(path)
        same = back.equals(frame) and list(back.dtypes) == list(frame.dtypes)
        same = (
            same and type(back.index) is type(frame.index) and back.index.name == frame.index.name
        )
    except Exception:
        same = False
    if not same:
        path.unlink(missing_ok=True)
        return None
    return record


# -- pickling with references ------------------------------------------------------------------


def _pickler_base() -> type:
    import cloudpickle

    return cloudpickle.Pickler


class _NotebookGlobals:
    """Stands for the consuming step's namespace inside a pickle."""


_GLOBALS = _NotebookGlobals()


class _Pickler(_pickler_base()):  # type: ignore[misc]
    """cloudpickle, with two changes for notebook code.

    Objects listed in ``references`` are saved by name, not by value. Functions defined in
    the notebook (module ``__main__``, also methods of notebook classes) are rebuilt in the
    *consuming* step's namespace, as in a top-to-bottom run where every function sees the one
    global namespace; cloudpickle alone would give each a private copy of the globals it
    referenced when it was saved.
    """

    def __init__(self, f: BinaryIO, references: Mapping[int, str]):
        super().__init__(f, protocol=5)
        self._refs = references

    def persistent_id(self, obj: Any) -> Any:
        if obj is _GLOBALS:
            return ("cellpipe-globals", "")
        if self._refs:
            name = self._refs.get(id(obj))
            if name is not None:
                return ("cellpipe-ref", name)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, types.FunctionType)
            and obj.__module__ == "__main__"
            and id(obj) not in self._refs
        ):
            captured = {
                n: obj.__globals__[n]
                for n in _global_names(obj.__code__)
                if n in obj.__globals__
                and not isinstance(obj.__globals__[n], types.ModuleType)
                and obj.__globals__[n] is not obj
            }
            return (
                _rebuild_function,
                (
                    obj.__code__,
                    _GLOBALS,
                    obj.__name__,
                    obj.__defaults__,
                    obj.__closure__,
                    obj.__kwdefaults__,
                    obj.__qualname__,
                    dict(obj.__dict__),
                    dict(obj.__annotations__),
                    captured,
                ),
            )
        return super().reducer_override(obj)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _rebuild_function(
    code: types.CodeType,
    namespace: dict[str, Any],
    name: str,
    defaults: Any,
    closure: Any,
    kwdefaults: Any,
    qualname: str,
    attrs: dict[str, Any],
    annotations: dict[str, Any],
    captured: dict[str, Any],
) -> types.FunctionType:
    # Names the function used when it was saved fill in only what this step lacks: the step's
    # own values (its inputs) are the ones a top-to-bottom run would see.
    for key, value in captured.items():
        namespace.setdefault(key, value)
    fn = types.FunctionType(code, namespace, name, defaults, closure)
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    fn.__dict__.update(attrs)
    fn.__annotations__ = annotations
    fn.__module__ = "__main__"
    return fn


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, namespace: Mapping[str, Any] | None):
        super().__init__(f)
        # Without a namespace (cellpipe.load from outside a step) functions get a fresh one.
        self._ns = namespace if namespace is not None else {"__name__": "__main__"}

    def persistent_load(self, pid: Any) -> Any:
        kind, name = pid
        if kind == "cellpipe-globals":
            return self._ns
        if kind != "cellpipe-ref" or name not in self._ns:
            raise pickle.UnpicklingError(
                f"the value refers to `{name}` from the notebook's functions cells, which this "
                "step does not define"
            )
        return self._ns[name]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
