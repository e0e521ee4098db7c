"""`foreach` cells: a loop's iterations run as tasks on parallel warm workers, and the
notebook still computes what its top-to-bottom run computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cellpipe.compiling.compiler import compile_notebook
from cellpipe.core.errors import CompileError
from nbbuild import notebook, write
from oracle import differences, run_pipeline, run_top_to_bottom


def _refusal(tmp_path: Path, loop: str, *before: tuple[str, str]) -> str:
    """The message compile gives for a foreach cell holding ``loop`` (cell 3, after a
    setup step)."""
    nb = notebook(
        ("imports", "import random\nimport numpy as np"),
        ("step:setup", "xs = [1, 2, 3]\nacc = {}\nparts = []\nstate = 0\nclass O: pass\nobj = O()"),
        *before,
        ("step:loop foreach", loop),
    )
    with pytest.raises(CompileError) as info:
        compile_notebook(write(tmp_path / "r.ipynb", nb))
    [d] = info.value.diagnostics
    assert d.code == "foreach-dependent"
    assert d.cell == 3 + len(before)
    return d.message


def run_json(cli, *args: str) -> dict:
    proc = cli("run", *args, "--json")
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


# -- what compile refuses ---------------------------------------------------------------------


def test_a_running_total_is_refused_it_reads_the_previous_iteration(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in xs:\n    state += x")
    assert message == (
        "foreach: line 2: `state += ...` reads `state` as the previous iteration left it: the "
        "iterations depend on each other. Collect the values in an accumulator "
        "(`parts.append(...)`) and combine them after the loop"
    )


def test_reading_a_name_before_the_iteration_assigns_it_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in xs:\n    y = x + prev\n    prev = x")
    assert message == (
        "foreach: line 2: reads `prev` before this iteration assigns it, so it sees the "
        "value the previous iteration left: the iterations depend on each other"
    )


def test_reading_an_accumulator_inside_the_loop_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in xs:\n    acc[x] = x\n    print(len(acc))")
    assert message == (
        "foreach: line 3: reads `acc`, which the iterations add to: an iteration would see "
        "what earlier ones added. Read it after the loop"
    )


def test_changing_a_shared_object_other_than_by_accumulating_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in xs:\n    obj.last = x")
    assert message.startswith("foreach: line 2: changes `obj.last`, part of `obj`, which every")


def test_break_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in xs:\n    if x > state:\n        break")
    assert message == (
        "foreach: line 3: `break` ends the loop at an iteration, so whether the later "
        "iterations run depends on the earlier ones; they cannot run apart"
    )


@pytest.mark.parametrize("call", ["random.random()", "np.random.rand()", "np.random.seed(x)"])
def test_the_global_random_generator_in_the_body_is_refused(tmp_path: Path, call: str) -> None:
    message = _refusal(tmp_path, f"for x in xs:\n    v = {call}\n    parts.append(v)")
    shown = call.split("(")[0]
    assert message.startswith(
        f"foreach: line 2: `{shown}(...)` uses the global random generator, whose state "
        "passes from one iteration to the next"
    )


def test_a_generator_of_ones_own_is_allowed(tmp_path: Path) -> None:
    nb = notebook(
        ("imports", "import numpy as np"),
        ("step:setup", "xs = [1, 2]\nparts = []"),
        (
            "step:loop foreach",
            "for x in xs:\n    rng = np.random.default_rng(x)\n    parts.append(rng.random())",
        ),
    )
    assert [s.name for s in compile_notebook(write(tmp_path / "ok.ipynb", nb)).steps][-1] == "loop"


def test_a_generator_as_the_iterable_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "for x in (v * 2 for v in xs):\n    parts.append(x)")
    assert message.startswith("foreach: line 1: the iterable is a generator:")


def test_a_foreach_cell_holds_only_its_loop(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "ys = []\nfor x in xs:\n    ys.append(x)")
    assert message == (
        "foreach: line 1: a `foreach` cell holds one `for` loop and nothing else (move the "
        "other statements to a cell of their own)"
    )


def test_continue_depending_on_the_item_only_is_allowed(tmp_path: Path) -> None:
    nb = notebook(
        ("step:setup", "xs = [1, 2, 3]\nparts = []"),
        (
            "step:loop foreach",
            "for x in xs:\n    if x == 2:\n        continue\n    parts.append(x)",
        ),
    )
    assert compile_notebook(write(tmp_path / "c.ipynb", nb)).step("loop").outputs == ()


# -- running ------------------------------------------------------------------------------------

SWEEP = notebook(
    ("imports", "import math\nfrom IPython.display import display, Markdown"),
    ("parameters", "alphas = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]"),
    ("step:setup", "results = {}\nscores = []\nbest = {}\nseen = set()"),
    (
        "step:sweep foreach",
        "for i, alpha in enumerate(alphas):\n"
        "    # a value per item, printed and displayed\n"
        "    score = round(math.log(alpha + 1) * 100, 2)\n"
        "    if i == 3:\n"
        "        continue\n"
        "    results[alpha] = score\n"
        "    scores.append(score)\n"
        "    best.update({f'a{i}': score})\n"
        "    seen.add(int(score) % 7)\n"
        "    print(f'alpha={alpha} score={score}')\n"
        "    display(Markdown(f'**{alpha}**'))",
    ),
    (
        "step:report",
        "print(results)\nprint(scores)\nprint(best)\nprint(sorted(seen))\nprint(i, alpha, score)",
    ),
)


@pytest.mark.slow
def test_a_foreach_run_equals_the_top_to_bottom_run(tmp_path: Path) -> None:
    (tmp_path / "tb").mkdir()
    (tmp_path / "pipe").mkdir()
    write(tmp_path / "tb" / "sweep.ipynb", SWEEP)
    write(tmp_path / "pipe" / "sweep.ipynb", SWEEP)
    expected = run_top_to_bottom(tmp_path / "tb" / "sweep.ipynb")
    executed, proc = run_pipeline(
        tmp_path / "pipe" / "sweep.ipynb", tmp_path, extra=("--jobs", "3")
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert differences(expected, executed) == []
    report = executed.cells[4].outputs[0]["text"]
    assert report.splitlines()[-1] == "6 3.5 150.41"  # the last iteration's names


def test_iterations_run_on_warm_workers_not_in_the_step_process(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "w.ipynb",
        notebook(
            ("imports", "import os, time"),
            ("step:setup", "xs = list(range(8))\npids = {}\nhere = os.getpid()"),
            ("step:loop foreach", "for x in xs:\n    time.sleep(0.05)\n    pids[x] = os.getpid()"),
            ("step:show", "print(len(set(pids.values())), here in pids.values())"),
        ),
    )
    cli("run", "w.ipynb", "--jobs", "2", "--output", "out.ipynb", check=True)
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert out["cells"][3]["outputs"][0]["text"] == "2 False\n"  # two workers, both forks


def test_a_failed_iteration_fails_the_step_naming_the_item(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "f.ipynb",
        notebook(
            ("step:setup", "xs = [4, 2, 0, 1]\nq = []"),
            ("step:loop foreach", "for x in xs:\n    q.append(8 // x)"),
            ("step:after", "print(q)"),
        ),
    )
    status = run_json(cli, "f.ipynb")
    loop = status["steps"]["loop"]
    assert loop["state"] == "failed"
    assert loop["message"] == (
        "cell 2: ZeroDivisionError: integer division or modulo by zero (in iteration 3 of 4, x = 0)"
    )
    assert status["steps"]["after"]["state"] == "skipped"


def test_the_run_json_carries_the_iteration_progress(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "p.ipynb",
        notebook(
            ("step:setup", "xs = list(range(20))\nr = {}"),
            ("step:loop foreach", "for x in xs:\n    r[x] = x * x"),
        ),
    )
    status = run_json(cli, "p.ipynb")
    assert status["steps"]["loop"]["iterations"] == {"done": 20, "total": 20}
    assert "iterations" not in status["steps"]["setup"]


def _counting(tmp_path: Path, items: str) -> Path:
    """A foreach whose every iteration leaves a mark, so a test can count what ran; the
    item 3 fails while a file `broken` exists."""
    return write(
        tmp_path / "n.ipynb",
        notebook(
            ("imports", "import os"),
            ("step:setup", f"xs = {items}\nsq = {{}}"),
            (
                "step:loop foreach",
                "for x in xs:\n"
                "    open(f'ran-{x}', 'a').write('.')\n"
                "    if x == 3 and os.path.exists('broken'):\n"
                "        raise RuntimeError('broken')\n"
                "    sq[x] = x * x",
            ),
            ("step:show", "print(sq)"),
        ),
    )


def _runs(tmp_path: Path) -> dict[int, int]:
    return {int(p.name[4:]): len(p.read_text()) for p in tmp_path.glob("ran-*")}


def test_resume_reruns_only_the_iterations_that_did_not_succeed(cli, tmp_path: Path) -> None:
    _counting(tmp_path, "[1, 2, 3, 4, 5]")
    (tmp_path / "broken").write_text("")
    failed = run_json(cli, "n.ipynb", "--jobs", "1")
    assert failed["steps"]["loop"]["state"] == "failed"
    assert "(in iteration 3 of 5, x = 3)" in failed["steps"]["loop"]["message"]
    before = _runs(tmp_path)
    assert before == {1: 1, 2: 1, 3: 1}  # one worker: the loop stopped at the failure
    (tmp_path / "broken").unlink()
    resumed = run_json(cli, "--resume", failed["run_id"])
    assert resumed["state"] == "succeeded"
    assert _runs(tmp_path) == {1: 1, 2: 1, 3: 2, 4: 1, 5: 1}


def test_a_list_that_grew_by_one_item_runs_one_iteration(cli, tmp_path: Path) -> None:
    _counting(tmp_path, "[1, 2, 3, 4]")
    assert run_json(cli, "n.ipynb")["state"] == "succeeded"
    _counting(tmp_path, "[1, 2, 3, 4, 5]")
    cli("run", "n.ipynb", "--output", "out.ipynb", check=True)
    assert _runs(tmp_path) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert out["cells"][3]["outputs"][0]["text"] == "{1: 1, 2: 4, 3: 9, 4: 16, 5: 25}\n"


def test_no_cache_runs_every_iteration_again(cli, tmp_path: Path) -> None:
    _counting(tmp_path, "[1, 2]")
    run_json(cli, "n.ipynb")
    run_json(cli, "n.ipynb", "--no-cache")
    assert _runs(tmp_path) == {1: 2, 2: 2}


def test_a_retried_step_reruns_only_the_failed_iteration(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "t.ipynb",
        notebook(
            ("imports", "import os"),
            ("step:setup", "xs = [1, 2, 3]\nsq = {}"),
            (
                "step:loop foreach retry:1",
                "for x in xs:\n"
                "    open(f'ran-{x}', 'a').write('.')\n"
                "    if x == 2 and not os.path.exists('tried'):\n"
                "        open('tried', 'w').close()\n"
                "        raise RuntimeError('flaky')\n"
                "    sq[x] = x",
            ),
        ),
    )
    status = run_json(cli, "t.ipynb", "--jobs", "1")
    assert status["steps"]["loop"]["state"] == "succeeded"
    assert status["steps"]["loop"]["attempts"] == 2
    assert _runs(tmp_path) == {1: 1, 2: 2, 3: 1}


# -- Docker ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_foreach_under_docker_equals_the_top_to_bottom_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's container runs the iterations on its warm workers (parallel processes in
    the step's container, not a container each: see docs/design.md)."""
    from test_docker_backend import USER, _give

    monkeypatch.setenv("CELLPIPE_DOCKER_USER", USER)
    (tmp_path / "tb").mkdir()
    (tmp_path / "pipe").mkdir()
    write(tmp_path / "tb" / "sweep.ipynb", SWEEP)
    write(tmp_path / "pipe" / "sweep.ipynb", SWEEP)
    _give(tmp_path)
    expected = run_top_to_bottom(tmp_path / "tb" / "sweep.ipynb")
    executed, proc = run_pipeline(
        tmp_path / "pipe" / "sweep.ipynb", tmp_path, extra=("--backend", "docker", "--jobs", "2")
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert differences(expected, executed) == []


# -- Argo: a pod per iteration ------------------------------------------------------------------


def test_argo_fans_a_foreach_step_out_with_param_a_pod_per_iteration(tmp_path: Path) -> None:
    from cellpipe.backends.argo.manifest import ArgoSettings, build_workflow
    from test_argo_manifest import IMAGES, manifest_problems

    pipeline = compile_notebook(write(tmp_path / "sweep.ipynb", SWEEP))
    images = {s.name: IMAGES for s in pipeline.steps}
    doc = build_workflow(pipeline, ArgoSettings.from_notebook(pipeline.settings), images=images)
    assert manifest_problems(doc) == []
    [dag] = [t for t in doc["spec"]["templates"] if "dag" in t]
    tasks = {t["name"]: t for t in dag["dag"]["tasks"]}
    assert [t["name"] for t in dag["dag"]["tasks"]] == [
        "setup",
        "sweep-items",
        "sweep-iteration",
        "sweep",
        "report",
    ]
    assert tasks["sweep-items"]["dependencies"] == ["setup"]
    assert tasks["sweep-iteration"]["withParam"] == "{{tasks.sweep-items.outputs.result}}"
    assert tasks["sweep"]["dependencies"] == ["sweep-iteration"]
    by_name = {t["name"]: t for t in doc["spec"]["templates"]}
    assert by_name["sweep-iteration"]["container"]["args"][-2:] == [
        "--foreach-iteration",
        "{{inputs.parameters.index}}",
    ]
    assert by_name["sweep-items"]["container"]["args"][-1] == "--foreach-items"


def test_argo_with_parallelism_bounds_the_iteration_pods(tmp_path: Path) -> None:
    from cellpipe.backends.argo.manifest import ArgoSettings, build_workflow
    from test_argo_manifest import IMAGES, manifest_problems

    nb = json.loads(json.dumps(SWEEP))
    nb["metadata"]["cellpipe"] = {"argo": {"parallelism": 3}}
    pipeline = compile_notebook(write(tmp_path / "sweep.ipynb", nb))
    images = {s.name: IMAGES for s in pipeline.steps}
    doc = build_workflow(pipeline, ArgoSettings.from_notebook(pipeline.settings), images=images)
    assert manifest_problems(doc) == []
    assert doc["spec"]["parallelism"] == 3


def test_the_pods_of_a_fan_out_leave_each_iteration_for_the_step_to_merge(tmp_path: Path) -> None:
    """What the Argo fan-out's pods run, run here one after another in the run directory
    (whose data the workflow's volume shares between pods)."""
    from cellpipe.driving.driver import prepare_run

    write(tmp_path / "sweep.ipynb", SWEEP)
    rd = prepare_run(tmp_path / "runs", tmp_path / "sweep.ipynb")

    def runner(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "cellpipe.runner", "--run-dir", str(rd.path), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={
                **os.environ,
                "PYTHONPATH": str(Path(__file__).parents[1] / "kernel"),
            },
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def items() -> list[int]:
        listed = json.loads(runner("--step", "sweep", "--foreach-items"))
        assert {i["total"] for i in listed} == {7}
        return [i["index"] for i in listed]

    runner("--step", "setup")
    assert items() == [0, 1, 2, 3, 4, 5, 6]
    for i in (0, 2, 5, 6):
        assert runner("--step", "sweep", "--foreach-iteration", str(i)) == ""
    assert items() == [1, 3, 4]
    for i in (1, 3, 4):
        runner("--step", "sweep", "--foreach-iteration", str(i))
    runner("--step", "sweep")
    log = rd.log_path("sweep").read_text()
    assert "7 iterations, 0 run, 0 from the cache, 7 in pods of their own" in log
    assert "alpha=3.5 score=150.41" in log


def test_an_iteration_that_failed_in_its_pod_fails_the_step_once_and_a_retry_reruns_it(
    tmp_path: Path,
) -> None:
    """The pod of the failed iteration leaves the failure: the step's first attempt reports
    it (naming the item) without running it again, as a local first attempt would; the
    retry runs that iteration, and only it, again."""
    from cellpipe.driving.driver import prepare_run

    _counting(tmp_path, "[1, 2, 3, 4]")
    (tmp_path / "broken").write_text("")
    rd = prepare_run(tmp_path / "runs", tmp_path / "n.ipynb")

    def runner(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cellpipe.runner", "--run-dir", str(rd.path), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "kernel")},
        )

    assert runner("--step", "setup").returncode == 0
    for i in range(4):
        assert runner("--step", "loop", "--foreach-iteration", str(i)).returncode == 0
    assert _runs(tmp_path) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert runner("--step", "loop").returncode == 1
    loop = rd.status().steps["loop"]
    assert loop.message == ("cell 3: RuntimeError: broken (in iteration 3 of 4, x = 3)")
    assert _runs(tmp_path) == {1: 1, 2: 1, 3: 1, 4: 1}  # reported, not run again
    (tmp_path / "broken").unlink()
    assert runner("--step", "loop", "--attempt", "2").returncode == 0
    assert _runs(tmp_path) == {1: 1, 2: 1, 3: 2, 4: 1}
    log = rd.log_path("loop").read_text()
    assert "4 iterations, 1 run, 0 from the cache, 3 in pods of their own" in log


def test_cancel_ends_the_workers_too(cli, tmp_path: Path, runs_root: Path) -> None:
    """Workers have sessions of their own (for their CPU share), so the step's group kill
    does not reach them: they die with the step's process instead."""
    from test_local_backend import _start, _wait_for_step

    write(
        tmp_path / "s.ipynb",
        notebook(
            ("imports", "import os, time"),
            ("step:setup", "xs = [1, 2]\nr = {}"),
            (
                "step:loop foreach",
                "for x in xs:\n    open(f'pid-{x}', 'w').write(str(os.getpid()))\n"
                "    time.sleep(300)\n    r[x] = x",
            ),
        ),
    )
    proc = _start(tmp_path, runs_root, "s.ipynb")
    rd = _wait_for_step(runs_root, "loop")
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p.read_text()) for p in tmp_path.glob("pid-*")]
    assert len(pids) == 2
    assert cli("cancel", rd.run_id).returncode == 0
    proc.communicate(timeout=30)
    assert rd.status().steps["loop"].state.value == "cancelled"
    time.sleep(0.5)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
    assert alive == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_notebook_generator_function_as_the_iterable_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        "for x in evens():\n    parts.append(x)",
        ("functions", "def evens():\n    for v in xs:\n        yield v * 2"),
    )
    assert message.startswith("foreach: line 1: the iterable is a generator:")


def test_a_generator_object_as_the_iterable_fails_the_step_with_the_reason(
    cli, tmp_path: Path
) -> None:
    write(
        tmp_path / "g.ipynb",
        notebook(
            ("step:loop", "xs = [1, 2]\nparts = []\ngen = (x for x in xs)"),
            ("step:loop foreach", "for x in gen:\n    parts.append(x)"),
        ),
    )
    status = run_json(cli, "g.ipynb")
    assert status["steps"]["loop"]["state"] == "failed"
    assert "the iterable `gen` is a generator" in status["steps"]["loop"]["message"]


def test_an_addition_that_fails_when_merged_fails_the_step_naming_the_item(
    cli, tmp_path: Path
) -> None:
    """`slots[x] = ...` on a list too short fails in that iteration of a real loop; merged
    afterwards, it still fails the step, naming the iteration."""
    write(
        tmp_path / "m.ipynb",
        notebook(
            ("step:setup", "xs = [0, 1, 5]\nslots = [None, None]"),
            ("step:loop foreach", "for x in xs:\n    slots[x] = x * 10"),
        ),
    )
    loop = run_json(cli, "m.ipynb")["steps"]["loop"]
    assert loop["state"] == "failed"
    assert loop["message"] == (
        "cell 2: IndexError: list assignment index out of range (adding to the accumulator: "
        "`slots[5] = ...`) (in iteration 3 of 3, x = 5)"
    )


def test_a_memory_limit_applies_to_each_iteration(cli, tmp_path: Path) -> None:
    """Each worker is a process under the step's `limit:memory`: the iteration that
    allocates past it fails, naming its item, the small ones succeed."""
    write(
        tmp_path / "l.ipynb",
        notebook(
            ("step:setup", "sizes = [10, 10, 400]\nmade = {}"),
            (
                "step:loop foreach limit:memory:200Mi",
                "for i, mb in enumerate(sizes):\n"
                "    block = bytearray(mb * 2**20)\n"
                "    made[i] = len(block)",
            ),
        ),
    )
    loop = run_json(cli, "l.ipynb", "--jobs", "2")["steps"]["loop"]
    assert loop["state"] == "failed"
    assert loop["message"].startswith("cell 2: MemoryError")
    assert loop["message"].endswith("(in iteration 3 of 3, i, mb = (2, 400))")


def test_a_module_the_body_imports_is_bound_after_the_loop(cli, tmp_path: Path) -> None:
    write(
        tmp_path / "i.ipynb",
        notebook(
            ("step:setup", "xs = [4, 9]\nroots = []"),
            ("step:loop foreach", "for x in xs:\n    import math\n    roots.append(math.sqrt(x))"),
            ("step:show", "print(roots, math.pi > 3)"),
        ),
    )
    cli("run", "i.ipynb", "--output", "out.ipynb", check=True)
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert out["cells"][2]["outputs"][0]["text"] == "[2.0, 3.0] True\n"
