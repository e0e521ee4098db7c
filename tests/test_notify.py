"""Notifications at a run's end (GitHub issue 21): a webhook or a command, from the driver.

A real HTTP receiver on 127.0.0.1 answers with the status codes a test scripts; runs are
real `cellpipe run` processes. The notification must never change the run's outcome, and a
receiver that never answers delays the driver's end by at most the notification timeout.
Argo runs notify from the cluster (the Workflow's exit handler): tests/test_argo_notify.py and
tests/test_argo_cluster_notify.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cellpipe.core.notify import Notify, send
from nbbuild import notebook, write


@dataclass
class Receiver:
    url: str
    codes: list[int]  # answered in order; 200 once they run out
    posts: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="", codes=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.posts.append(json.loads(body))
            state.paths.append(self.path)
            code = state.codes.pop(0) if state.codes else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def silent_receiver() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def quick(tmp_path: Path, name: str = "quick.ipynb", notify: object = None, fail: bool = False):
    meta = {"cellpipe": {"notify": notify}} if notify is not None else None
    return write(
        tmp_path / name,
        notebook(
            ("step:load", "values = [1, 2, 3]"),
            ("step:total", "total = sum(values)\n" + ("raise ValueError(total)" if fail else "")),
            metadata=meta,
        ),
    )


def test_a_local_run_posts_its_status_once_when_it_ends(cli, tmp_path, receiver) -> None:
    proc = cli("run", str(quick(tmp_path)), "--notify", receiver.url, check=True)
    assert len(receiver.posts) == 1, receiver.posts
    status = receiver.posts[0]
    assert status["state"] == "succeeded"
    assert set(status["steps"]) == {"load", "total"}
    assert status["run_id"] in proc.stdout + proc.stderr


def test_a_failed_run_notifies_and_still_exits_1(cli, tmp_path, receiver) -> None:
    proc = cli("run", str(quick(tmp_path, fail=True)), "--notify", receiver.url)
    assert proc.returncode == 1
    assert [p["state"] for p in receiver.posts] == ["failed"]
    assert receiver.posts[0]["steps"]["total"]["state"] == "failed"


def test_500_twice_then_200_is_three_posts_and_the_run_is_unaffected(
    cli, tmp_path, receiver, runs_root
) -> None:
    receiver.codes[:] = [500, 500, 200]
    proc = cli("run", str(quick(tmp_path)), "--notify", receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert len(receiver.posts) == 3
    assert all(p["state"] == "succeeded" for p in receiver.posts)
    assert proc.stderr.count("answered 500") == 2, proc.stderr
    assert "retrying in 0.5 s" in proc.stderr and "retrying in 1 s" in proc.stderr
    status = cli("status", receiver.posts[0]["run_id"], "--json", check=True)
    assert json.loads(status.stdout)["state"] == "succeeded"


def test_a_receiver_that_always_fails_gets_a_bounded_number_of_posts(
    cli, tmp_path, receiver
) -> None:
    receiver.codes[:] = [503] * 10
    nb = quick(tmp_path, notify={"webhook": receiver.url, "retries": 2})
    proc = cli("run", str(nb))
    assert proc.returncode == 0
    assert len(receiver.posts) == 3  # the first attempt and 2 retries
    assert "answered 503 (attempt 3 of 3); giving up" in proc.stderr


def test_a_receiver_that_never_answers_delays_the_end_by_at_most_the_timeout(
    cli, tmp_path, silent_receiver, runs_root
) -> None:
    nb = quick(tmp_path, notify={"webhook": silent_receiver, "timeout": 2})
    proc = cli("run", str(nb), "--json")
    exited = time.time()
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["state"] == "succeeded"
    # From the run's end (its final state on disk) to the command's exit: the timeout, plus
    # the exit itself.
    assert exited - status["ended_at"] < 2 + 1.5, exited - status["ended_at"]
    assert "unreachable: TimeoutError" in proc.stderr or "timed out" in proc.stderr, proc.stderr


def test_secrets_in_the_url_come_from_the_environment_and_are_never_written(
    cli, tmp_path, receiver, runs_root
) -> None:
    receiver.codes[:] = [500]  # one failure, so the URL also reaches the log
    template = receiver.url + "?token=${HOOK_TOKEN}"
    proc = cli(
        "run", str(quick(tmp_path)), "--notify", template, env={"HOOK_TOKEN": "s3cr3t-value"}
    )
    assert proc.returncode == 0
    assert receiver.paths == ["/hook?token=s3cr3t-value"] * 2
    assert "s3cr3t-value" not in proc.stdout + proc.stderr
    assert "?token" not in proc.stderr  # logs show the URL without its query string
    for path in runs_root.rglob("*"):
        if path.is_file():
            assert b"s3cr3t-value" not in path.read_bytes(), path


def test_a_command_gets_the_status_on_stdin(cli, tmp_path) -> None:
    out = tmp_path / "status.json"
    cli("run", str(quick(tmp_path)), "--notify", f"cat > {out}", check=True)
    assert json.loads(out.read_text())["state"] == "succeeded"


def test_the_notebooks_metadata_wins_and_on_filters_states(cli, tmp_path, receiver) -> None:
    only_failures = {"webhook": receiver.url, "on": ["failed"]}
    cli("run", str(quick(tmp_path, notify=only_failures)), "--notify", "false", check=True)
    assert receiver.posts == []  # succeeded: not in `on`; the --notify default is not used


def test_a_bad_notify_setting_is_bad_input(cli, tmp_path) -> None:
    proc = cli("run", str(quick(tmp_path, notify={"webhook": "http://x", "on": ["done"]})))
    assert proc.returncode == 2
    assert "metadata.cellpipe.notify: `on` takes succeeded, failed, cancelled" in proc.stderr


def test_a_docker_run_notifies_from_its_driver(cli, tmp_path, receiver) -> None:
    proc = cli(
        "run",
        str(quick(tmp_path)),
        "--backend",
        "docker",
        "--notify",
        receiver.url,
        env={"CELLPIPE_DOCKER_USER": "0:0"},  # pytest's temp dirs are root's, mode 700
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p["state"] for p in receiver.posts] == ["succeeded"]
    assert receiver.posts[0]["backend"] == "docker"


def test_send_gives_up_at_the_deadline_without_sleeping_past_it() -> None:
    waits: list[float] = []
    now = [0.0]

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    target = Notify(command="exit 3", timeout_s=2.0, retries=5)
    assert send(target, {"state": "succeeded"}, sleep=sleep, clock=lambda: now[0]) is False
    assert waits == [0.5, 1.0]  # the next wait (2 s) would pass the deadline
