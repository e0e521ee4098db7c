"""`cellpipe serve`: a notebook pipeline as an HTTP endpoint, over real HTTP."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from nbbuild import notebook, write

pytestmark = pytest.mark.slow


def _inference_notebook(directory: Path) -> Path:
    return write(
        directory / "infer.ipynb",
        notebook(
            ("imports", "import json"),
            ("parameters", "x = 1.0\nmode = 'sum'"),
            ("step:load_model", "weights = [0.0, 1.0, 2.0, 3.0]"),
            (
                "step:predict",
                "if x == 'boom':\n    raise ValueError('cannot predict boom')\n"
                "prediction = sum(weights) * x\nscaled = [w * x for w in weights]\n"
                "class Model:\n    pass\nmodel = Model()",
            ),
            ("metrics", "prediction"),
        ),
    )


def _post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any], Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url + "/run", data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`cellpipe serve` started as a user would, on a free port."""
    directory = tmp_path_factory.mktemp("serve")
    nb = _inference_notebook(directory)
    runs_root = directory / "runs"
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(runs_root))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "serve", str(nb), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=directory,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"on (http://[0-9.]+:[0-9]+)", line)
    assert found, line
    yield found.group(1), runs_root
    proc.terminate()
    proc.wait(timeout=30)
    proc.stderr.close()


def test_serve_answers_50_sequential_requests_rerunning_only_what_the_parameters_change(
    served: tuple[str, Path],
) -> None:
    url, runs_root = served
    latencies = []
    for i in range(50):
        x = i % 10  # ten distinct requests, each asked five times
        started = time.perf_counter()
        status, body, _ = _post(url, {"parameters": {"x": x}, "return": ["prediction", "scaled"]})
        latencies.append(time.perf_counter() - started)
        assert status == 200, body
        assert body["values"] == {"prediction": 6.0 * x, "scaled": [0.0, x, 2.0 * x, 3.0 * x]}
        assert body["metrics"] == {"prediction": 6.0 * x}
        first_time = i < 10
        assert body["steps"] == {
            "load_model": "succeeded" if i == 0 else "cached",  # never depends on x
            "predict": "succeeded" if first_time else "cached",
            "metrics": "succeeded" if first_time else "cached",
        }
        if first_time:
            run_log = (runs_root / body["run_id"] / "logs" / "_run.log").read_text()
            assert "warm start" in run_log  # steps were forked from the warm process
    print(f"\n50 requests: median {statistics.median(latencies) * 1000:.0f} ms")


def test_health_describes_what_the_endpoint_accepts(served: tuple[str, Path]) -> None:
    url, _ = served
    with urllib.request.urlopen(url + "/health", timeout=30) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok"
    assert health["parameters"] == {"x": 1.0, "mode": "sum"}
    assert health["returnable"] == ["Model", "model", "prediction", "scaled", "weights"]


def test_an_unknown_parameter_is_a_400_that_names_it(served: tuple[str, Path]) -> None:
    status, body, _ = _post(served[0], {"parameters": {"y": 2}})
    assert status == 400
    assert body["error"] == "unknown parameter 'y'; the parameters cell declares: mode, x"


def test_a_body_that_is_not_json_is_a_400(served: tuple[str, Path]) -> None:
    status, body, _ = _post(served[0], None, raw=b'{"parameters": ')
    assert status == 400 and body["error"].startswith("the body is not valid JSON")


def test_asking_for_a_name_no_step_assigns_is_a_400_listing_the_names(
    served: tuple[str, Path],
) -> None:
    status, body, _ = _post(served[0], {"return": ["predictoin"]})
    assert status == 400
    assert "cannot return 'predictoin'" in body["error"] and "prediction" in body["error"]


def test_a_value_json_cannot_hold_is_a_422_saying_how_to_get_it(
    served: tuple[str, Path],
) -> None:
    status, body, _ = _post(served[0], {"parameters": {"x": 2}, "return": ["model"]})
    assert status == 422
    assert "`model` (__main__.Model) cannot be sent as JSON" in body["error"]
    assert "cellpipe.load(" in body["error"]


def test_a_failing_step_is_a_500_naming_the_step_and_the_error(
    served: tuple[str, Path],
) -> None:
    status, body, _ = _post(served[0], {"parameters": {"x": "boom"}, "return": ["prediction"]})
    assert status == 500
    assert body["state"] == "failed"
    assert body["failed"] == {"predict": "cell 4: ValueError: cannot predict boom"}


def test_a_request_beyond_max_concurrent_is_a_429_with_retry_after(tmp_path: Path) -> None:
    from cellpipe.driving.serve import PipelineService, make_server

    nb = write(
        tmp_path / "slow.ipynb",
        notebook(
            ("imports", "import os, time"),
            ("parameters", "n = 1"),
            ("step:hold", "while not os.path.exists('go'):\n    time.sleep(0.05)\nout = n"),
            ("step:use", "print(out)"),
        ),
    )
    service = PipelineService(nb, tmp_path / "runs", max_concurrent=1)
    server = make_server(service, port=0)
    url = "http://{}:{}".format(*server.server_address[:2])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first: list[Any] = []
        holder = threading.Thread(target=lambda: first.append(_post(url, {"return": ["out"]})))
        holder.start()
        deadline = time.time() + 60
        while not list((tmp_path / "runs").glob("*/logs/hold.log")) and time.time() < deadline:
            time.sleep(0.05)
        status, body, headers = _post(url, {"return": ["out"]})
        assert status == 429 and headers["Retry-After"] == "1"
        assert body["error"] == "1 request(s) already running; retry shortly"
        (tmp_path / "go").touch()
        holder.join(timeout=60)
        assert first[0][0] == 200 and first[0][1]["values"] == {"out": 1}
    finally:
        (tmp_path / "go").touch()
        server.shutdown()
        server.server_close()
        service.close()
