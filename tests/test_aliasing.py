"""Values that share objects: found at the end of a step, saved together, loaded together."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from cellpipe.execution.aliasing import alias_groups
from cellpipe.execution.marshal import load_value, read_manifest, save_group
from nbbuild import notebook, write


def test_names_reaching_one_object_form_a_group() -> None:
    a = [1]
    sharing = alias_groups({"a": a, "pair": [a, a], "same": a, "other": [1]})
    assert sharing.groups == [["a", "pair", "same"]]


def test_an_object_inside_two_containers_groups_the_containers() -> None:
    shared = {"n": 0}
    sharing = alias_groups({"box1": [shared], "box2": {"s": shared}, "x": {"n": 0}})
    assert sharing.groups == [["box1", "box2"]]


def test_objects_reached_through_attributes_and_slots_count() -> None:
    class Holder:
        def __init__(self, item):
            self.item = item

    class Slotted:
        __slots__ = ("item",)

        def __init__(self, item):
            self.item = item

    model = {"w": [0.5]}
    sharing = alias_groups({"h": Holder(model), "s": Slotted(model), "model": model})
    assert sharing.groups == [["h", "s", "model"]]


def test_equal_numbers_and_strings_are_not_sharing() -> None:
    assert alias_groups({"a": [1, "x", None], "b": [1, "x", None]}).groups == []


def test_a_numpy_view_groups_with_its_base_array() -> None:
    arr = np.zeros(10)
    assert alias_groups({"arr": arr, "head": arr[:3], "copy": arr.copy()}).groups == [
        ["arr", "head"]
    ]


def test_a_walk_that_hits_its_limit_is_reported() -> None:
    sharing = alias_groups({"big": [[i] for i in range(100)]}, limit=10)
    assert sharing.truncated == ["big"]


def test_large_arrays_and_frames_are_leaves_and_cost_nothing_to_walk() -> None:
    arr = np.zeros(50_000_000 // 8)
    df = pd.DataFrame({"a": np.arange(1_000_000), "b": np.arange(1_000_000) * 0.5})
    t0 = time.perf_counter()
    sharing = alias_groups({"arr": arr, "df": df, "both": {"arr": arr, "df": df}})
    assert time.perf_counter() - t0 < 0.05
    assert sharing.groups == [["arr", "df", "both"]]


def test_a_group_loads_back_sharing_its_objects(tmp_path: Path) -> None:
    a = [1]
    records = save_group({"a": a, "pair": [a, a], "same": a}, tmp_path, producer="make")
    assert {r.format for r in records} == {"group"}
    assert len({r.file for r in records}) == 1
    groups: dict = {}
    back = {r.name: load_value(r, tmp_path, groups=groups) for r in records}
    back["a"].append(2)
    assert back["pair"] == [[1, 2], [1, 2]] and back["same"] is back["a"]


def test_a_view_in_a_group_stays_a_view_of_its_base(tmp_path: Path) -> None:
    arr = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    records = save_group({"arr": arr, "col": arr[:, 1]}, tmp_path, producer="make")
    groups: dict = {}
    back = {r.name: load_value(r, tmp_path, groups=groups) for r in records}
    back["arr"][0, 1] = -1.0
    assert back["col"].tolist() == [-1.0, 4.0]
    assert back["col"].strides == arr[:, 1].strides


def test_an_object_whose_attributes_raise_is_reported_not_fatal() -> None:
    class Hostile:
        def __getattribute__(self, name):
            raise RuntimeError("no peeking")

    sharing = alias_groups({"h": Hostile(), "x": [1]})
    assert sharing.groups == [] and sharing.truncated == ["h"]


def test_a_step_saves_its_outputs_that_share_objects_as_one_group(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "p.ipynb",
        notebook(
            ("step:make", "a = [1]\npair = [a, a]\nlone = [2]"),
            ("step:show", "print(pair, a, lone)"),
        ),
    )
    proc = cli("run", "p.ipynb", "--json")
    status = json.loads(proc.stdout)
    assert status["state"] == "succeeded", proc.stderr
    manifest = read_manifest(tmp_path / "runs" / status["run_id"] / "data" / "make")
    assert {n: r.format for n, r in manifest.items()} == {
        "a": "group",
        "pair": "group",
        "lone": "pickle",
    }
    assert sorted(manifest["a"].info["group"]) == ["a", "pair"]


def test_sharing_the_analysis_could_not_see_is_noted_in_the_log(cli, tmp_path: Path) -> None:
    # `stash` puts `item` into `registry` inside a function: the step hands on `registry`
    # but not `item`, which `show` reads from `make`; the log says so.
    write(
        tmp_path / "p.ipynb",
        notebook(
            ("functions", "def stash(v):\n    registry.append(v)"),
            ("step:make", "registry = []\nitem = {'n': 0}"),
            ("step:keep", "stash(item)"),
            ("step:show", "print(registry, item)"),
        ),
    )
    proc = cli("run", "p.ipynb", "--json")
    status = json.loads(proc.stdout)
    assert status["state"] == "succeeded", proc.stderr
    log = (tmp_path / "runs" / status["run_id"] / "logs" / "keep.log").read_text()
    assert "registry share objects with item, which this step does not hand on" in log


def test_a_name_changed_through_another_and_read_in_a_later_cell_of_the_step_is_loaded(
    cli, tmp_path: Path
) -> None:
    # `data.append` changes `holder` too (they share a list); `show` never assigns `holder`,
    # so its second cell needs `make`'s value. (Found in scikit-learn's gallery: `rng.normal`
    # then `kernel` read two cells later gave NameError.)
    write(
        tmp_path / "p.ipynb",
        notebook(
            ("step:make", "data = [1, 2]\nholder = {'d': data}"),
            ("step:show", "data.append(3)"),
            "print(holder)",
        ),
    )
    proc = cli("run", "p.ipynb", "--json")
    status = json.loads(proc.stdout)
    assert status["state"] == "succeeded", proc.stderr
    log = (tmp_path / "runs" / status["run_id"] / "logs" / "show.log").read_text()
    assert "{'d': [1, 2, 3]}" in log
