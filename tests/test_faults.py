"""Faults against a real `jupyter server` process while other runs are active (issue 17).

One broken run never takes the server down: each fault below is injected into a run of its
own while 10 other runs are being driven (more than the server drives at once, so some
wait in the queue), and then every other run must complete, be listed correctly, and leave
nothing running. Faults: a deleted run folder, a malformed events.jsonl, a torn last
line, kill -9 of a driver, of a step and of the server, a corrupt history index (found at
the restart), and a full disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from test_server_process import Server

pytestmark = pytest.mark.slow

BYSTANDERS = 10
ENDED = ("succeeded", "failed", "cancelled")


def _configure(server: Server, runs_root: Path, slots: int) -> None:
    config = {
        "ServerApp": {"jpserver_extensions": {"cellpipe_server": True}},
        "CellpipeApp": {
            "runs_root": str(runs_root),
            "poll_interval": 0.1,
            "max_concurrent_runs": slots,
        },
    }
    (server.tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(config))


def _held_notebook(root: Path, name: str, gate: str) -> str:
    """A run that stays active (its first step waits for ``gate``) and then ends quickly."""
    write(
        root / name,
        notebook(
            ("imports", "import os, time"),
            ("parameters", "k = 0"),
            (
                "step:wait",
                f"deadline = time.time() + 120\n"
                f"while not os.path.exists({gate!r}) and time.time() < deadline:\n"
                "    time.sleep(0.05)\n"
                "a = k + 1",
            ),
            ("step:use", "b = a * 2\nprint(b)"),
        ),
    )
    return name


def _processes_under(path: Path) -> list[str]:
    """Live processes whose command line names ``path`` (drivers, warm processes, steps)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if str(path) in cmdline and state != "Z":
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _run(server: Server, run_id: str) -> dict[str, Any]:
    return server.request("GET", f"/cellpipe/api/runs/{run_id}")


def _listed(server: Server) -> dict[str, dict[str, Any]]:
    page = server.request("GET", "/cellpipe/api/runs?page_size=200")
    return {r["run_id"]: r for r in page["runs"]}


def _step_running(runs_root: Path, run_id: str, step: str) -> int | None:
    events = runs_root / run_id / "events.jsonl"
    with contextlib.suppress(OSError):
        for line in events.read_text().splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("step") == step and ev.get("pid"):
                    return int(ev["pid"])
    return None


@pytest.fixture
def server(tmp_path: Path):
    s = Server(tmp_path)
    yield s
    s.stop()
    for line in _processes_under(tmp_path):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def test_every_other_run_completes_through_faults_and_a_server_crash(server: Server) -> None:
    root, runs_root = server.root, server.tmp / "runs"
    _configure(server, runs_root, slots=6)
    _held_notebook(root, "held.ipynb", "go")
    write(root / "quick.ipynb", notebook(("step:a", "a = 1"), ("step:b", "print(a)")))
    server.start()

    def post(path: str, **params: Any) -> str:
        body = {"path": path, "parameters": params} if params else {"path": path}
        return server.request("POST", "/cellpipe/api/runs", body)["run_id"]

    # A finished run, then its events.jsonl gets a record that is not an object.
    malformed = post("quick.ipynb")
    _wait_for(lambda: _run(server, malformed)["state"] in ENDED, 60, "the quick run")
    with open(runs_root / malformed / "events.jsonl", "a") as f:
        f.write("[]\n")

    # Victims (first, so they hold slots) and the 10 bystanders (some of them queued).
    deleted, driver_killed, step_killed, torn = (post("held.ipynb", k=100 + i) for i in range(4))
    bystanders = [post("held.ipynb", k=k) for k in range(BYSTANDERS)]

    for victim in (deleted, driver_killed, step_killed, torn):
        _wait_for(lambda v=victim: _step_running(runs_root, v, "wait"), 60, f"{victim} to run")
    shutil_rmtree(runs_root / deleted)  # the user deletes a running run's folder
    driver = json.loads((runs_root / driver_killed / "driver.json").read_text())["pid"]
    os.kill(driver, signal.SIGKILL)
    os.kill(_step_running(runs_root, step_killed, "wait") or 0, signal.SIGKILL)
    with open(runs_root / torn / "events.jsonl", "a") as f:
        f.write('{"ts": 1, "run": "x", "state": "runn')  # a writer killed mid-record

    # The API keeps answering for everyone meanwhile.
    listed = _listed(server)
    assert set(bystanders) <= set(listed) and malformed in listed

    # kill -9 of the server; its index is corrupted while it is down; it starts again.
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    server._log.close()  # start() opens it again
    (runs_root / ".history.sqlite").write_bytes(b"this is not a database" * 100)
    server.start()

    (root / "go").touch()
    for run_id in [*bystanders, torn]:
        run = _wait_for(lambda r=run_id: (x := _run(server, r))["state"] in ENDED and x, 90, run_id)
        assert run["state"] == "succeeded", run
        assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]

    listed = _listed(server)
    for run_id in [*bystanders, torn]:
        assert listed[run_id]["state"] == "succeeded"
        assert listed[run_id]["step_counts"] == {"succeeded": 2}
    assert deleted not in listed
    with pytest.raises(urllib.error.HTTPError) as gone:
        _run(server, deleted)
    gone.value.close()  # its response holds the connection
    assert gone.value.code == 404
    assert listed[driver_killed]["state"] == "failed"
    assert _run(server, driver_killed)["state"] == "failed"
    assert listed[step_killed]["state"] == "failed"
    assert listed[malformed]["state"] == "failed"
    assert "events.jsonl" in listed[malformed]["message"]
    assert "events.jsonl" in _run(server, malformed)["message"]
    assert list(runs_root.glob(".history.sqlite.corrupt*"))  # moved aside, not deleted

    _wait_for(lambda: not _processes_under(runs_root), 30, "every run's processes to end")


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    assert not path.exists()


def test_a_full_disk_fails_the_run_that_filled_it_and_not_the_others(
    server: Server, tmp_path: Path
) -> None:
    runs_root = tmp_path / "small-disk"
    runs_root.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(runs_root)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        root = server.root
        _configure(server, runs_root, slots=12)
        _held_notebook(root, "held.ipynb", "go")
        write(
            root / "big.ipynb",
            notebook(("step:fill", "blob = b'x' * (80 * 2**20)"), ("step:use", "print(len(blob))")),
        )
        if mounted:
            server.start()
        else:
            # No tmpfs (not root): a file size limit instead, inherited by the server, its
            # drivers and steps; the filler's value is then refused as on a full disk.
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 2**20, hard))
            try:
                server.start()
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        post = lambda path, **p: server.request(  # noqa: E731
            "POST", "/cellpipe/api/runs", {"path": path, "parameters": p}
        )["run_id"]
        bystanders = [post("held.ipynb", k=k) for k in range(BYSTANDERS)]
        filler = post("big.ipynb")
        run = _wait_for(
            lambda: (x := _run(server, filler))["state"] in ENDED and x, 90, "the filler"
        )
        assert run["state"] == "failed"
        (root / "go").touch()
        for run_id in bystanders:
            run = _wait_for(
                lambda r=run_id: (x := _run(server, r))["state"] in ENDED and x, 90, run_id
            )
            assert run["state"] == "succeeded", run
        listed = _listed(server)
        assert {listed[r]["state"] for r in bystanders} == {"succeeded"}
        assert listed[filler]["state"] == "failed"
        _wait_for(lambda: not _processes_under(runs_root), 30, "every run's processes to end")
    finally:
        server.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(runs_root)], capture_output=True)
