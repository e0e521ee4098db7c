"""The local backend: parallel steps, skip-unchanged, retries, timeouts, cancel, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cellpipe
import pytest
from cellpipe.rundir.runs import RunDir, list_runs
from nbbuild import notebook, write


def run_json(cli, *args: str) -> dict:
    proc = cli("run", *args, "--json")
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def events(runs_root: Path, run_id: str) -> list[dict]:
    text = (runs_root / run_id / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def states(status: dict) -> dict[str, str]:
    return {name: s["state"] for name, s in status["steps"].items()}


def test_independent_branches_run_at_the_same_time(cli, tmp_path: Path, runs_root: Path) -> None:
    write(
        tmp_path / "p.ipynb",
        notebook(
            ("imports", "import time"),
            ("step:left", "time.sleep(1.0)\na = 1"),
            ("step:right", "time.sleep(1.0)\nb = 2"),
            ("step:join", "print(a + b)"),
        ),
    )
    status = run_json(cli, "p.ipynb", "--jobs", "2")
    assert status["state"] == "succeeded"
    evs = events(runs_root, status["run_id"])
    span = {}
    for e in evs:
        if e.get("step") in ("left", "right") and e["state"] in ("running", "succeeded"):
            span.setdefault(e["step"], {})[e["state"]] = e["ts"]
    assert span["left"]["running"] < span["right"]["succeeded"]
    assert span["right"]["running"] < span["left"]["succeeded"], "the branches did not overlap"


def test_jobs_1_runs_one_step_at_a_time(cli, tmp_path: Path, runs_root: Path) -> None:
    write(tmp_path / "p.ipynb", notebook(("step:a", "a = 1"), ("step:b", "b = 2")))
    status = run_json(cli, "p.ipynb", "--jobs", "1")
    evs = [e for e in events(runs_root, status["run_id"]) if e.get("step")]
    order = [(e["step"], e["state"]) for e in evs if e["state"] in ("running", "succeeded")]
    assert order == [("a", "running"), ("a", "succeeded"), ("b", "running"), ("b", "succeeded")]


# -- skip unchanged -----------------------------------------------------------------------


def _three_steps(tmp_path: Path, b_source: str = "b = a + 1", param: str = "k = 1") -> Path:
    return write(
        tmp_path / "c.ipynb",
        notebook(
            ("parameters", param),
            ("step:a", "a = k * 10"),
            ("step:b", b_source),
            ("step:c", "print(b)"),
        ),
    )


def test_a_rerun_with_nothing_changed_is_all_cached(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    first = run_json(cli, "c.ipynb")
    second = run_json(cli, "c.ipynb")
    assert states(first) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert states(second) == {"a": "cached", "b": "cached", "c": "cached"}
    assert second["steps"]["a"]["message"] == f"unchanged since run {first['run_id']}"


def test_a_comment_or_whitespace_edit_keeps_the_cache(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    _three_steps(tmp_path, b_source="# add one\nb  =  a + 1   # more")
    assert set(states(run_json(cli, "c.ipynb")).values()) == {"cached"}


def test_changing_a_step_reruns_it_and_only_its_descendants(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    _three_steps(tmp_path, b_source="b = a + 2")
    assert states(run_json(cli, "c.ipynb")) == {"a": "cached", "b": "succeeded", "c": "succeeded"}


def test_a_changed_upstream_value_reruns_downstream(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    status = run_json(cli, "c.ipynb", "-p", "k=2")
    assert states(status) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}


def test_an_unchanged_value_from_a_rerun_step_keeps_downstream_cached(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    _three_steps(tmp_path, b_source="b = (a + 1) * 1")  # new code, same value
    assert states(run_json(cli, "c.ipynb")) == {"a": "cached", "b": "succeeded", "c": "cached"}


def test_no_cache_runs_everything(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    assert set(states(run_json(cli, "c.ipynb", "--no-cache")).values()) == {"succeeded"}


def test_a_cache_false_tag_always_runs_that_step(cli, tmp_path: Path) -> None:
    write(tmp_path / "c.ipynb", notebook(("step:a cache:false", "a = 1"), ("step:b", "print(a)")))
    run_json(cli, "c.ipynb")
    assert states(run_json(cli, "c.ipynb")) == {"a": "succeeded", "b": "cached"}


def test_cached_steps_keep_their_outputs_in_the_executed_notebook(cli, tmp_path: Path) -> None:
    _three_steps(tmp_path)
    run_json(cli, "c.ipynb")
    cli("run", "c.ipynb", "--output", "out.ipynb", check=True)
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    assert nb["cells"][3]["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "11\n"}
    ]


# -- retries, timeouts, kills ----------------------------------------------------------------


def test_a_flaky_step_is_retried_until_it_succeeds(cli, tmp_path: Path) -> None:
    (tmp_path / "count").write_text("0")
    write(
        tmp_path / "r.ipynb",
        notebook(
            (
                "step:flaky retry:2",
                "n = int(open('count').read()) + 1\nopen('count', 'w').write(str(n))\n"
                "if n < 3:\n    raise ConnectionError(f'attempt {n} failed')",
            ),
        ),
    )
    status = run_json(cli, "r.ipynb")
    assert status["state"] == "succeeded"
    assert status["steps"]["flaky"]["attempts"] == 3


def test_retries_give_up_after_the_limit(cli, tmp_path: Path, runs_root: Path) -> None:
    write(tmp_path / "r.ipynb", notebook(("step:bad retry:1", "raise ConnectionError('down')")))
    status = run_json(cli, "r.ipynb")
    assert status["steps"]["bad"]["state"] == "failed"
    assert status["steps"]["bad"]["attempts"] == 2
    pending = [
        e for e in events(runs_root, status["run_id"]) if e["state"] == "pending" and e["attempt"]
    ]
    assert "retry 2 of 2 in" in pending[0]["message"]


def test_a_step_over_its_timeout_fails_saying_so(cli, tmp_path: Path) -> None:
    write(tmp_path / "t.ipynb", notebook(("step:slow timeout:1", "import time\ntime.sleep(60)")))
    t0 = time.monotonic()
    status = run_json(cli, "t.ipynb")
    assert time.monotonic() - t0 < 30
    assert status["steps"]["slow"]["state"] == "failed"
    assert status["steps"]["slow"]["message"] == "timed out after 1 s (timeout:1)"


def test_a_step_killed_with_sigkill_fails_clearly_and_other_branches_finish(
    cli, tmp_path: Path
) -> None:
    write(
        tmp_path / "k.ipynb",
        notebook(
            ("imports", "import os, signal, time"),
            ("step:doomed", "os.kill(os.getpid(), signal.SIGKILL)"),
            ("step:fine", "time.sleep(0.5)\nok = True"),
            ("step:after_fine", "print(ok)"),
            ("step:after_doomed prev:doomed", "print('never')"),
        ),
    )
    status = run_json(cli, "k.ipynb")
    assert status["state"] == "failed"
    assert states(status) == {
        "doomed": "failed",
        "fine": "succeeded",
        "after_fine": "succeeded",
        "after_doomed": "skipped",
    }
    assert status["steps"]["doomed"]["message"] == (
        "killed by SIGKILL (out of memory, or killed by someone)"
    )


# -- cancel, resume, a dead driver ------------------------------------------------------------


def _start(
    tmp_path: Path, runs_root: Path, nb: str, *, new_session: bool = False
) -> subprocess.Popen[str]:
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(runs_root))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "kernel")
    return subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "run", nb, "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def _wait_for_step(runs_root: Path, step: str, state: str = "running") -> RunDir:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for rd in list_runs(runs_root):
            st = rd.status().steps.get(step)
            if st and st.state.value == state:
                return rd
        time.sleep(0.05)
    raise AssertionError(f"step {step} never became {state}")


def _slow(tmp_path: Path) -> None:
    write(
        tmp_path / "s.ipynb",
        notebook(
            ("imports", "import time, subprocess"),
            ("step:first", "x = 1"),
            ("step:sleepy", "child = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)"),
            ("step:last", "print(x)"),
        ),
    )


def test_cancel_stops_the_running_step_and_its_children(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    _slow(tmp_path)
    proc = _start(tmp_path, runs_root, "s.ipynb")
    rd = _wait_for_step(runs_root, "sleepy")
    time.sleep(0.3)  # let the step start its child process
    pid = next(
        e.extra["pid"] for e in rd.events() if e.step == "sleepy" and e.state.value == "running"
    )
    out = cli("cancel", rd.run_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"run {rd.run_id} cancelled"
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    status = rd.status()
    assert status.state.value == "cancelled"
    assert status.steps["sleepy"].state.value == "cancelled"
    time.sleep(0.5)
    assert _live_processes_in_group(pid) == [], "the step's process group, `sleep 300` included"


def test_ctrl_c_in_the_terminal_cancels_the_run_at_once(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    # A terminal sends SIGINT to the whole foreground process group: the command and the
    # warm process it started, not the steps (each leads its own group).
    _slow(tmp_path)
    proc = _start(tmp_path, runs_root, "s.ipynb", new_session=True)
    rd = _wait_for_step(runs_root, "sleepy")
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    status = rd.status()
    assert status.state.value == "cancelled"
    sleepy = status.steps["sleepy"]
    assert (sleepy.state.value, sleepy.message) == ("cancelled", "run cancelled")
    cancelled_at = next(
        e.ts for e in rd.events() if e.step == "sleepy" and e.state.value == "cancelled"
    )
    assert cancelled_at - sent < 1.0
    assert "KeyboardInterrupt" not in (rd.path / "logs" / "_prelude.log").read_text()


def _live_processes_in_group(pgid: int) -> list[int]:
    """Processes of a group that still run (zombies do not count: this sandbox's init does
    not reap orphans)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry.name))
    return live


def test_a_cancelled_run_cannot_be_cancelled_again(cli, tmp_path: Path, runs_root: Path) -> None:
    write(tmp_path / "q.ipynb", notebook(("step:a", "a = 1")))
    status = run_json(cli, "q.ipynb")
    proc = cli("cancel", status["run_id"])
    assert proc.returncode == 2
    assert "already ended (succeeded)" in proc.stderr


def test_resume_after_the_user_fixed_the_failing_cell(cli, tmp_path: Path) -> None:
    cells = [("step:a", "a = 41"), ("step:b", "b = a + int('one')"), ("step:c", "print(b)")]
    write(tmp_path / "f.ipynb", notebook(*cells))
    failed = run_json(cli, "f.ipynb")
    assert states(failed) == {"a": "succeeded", "b": "failed", "c": "skipped"}
    write(tmp_path / "f.ipynb", notebook(cells[0], ("step:b", "b = a + 1"), cells[2]))
    resumed = run_json(cli, "--resume", failed["run_id"])
    assert resumed["run_id"] == failed["run_id"]
    assert states(resumed) == {"a": "cached", "b": "succeeded", "c": "succeeded"}
    assert resumed["steps"]["a"]["message"] == "kept from before the resume"


def test_a_killed_cellpipe_run_shows_as_failed_and_resume_completes_it(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "d.ipynb",
        notebook(
            ("imports", "import time"),
            ("step:first", "x = 1"),
            ("step:second", "time.sleep(2)\ny = x + 1"),
            ("step:third", "print(y)"),
        ),
    )
    proc = _start(tmp_path, runs_root, "d.ipynb")
    rd = _wait_for_step(runs_root, "second")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    time.sleep(0.2)
    shown = json.loads(cli("status", rd.run_id, "--json").stdout)
    assert shown["state"] == "failed"
    assert f"cellpipe run --resume {rd.run_id}" in shown["message"]
    # wait for the orphaned step to end on its own, then resume
    deadline = time.monotonic() + 20
    while rd.status().steps["second"].state.value == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    resumed = run_json(cli, "--resume", rd.run_id)
    assert resumed["state"] == "succeeded"
    assert resumed["steps"]["first"]["state"] == "cached"
    assert resumed["steps"]["third"]["state"] == "succeeded"


# -- outputs, logs, limits ------------------------------------------------------------------------


def test_rich_outputs_are_captured_against_the_right_cell_ids(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "o.ipynb",
        notebook(
            ("imports", "import pandas as pd\nimport matplotlib.pyplot as plt"),
            ("step:table", "pd.DataFrame({'a': [1]})"),
            "plt.plot([1, 2])\nplt.show()",
            ("step:boom", "print('before')\n1 / 0"),
        ),
    )
    status = run_json(cli, "o.ipynb")
    rd = RunDir(runs_root / status["run_id"])
    table = rd.read_outputs("table")["cells"]
    (frame,) = table["c2"]["outputs"]
    assert frame["output_type"] == "execute_result" and "text/html" in frame["data"]
    (png,) = table["c3"]["outputs"]
    assert png["output_type"] == "display_data" and "image/png" in png["data"]
    boom = rd.read_outputs("boom")["cells"]["c4"]
    assert boom["status"] == "error"
    assert [o["output_type"] for o in boom["outputs"]] == ["stream", "error"]
    assert boom["outputs"][1]["ename"] == "ZeroDivisionError"
    assert status["steps"]["boom"]["message"] == "cell 4: ZeroDivisionError: division by zero"


def test_logs_show_a_steps_output(cli, tmp_path: Path) -> None:
    write(tmp_path / "l.ipynb", notebook(("step:talk", "print('hello from talk')")))
    status = run_json(cli, "l.ipynb")
    proc = cli("logs", status["run_id"], "talk")
    assert proc.returncode == 0 and "hello from talk" in proc.stdout


def test_a_memory_limit_stops_a_step_that_allocates_past_it(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "m.ipynb",
        notebook(("step:greedy limit:memory:64Mi", "block = bytearray(512 * 2**20)")),
    )
    status = run_json(cli, "m.ipynb")
    assert status["steps"]["greedy"]["state"] == "failed"
    assert status["steps"]["greedy"]["message"] == "cell 1: MemoryError: "
    log = (runs_root / status["run_id"] / "logs" / "greedy.log").read_text()
    assert "limit memory=64Mi: enforced with RLIMIT_AS" in log


def test_a_cpu_limit_pins_the_step_to_that_many_cores(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "cpu.ipynb",
        notebook(("step:pinned limit:cpu:1", "import os\nprint(len(os.sched_getaffinity(0)))")),
    )
    cli("run", "cpu.ipynb", "--output", "out.ipynb", check=True)
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    assert nb["cells"][0]["outputs"][0]["text"] == "1\n"


def test_steps_fall_back_to_fresh_processes_when_the_prelude_starts_threads(
    cli, tmp_path: Path, runs_root: Path
) -> None:
    write(
        tmp_path / "th.ipynb",
        notebook(
            (
                "imports",
                "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
            ),
            ("step:a", "a = 1"),
        ),
    )
    status = run_json(cli, "th.ipynb")
    assert status["state"] == "succeeded"
    note = (runs_root / status["run_id"] / "logs" / "_run.log").read_text()
    assert "fresh process per step: cannot fork safely: the prelude started threads" in note


def test_a_changed_data_file_reruns_the_step_that_reads_it(cli, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("v\n1\n2\n")
    write(
        tmp_path / "d.ipynb",
        notebook(
            ("imports", "import pandas as pd"),
            ("step:load", "total = int(pd.read_csv('data.csv').v.sum())"),
            ("step:show", "print(total)"),
        ),
    )
    run_json(cli, "d.ipynb")
    assert set(states(run_json(cli, "d.ipynb")).values()) == {"cached"}
    (tmp_path / "data.csv").write_text("v\n10\n20\n")
    assert states(run_json(cli, "d.ipynb")) == {"load": "succeeded", "show": "succeeded"}


@pytest.mark.parametrize(
    "imports", ["import numpy as np", "import numpy as np\nimport numpy.random"]
)
def test_forked_steps_draw_different_random_numbers_as_fresh_processes_would(
    cli, tmp_path: Path, runs_root: Path, imports: str
) -> None:
    # Through eval the analysis cannot see the generator used, so the two steps are
    # independent: both are forked from the same warm process.
    write(
        tmp_path / "r.ipynb",
        notebook(
            ("imports", imports),
            ("step:a", "a = eval('float(np.random.rand())')"),
            ("step:b", "b = eval('float(np.random.rand())')"),
            ("step:both", "print(a, b)"),
        ),
    )
    status = run_json(cli, "r.ipynb", "--no-cache")
    a = cellpipe.load(status["run_id"], "a", "a", runs_root=runs_root)
    b = cellpipe.load(status["run_id"], "b", "b", runs_root=runs_root)
    assert a != b


def test_steps_get_the_signal_handlers_of_a_fresh_python(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "sig.ipynb",
        notebook(
            ("imports", "import signal"),
            (
                "step:a",
                "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,\n"
                "      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)",
            ),
        ),
    )
    status = run_json(cli, "sig.ipynb", "--no-cache")
    assert cli("logs", status["run_id"], "a").stdout.splitlines()[-1] == "True True"
