"""Values between steps: each type round-trips faithfully, in its fastest faithful format."""

from __future__ import annotations

import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellpipe import hidden_state
from cellpipe.errors import UnpicklableValue
from cellpipe.marshal import load_value, read_manifest, save_value, write_manifest


def roundtrip(value, tmp_path: Path, name: str = "v", **kw):
    rec = save_value(name, value, tmp_path, producer="make", consumers=["use"], **kw)
    return rec, load_value(rec, tmp_path, namespace=kw.get("namespace"))


def test_numpy_arrays_are_npy_memory_mapped_and_writable(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    rec, back = roundtrip(arr, tmp_path)
    assert (rec.format, rec.file, rec.info) == ("npy", "v.npy", {"shape": [3, 4], "dtype": "int32"})
    assert isinstance(back, np.memmap) and np.array_equal(back, arr)
    back[0, 0] = 99  # copy-on-write: the consumer may change its copy ...
    again = load_value(rec, tmp_path)
    assert again[0, 0] == 0  # ... and the saved value does not change


def test_object_arrays_are_pickled(tmp_path: Path) -> None:
    rec, back = roundtrip(np.array([1, "a", None], dtype=object), tmp_path)
    assert rec.format == "pickle" and list(back) == [1, "a", None]


def test_dataframes_go_to_parquet_when_the_round_trip_is_exact(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "c": pd.Categorical(["x", "y", "x"]),
            "t": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]).tz_localize("UTC"),
            "s": ["a", "b", "c"],
        },
        index=pd.Index([10, 20, 30], name="key"),
    )
    rec, back = roundtrip(df, tmp_path)
    assert rec.format == "parquet"
    pd.testing.assert_frame_equal(back, df)


def test_dataframes_parquet_cannot_hold_exactly_are_pickled(tmp_path: Path) -> None:
    mixed = pd.DataFrame({"m": [1, "two", 3.0]})
    numeric_names = pd.DataFrame({0: [1], 1: [2]})
    for df in (mixed, numeric_names):
        rec, back = roundtrip(df, tmp_path)
        assert rec.format == "pickle"
        pd.testing.assert_frame_equal(back, df)


def test_a_series_keeps_its_name(tmp_path: Path) -> None:
    for name in ("price", None):
        _rec, back = roundtrip(pd.Series([1.5, 2.5], name=name), tmp_path)
        assert back.name == name and list(back) == [1.5, 2.5]


def test_modules_are_re_imported_never_pickled(tmp_path: Path) -> None:
    import json

    rec, back = roundtrip(json, tmp_path)
    assert rec.format == "module" and back is json


def test_functions_and_classes_from_the_notebook_are_saved_by_value(tmp_path: Path) -> None:
    ns: dict = {"__name__": "__main__"}
    exec("factor = 3\ndef triple(v):\n    return v * factor\nclass Box:\n    pass", ns)
    _rec, back = roundtrip([ns["triple"], ns["Box"]()], tmp_path)
    fn, box = back
    assert fn(2) == 6 and type(box).__name__ == "Box"


def test_loaded_functions_see_the_consuming_steps_namespace(tmp_path: Path) -> None:
    producer: dict = {"__name__": "__main__"}
    exec("def record(v):\n    seen.append(v)", producer)
    rec = save_value("record", producer["record"], tmp_path, producer="a")
    consumer: dict = {"__name__": "__main__", "seen": []}
    fn = load_value(rec, tmp_path, namespace=consumer)
    fn(1)
    assert consumer["seen"] == [1]


def test_references_keep_instances_of_the_consumers_own_class(tmp_path: Path) -> None:
    source = "class Foo:\n    def __init__(self, v):\n        self.v = v"
    first: dict = {"__name__": "__main__"}
    exec(source, first)
    rec = save_value(
        "obj", first["Foo"](7), tmp_path, producer="a", references={id(first["Foo"]): "Foo"}
    )
    second: dict = {"__name__": "__main__"}
    exec(source, second)  # every step runs the functions cells again
    obj = load_value(rec, tmp_path, namespace=second)
    assert isinstance(obj, second["Foo"]) and obj.v == 7


@pytest.mark.parametrize(
    ("make", "type_name", "reason"),
    [
        (lambda p: (i for i in range(3)), "builtins.generator", "cannot pickle 'generator' object"),
        (lambda p: (p / "f.txt").open("w"), "_io.TextIOWrapper", "cannot pickle"),
        (lambda p: threading.Lock(), "_thread.lock", "cannot pickle '_thread.lock' object"),
        (lambda p: sqlite3.connect(":memory:"), "sqlite3.Connection", "cannot pickle"),
    ],
)
def test_unpicklable_values_fail_naming_variable_type_and_steps(tmp_path, make, type_name, reason):
    value = make(tmp_path)
    try:
        with pytest.raises(UnpicklableValue) as err:
            save_value("conn", value, tmp_path, producer="load", consumers=["train", "report"])
    finally:
        if hasattr(value, "close"):
            value.close()
    msg = str(err.value)
    assert msg.startswith(
        f"step load: variable `conn` ({type_name}) cannot be passed to step train, report: "
    )
    assert reason.lower() in msg.lower() and "Create it in the step that uses it" in msg
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".conn")] == []


def test_the_manifest_records_type_size_and_hash(tmp_path: Path) -> None:
    recs = [
        save_value("a", np.zeros(4), tmp_path, producer="p"),
        save_value("b", {"k": 1}, tmp_path, producer="p"),
    ]
    write_manifest(tmp_path, recs)
    manifest = read_manifest(tmp_path)
    assert manifest["a"].type == "numpy.ndarray" and manifest["b"].type == "builtins.dict"
    assert manifest["a"].bytes == (tmp_path / "a.npy").stat().st_size
    assert len(manifest["b"].sha256) == 64


def test_hidden_state_names_get_safe_file_names(tmp_path: Path) -> None:
    rec = save_value("@sys.path", list(sys.path), tmp_path, producer="p")
    assert rec.file == "hidden-sys.path.pkl"


def test_random_state_survives_capture_and_restore() -> None:
    random.seed(5)
    np.random.seed(5)
    state = hidden_state.capture("@random")
    expected = (random.random(), np.random.rand())
    random.seed(99)
    np.random.seed(99)
    hidden_state.restore("@random", state)
    assert (random.random(), np.random.rand()) == expected


def test_environ_and_sys_path_are_restored_in_place(monkeypatch) -> None:
    monkeypatch.setenv("CELLPIPE_X", "1")
    env, path = hidden_state.capture("@environ"), hidden_state.capture("@sys.path")
    path_object = sys.path
    monkeypatch.setenv("CELLPIPE_Y", "2")
    sys.path.append("/nowhere")
    hidden_state.restore("@environ", env)
    hidden_state.restore("@sys.path", path)
    import os

    assert "CELLPIPE_Y" not in os.environ and os.environ["CELLPIPE_X"] == "1"
    assert sys.path is path_object and "/nowhere" not in sys.path


def test_a_large_array_round_trips_at_speed(tmp_path: Path, capsys) -> None:
    arr = np.random.default_rng(0).random(50 * 2**20 // 8)  # 50 MB here; benchmarks/ does 400 MB
    t0 = time.perf_counter()
    rec = save_value("big", arr, tmp_path, producer="p")
    back = load_value(rec, tmp_path)
    total = float(back.sum())
    elapsed = time.perf_counter() - t0
    assert total == pytest.approx(float(arr.sum()))
    rate = arr.nbytes / elapsed / 1e9
    with capsys.disabled():
        print(f"\n  50 MB array saved and loaded at {rate:.2f} GB/s")
    assert rate > 0.1
