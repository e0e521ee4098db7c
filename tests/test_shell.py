"""StepShell records each cell's outputs in the nbformat form ipykernel + nbclient give them."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cellpipe.execution.shell import CellRun, StepShell

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def shell() -> Iterator[StepShell]:
    sh = StepShell()
    yield sh
    sh.close()


def run(shell: StepShell, source: str) -> CellRun:
    result = shell.run_cell(source)
    json.dumps(result.outputs)  # every output must be storable as it is
    return result


def streams(result: CellRun) -> list[tuple[str, str]]:
    return [(o["name"], o["text"]) for o in result.outputs if o["output_type"] == "stream"]


# --- streams -------------------------------------------------------------------------------


def test_consecutive_prints_become_one_stdout_stream_output(shell: StepShell) -> None:
    result = run(shell, "print('a')\nprint('b', end='')\nprint('c')")
    assert result.outputs == [{"output_type": "stream", "name": "stdout", "text": "a\nbc\n"}]
    assert result.success and result.error is None


def test_a_short_cell_shows_its_stdout_then_its_stderr_as_a_kernel_flushes_them(
    shell: StepShell,
) -> None:
    # ipykernel buffers each stream and, at the end of the cell, flushes stdout first: a
    # real kernel shows these two prints together, then stderr (the oracle test below).
    result = run(shell, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('out2')")
    assert streams(result) == [("stdout", "out\nout2\n"), ("stderr", "err\n")]


def test_stderr_sent_by_the_flush_timer_comes_between_stdout_outputs(shell: StepShell) -> None:
    result = run(
        shell,
        "import sys, time\nprint('out')\nprint('err', file=sys.stderr)\n"
        "time.sleep(1)\nprint('out2')",
    )
    assert streams(result) == [("stdout", "out\n"), ("stderr", "err\n"), ("stdout", "out2\n")]


def test_a_flushed_stream_is_sent_before_what_the_other_stream_buffered(
    shell: StepShell,
) -> None:
    result = run(shell, "import sys\nprint('out')\nprint('err', file=sys.stderr, flush=True)")
    assert streams(result) == [("stderr", "err\n"), ("stdout", "out\n")]


def test_streams_are_flushed_before_a_display(shell: StepShell) -> None:
    result = run(shell, "import sys\nprint('err', file=sys.stderr)\ndisplay('d')\nprint('out')")
    kinds = [o.get("name", o["output_type"]) for o in result.outputs]
    assert kinds == ["stderr", "display_data", "stdout"]


def test_stream_text_is_written_to_the_log_as_well() -> None:
    log = io.StringIO()
    sh = StepShell(log=log)
    try:
        run(sh, "import os, sys\nprint('to out')\nprint('to err', file=sys.stderr)")
        run(sh, "os.system('echo from a shell')")
    finally:
        sh.close()
    assert log.getvalue() == "to out\nto err\nfrom a shell\n"


def test_a_log_on_descriptor_2_does_not_read_back_its_own_lines() -> None:
    with open(2, "w", closefd=False) as log:
        sh = StepShell(log=log)
        try:
            result = run(sh, "import sys\nprint('once', file=sys.stderr)")
        finally:
            sh.close()
    assert result.outputs == [{"output_type": "stream", "name": "stderr", "text": "once\n"}]


def test_print_from_several_threads_during_a_cell_loses_no_line(shell: StepShell) -> None:
    result = run(
        shell,
        "import sys, threading\n"
        "def work(n):\n"
        "    for i in range(200):\n"
        "        sys.stdout.write(f'{n}-{i}\\n')\n"
        "threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n",
    )
    text = "".join(t for _, t in streams(result))
    assert sorted(text.splitlines()) == sorted(f"{n}-{i}" for n in range(4) for i in range(200))


def test_os_system_output_is_a_stream_output_before_the_result(shell: StepShell) -> None:
    result = run(shell, "import os\nos.system('echo from a shell')")
    assert result.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "from a shell\n"},
        {
            "output_type": "execute_result",
            "metadata": {},
            "data": {"text/plain": "0"},
            "execution_count": 1,
        },
    ]


def test_subprocess_output_keeps_its_stream_and_comes_before_later_prints(
    shell: StepShell,
) -> None:
    result = run(
        shell,
        "import subprocess\n"
        "subprocess.run(['sh', '-c', 'echo out; echo err >&2'], check=True)\n"
        "print('after')",
    )
    # Which of the two pipes is read first is up to the scheduler, as in ipykernel.
    text = {
        name: "".join(t for n, t in streams(result) if n == name) for name in ("stdout", "stderr")
    }
    assert text == {"stdout": "out\nafter\n", "stderr": "err\n"}


@pytest.mark.skipif(os.name != "posix", reason="fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_print_in_a_forked_worker_reaches_the_cell(shell: StepShell) -> None:
    result = run(
        shell,
        "import multiprocessing\n"
        "def work(i):\n"
        "    print('worker', i)\n"
        "    return i\n"
        "with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "    total = sum(pool.map(work, range(3)))\n",
    )
    lines = "".join(t for _, t in streams(result)).splitlines()
    assert sorted(lines) == ["worker 0", "worker 1", "worker 2"]


def test_shell_escape_output_is_a_stdout_stream(shell: StepShell) -> None:
    result = run(shell, "!echo hi")
    # ipykernel runs `!cmd` in a pseudo-terminal too, hence the "\r\n".
    assert result.outputs == [{"output_type": "stream", "name": "stdout", "text": "hi\r\n"}]


def test_shell_escape_assignment_captures_the_lines(shell: StepShell) -> None:
    result = run(shell, "lines = !printf 'a b\\nc\\n'")
    assert result.outputs == []
    assert list(shell.user_ns["lines"]) == ["a b", "c"]


# --- rich output ---------------------------------------------------------------------------


def test_last_expression_is_an_execute_result_with_the_cell_number(shell: StepShell) -> None:
    run(shell, "x = 20")
    result = run(shell, "x + 1")
    assert result.execution_count == 2
    assert result.outputs == [
        {
            "output_type": "execute_result",
            "metadata": {},
            "data": {"text/plain": "21"},
            "execution_count": 2,
        }
    ]
    assert shell.user_ns["_"] == 21


def test_trailing_semicolon_hides_the_result(shell: StepShell) -> None:
    assert run(shell, "1 + 1;").outputs == []


def test_dataframe_result_has_plain_text_and_html(shell: StepShell) -> None:
    result = run(shell, "import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    (out,) = result.outputs
    assert out["output_type"] == "execute_result"
    assert set(out["data"]) == {"text/plain", "text/html"}
    assert out["data"]["text/plain"] == "   a\n0  1\n1  2"
    assert '<table border="1" class="dataframe">' in out["data"]["text/html"]


def test_display_of_html_markdown_and_image_gives_their_mime_types(shell: StepShell) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 8
    result = run(
        shell,
        "from IPython.display import HTML, Image, Markdown, display\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# title'))\n"
        f"display(Image(data={png!r}))",
    )
    assert [o["output_type"] for o in result.outputs] == ["display_data"] * 3
    html, markdown, image = (o["data"] for o in result.outputs)
    assert html == {"text/plain": "<IPython.core.display.HTML object>", "text/html": "<b>bold</b>"}
    assert markdown == {
        "text/plain": "<IPython.core.display.Markdown object>",
        "text/markdown": "# title",
    }
    assert image["image/png"] == "iVBORw0KGgowMDAwMDAwMA=="  # base64, as in a notebook file


def test_display_update_replaces_the_data_of_the_earlier_output(shell: StepShell) -> None:
    first = run(shell, "handle = display('old', display_id=True)\nprint('between')")
    second = run(shell, "handle.update('new')")
    assert second.outputs == []
    assert first.outputs == [
        {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "'new'"}},
        {"output_type": "stream", "name": "stdout", "text": "between\n"},
    ]


def test_a_new_display_with_a_known_id_refreshes_the_earlier_one(shell: StepShell) -> None:
    result = run(shell, "display('one', display_id='x')\ndisplay('two', display_id='x');")
    assert [o["data"]["text/plain"] for o in result.outputs] == ["'two'", "'two'"]


def test_clear_output_wait_clears_when_the_next_output_arrives(shell: StepShell) -> None:
    result = run(
        shell,
        "from IPython.display import clear_output\n"
        "print('a')\n"
        "clear_output(wait=True)\n"
        "print('b')\n"
        "clear_output(wait=True)",
    )
    assert streams(result) == [("stdout", "b\n")]


def test_clear_output_without_wait_clears_at_once(shell: StepShell) -> None:
    result = run(shell, "from IPython.display import clear_output\nprint('a')\nclear_output()")
    assert result.outputs == []


def test_matplotlib_plot_is_an_inline_png_at_the_end_of_the_cell(shell: StepShell) -> None:
    result = run(shell, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nprint('drawn')")
    kinds = [(o["output_type"], sorted(o.get("data", {}))) for o in result.outputs]
    assert kinds == [("stream", []), ("display_data", ["image/png", "text/plain"])]
    assert result.outputs[1]["data"]["image/png"].startswith("iVBORw0KGgo")


def test_on_output_sees_the_outputs_grow_while_the_cell_runs() -> None:
    seen: list[list[dict[str, Any]]] = []
    sh = StepShell(on_output=lambda outputs: seen.append(json.loads(json.dumps(outputs))))
    try:
        result = run(sh, "print('a')\ndisplay('b')")
    finally:
        sh.close()
    a = {"output_type": "stream", "name": "stdout", "text": "a\n"}
    assert [a] in seen  # the print, before the display existed
    assert (
        seen[-1]
        == result.outputs
        == [
            a,
            {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "'b'"}},
        ]
    )


# --- errors --------------------------------------------------------------------------------


def test_exception_is_an_error_output_and_a_plain_text_error(shell: StepShell) -> None:
    log = io.StringIO()
    shell.log = log
    result = run(shell, "def f():\n    1 / 0\nf()")
    (out,) = result.outputs
    assert (out["output_type"], out["ename"], out["evalue"]) == (
        "error",
        "ZeroDivisionError",
        "division by zero",
    )
    assert any("\x1b[" in line for line in out["traceback"])  # coloured, as ipykernel sends it
    assert not result.success
    assert result.error is not None
    assert result.error["ename"] == "ZeroDivisionError"
    assert result.error["traceback"] == [_ANSI.sub("", line) for line in out["traceback"]]
    assert result.error["traceback"][-1] == "ZeroDivisionError: division by zero"
    assert "----> 3 f()" in log.getvalue() and "\x1b[" not in log.getvalue()


def test_syntax_error_is_an_error_output_named_syntax_error(shell: StepShell) -> None:
    result = run(shell, "x =")
    assert [o["ename"] for o in result.outputs] == ["SyntaxError"]
    assert result.error is not None and result.error["ename"] == "SyntaxError"


def test_unknown_magic_fails_the_cell_with_a_usage_error(shell: StepShell) -> None:
    result = run(shell, "%no_such_magic")
    assert streams(result) == [
        ("stderr", "UsageError: Line magic function `%no_such_magic` not found.\n")
    ]
    assert result.error is not None and result.error["ename"] == "UsageError"


@pytest.mark.filterwarnings("ignore:To exit:UserWarning")
def test_system_exit_is_an_error_and_the_process_lives_on(shell: StepShell) -> None:
    result = run(shell, "raise SystemExit(3)")
    assert [o["ename"] for o in result.outputs if o["output_type"] == "error"] == ["SystemExit"]
    assert not result.success
    assert run(shell, "print('still here')").outputs[0]["text"] == "still here\n"


def test_exit_call_does_not_end_the_process(shell: StepShell) -> None:
    assert run(shell, "exit()").success
    assert run(shell, "quit()").success
    assert run(shell, "print('still here')").outputs[0]["text"] == "still here\n"


@pytest.mark.parametrize("call", ["input('name? ')", "import getpass\ngetpass.getpass()"])
def test_reading_standard_input_fails_with_a_clear_error(shell: StepShell, call: str) -> None:
    result = run(shell, call)
    assert result.error is not None
    assert result.error["ename"] == "StdinNotImplementedError"
    assert "cellpipe steps cannot read from standard input" in result.error["evalue"]


# --- magics --------------------------------------------------------------------------------


def test_time_magic_prints_cpu_and_wall_time_and_runs_the_statement(shell: StepShell) -> None:
    result = run(shell, "%time x = 41 + 1")
    ((name, text),) = streams(result)
    assert name == "stdout"
    assert re.fullmatch(r"CPU times: user .*, sys: .*, total: .*\nWall time: .*\n", text)
    assert shell.user_ns["x"] == 42


def test_capture_magic_keeps_the_output_out_of_the_cell(shell: StepShell) -> None:
    result = run(shell, "%%capture out\nprint('hidden')\ndisplay('also hidden')")
    assert result.outputs == []
    assert shell.user_ns["out"].stdout == "hidden\n"
    assert len(shell.user_ns["out"].outputs) == 1


def test_env_magic_sets_the_environment_variable(
    shell: StepShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELLPIPE_SHELL_TEST", raising=False)
    result = run(shell, "%env CELLPIPE_SHELL_TEST=on")
    assert streams(result) == [("stdout", "env: CELLPIPE_SHELL_TEST=on\n")]
    assert os.environ["CELLPIPE_SHELL_TEST"] == "on"


def test_help_query_prints_nothing_and_does_not_wait_for_a_pager(shell: StepShell) -> None:
    result = run(shell, "print?")
    assert result.success and result.outputs == []


def test_autosave_magic_from_old_notebooks_works_as_in_a_kernel(shell: StepShell) -> None:
    result = run(shell, "%autosave 0")
    assert [o["output_type"] for o in result.outputs] == ["display_data", "stream"]
    assert streams(result) == [("stdout", "Autosave disabled\n")]


# --- lifecycle -----------------------------------------------------------------------------


def test_shells_created_one_after_another_each_display_and_plot() -> None:
    for _ in range(2):
        sh = StepShell()
        try:
            result = run(sh, "import matplotlib.pyplot as plt\nplt.plot([1]);\ndisplay('shown')")
        finally:
            sh.close()
        assert [sorted(o["data"]) for o in result.outputs] == [
            ["text/plain"],
            ["image/png", "text/plain"],
        ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_copy_of_a_warm_shell_runs_cells_and_records_their_output(
    shell: StepShell,
) -> None:
    # What the fork server does: warm a shell once, fork, and run a step's cells in the child.
    run(shell, "import os\nx = 41")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, whatever happens
        try:
            result = shell.run_cell("print(x + 1)\nos.system('echo from the child');")
            os.write(write_end, json.dumps(result.outputs).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        outputs = json.loads(reader.read() or "null")
    os.waitpid(pid, 0)
    assert outputs == [{"output_type": "stream", "name": "stdout", "text": "42\nfrom the child\n"}]


def test_get_ipython_is_the_shell_only_while_its_cell_runs(shell: StepShell) -> None:
    from IPython import get_ipython

    run(shell, "me = get_ipython()")
    assert shell.user_ns["me"] is shell.ipython
    assert get_ipython() is not shell.ipython


def test_code_run_in_the_kernel_context_sees_the_shell_as_a_cell_does(shell: StepShell) -> None:
    import builtins

    from IPython import get_ipython

    assert "get_ipython" not in vars(builtins)
    with shell.kernel_context():
        # What pandas' is_terminal() asks when it is first imported.
        ip = vars(builtins)["get_ipython"]()
        assert ip is shell.ipython and hasattr(ip, "kernel")
        assert get_ipython() is shell.ipython
    assert "get_ipython" not in vars(builtins)


def test_the_shell_answers_to_notebook_detection_as_a_kernel_does(shell: StepShell) -> None:
    result = run(shell, "print(get_ipython().__class__.__name__)")
    assert streams(result) == [("stdout", "ZMQInteractiveShell\n")]


def test_close_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAGER", raising=False)
    monkeypatch.setenv("TERM", "dumb")
    sh = StepShell()
    result = run(sh, "import os\nos.environ['TERM'], os.environ['PAGER']")
    sh.close()
    assert result.outputs[0]["data"]["text/plain"] == "('xterm-color', 'cat')"  # as in a kernel
    assert os.environ["TERM"] == "dumb"
    assert "PAGER" not in os.environ


def test_streams_are_restored_after_each_cell(shell: StepShell) -> None:
    import builtins
    import sys

    before = (sys.stdout, sys.stderr, builtins.input)
    run(shell, "print('x')")
    run(shell, "1 / 0")
    assert (sys.stdout, sys.stderr, builtins.input) == before


# --- the oracle: a real kernel driven by nbclient --------------------------------------------

ORACLE_CELLS = [
    "print('hello')\nprint('world')",
    "import sys\nprint('to stderr', file=sys.stderr)",
    "6 * 7",
    "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})",
    "from IPython.display import HTML, Markdown, display\ndisplay(HTML('<b>bold</b>'))",
    "display(Markdown('*md*'))",
    "%time x = 1",
    "!echo hi",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2])",
    "def f():\n    return 1 / 0\nf()",
    "handle = display('first', display_id=True)\nhandle.update('second')",
    "late = display(HTML('<i>1</i>'), display_id='late')",
    "late.update(HTML('<i>2</i>'))",
    "from IPython.display import clear_output\n"
    "print('gone')\nclear_output(wait=True)\nprint('kept')",
    "print('gone')\nclear_output()\nprint('kept')",
    "1;",
    "%%capture captured\nprint('inside')",
    "captured.stdout",
    "lines = !echo a b\nlines",
    "%env CELLPIPE_ORACLE=1",
    "print?",
    # How stdout and stderr interleave: ipykernel's per-stream buffers and flushes.
    "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('out2')",
    "print('out')\nprint('err', file=sys.stderr)\nimport time\ntime.sleep(1)\nprint('out2')",
    "print('out')\nprint('err', file=sys.stderr, flush=True)",
    "print('err', file=sys.stderr)\ndisplay('d')\nprint('out')",
    # A logging handler flushes its stream after each record (not root's: pytest has its own).
    "import logging\nlog = logging.getLogger('oracle')\nlog.propagate = False\n"
    "log.addHandler(logging.StreamHandler(sys.stderr))\nprint('out')\nlog.warning('warned')",
]
_TIMES = re.compile(r"^(CPU times|Wall time):.*$", re.M)
_ADDRESS = re.compile(r"\b0x[0-9a-f]+")


def _normalized(outputs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    merged: list[dict[str, Any]] = []
    for out in outputs:
        last = merged[-1] if merged else None
        # ipykernel flushes streams on a timer, so nbclient may get one print in pieces.
        if (
            last
            and out["output_type"] == last["output_type"] == "stream"
            and out["name"] == last["name"]
        ):
            last["text"] += out["text"]
        else:
            merged.append(dict(out))
    result: list[tuple[Any, ...]] = []
    for out in merged:
        kind = out["output_type"]
        if kind == "stream":
            result.append((kind, out["name"], _TIMES.sub(r"\1: ...", out["text"])))
        elif kind in ("execute_result", "display_data"):
            # Images are compared by kind only; so is the text of a figure ("<Figure size..>").
            data = out["data"]
            texts = {
                mime: _ADDRESS.sub("0x", value)
                for mime, value in data.items()
                if mime.startswith("text/") and not any(m.startswith("image/") for m in data)
            }
            result.append((kind, sorted(data), texts, out["metadata"], out.get("execution_count")))
        else:
            result.append((kind, out["ename"], out["evalue"], out["traceback"]))
    return result


@pytest.mark.slow
def test_outputs_are_what_nbclient_records_from_a_real_kernel(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in ORACLE_CELLS])
    NotebookClient(
        nb,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    expected = [_normalized(cell.outputs) for cell in nb.cells]

    sh = StepShell()
    try:
        results = [sh.run_cell(source) for source in ORACLE_CELLS]
    finally:
        sh.close()
    actual = [_normalized(r.outputs) for r in results]

    for source, want, got in zip(ORACLE_CELLS, expected, actual, strict=True):
        assert got == want, source
    assert [r.execution_count for r in results] == [c.execution_count for c in nb.cells]
