"""A real `jupyter server` process: runs survive a restart; the API stays responsive under load."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from nbbuild import notebook, write

TOKEN = "cellpipe-test-token"


class Server:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir(exist_ok=True)
        (tmp / "config").mkdir(exist_ok=True)
        (tmp / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"cellpipe_server": True}}})
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(self.tmp / "config"),
            JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
            JUPYTER_DATA_DIR=str(self.tmp / "data"),
            CELLPIPE_RETRY_BACKOFF="0.05",
        )
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / p) for p in ("kernel", "jupyter_extension")]
            + [env.get("PYTHONPATH", "")]
        )
        self._log = open(self.tmp / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "server",
                "--no-browser",
                "--allow-root",
                f"--port={self.port}",
                "--port-retries=0",
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={self.root}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError(
            "server did not start:\n" + (self.tmp / "server.log").read_text()[-3000:]
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc:
            self._log.close()

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")


@pytest.fixture
def server(tmp_path: Path):
    s = Server(tmp_path)
    yield s
    s.stop()


def _wait(server: Server, run_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = server.request("GET", f"/cellpipe/api/runs/{run_id}")
        if run["state"] in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {states}: {run}")


@pytest.mark.slow
def test_a_run_survives_a_server_restart_and_completes(server: Server) -> None:
    write(
        server.root / "long.ipynb",
        notebook(("step:a", "import time\ntime.sleep(3)\nx = 1"), ("step:b", "print(x + 1)")),
    )
    server.start()
    run_id = server.request("POST", "/cellpipe/api/runs", {"path": "long.ipynb"})["run_id"]
    _wait(server, run_id, ("running",))
    server.stop()
    server.start()
    listed = server.request("GET", "/cellpipe/api/runs?path=long.ipynb")
    assert [r["run_id"] for r in listed["runs"]] == [run_id]
    run = _wait(server, run_id, ("succeeded", "failed", "cancelled"))
    assert run["state"] == "succeeded"
    assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]


@pytest.mark.slow
def test_twenty_concurrent_runs_complete_while_the_api_stays_responsive(
    server: Server, capsys
) -> None:
    write(
        server.root / "small.ipynb",
        notebook(("parameters", "k = 0"), ("step:a", "a = k + 1"), ("step:b", "print(a)")),
    )
    server.start()
    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [
            pool.submit(
                server.request,
                "POST",
                "/cellpipe/api/runs",
                {"path": "small.ipynb", "parameters": {"k": k}},
            )
            for k in range(20)
        ]
        ids = [f.result()["run_id"] for f in futures]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            listed = server.request("GET", "/cellpipe/api/runs?page_size=50")
            latencies.append(time.perf_counter() - t0)
            if sum(r["state"] == "succeeded" for r in listed["runs"]) == 20:
                break
            time.sleep(0.1)
    states = {server.request("GET", f"/cellpipe/api/runs/{i}")["state"] for i in ids}
    assert states == {"succeeded"}
    p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))]
    with capsys.disabled():
        print(
            f"\n  20 concurrent runs: GET /runs answered {len(latencies)} times, median "
            f"{statistics.median(latencies) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms"
        )
    assert p95 < 0.5  # 200 ms is the goal on a quiet machine; CI shares 2 cores with the runs
