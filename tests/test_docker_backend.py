"""The Docker backend, against the real Docker daemon: every step in its own container.

Needs `docker info` to work and the base image `cellpipe-base:bookworm` (CI makes both with
`.ci/docker-setup.sh`); these tests are never skipped. Image builds are offline: wheels are
made on this machine by pip, which must reach an index the first time (tabulate and
termcolor are tiny pure-Python packages). Steps run as uid 1000 (`CELLPIPE_DOCKER_USER`),
so the directories they write are handed to that user first, as a user's own would be.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nbbuild import notebook, write
from notebooks.make import CASES
from oracle import (
    REJECTED,
    REPO,
    copy_case,
    differences,
    has_figures,
    invariant_case,
    run_pipeline,
    run_top_to_bottom,
)

HERE = Path(__file__).parent / "notebooks"
USER = "1000:1000"
UID = 1000

#: Every adversarial notebook the engine runs, under Docker: containers change the process,
#: the file system (mounted notebook folder, files handed from step to step), the installed
#: packages (inferred from the imports) and the user, and none of that may change a value.
DOCKER_CASES = tuple(name for name in CASES if name not in REJECTED)


@pytest.fixture(autouse=True)
def _as_user_1000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLPIPE_DOCKER_USER", USER)
    monkeypatch.setenv("CELLPIPE_RETRY_BACKOFF", "0.05")


def _give(path: Path) -> Path:
    """Make ``path`` (and all below it) the step user's, as a user's own notebook folder is."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, UID, UID)
    return path


def _cellpipe(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(cwd / "runs"), CELLPIPE_DOCKER_USER=USER)
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "cellpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def _run(nb: Path, *extra: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    proc = _cellpipe("run", str(nb), "--backend", "docker", "--json", *extra, cwd=nb.parent)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout), proc


def _run_dir(nb: Path, result: dict[str, Any]) -> Path:
    return nb.parent / "runs" / result["run_id"]


def _containers(run_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=io.cellpipe.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def _both_ways(name: str, workdir: Path) -> tuple[Any, Any, Any, Any]:
    copies = copy_case(name, workdir)
    _give(workdir)
    params = CASES[name].parameters or None
    executed, proc = run_pipeline(
        copies["pipeline"], workdir, params, ("--backend", "docker", "--jobs", "8")
    )
    expected = run_top_to_bottom(copies["top-to-bottom"], params)
    again = run_top_to_bottom(copies["top-to-bottom"], params) if has_figures(expected) else None
    return expected, executed, proc, again


@pytest.fixture(scope="module")
def both_ways(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    os.environ["CELLPIPE_DOCKER_USER"] = USER  # read by the `cellpipe run` processes
    # Only the notebooks the session selected (`-k`), as in test_invariant.
    names = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None)
        == "test_notebook_under_docker_gives_the_outputs_of_a_top_to_bottom_run"
    ]
    with ThreadPoolExecutor(3) as pool:
        yield {n: pool.submit(_both_ways, n, tmp_path_factory.mktemp(n)) for n in names}


#: Notebooks only Docker runs differently, and why (strict, as invariant_case's).
DOCKER_ONLY: dict[str, str] = {}


def _docker_case(name: str) -> Any:
    if name in DOCKER_ONLY:
        return pytest.param(
            name, marks=[pytest.mark.xfail(reason=DOCKER_ONLY[name], strict=True)], id=name
        )
    return invariant_case(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_docker_case(n) for n in DOCKER_CASES])
def test_notebook_under_docker_gives_the_outputs_of_a_top_to_bottom_run(
    name: str, both_ways
) -> None:
    expected, executed, proc, again = both_ways[name].result()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    problems = differences(expected, executed, again)
    assert not problems, "docker outputs differ from top to bottom:\n" + "\n".join(problems)


def _packages_notebook(folder: Path) -> Path:
    probe = (
        "import importlib.util\n"
        "print('{me}', {me}.__name__, 'sees {other}:', "
        "importlib.util.find_spec('{other}') is not None)"
    )
    return write(
        _give(folder) / "pkgs.ipynb",
        notebook(
            (
                "step:table packages:tabulate",
                "import tabulate\n" + probe.format(me="tabulate", other="termcolor"),
            ),
            (
                "step:colour packages:termcolor",
                "import termcolor\n" + probe.format(me="termcolor", other="tabulate"),
            ),
        ),
    )


def test_steps_with_different_packages_get_different_images_each_with_only_its_own(
    tmp_path: Path,
) -> None:
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook

    nb = _packages_notebook(tmp_path)
    plans = plan_images(compile_notebook(nb))
    assert plans["table"].ref != plans["colour"].ref
    assert [p.split("==")[0] for p in plans["table"].packages] == ["tabulate"]

    result, proc = _run(nb)
    assert result["state"] == "succeeded", proc.stderr
    outputs = json.loads((_run_dir(nb, result) / "outputs" / "table.json").read_text())
    printed = "".join(o["text"] for c in outputs["cells"].values() for o in c["outputs"])
    assert "tabulate tabulate sees termcolor: False" in printed
    outputs = json.loads((_run_dir(nb, result) / "outputs" / "colour.json").read_text())
    printed = "".join(o["text"] for c in outputs["cells"].values() for o in c["outputs"])
    assert "termcolor termcolor sees tabulate: False" in printed


def test_a_step_gets_the_packages_of_the_steps_whose_values_it_loads(tmp_path: Path) -> None:
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook

    nb = write(
        tmp_path / "frames.ipynb",
        notebook(
            ("step:make", "import pandas as pd\nframe = pd.DataFrame({'a': [1]})"),
            ("step:copy", "again = frame"),
            ("step:show", "print(again)"),
        ),
    )
    plans = plan_images(compile_notebook(nb))
    for step in ("make", "copy", "show"):
        assert "pandas" in [p.split("==")[0] for p in plans[step].packages], step


def test_a_step_importing_scikit_learn_gets_pandas_which_its_loaders_return(
    tmp_path: Path,
) -> None:
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook

    nb = write(
        tmp_path / "frames.ipynb",
        notebook(
            (
                "step:load",
                "from sklearn.datasets import load_iris\nX, y = load_iris(return_X_y=True)",
            ),
            ("step:plain", "import json\nprint(json.dumps(1))"),
        ),
    )
    plans = plan_images(compile_notebook(nb))
    load = [p.split("==")[0] for p in plans["load"].inferred]
    assert "scikit-learn" in load and "pandas" in load
    assert "pandas" not in [p.split("==")[0] for p in plans["plain"].packages]


def test_a_step_importing_pandas_gets_pyarrow_which_keeps_its_strings_as_the_kernels(
    tmp_path: Path,
) -> None:
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook

    nb = write(
        tmp_path / "strings.ipynb",
        notebook(("step:make", "import pandas as pd\nframe = pd.DataFrame({'b': ['x']})")),
    )
    inferred = [p.split("==")[0] for p in plan_images(compile_notebook(nb))["make"].inferred]
    assert "pandas" in inferred and "pyarrow" in inferred


def test_a_second_run_builds_no_image(tmp_path: Path) -> None:
    nb = _packages_notebook(tmp_path)
    first, _ = _run(nb)
    result, proc = _run(nb, "--no-cache")  # the steps run again, in the same images
    assert result["state"] == "succeeded", proc.stderr
    notes = (_run_dir(nb, result) / "logs" / "_run.log").read_text()
    assert "built image" not in notes
    assert _images_named(notes) == _images_named(
        (_run_dir(nb, first) / "logs" / "_run.log").read_text()
    )
    assert notes.count("is present") == 2


def _images_named(notes: str) -> set[str]:
    return set(re.findall(r"image (cellpipe-step:\w+)", notes))


def test_a_package_that_does_not_exist_fails_its_step_naming_step_package_and_pip_error(
    tmp_path: Path,
) -> None:
    nb = write(
        _give(tmp_path) / "missing.ipynb",
        notebook(
            ("step:fit packages:cellpipe-no-such-package-4711", "x = 1"),
            ("step:report", "print(x)"),
        ),
    )
    result, _ = _run(nb)
    assert result["state"] == "failed"
    fit = result["steps"]["fit"]
    assert fit["state"] == "failed"
    assert "image build failed" in fit["message"]
    assert "step fit" in fit["message"]
    assert "`cellpipe-no-such-package-4711`" in fit["message"]
    assert "No matching distribution" in fit["message"]
    assert fit["attempts"] == 1
    assert result["steps"]["report"]["state"] == "skipped"


def test_a_step_over_its_memory_limit_is_killed_and_says_out_of_memory_at_the_limit(
    tmp_path: Path,
) -> None:
    nb = write(
        _give(tmp_path) / "oom.ipynb",
        notebook(
            ("step:hog limit:memory:64Mi", "blocks = [bytearray(2**20) for _ in range(1024)]"),
            ("step:after", "print(len(blocks))"),
        ),
    )
    result, _ = _run(nb)
    hog = result["steps"]["hog"]
    assert hog["state"] == "failed"
    assert hog["message"] == "killed: out of memory at limit 64Mi"
    assert result["steps"]["after"]["state"] == "skipped"
    assert _containers(result["run_id"]) == []


def test_a_step_that_exits_reports_its_exit_code(tmp_path: Path) -> None:
    nb = write(_give(tmp_path) / "exit.ipynb", notebook(("step:quit", "import os\nos._exit(3)")))
    result, _ = _run(nb)
    assert result["steps"]["quit"]["message"] == "exited with code 3 without reporting a result"


def test_cancel_stops_the_step_and_leaves_no_container(tmp_path: Path) -> None:
    nb = write(
        _give(tmp_path) / "slow.ipynb",
        notebook(
            ("step:wait", "import time\ntime.sleep(120)\ndone = True"),
            ("step:next", "print(done)"),
        ),
    )
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(tmp_path / "runs"))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    driver = subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--backend", "docker", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _wait_for_running_step(tmp_path / "runs", "wait")
        assert _containers(run_id), "the step's container should be running"
        cancel = _cellpipe("cancel", run_id, cwd=tmp_path)
        assert cancel.returncode == 0, cancel.stderr
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
    result = json.loads(out)
    assert result["state"] == "cancelled", err
    assert result["steps"]["wait"]["state"] == "cancelled"
    assert result["steps"]["next"]["state"] == "cancelled"
    assert _containers(run_id) == []


def _wait_for_running_step(runs: Path, step: str, within: float = 120) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for events in runs.glob("*/events.jsonl"):
            for line in events.read_text().splitlines():
                ev = json.loads(line)
                if ev.get("step") == step and ev["state"] == "running":
                    return events.parent.name
        time.sleep(0.1)
    raise AssertionError(f"step {step} did not start within {within} s")


def test_files_steps_write_belong_to_the_user_the_containers_run_as(tmp_path: Path) -> None:
    nb = write(
        _give(tmp_path) / "owner.ipynb",
        notebook(
            ("step:make", "open('made-by-step.txt', 'w').write('hi')\nx = [1, 2]"),
            ("step:use", "print(x)"),
        ),
    )
    result, proc = _run(nb)
    assert result["state"] == "succeeded", proc.stderr
    rd = _run_dir(nb, result)
    written = [
        tmp_path / "made-by-step.txt",
        rd / "outputs" / "make.json",
        rd / "logs" / "make.log",
        *(rd / "data" / "make").iterdir(),
    ]
    assert {(p.name, p.stat().st_uid, p.stat().st_gid) for p in written} == {
        (p.name, UID, UID) for p in written
    }


def test_a_timed_out_step_fails_saying_so_and_its_container_is_removed(tmp_path: Path) -> None:
    nb = write(
        _give(tmp_path) / "timeout.ipynb",
        notebook(("step:stuck timeout:3", "import time\ntime.sleep(120)")),
    )
    result, _ = _run(nb)
    assert result["steps"]["stuck"]["message"] == "timed out after 3 s (timeout:3)"
    assert _containers(result["run_id"]) == []


def test_a_folder_the_step_user_cannot_enter_fails_the_step_saying_what_to_set(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # root's, and closed to uid 1000
    nb = write(private / "x.ipynb", notebook(("step:a", "x = 1")))
    result, _ = _run(nb)
    message = result["steps"]["a"]["message"]
    assert f"steps run as user {USER}, who cannot enter {private} (mode 700" in message
    assert "CELLPIPE_DOCKER_USER" in message


def test_docker_unreachable_is_one_line_saying_how_to_start_it(tmp_path: Path) -> None:
    nb = write(_give(tmp_path) / "x.ipynb", notebook(("step:a", "x = 1")))
    env_sock = f"unix://{tmp_path}/no-daemon.sock"
    proc = subprocess.run(
        [sys.executable, "-m", "cellpipe", "run", str(nb), "--backend", "docker"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(
            os.environ,
            DOCKER_HOST=env_sock,
            PYTHONPATH=str(REPO / "kernel") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        ),
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert env_sock in lines[0]
    assert "start it with `sudo systemctl start docker`" in lines[0]


def test_image_build_command_builds_once_and_then_finds_the_images(tmp_path: Path) -> None:
    nb = _packages_notebook(tmp_path)
    first = _cellpipe("image", "build", str(nb), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = _cellpipe("image", "build", str(nb), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    images = json.loads(again.stdout)
    assert sorted(step for i in images for step in i["steps"]) == ["colour", "table"]
    assert [i["built"] for i in images] == [False, False]
    assert all(i["ref"].startswith("cellpipe-step:") for i in images)


def test_image_build_push_without_a_registry_is_refused(tmp_path: Path) -> None:
    nb = write(tmp_path / "x.ipynb", notebook(("step:a", "x = 1")))
    proc = _cellpipe("image", "build", str(nb), "--push", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--push needs --registry" in proc.stderr


def test_limits_and_gpus_become_container_limits_and_device_requests(tmp_path: Path) -> None:
    from cellpipe.backends.docker.backend import container_options
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook
    from cellpipe.rundir.runs import RunDir

    nb = write(
        tmp_path / "res.ipynb",
        notebook(
            ("step:train limit:memory:256Mi limit:cpu:500m gpu:2", "x = 1"),
            metadata={"cellpipe": {"network": {"train": "host"}}},
        ),
    )
    pipeline = compile_notebook(nb)
    rd = RunDir.create(tmp_path / "runs", pipeline, json.loads(nb.read_text()))
    step = pipeline.step("train")
    opts = container_options(rd, step, plan_images(pipeline)["train"], 1, USER)
    assert (opts["mem_limit"], opts["memswap_limit"]) == (256 * 2**20, 256 * 2**20)
    assert opts["nano_cpus"] == 500_000_000
    assert [(d["Count"], d["Capabilities"]) for d in opts["device_requests"]] == [(2, [["gpu"]])]
    assert opts["network_mode"] == "host"
    assert opts["user"] == USER
    assert opts["labels"]["io.cellpipe.run"] == rd.run_id
    assert opts["volumes"][str(tmp_path)]["bind"] == str(tmp_path)


# --- Containers started ahead: a step's prelude runs while its upstream steps do ----------


def _runner(rd: Path, step: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cellpipe.runner", "--run-dir", str(rd), "--step", step, *extra]


def _runner_env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(REPO / "kernel") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def _wait_for_file(path: Path, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {within} s"
        time.sleep(0.05)


def _handoff_run(tmp_path: Path) -> Path:
    from cellpipe.compiling.compiler import compile_notebook
    from cellpipe.rundir.runs import RunDir

    nb = write(
        tmp_path / "handoff.ipynb",
        notebook(
            (
                "imports",
                "import pathlib\nprint('prelude ran')\npathlib.Path('prelude-ran').touch()",
            ),
            ("step:make", "x = 41"),
            ("step:use", "print('x + 1 =', x + 1)"),
        ),
    )
    return RunDir.create(tmp_path / "runs", compile_notebook(nb), json.loads(nb.read_text())).path


def _step_events(rd: Path, step: str) -> list[str]:
    from cellpipe.rundir.runs import RunDir

    return [e.state.value for e in RunDir(rd).events() if e.step == step]


def test_runner_start_when_runs_the_prelude_first_and_the_step_once_told(tmp_path: Path) -> None:
    rd = _handoff_run(tmp_path)
    go = tmp_path / "go-use"
    with (
        open(tmp_path / "use.out", "w") as out,
        subprocess.Popen(
            _runner(rd, "use", "--start-when", str(go)),
            env=_runner_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as waiting,
    ):
        try:
            _wait_for_file(tmp_path / "prelude-ran")
            assert waiting.poll() is None, (tmp_path / "use.out").read_text()
            assert _step_events(rd, "use") == []
            assert not (rd / "logs" / "use.log").exists()
            # Its input is made only now: a step started ahead loads it after the signal.
            make = subprocess.run(_runner(rd, "make"), env=_runner_env(), capture_output=True)
            assert make.returncode == 0, make.stdout + make.stderr
            go.touch()
            assert waiting.wait(timeout=120) == 0, (tmp_path / "use.out").read_text()
        finally:
            if waiting.poll() is None:
                waiting.kill()
    assert _step_events(rd, "use") == ["running", "succeeded"]
    log = (rd / "logs" / "use.log").read_text().splitlines()
    assert log[0].startswith("--- cellpipe: step use, attempt 1,")
    assert log[1:] == ["prelude ran", "x + 1 = 42"]
    cells = json.loads((rd / "outputs" / "use.json").read_text())["cells"]
    printed = [o["text"] for c in cells.values() for o in c["outputs"]]
    assert printed == ["prelude ran\n", "x + 1 = 42\n"]


def test_runner_start_when_exits_75_without_a_trace_when_cancelled(tmp_path: Path) -> None:
    from cellpipe.execution.runner import NOT_STARTED

    rd = _handoff_run(tmp_path)
    (tmp_path / "go-use.cancel").touch()
    waiting = subprocess.run(
        _runner(rd, "use", "--start-when", str(tmp_path / "go-use")),
        env=_runner_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert waiting.returncode == NOT_STARTED == 75, waiting.stdout + waiting.stderr
    assert _step_events(rd, "use") == []
    assert not (rd / "logs" / "use.log").exists()
    assert not (rd / "outputs" / "use.json").exists()


def test_a_downstream_container_starts_and_runs_its_prelude_while_its_upstream_runs(
    tmp_path: Path,
) -> None:
    # Each container's prelude leaves a mark; step `second` finishes only once three
    # containers have run the prelude: `first`'s, its own, and `third`'s. `third` comes
    # after `second`, so its mark can only appear if its container started ahead.
    (tmp_path / "marks").mkdir()
    nb = write(
        _give(tmp_path) / "ahead.ipynb",
        notebook(
            ("imports", "import pathlib, socket, time"),
            ("functions", "pathlib.Path('marks', socket.gethostname()).touch()"),
            ("step:first", "x = 1"),
            (
                "step:second",
                "deadline = time.monotonic() + 120\n"
                "while len(list(pathlib.Path('marks').iterdir())) < 3:\n"
                "    assert time.monotonic() < deadline, 'third never started ahead'\n"
                "    time.sleep(0.05)\n"
                "y = x + 1",
            ),
            ("step:third", "print('y =', y)"),
        ),
    )
    result, proc = _run(nb)
    assert result["state"] == "succeeded", proc.stderr + json.dumps(result["steps"])
    rd = _run_dir(nb, result)
    notes = (rd / "logs" / "_run.log").read_text()
    assert "started step second's container ahead; it waits for first" in notes
    assert "started step third's container ahead; it waits for second" in notes
    assert len(list((tmp_path / "marks").iterdir())) == 3  # one container per step, no more
    log = (rd / "logs" / "third.log").read_text()
    assert log.count("--- cellpipe: step third, attempt 1") == 1
    assert "y = 2" in log
    assert not (rd / ".go").exists()
    assert _containers(result["run_id"]) == []


def test_a_container_started_ahead_for_a_step_skipped_after_a_failure_is_removed(
    tmp_path: Path,
) -> None:
    nb = write(
        _give(tmp_path) / "fails.ipynb",
        notebook(
            ("step:load", "x = 1"),
            ("step:left", "l = x\nraise ValueError('left fails')"),
            ("step:right", "r = x"),
            ("step:join", "print(l, r)"),
        ),
    )
    result, proc = _run(nb, "--jobs", "2")
    assert result["steps"]["left"]["state"] == "failed", proc.stderr
    assert result["steps"]["join"]["state"] == "skipped"
    notes = (_run_dir(nb, result) / "logs" / "_run.log").read_text()
    assert "started step join's container ahead; it waits for left, right" in notes
    assert "removed step join's container started ahead: upstream step left failed" in notes
    assert not (_run_dir(nb, result) / "logs" / "join.log").exists()
    assert _containers(result["run_id"]) == []


def test_a_step_container_cannot_write_other_runs_nor_other_steps_data(
    tmp_path: Path,
) -> None:
    # The runs root lies in the notebook folder (mounted read-write): a step able to write
    # it could plant a cache entry or another step's pickle for the next run to load.
    probe = (
        "import glob, os\n"
        "run = glob.glob('runs/2*')[0]\n"
        "def can_write(path):\n"
        "    try:\n"
        "        with open(path, 'a') as f:\n"
        "            f.write('')\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "attempts = {\n"
        "    'runs root': can_write('runs/planted.json'),\n"
        "    'other step data': can_write(run + '/data/make/x.pkl'),\n"
        "    'notebook folder': can_write('ok.txt'),\n"
        "    'own data': can_write(run + '/data/probe/mine.txt'),\n"
        "}\n"
        "print('ATTEMPTS', sorted(attempts.items()))"
    )
    nb = write(
        _give(tmp_path) / "confine.ipynb",
        notebook(("step:make", "x = [1, 2]"), ("step:probe", "print(x)\n" + probe)),
    )
    result, proc = _run(nb)
    assert result["state"] == "succeeded", proc.stderr + proc.stdout
    log = (_run_dir(nb, result) / "logs" / "probe.log").read_text()
    (line,) = [ln for ln in log.splitlines() if ln.startswith("ATTEMPTS")]
    assert line == (
        "ATTEMPTS [('notebook folder', True), ('other step data', False), "
        "('own data', True), ('runs root', False)]"
    )
    assert not (tmp_path / "runs" / "planted.json").exists()


def test_killing_the_driver_outright_removes_the_runs_containers(tmp_path: Path) -> None:
    from cellpipe.driving.driver import prepare_run, start_detached

    nb = write(
        _give(tmp_path) / "long.ipynb",
        notebook(("step:hold", "import time\nprint('holding', flush=True)\ntime.sleep(300)")),
    )
    rd = prepare_run(tmp_path / "runs", nb, backend="docker")
    driver = start_detached(rd)
    try:
        deadline = time.monotonic() + 120
        while "holding" not in _log(rd.path, "hold") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _containers(rd.run_id), "the step's container never started"
        driver.kill()  # kill -9: the driver cannot remove anything itself
        driver.wait()
        deadline = time.monotonic() + 30
        while _containers(rd.run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _containers(rd.run_id) == []
        assert rd.status().state.value == "failed"
    finally:
        subprocess.run(
            ["docker", "rm", "-f", *_containers(rd.run_id)], capture_output=True, check=False
        )


def _log(run_dir: Path, step: str) -> str:
    try:
        return (run_dir / "logs" / f"{step}.log").read_text()
    except FileNotFoundError:
        return ""
