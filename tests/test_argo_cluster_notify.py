"""On the real cluster, an Argo run notifies from its Workflow's exit handler (issue 21): a
webhook receiver on this machine, at the node's InternalIP (pods sit on a bridge and reach
the node, nothing beyond it), gets exactly one POST per run with the run's final state. The
URL's secret part is a Kubernetes Secret the handler's pod reads through a ``secretKeyRef``:
it is nowhere in the Workflow object, the run directory or the handler's log. Fixtures and
helpers are ``tests/test_argo_cluster.py``'s."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from test_argo_cluster import (  # noqa: F401  (cluster: the fixture)
    _cancelled_once_a_pod_runs,
    _cellpipe,
    _kubectl,
    _pods,
    _push_images,
    _run,
    _run_with_a_running_pod,
    _step_states,
    _wait,
    _workflows,
    cluster,
)

pytestmark = pytest.mark.usefixtures("cluster")


@dataclass
class Hook:
    url: str  # the template the notebook names: ${HOOK_TOKEN} in it
    token: str  # the Secret's value
    secret: str  # the Secret's name
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def _node_ip() -> str:
    out = _kubectl(
        "get",
        "nodes",
        "-o",
        'jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}',
        admin=True,
    ).stdout.strip()
    assert out, "the node has no InternalIP"
    return out.split()[0]


@pytest.fixture(scope="module")
def hook(cluster) -> Iterator[Hook]:  # noqa: F811
    """A receiver the pods can reach, and a Secret holding the URL's token."""
    ip = _node_ip()
    token = "argo-notify-" + secrets.token_hex(8)
    name = "argo-notify-hook-" + secrets.token_hex(3)
    state = Hook(url="", token=token, secret=name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.posts.append(json.loads(body))
            state.paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((ip, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://{ip}:{server.server_address[1]}/hook?token=${{HOOK_TOKEN}}"
    _kubectl("create", "secret", "generic", name, f"--from-literal=token={token}", admin=True)
    yield state
    _kubectl("delete", "secret", name, "--ignore-not-found", admin=True, check=False)
    server.shutdown()
    server.server_close()
    thread.join(5)


def _notebook(
    path: Path,
    hook: Hook,
    fail: bool = False,
    slow: bool = False,
    gate: bool = False,
    claim: bool = False,
) -> Path:
    argo: dict[str, Any] = {"notify_secrets": {"HOOK_TOKEN": f"{hook.secret}:token"}}
    if claim:
        argo["existing_claim"] = os.environ["CELLPIPE_CLUSTER_CLAIM"]
    meta = {"cellpipe": {"notify": {"webhook": hook.url}, "argo": argo}}
    return write(
        path,
        notebook(
            (
                "step:load" + (" gate:count>5" if gate else ""),
                "values = [1, 2, 3]"
                + ("\nimport time\ntime.sleep(300)" if slow else "")
                + ("\ncount = len(values)" if gate else ""),
            ),
            ("step:total", "total = sum(values)\n" + ("raise ValueError(total)" if fail else "")),
            metadata=meta,
        ),
    )


def _run_and_collect(nb: Path, hook: Hook, **env: str) -> tuple[dict[str, Any], Any, float]:
    hook.posts.clear()
    hook.paths.clear()
    started = time.monotonic()
    result, proc = _run(nb, **env)
    took = time.monotonic() - started
    # The Workflow ends only once its exit handler has: the POST came before `run` returned.
    # Wait a little longer all the same, for a second POST that must not come.
    time.sleep(5)
    return result, proc, took


def _secret_nowhere(hook: Hook, run_id: str, run_dir: Path) -> None:
    (wf,) = _workflows(run_id)
    text = json.dumps(wf)
    assert hook.token not in text
    assert "secretKeyRef" in text and hook.secret in text  # named, by reference only
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert hook.token.encode() not in path.read_bytes(), path
    (pod,) = _pods(run_id, "cellpipe.io/step=cellpipe-notify")
    log = _kubectl("logs", pod["metadata"]["name"], "-c", "main", admin=True).stdout
    assert "told" in log, log
    assert hook.token not in log and "?token" not in log, log


def test_a_succeeded_argo_run_posts_its_status_once_from_the_exit_handler(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "hooked.ipynb", hook)
    _push_images(nb)
    result, proc, took = _run_and_collect(nb, hook)
    assert proc.returncode == 0, proc.stderr
    assert len(hook.posts) == 1, hook.posts
    status = hook.posts[0]
    assert status["state"] == "succeeded"
    assert status["run_id"] == result["run_id"] and status["backend"] == "argo"
    assert status["notebook"] == "hooked.ipynb"
    assert {n: s["state"] for n, s in status["steps"].items()} == {
        "load": "succeeded",
        "total": "succeeded",
    }
    assert status["duration_s"] > 0
    assert hook.paths == [f"/hook?token={hook.token}"]  # the Secret's value reached the URL
    _secret_nowhere(hook, result["run_id"], tmp_path / "runs" / result["run_id"])
    print(f"notify on argo: run with exit handler {took:.1f}s, one POST")


def test_a_failed_argo_run_posts_failed_once_naming_the_failed_step(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "broken.ipynb", hook, fail=True)
    _push_images(nb)
    result, proc, took = _run_and_collect(nb, hook)
    assert proc.returncode == 1, proc.stderr
    assert [p["state"] for p in hook.posts] == ["failed"], hook.posts
    status = hook.posts[0]
    assert status["run_id"] == result["run_id"]
    assert status["steps"]["load"]["state"] == "succeeded"
    assert status["steps"]["total"]["state"] == "failed"
    assert status["message"] == "step total failed"
    assert result["state"] == "failed"  # the run's own state, as without a notification
    _secret_nowhere(hook, result["run_id"], tmp_path / "runs" / result["run_id"])
    print(f"notify on argo: failed run with exit handler {took:.1f}s, one POST")


def test_a_cancelled_argo_run_still_runs_its_exit_handler_and_posts_cancelled(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "slow.ipynb", hook, slow=True)
    _push_images(nb)
    hook.posts.clear()
    run, out, err, run_id = _cancelled_once_a_pod_runs(nb, tmp_path)
    runs = tmp_path / "runs"
    time.sleep(5)
    assert run.returncode != 0, out + err
    states = _step_states(runs / run_id)
    assert states["load"]["state"] == "cancelled", states
    (wf,) = _workflows(run_id)
    assert wf["spec"].get("shutdown") == "Stop", wf["spec"]  # Terminate skips exit handlers
    assert [p["state"] for p in hook.posts] == ["cancelled"], hook.posts
    assert hook.posts[0]["steps"]["load"]["state"] == "cancelled"
    assert json.loads(out)["state"] == "cancelled"


def test_steps_behind_a_closed_gate_post_skipped_with_the_reason_a_local_run_gives(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "gated.ipynb", hook, gate=True)
    _push_images(nb)
    result, proc, _ = _run_and_collect(nb, hook)
    assert proc.returncode == 0, proc.stderr
    assert [p["state"] for p in hook.posts] == ["succeeded"], hook.posts
    posted = {n: (s["state"], s["message"]) for n, s in hook.posts[0]["steps"].items()}
    local = {n: (s["state"], s["message"]) for n, s in result["steps"].items()}
    assert posted["total"][0] == "skipped" and "gate count>5 closed" in posted["total"][1]
    assert posted == local  # what `cellpipe run` itself reports of the same run


def test_a_missing_secret_sends_nothing_and_leaves_the_run_succeeded(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "nosecret.ipynb", replace(hook, secret=hook.secret + "-absent"))
    _push_images(nb)
    result, proc, _ = _run_and_collect(nb, hook)
    assert proc.returncode == 0, proc.stderr
    assert result["state"] == "succeeded"
    assert hook.posts == []
    (wf,) = _workflows(result["run_id"])
    assert wf["status"]["phase"] == "Succeeded"  # the handler's pod started, and exited 0
    (pod,) = _pods(result["run_id"], "cellpipe.io/step=cellpipe-notify")
    log = _kubectl("logs", pod["metadata"]["name"], "-c", "main", admin=True).stdout
    assert "needs $HOOK_TOKEN, which is not set; not sent" in log, log


def test_an_all_cached_rerun_submits_nothing_so_its_driver_posts_once(
    hook: Hook, tmp_path: Path
) -> None:
    nb = _notebook(tmp_path / "again.ipynb", hook, claim=True)
    _push_images(nb)
    first, proc, _ = _run_and_collect(nb, hook)
    assert proc.returncode == 0, proc.stderr
    assert [p["run_id"] for p in hook.posts] == [first["run_id"]]  # from the exit handler
    # No Workflow, so no exit handler: the driver sends, with ${HOOK_TOKEN} from its own
    # environment, as for a local run.
    second, proc, _ = _run_and_collect(nb, hook, HOOK_TOKEN=hook.token)
    assert proc.returncode == 0, proc.stderr
    assert _workflows(second["run_id"]) == []
    assert [(p["run_id"], p["state"]) for p in hook.posts] == [(second["run_id"], "succeeded")]
    assert {s["state"] for s in hook.posts[0]["steps"].values()} == {"cached"}
    assert hook.paths == [f"/hook?token={hook.token}"]
