"""Values between steps: each type round-trips faithfully, in its fastest faithful format."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellpipe.core.errors import UnpicklableValue
from cellpipe.execution import hidden_state
from cellpipe.execution.marshal import (
    ValueRecord,
    file_stem,
    load_value,
    read_manifest,
    save_value,
    write_manifest,
)

KERNEL = Path(__file__).resolve().parents[1] / "kernel"


def roundtrip(value, directory: Path, name: str = "v", **kw):
    record = save_value(name, value, directory, producer="make", consumers=["use"], **kw)
    return record, load_value(record, directory)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


# -- numpy -------------------------------------------------------------------------------------


def test_a_numpy_array_is_saved_as_npy_and_loads_as_an_ndarray(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    record, back = roundtrip(arr, tmp_path)
    assert (record.format, record.file, record.type) == ("npy", "v.npy", "numpy.ndarray")
    assert record.info == {"shape": [3, 4], "dtype": "int32"}
    assert type(back) is np.ndarray and back.dtype == np.int32
    assert np.array_equal(back, arr)


def test_a_loaded_array_is_memory_mapped_not_read(tmp_path: Path) -> None:
    record = save_value("v", np.zeros(1 << 20), tmp_path, producer="p")
    back = load_value(record, tmp_path)
    assert isinstance(back.base, np.memmap)


def test_changing_a_loaded_array_in_place_leaves_the_saved_value_unchanged(tmp_path: Path) -> None:
    record = save_value("v", np.zeros((3, 4)), tmp_path, producer="p")
    back = load_value(record, tmp_path)
    back[0, 0] = 99  # copy-on-write: the consumer may change its copy ...
    back += 1
    assert load_value(record, tmp_path).sum() == 0  # ... and the file does not change
    assert sha256_of(tmp_path / record.file) == record.sha256


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24.0).reshape(4, 6).T,  # Fortran order
        np.arange(24.0).reshape(4, 6)[::2, 1::2],  # strided view
        np.array(3.5),  # 0-d
        np.zeros((0, 3)),  # empty
        np.array(["ab", "c"]),
        np.arange(3).astype("datetime64[D]"),
        np.zeros(2, dtype=[("a", "i4"), ("b", "f8", (2,))]),
        np.arange(6, dtype=">i8"),  # big-endian
    ],
    ids=["fortran", "strided", "0-d", "empty", "unicode", "datetime", "structured", "big-endian"],
)
def test_arrays_of_any_layout_round_trip_with_dtype_shape_and_hash(tmp_path: Path, arr) -> None:
    record, back = roundtrip(arr, tmp_path)
    assert record.format == "npy"
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)
    assert record.sha256 == sha256_of(tmp_path / record.file)
    assert record.bytes == (tmp_path / record.file).stat().st_size


def _flags(arr: np.ndarray) -> tuple:
    f = arr.flags
    return (arr.strides, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24.0).reshape(4, 6).T,
        np.arange(24.0).reshape(4, 6)[::2, 1::2],
        np.arange(24.0).reshape(4, 6)[::-1, ::-2],
        np.broadcast_to(np.arange(3.0), (4, 3)),
    ],
    ids=["fortran", "strided", "negative-strides", "broadcast"],
)
def test_an_array_comes_back_with_its_strides_and_flags(tmp_path: Path, arr) -> None:
    record, back = roundtrip(arr, tmp_path)
    assert record.format == "npy"
    assert np.array_equal(back, arr)
    assert _flags(back) == _flags(arr)


def test_a_read_only_array_comes_back_read_only(tmp_path: Path) -> None:
    arr = np.arange(4.0)
    arr.flags.writeable = False
    _record, back = roundtrip(arr, tmp_path)
    assert not back.flags.writeable


def test_a_c_ordered_dataframe_comes_back_c_ordered(tmp_path: Path) -> None:
    # load_diabetes(as_frame=True) makes frames like this one; parquet gave them back with
    # F-ordered values, which changed LassoLarsIC's path and its AIC.
    df = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=list("abc"), copy=False)
    assert np.asarray(df).flags.c_contiguous
    _record, back = roundtrip(df, tmp_path)
    assert_identical(back, df)
    assert np.asarray(back).flags.c_contiguous


def test_a_dataframe_layout_parquet_keeps_stays_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    record, back = roundtrip(df, tmp_path)
    assert record.format == "parquet"
    assert np.asarray(back).flags.f_contiguous == np.asarray(df).flags.f_contiguous


def test_a_layout_no_format_keeps_is_said_in_the_record(tmp_path: Path) -> None:
    # A frame over a strided view: pickle, the last format, gives its values back contiguous.
    df = pd.DataFrame(np.arange(24.0).reshape(4, 6)[:, ::2], copy=False)
    record, back = roundtrip(df, tmp_path)
    assert_identical(back, df)
    assert (record.format, record.info.get("inexact")) == ("pickle", "memory layout")


def test_an_npy_file_is_what_np_save_writes(tmp_path: Path) -> None:
    arr = np.arange(10.0).reshape(2, 5)
    record = save_value("v", arr, tmp_path, producer="p")
    np.save(tmp_path / "reference.npy", arr)
    assert (tmp_path / record.file).read_bytes() == (tmp_path / "reference.npy").read_bytes()


def test_array_subclasses_and_arrays_of_objects_are_pickled_keeping_their_type(
    tmp_path: Path,
) -> None:
    masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    objects = np.array([1, "a", None], dtype=object)
    strings = np.array(["a", "bb"], dtype=np.dtypes.StringDType())
    record, back = roundtrip(masked, tmp_path, "masked")
    assert record.format == "pickle" and type(back) is np.ma.MaskedArray
    assert back.mask.tolist() == [False, True, False]
    record, back = roundtrip(objects, tmp_path, "objects")
    assert record.format == "pickle" and back.tolist() == [1, "a", None]
    record, back = roundtrip(strings, tmp_path, "strings")
    assert record.format == "pickle" and back.dtype == strings.dtype and list(back) == ["a", "bb"]


@pytest.mark.slow
def test_a_400_mb_array_is_saved_and_loaded_at_speed(tmp_path: Path, capsys) -> None:
    arr = np.random.default_rng(0).random(400 * 10**6 // 8)
    rates = []
    for attempt in range(2):  # the first write into fresh page cache is a VM's worst case
        t0 = time.perf_counter()
        record = save_value(f"big{attempt}", arr, tmp_path, producer="p")
        back = load_value(record, tmp_path)
        total = float(back.sum())  # touch every byte: a mapped load alone costs nothing
        rates.append(arr.nbytes / (time.perf_counter() - t0) / 1e9)
        assert total == pytest.approx(float(arr.sum()))
        del back
        (tmp_path / record.file).unlink()
    with capsys.disabled():
        print(
            "\n  400 MB float64 array: save + load + first full read at "
            + ", ".join(f"{r:.2f}" for r in rates)
            + " GB/s"
        )
    assert max(rates) >= 0.2


# -- pandas ------------------------------------------------------------------------------------


def assert_identical(back, value) -> None:
    assert type(back) is type(value)
    assert back.equals(value)
    assert type(back.index) is type(value.index)
    assert back.index.dtype == value.index.dtype and back.index.names == value.index.names
    if isinstance(value, pd.DataFrame):
        assert list(back.columns) == list(value.columns)
        assert list(back.dtypes) == list(value.dtypes)
    else:
        assert back.dtype == value.dtype and back.name == value.name


def test_a_dataframe_with_rich_dtypes_goes_to_parquet_exactly(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "count": pd.array([1, None, 3], dtype="Int64"),
            "colour": pd.Categorical(["red", "blue", "red"], categories=["red", "blue"]),
            "size": pd.Categorical(["S", "L", "M"], categories=["S", "M", "L"], ordered=True),
            "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]).tz_localize(
                "Europe/Paris"
            ),
            "label": pd.array(["a", "b", None], dtype="string"),
            "weight": [0.5, float("nan"), 2.0],
            "ok": [True, False, True],
        },
        index=pd.Index([30, 10, 20], name="key"),
    )
    record, back = roundtrip(df, tmp_path)
    assert (record.format, record.file) == ("parquet", "v.parquet")
    assert record.info == {"rows": 3, "columns": 7}
    assert_identical(back, df)
    assert list(back["colour"].cat.categories) == ["red", "blue"]
    assert back["size"].cat.ordered


def test_a_range_index_stays_a_range_index(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=pd.RangeIndex(5, 11, 2, name="row"))
    record, back = roundtrip(df, tmp_path)
    assert record.format == "parquet"
    assert_identical(back, df)
    assert back.index.equals(pd.RangeIndex(5, 11, 2))


def test_a_datetime_index_keeps_its_frequency(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=pd.date_range("2026-01-01", periods=3))
    _record, back = roundtrip(df, tmp_path)
    assert_identical(back, df)
    assert back.index.freq == df.index.freq  # parquet drops it, so this one is pickled


class Colour(enum.StrEnum):
    RED = "red"


class Frame(pd.DataFrame):
    @property
    def _constructor(self):
        return Frame


def _with_attrs() -> pd.DataFrame:
    df = pd.DataFrame({"a": [1]})
    df.attrs["source"] = "sensor"
    return df


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"m": pd.Series([1, "two", 3.0], dtype=object)}),
        pd.DataFrame({"s": pd.Series(["a", None], dtype=object)}),
        pd.DataFrame({"s": pd.Series(["a", float("nan")], dtype=object)}),
        pd.DataFrame({"e": pd.Series([Colour.RED], dtype=object)}),
        pd.DataFrame({0: [1], 1: [2]}),
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
        pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
        pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([("k", 1), ("k", 2)])),
        pd.DataFrame({"a": [1, 2]}, index=pd.Index([1, "b"], dtype=object)),
        _with_attrs(),
        Frame({"a": [1]}),
    ],
    ids=[
        "mixed-objects",
        "none-in-strings",
        "nan-in-strings",
        "str-enum",
        "int-column-names",
        "duplicate-columns",
        "multiindex-columns",
        "multiindex-rows",
        "mixed-index",
        "attrs",
        "subclass",
    ],
)
def test_dataframes_parquet_cannot_hold_exactly_are_pickled(tmp_path: Path, df) -> None:
    record, back = roundtrip(df, tmp_path)
    assert record.format == "pickle"
    assert_identical(back, df)
    assert back.attrs == df.attrs
    assert [type(v) for v in back.iloc[:, 0]] == [type(v) for v in df.iloc[:, 0]]
    assert not (tmp_path / "v.parquet").exists()


@pytest.mark.parametrize("name", ["price", None])
def test_a_series_goes_to_parquet_and_keeps_its_name_and_index(tmp_path: Path, name) -> None:
    series = pd.Series([1.5, 2.5], name=name, index=pd.Index(["a", "b"], name="item"))
    record, back = roundtrip(series, tmp_path)
    assert record.format == "parquet"
    assert_identical(back, series)


def test_a_series_with_a_name_that_is_not_a_string_is_pickled(tmp_path: Path) -> None:
    series = pd.DataFrame({"a": [1, 2]}).iloc[0]  # a row: its name is the index label 0
    record, back = roundtrip(series, tmp_path)
    assert record.format == "pickle"
    assert_identical(back, series)


# -- modules -----------------------------------------------------------------------------------


def test_modules_are_imported_again_never_pickled(tmp_path: Path) -> None:
    import json as module

    record, back = roundtrip(module, tmp_path)
    assert (record.format, record.file, record.bytes) == ("module", "", 0)
    assert back is module
    assert list(tmp_path.iterdir()) == []


def test_a_module_that_cannot_be_imported_by_name_cannot_be_passed(tmp_path: Path) -> None:
    scratch = types.ModuleType("scratch_made_in_a_cell")
    with pytest.raises(UnpicklableValue, match="cannot be imported again by its name"):
        save_value("scratch", scratch, tmp_path, producer="p", consumers=["q"])


# -- pickle: notebook functions and classes ----------------------------------------------------


def notebook(source: str, **values) -> dict:
    """A namespace as a step has it: ``source`` executed as module ``__main__``."""
    namespace: dict = {"__name__": "__main__", **values}
    exec(source, namespace)
    return namespace


def test_functions_and_classes_from_the_notebook_are_saved_by_value(tmp_path: Path) -> None:
    ns = notebook("factor = 3\ndef triple(v):\n    return v * factor\nclass Box:\n    pass")
    _record, (fn, box) = roundtrip([ns["triple"], ns["Box"]()], tmp_path)
    assert fn(2) == 6 and type(box).__name__ == "Box"


def test_loaded_functions_see_the_consuming_steps_namespace(tmp_path: Path) -> None:
    producer = notebook("def record(v):\n    seen.append(v)")
    saved = save_value("record", producer["record"], tmp_path, producer="a")
    consumer = notebook("", seen=[])
    fn = load_value(saved, tmp_path, namespace=consumer)
    fn(1)
    assert consumer["seen"] == [1]


def test_a_loaded_function_keeps_the_consumers_own_value_of_a_global(tmp_path: Path) -> None:
    producer = notebook("rate = 0.1\ndef scaled(v):\n    return v * rate")
    saved = save_value("scaled", producer["scaled"], tmp_path, producer="a")
    consumer = notebook("rate = 10")  # a later cell changed it: the function sees the change
    assert load_value(saved, tmp_path, namespace=consumer)(2) == 20


def test_mutually_recursive_notebook_functions_can_be_passed(tmp_path: Path) -> None:
    ns = notebook(
        "def even(n):\n    return True if n == 0 else odd(n - 1)\n"
        "def odd(n):\n    return False if n == 0 else even(n - 1)\n"
    )
    _record, fn = roundtrip(ns["even"], tmp_path)
    assert fn(10) is True and fn(7) is False


def test_a_recursive_closure_can_be_passed(tmp_path: Path) -> None:
    ns = notebook(
        "def make():\n"
        "    def countdown(n):\n"
        "        return [] if n == 0 else [n] + countdown(n - 1)\n"
        "    return countdown\n"
        "countdown = make()\n"
    )
    _record, fn = roundtrip(ns["countdown"], tmp_path)
    assert fn(3) == [3, 2, 1]


def test_a_function_saves_only_the_globals_it_uses(tmp_path: Path) -> None:
    # `conn` is also an attribute name in the function: only the global counts.
    ns = notebook("def close(obj):\n    return obj.conn", conn=sqlite3.connect(":memory:"))
    try:
        _record, fn = roundtrip(ns["close"], tmp_path)
    finally:
        ns["conn"].close()
    assert fn(types.SimpleNamespace(conn=5)) == 5


def test_a_notebook_dataclass_instance_can_be_passed(tmp_path: Path) -> None:
    source = "import dataclasses\n@dataclasses.dataclass\nclass Box:\n    v: int\n"
    saved = save_value("box", notebook(source)["Box"](3), tmp_path, producer="a")
    consumer = notebook("")
    box = load_value(saved, tmp_path, namespace=consumer)
    assert repr(box) == "Box(v=3)" and box == type(box)(3)
    # The __repr__ wrapper belongs to the dataclasses module: its globals stay its own.
    assert "_thread" not in consumer


FOO = "class Foo:\n    def __init__(self, v):\n        self.v = v\n    def double(self):\n" + (
    "        return Foo(self.v * 2)\n"
)


def test_an_instance_of_a_functions_cell_class_belongs_to_the_consumers_class(
    tmp_path: Path,
) -> None:
    first = notebook(FOO)
    saved = save_value(
        "obj", first["Foo"](7), tmp_path, producer="a", references={id(first["Foo"]): "Foo"}
    )
    second = notebook(FOO)  # every step runs the functions cells again
    obj = load_value(saved, tmp_path, namespace=second)
    assert isinstance(obj, second["Foo"]) and obj.v == 7
    assert isinstance(obj.double(), second["Foo"])


def test_references_are_honoured_wherever_they_are_nested(tmp_path: Path) -> None:
    source = FOO + "def area(r):\n    return 3 * r * r\n"
    first = notebook(source)
    references = {id(first["Foo"]): "Foo", id(first["area"]): "area"}
    value = {"items": [first["Foo"](1), (first["Foo"](2),)], "fn": [first["area"]]}
    saved = save_value("v", value, tmp_path, producer="a", references=references)
    second = notebook(source)
    back = load_value(saved, tmp_path, namespace=second)
    assert back["fn"][0] is second["area"]
    assert all(isinstance(x, second["Foo"]) for x in (back["items"][0], back["items"][1][0]))


def test_a_reference_the_consumer_does_not_define_fails_to_load_naming_it(tmp_path: Path) -> None:
    import pickle

    first = notebook(FOO)
    saved = save_value(
        "obj", first["Foo"](7), tmp_path, producer="a", references={id(first["Foo"]): "Foo"}
    )
    with pytest.raises(pickle.UnpicklingError, match="refers to `Foo`"):
        load_value(saved, tmp_path, namespace=notebook(""))


# -- values that cannot cross --------------------------------------------------------------


def _socket(_p: Path):
    return socket.socket()


@pytest.mark.parametrize(
    ("make", "type_name", "reason"),
    [
        (lambda p: (i for i in range(3)), "builtins.generator", "cannot pickle 'generator' object"),
        (lambda p: (p / "f.txt").open("w"), "_io.TextIOWrapper", "cannot pickle"),
        (lambda p: threading.Lock(), "_thread.lock", "cannot pickle '_thread.lock' object"),
        (_socket, "socket.socket", "cannot pickle 'socket' object"),
        (lambda p: sqlite3.connect(":memory:"), "sqlite3.Connection", "cannot pickle"),
        (lambda p: {"rows": (i for i in range(3))}, "builtins.dict", "'generator'"),
    ],
    ids=["generator", "file", "lock", "socket", "sqlite3", "nested"],
)
def test_unpicklable_values_fail_naming_variable_type_and_steps(tmp_path, make, type_name, reason):
    value = make(tmp_path)
    try:
        with pytest.raises(UnpicklableValue) as err:
            save_value("conn", value, tmp_path, producer="load", consumers=["train", "report"])
    finally:
        if hasattr(value, "close"):
            value.close()
    message = str(err.value)
    assert message.startswith(
        f"step load: variable `conn` ({type_name}) cannot be passed to step train, report: "
    )
    assert reason.lower() in message.lower() and "Create it in the step that uses it" in message
    assert (err.value.name, err.value.producer, err.value.consumers) == (
        "conn",
        "load",
        ["train", "report"],
    )
    assert leftovers(tmp_path) == [] and not (tmp_path / "conn.pkl").exists()


# -- manifest and file names -----------------------------------------------------------------


def test_the_manifest_records_type_size_and_the_hash_of_each_file(tmp_path: Path) -> None:
    records = [
        save_value("a", np.zeros(4), tmp_path, producer="p"),
        save_value("b", {"k": 1}, tmp_path, producer="p"),
        save_value("c", pd.DataFrame({"x": [1, 2]}), tmp_path, producer="p"),
    ]
    write_manifest(tmp_path, records)
    manifest = read_manifest(tmp_path)
    assert [manifest[n].type for n in "abc"] == [
        "numpy.ndarray",
        "builtins.dict",
        "pandas.DataFrame",
    ]
    assert [manifest[n].format for n in "abc"] == ["npy", "pickle", "parquet"]
    for record in manifest.values():
        assert record.bytes == (tmp_path / record.file).stat().st_size
        assert record.sha256 == sha256_of(tmp_path / record.file)
    assert leftovers(tmp_path) == []


def test_writing_the_manifest_again_replaces_it_whole(tmp_path: Path) -> None:
    write_manifest(tmp_path, [save_value("a", [1], tmp_path, producer="p")])
    write_manifest(tmp_path, [save_value("b", [2], tmp_path, producer="p")])
    assert list(read_manifest(tmp_path)) == ["b"]
    assert list(json.loads((tmp_path / "manifest.json").read_text())) == ["b"]
    assert leftovers(tmp_path) == []


def test_reading_the_manifest_of_a_step_that_saved_nothing_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "data" / "train")


def test_a_value_record_survives_json() -> None:
    record = ValueRecord("x", "x.npy", "npy", "numpy.ndarray", 136, "ab" * 32, {"shape": [1]})
    assert ValueRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("df", "df"),
        ("X_train", "X_train"),
        ("@sys.path", "hidden-sys.path"),
        ("@random", "hidden-random"),
        ("@../etc/x", "hidden-.._etc_x"),
    ],
)
def test_file_names_keep_identifiers_and_make_hidden_state_names_safe(name, stem) -> None:
    assert file_stem(name) == stem


def test_hidden_state_is_saved_under_its_safe_file_name(tmp_path: Path) -> None:
    record = save_value("@sys.path", list(sys.path), tmp_path, producer="p")
    assert record.file == "hidden-sys.path.pkl"
    assert load_value(record, tmp_path) == sys.path


def test_importing_marshal_imports_no_heavy_library() -> None:
    code = (
        "import sys, cellpipe.execution.marshal, cellpipe.execution.hidden_state\n"
        "print(sorted({'numpy', 'pandas', 'pyarrow', 'torch', 'cloudpickle'} & set(sys.modules)))"
    )
    env = dict(os.environ, PYTHONPATH=str(KERNEL))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


# -- hidden state ------------------------------------------------------------------------------


def test_the_random_module_continues_where_it_was_captured() -> None:
    random.seed(5)
    state = hidden_state.capture("@random")
    expected = [random.random() for _ in range(3)]
    random.seed(99)
    hidden_state.restore("@random", state)
    assert [random.random() for _ in range(3)] == expected


def test_numpys_legacy_generator_continues_where_it_was_captured() -> None:
    np.random.seed(5)
    state = hidden_state.capture("@random")
    expected = np.random.rand(3).tolist()
    np.random.seed(99)
    hidden_state.restore("@random", state)
    assert np.random.rand(3).tolist() == expected


def test_a_random_state_carries_numpys_generator_into_a_fresh_process(tmp_path: Path) -> None:
    np.random.seed(7)
    state = hidden_state.capture("@random")
    expected = np.random.rand()
    write_manifest(tmp_path, [save_value("@random", state, tmp_path, producer="p")])
    code = (
        "import sys\nfrom pathlib import Path\nfrom cellpipe.execution import hidden_state, marshal\n"
        f"d = Path({str(tmp_path)!r})\n"
        "hidden_state.restore('@random', marshal.load_value(marshal.read_manifest(d)['@random'], d))\n"
        "print(repr(sys.modules['numpy'].random.rand()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(KERNEL))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert float(out.stdout) == expected


def test_the_environment_is_restored_exactly(monkeypatch) -> None:
    monkeypatch.setenv("CELLPIPE_KEPT", "1")
    monkeypatch.setenv("CELLPIPE_CHANGED", "before")
    monkeypatch.delenv("CELLPIPE_ADDED", raising=False)
    state, captured = hidden_state.capture("@environ"), dict(os.environ)
    monkeypatch.setenv("CELLPIPE_ADDED", "2")
    monkeypatch.setenv("CELLPIPE_CHANGED", "after")
    monkeypatch.delenv("CELLPIPE_KEPT")
    hidden_state.restore("@environ", state)
    assert dict(os.environ) == captured
    assert "CELLPIPE_ADDED" not in os.environ and os.environ["CELLPIPE_CHANGED"] == "before"


def test_sys_path_is_restored_in_place(monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    state, captured = hidden_state.capture("@sys.path"), list(sys.path)
    path_object = sys.path
    sys.path.append("/nowhere")
    sys.path.pop(0)
    hidden_state.restore("@sys.path", state)
    assert sys.path is path_object and sys.path == captured


def test_the_working_directory_is_restored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = hidden_state.capture("@cwd")
    os.chdir("/")
    hidden_state.restore("@cwd", state)
    assert os.getcwd() == str(tmp_path)


def test_a_name_that_is_not_hidden_state_is_refused() -> None:
    with pytest.raises(KeyError):
        hidden_state.capture("@clock")


# -- torch (only where torch is installed) -----------------------------------------------------


def test_torch_tensors_are_saved_with_torch_save(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    record, back = roundtrip(tensor, tmp_path)
    assert (record.format, record.file) == ("torch", "v.pt")
    assert record.info == {"shape": [2, 3], "dtype": "torch.float32", "device": "cpu"}
    assert torch.equal(back, tensor) and record.sha256 == sha256_of(tmp_path / record.file)


def test_torch_library_modules_are_saved_with_torch_save(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    record, back = roundtrip(model, tmp_path)
    assert record.format == "torch"
    x = torch.ones(1, 3)
    assert torch.equal(back(x), model(x))


def test_a_torch_module_defined_in_the_notebook_belongs_to_the_consumers_class(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    source = (
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3, 1)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    first = notebook(source)
    model = first["Net"]()
    saved = save_value("model", model, tmp_path, producer="a", references={id(first["Net"]): "Net"})
    second = notebook(source)
    back = load_value(saved, tmp_path, namespace=second)
    assert saved.format == "pickle" and isinstance(back, second["Net"])
    x = first["torch"].ones(1, 3)
    assert first["torch"].equal(back(x), model(x))


def test_torchs_generator_continues_where_it_was_captured() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    state = hidden_state.capture("@random")
    expected = torch.rand(3)
    torch.manual_seed(99)
    hidden_state.restore("@random", state)
    assert torch.equal(torch.rand(3), expected)
