"""The REST API against a real jupyter_server with the extension enabled (pytest-jupyter)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from nbbuild import notebook, write
from tornado.httpclient import HTTPClientError


def _nb(root: Path, name: str = "pipe.ipynb", b: str = "b = a + 1") -> str:
    write(
        root / name,
        notebook(
            ("parameters", "k = 1"), ("step:a", "a = k * 10"), ("step:b", b), ("step:c", "print(b)")
        ),
    )
    return name


async def call(jp_fetch, method: str, *parts: str, body=None, **params):
    kw = {"method": method, "params": params}
    if body is not None:
        kw["body"] = body if isinstance(body, str) else json.dumps(body)
    elif method == "POST":
        kw["body"] = "{}"
    resp = await jp_fetch("cellpipe", "api", *parts, **kw)
    ctype = resp.headers.get("Content-Type", "")
    return resp.body.decode() if ctype.startswith("text/plain") else json.loads(resp.body)


async def error_of(jp_fetch, method: str, *parts: str, body=None, **params) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as err:
        await call(jp_fetch, method, *parts, body=body, **params)
    return err.value.code, json.loads(err.value.response.body)


async def wait_for(
    jp_fetch, run_id: str, states=("succeeded", "failed", "cancelled"), timeout=60
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await call(jp_fetch, "GET", "runs", run_id)
        if run["state"] in states:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {states}: {run}")


async def test_compile_returns_steps_and_edges(jp_fetch, jp_root_dir) -> None:
    data = await call(jp_fetch, "POST", "compile", body={"path": _nb(jp_root_dir)})
    assert [s["name"] for s in data["steps"]] == ["a", "b", "c"]
    assert data["steps"][1]["inputs"] == {"a": "a"}


async def test_compile_uses_the_unsaved_content_when_given(jp_fetch, jp_root_dir) -> None:
    content = notebook(("step:only", "x = 1"))
    data = await call(
        jp_fetch, "POST", "compile", body={"path": _nb(jp_root_dir), "content": content}
    )
    assert [s["name"] for s in data["steps"]] == ["only"]


async def test_compile_errors_are_400_with_every_problem_and_its_cell(
    jp_fetch, jp_root_dir
) -> None:
    write(
        jp_root_dir / "bad.ipynb", notebook(("step:a", "print(nope)"), ("step:b prev:zz", "y = 1"))
    )
    code, body = await error_of(jp_fetch, "POST", "compile", body={"path": "bad.ipynb"})
    assert code == 400 and body["error"] == "CompileError"
    assert [(p["code"], p["cell"]) for p in body["problems"]] == [
        ("undefined-name", 1),
        ("unknown-step", 2),
    ]


async def test_a_run_goes_to_succeeded_with_outputs_and_a_log(jp_fetch, jp_root_dir) -> None:
    created = await call(
        jp_fetch, "POST", "runs", body={"path": _nb(jp_root_dir), "parameters": {"k": 2}}
    )
    assert created["path"] == "pipe.ipynb" and created["parameters"] == {"k": 2}
    run = await wait_for(jp_fetch, created["run_id"])
    assert run["state"] == "succeeded"
    assert [(s["name"], s["state"]) for s in run["steps"]] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "succeeded"),
    ]
    outputs = await call(jp_fetch, "GET", "runs", run["run_id"], "steps", "c", "outputs")
    (cell,) = [c for cid, c in outputs["cells"].items() if cid == "c4"]
    assert cell["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "21\n"}]
    log = await call(jp_fetch, "GET", "runs", run["run_id"], "steps", "c", "log")
    assert "21" in log


async def test_cancel_stops_a_running_run(jp_fetch, jp_root_dir) -> None:
    write(
        jp_root_dir / "slow.ipynb",
        notebook(("step:a", "import time\ntime.sleep(60)"), ("step:b prev:a", "x = 1")),
    )
    created = await call(jp_fetch, "POST", "runs", body={"path": "slow.ipynb"})
    deadline = time.monotonic() + 30
    while (await call(jp_fetch, "GET", "runs", created["run_id"]))["steps"][0][
        "state"
    ] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    run = await call(jp_fetch, "POST", "runs", created["run_id"], "cancel")
    assert run["state"] == "cancelled"
    assert {s["name"]: s["state"] for s in run["steps"]} == {"a": "cancelled", "b": "cancelled"}


async def test_cancelling_a_finished_run_is_a_conflict(jp_fetch, jp_root_dir) -> None:
    created = await call(jp_fetch, "POST", "runs", body={"path": _nb(jp_root_dir)})
    await wait_for(jp_fetch, created["run_id"])
    code, body = await error_of(jp_fetch, "POST", "runs", created["run_id"], "cancel")
    assert code == 409 and "already ended" in body["message"]


async def test_resume_runs_the_fixed_step_and_keeps_the_rest(jp_fetch, jp_root_dir) -> None:
    name = _nb(jp_root_dir, b="b = a + int('x')")
    run = await wait_for(
        jp_fetch, (await call(jp_fetch, "POST", "runs", body={"path": name}))["run_id"]
    )
    assert run["state"] == "failed"
    failed = {s["name"]: s for s in run["steps"]}["b"]
    assert failed["cell"] == 3 and failed["message"].startswith("cell 3: ValueError")
    _nb(jp_root_dir, b="b = a + 1")
    await call(jp_fetch, "POST", "runs", run["run_id"], "resume")
    resumed = await wait_for(jp_fetch, run["run_id"])
    assert resumed["state"] == "succeeded"
    assert {s["name"]: s["state"] for s in resumed["steps"]} == {
        "a": "cached",
        "b": "succeeded",
        "c": "succeeded",
    }


async def test_history_lists_runs_newest_first_and_pages(jp_fetch, jp_root_dir) -> None:
    name = _nb(jp_root_dir)
    ids = []
    for k in (1, 2, 3):
        created = await call(jp_fetch, "POST", "runs", body={"path": name, "parameters": {"k": k}})
        ids.append(created["run_id"])
        await wait_for(jp_fetch, created["run_id"])
    listed = await call(jp_fetch, "GET", "runs", path=name)
    assert [r["run_id"] for r in listed["runs"]] == ids[::-1] and listed["total"] == 3
    page2 = await call(jp_fetch, "GET", "runs", path=name, page="2", page_size="2")
    assert [r["run_id"] for r in page2["runs"]] == [ids[0]]
    assert listed["runs"][0]["parameters"] == {"k": 3}


async def test_history_rows_count_their_steps_by_state(jp_fetch, jp_root_dir) -> None:
    name = _nb(jp_root_dir, b="b = a + int('x')")
    run = await wait_for(
        jp_fetch, (await call(jp_fetch, "POST", "runs", body={"path": name}))["run_id"]
    )
    (row,) = (await call(jp_fetch, "GET", "runs", path=name))["runs"]
    assert row["steps"] == []
    assert row["step_counts"] == {"succeeded": 1, "failed": 1, "skipped": 1}
    assert row["step_counts"] == run["step_counts"]


async def test_state_changes_reach_the_event_bus_in_order(
    jp_fetch, jp_root_dir, jp_serverapp
) -> None:
    received: list[dict] = []

    async def listener(logger, schema_id, data):
        received.append(dict(data))

    jp_serverapp.event_logger.add_listener(
        schema_id="https://events.cellpipe.dev/run-state", listener=listener
    )
    created = await call(jp_fetch, "POST", "runs", body={"path": _nb(jp_root_dir)})
    await wait_for(jp_fetch, created["run_id"])
    await asyncio.sleep(0.3)
    mine = [(e["step"], e["state"]) for e in received if e["run_id"] == created["run_id"]]
    assert mine[0] == (None, "running") and mine[-1] == (None, "succeeded")
    a = [state for step, state in mine if step == "a"]
    assert a == ["pending", "running", "succeeded"]
    assert mine.index(("a", "succeeded")) < mine.index(("b", "running"))


async def test_backends_say_whether_they_can_run_here(jp_fetch) -> None:
    backends = await call(jp_fetch, "GET", "backends")
    assert {"name": "local", "available": True, "reason": ""} in backends


# -- refusals -------------------------------------------------------------------------------------


async def test_requests_without_a_valid_token_are_refused(jp_fetch) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "token not-the-token"}):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("cellpipe", "api", "runs", headers=headers)
        assert err.value.code == 403


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.ipynb"])
async def test_paths_outside_the_server_root_are_refused(jp_fetch, path) -> None:
    code, body = await error_of(jp_fetch, "POST", "compile", body={"path": path})
    assert code == 403 and body["error"] == "PathRefused"


async def test_a_symlink_pointing_out_of_the_root_is_refused(
    jp_fetch, jp_root_dir, tmp_path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "secret.ipynb", notebook(("step:a", "x = 1")))
    (jp_root_dir / "link").symlink_to(outside)
    code, body = await error_of(jp_fetch, "POST", "runs", body={"path": "link/secret.ipynb"})
    assert code == 403 and "outside the server root" in body["message"]


async def test_malformed_json_is_a_400_not_a_500(jp_fetch) -> None:
    code, body = await error_of(jp_fetch, "POST", "runs", body="{not json")
    assert code == 400 and body["message"].startswith("the request body is not valid JSON")


async def test_a_body_of_the_wrong_shape_is_a_400_naming_the_field(jp_fetch) -> None:
    code, body = await error_of(jp_fetch, "POST", "runs", body={"path": 3, "surprise": True})
    assert code == 400 and "path" in body["message"] and "surprise" in body["message"]


async def test_unknown_and_malformed_run_ids_are_404(jp_fetch) -> None:
    code, body = await error_of(jp_fetch, "GET", "runs", "20990101-000000-abcdef")
    assert code == 404 and "no run 20990101-000000-abcdef" in body["message"]
    code, body = await error_of(jp_fetch, "GET", "runs", "..%2F..%2Fetc", "steps", "x", "log")
    assert code == 404 and "is not a run id" in body["message"]


async def test_an_unknown_step_is_404_listing_the_steps(jp_fetch, jp_root_dir) -> None:
    created = await call(jp_fetch, "POST", "runs", body={"path": _nb(jp_root_dir)})
    code, body = await error_of(
        jp_fetch, "GET", "runs", created["run_id"], "steps", "zz", "outputs"
    )
    assert code == 404 and body["message"].endswith("steps: a, b, c")


def test_history_is_rebuilt_from_the_run_directories_when_the_index_is_lost(tmp_path: Path) -> None:
    import cellpipe
    from cellpipe_server.history import History

    root = tmp_path / "root"
    root.mkdir()
    runs = tmp_path / "runs"
    name = _nb(root)
    first = cellpipe.run(root / name, runs_root=runs)
    second = cellpipe.run(root / name, parameters={"k": 2}, runs_root=runs)
    index = tmp_path / "lost.sqlite"
    history = History(index, runs, root)
    history.sync()
    rows, total = history.list("pipe.ipynb", 0, 10)
    history.close()
    assert total == 2 and [r["run_id"] for r in rows] == [second.run_id, first.run_id]
    assert rows[0]["parameters"] == {"k": 2} and rows[0]["state"] == "succeeded"


async def test_a_composed_notebook_gives_each_step_its_group_in_compile_and_run(
    jp_fetch, jp_root_dir
) -> None:
    write(jp_root_dir / "part.ipynb", notebook(("step:make", "x = 2")))
    main = notebook(("step:use", "print(x * 3)"))
    main["cells"].insert(
        0,
        {
            "cell_type": "code",
            "id": "ref",
            "metadata": {"notebook_path": "./part.ipynb", "tags": ["notebook:part"]},
            "execution_count": None,
            "outputs": [],
            "source": [],
        },
    )
    write(jp_root_dir / "main.ipynb", main)
    data = await call(jp_fetch, "POST", "compile", body={"path": "main.ipynb"})
    assert [(s["name"], s["group"], s["notebook"]) for s in data["steps"]] == [
        ("part.make", "part", "part.ipynb"),
        ("use", None, None),
    ]
    run = await call(jp_fetch, "POST", "runs", body={"path": "main.ipynb"})
    done = await wait_for(jp_fetch, run["run_id"])
    assert done["state"] == "succeeded"
    assert [(s["name"], s["group"]) for s in done["steps"]] == [
        ("part.make", "part"),
        ("use", None),
    ]


async def test_a_foreach_step_reports_its_iteration_progress(jp_fetch, jp_root_dir) -> None:
    write(
        jp_root_dir / "fan.ipynb",
        notebook(
            ("step:setup", "xs = list(range(7))\nr = {}"),
            ("step:loop foreach", "for x in xs:\n    r[x] = x * x"),
        ),
    )
    run = await call(jp_fetch, "POST", "runs", body={"path": "fan.ipynb"})
    done = await wait_for(jp_fetch, run["run_id"])
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["loop"]["iterations"] == {"done": 7, "total": 7}
    assert steps["setup"]["iterations"] is None
