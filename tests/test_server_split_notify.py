"""The server side of issue 21: POST /split (the sidebar's preview) and the server's default
notification (c.CellpipeApp.notify), against a real jupyter_server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nbbuild import notebook, write
from test_notify import Receiver, receiver  # noqa: F401 (a fixture)
from test_server import call, error_of, wait_for

UNTAGGED = notebook(
    "import math",
    "# md: ## Load data",
    "xs = [math.sqrt(i) for i in range(4)]",
    "# md: ## Report",
    "print(sum(xs))",
)


@pytest.fixture
def jp_server_config(tmp_path: Path, receiver: Receiver) -> dict:  # noqa: F811
    return {
        "ServerApp": {"jpserver_extensions": {"cellpipe_server": True}},
        "CellpipeApp": {
            "runs_root": str(tmp_path / "cellpipe-runs"),
            "poll_interval": 0.05,
            "notify": receiver.url,
        },
    }


async def test_split_answers_the_plan_and_writes_nothing(jp_fetch, jp_root_dir) -> None:
    path = write(jp_root_dir / "untagged.ipynb", UNTAGGED)
    before = path.read_bytes()
    plan = await call(jp_fetch, "POST", "split", body={"path": "untagged.ipynb"})
    assert [(s["name"], s["heading"]) for s in plan["steps"]] == [
        ("load_data", "Load data"),
        ("report", "Report"),
    ]
    assert plan["imports"] == ["c1"] and plan["tags"]["c3"] == ["step:load_data"]
    assert path.read_bytes() == before


async def test_split_reads_the_unsaved_content_and_checks_the_level(jp_fetch, jp_root_dir) -> None:
    write(jp_root_dir / "untagged.ipynb", UNTAGGED)
    content = notebook("# md: # Only", "x = 1")
    plan = await call(
        jp_fetch, "POST", "split", body={"path": "untagged.ipynb", "content": content, "level": 1}
    )
    assert [s["name"] for s in plan["steps"]] == ["only"]
    code, body = await error_of(
        jp_fetch, "POST", "split", body={"path": "untagged.ipynb", "level": 7}
    )
    assert code == 400 and body["error"] == "InvalidRequest"


async def test_a_run_started_by_the_server_notifies_its_default_once(
    jp_fetch,
    jp_root_dir,
    receiver: Receiver,  # noqa: F811
) -> None:
    write(jp_root_dir / "quick.ipynb", notebook(("step:a", "a = 1"), ("step:b", "print(a)")))
    run = await call(jp_fetch, "POST", "runs", body={"path": "quick.ipynb"})
    await wait_for(jp_fetch, run["run_id"])
    deadline = time.monotonic() + 15
    while not receiver.posts and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the detached driver sends after the final state
    assert [(p["run_id"], p["state"]) for p in receiver.posts] == [(run["run_id"], "succeeded")]
