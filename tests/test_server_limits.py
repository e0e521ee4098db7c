"""The REST API's bounds: sizes, queue length, nesting, page numbers and the report's
sandbox, against a real jupyter_server with the extension (small limits configured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbbuild import notebook, write
from test_server import call, error_of, wait_for

ADMIN_CSP = "frame-ancestors 'self'; default-src 'none'; sandbox allow-scripts allow-same-origin"


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict:
    return {
        "ServerApp": {
            "jpserver_extensions": {"cellpipe_server": True},
            "tornado_settings": {"headers": {"Content-Security-Policy": ADMIN_CSP}},
        },
        "CellpipeApp": {
            "runs_root": str(tmp_path / "cellpipe-runs"),
            "poll_interval": 0.05,
            "max_concurrent_runs": 1,
            "max_queued_runs": 2,
            "max_request_bytes": 400_000,
            "max_parameter_bytes": 1000,
        },
    }


def _nb(root: Path) -> str:
    write(root / "p.ipynb", notebook(("parameters", "k = 1"), ("step:a", "a = k * 10")))
    return "p.ipynb"


async def test_a_body_over_max_request_bytes_is_a_413_saying_the_limit(
    jp_fetch, jp_root_dir
) -> None:
    big = {"path": _nb(jp_root_dir), "content": {"cells": [], "junk": "x" * 500_000}}
    code, body = await error_of(jp_fetch, "POST", "runs", body=big)
    assert code == 413 and body["error"] == "TooLarge"
    assert "the request body is 500" in body["message"]
    assert "over CellpipeApp.max_request_bytes (400000 bytes)" in body["message"]


async def test_a_parameter_over_max_parameter_bytes_is_a_413_naming_it(
    jp_fetch, jp_root_dir
) -> None:
    request = {"path": _nb(jp_root_dir), "parameters": {"k": "x" * 5000}}
    code, body = await error_of(jp_fetch, "POST", "runs", body=request)
    assert code == 413
    assert body["message"] == (
        "parameter 'k' is 5002 bytes as JSON, over CellpipeApp.max_parameter_bytes "
        "(1000 bytes); pass a path to a file instead"
    )
    assert (await call(jp_fetch, "GET", "runs"))["total"] == 0  # nothing prepared


async def test_a_run_beyond_max_queued_runs_is_a_429(jp_fetch, jp_root_dir) -> None:
    write(
        jp_root_dir / "hold.ipynb",
        notebook(
            ("imports", "import os, time"),
            ("step:a", "while not os.path.exists('go'):\n    time.sleep(0.05)"),
        ),
    )
    try:
        ids = [
            (await call(jp_fetch, "POST", "runs", body={"path": "hold.ipynb"}))["run_id"]
            for _ in range(3)  # one driven, two queued
        ]
        code, body = await error_of(jp_fetch, "POST", "runs", body={"path": "hold.ipynb"})
        assert code == 429 and body["error"] == "QueueFull"
        assert body["message"] == (
            "2 runs are already waiting for a free slot (CellpipeApp.max_queued_runs); "
            "retry when one has started"
        )
    finally:
        (jp_root_dir / "go").touch()
    for run_id in ids:
        assert (await wait_for(jp_fetch, run_id))["state"] == "succeeded"


async def test_deeply_nested_json_is_a_400_not_a_500(jp_fetch, jp_root_dir) -> None:
    deep = '{"path": "p.ipynb", "parameters": {"k": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    code, body = await error_of(jp_fetch, "POST", "runs", body=deep)
    assert code == 400 and "nested" in body["message"]
    moderately = {"path": _nb(jp_root_dir), "parameters": {"k": json.loads("[" * 200 + "]" * 200)}}
    code, body = await error_of(jp_fetch, "POST", "runs", body=moderately)
    assert code == 400
    assert body["message"] == "the request body is nested more than 100 levels deep"


@pytest.mark.parametrize("page", ["1e30", "1" + "0" * 30, "-5"])
async def test_an_absurd_page_number_is_a_400_not_a_500(jp_fetch, page: str) -> None:
    if page == "-5":  # below 1 means the first page, as before
        assert (await call(jp_fetch, "GET", "runs", page=page))["page"] == 1
        return
    code, body = await error_of(jp_fetch, "GET", "runs", page=page)
    assert code == 400
    assert body["message"] in (
        "page and page_size must be whole numbers",
        "page must be at most 1000000",
    )


async def test_the_report_keeps_its_sandbox_under_an_admin_set_csp(jp_fetch, jp_root_dir) -> None:
    created = await call(jp_fetch, "POST", "runs", body={"path": _nb(jp_root_dir)})
    await wait_for(jp_fetch, created["run_id"])
    response = await jp_fetch("cellpipe", "api", "runs", created["run_id"], "report")
    csp = response.headers["Content-Security-Policy"]
    directives = [d.strip() for d in csp.split(";")]
    assert directives[-1] == "sandbox allow-popups"
    assert [d for d in directives if d.startswith("sandbox")] == ["sandbox allow-popups"]
    assert "default-src 'none'" in directives  # the admin's policy is kept otherwise
    # Elsewhere the admin's policy stands as it is.
    other = await jp_fetch("cellpipe", "api", "backends")
    assert "sandbox allow-scripts allow-same-origin" in other.headers["Content-Security-Policy"]


def test_a_run_id_must_match_the_whole_pattern() -> None:
    from cellpipe.rundir.runs import RUN_ID

    assert RUN_ID.match("20990101-000000-abcdef")
    assert not RUN_ID.match("20990101-000000-abcdef\n")  # `$` let this one through


def test_opening_a_run_id_with_a_trailing_newline_says_it_is_not_one(tmp_path: Path) -> None:
    from cellpipe.core.errors import RunNotFound
    from cellpipe.rundir.runs import RunDir

    with pytest.raises(RunNotFound, match="is not a run id"):
        RunDir.open(tmp_path, "20990101-000000-abcdef\n")


async def test_an_unknown_run_is_a_404_that_does_not_show_where_runs_are_stored(
    jp_fetch, tmp_path: Path
) -> None:
    code, body = await error_of(jp_fetch, "GET", "runs", "20990101-000000-abcdef")
    assert code == 404
    assert body["message"] == "no run 20990101-000000-abcdef"
    assert str(tmp_path) not in json.dumps(body)
