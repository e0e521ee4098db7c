"""`cellpipe run` starts the local backend's warm process before anything else."""

from __future__ import annotations

import pytest
from cellpipe import warm_ahead


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "nb.ipynb"],
        ["--debug", "run", "nb.ipynb", "-p", "n=3"],
        ["run", "nb.ipynb", "--backend", "local"],
        ["run", "--backend=local", "nb.ipynb"],
        ["run", "--resume", "20261201-120000-abcdef"],
    ],
)
def test_a_local_run_starts_the_warm_process_first(argv: list[str]) -> None:
    assert warm_ahead.runs_locally(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["compile", "nb.ipynb"],
        ["runs"],
        ["run", "--help"],
        ["run", "nb.ipynb", "-h"],
        ["run", "nb.ipynb", "--backend", "docker"],
        ["run", "nb.ipynb", "--backend=argo"],
        ["run", "nb.ipynb", "--backend"],
    ],
)
def test_other_commands_start_nothing(argv: list[str]) -> None:
    assert not warm_ahead.runs_locally(argv)


def test_a_warm_process_nobody_adopts_exits_when_the_command_does() -> None:
    warm_ahead.start_ahead(["run", "missing.ipynb"])
    warm = warm_ahead.take_warm_process()
    assert warm is not None and warm.stdin is not None
    assert warm_ahead.take_warm_process() is None  # taken once
    warm.stdin.close()  # what the command's exit does to the pipe
    assert warm.wait(timeout=60) == 0
    assert warm.stdout is not None
    assert warm.stdout.read() == b""  # it never said it was ready for a run
    warm.stdout.close()


def test_no_warm_process_where_steps_cannot_be_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLPIPE_FORK", "0")
    warm_ahead.start_ahead(["run", "nb.ipynb"])
    assert warm_ahead.take_warm_process() is None
