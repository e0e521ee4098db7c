from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

# A profile selected in the developer's shell (`source .../env.sh` exports CELLPIPE_PROFILE)
# would give every Argo test that cluster's settings: tests choose their profiles themselves.
for _name in ("CELLPIPE_PROFILE", "CELLPIPE_PROFILE_DIR"):
    os.environ.pop(_name, None)


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("CELLPIPE_RUNS_ROOT", str(root))
    monkeypatch.setenv("CELLPIPE_RETRY_BACKOFF", "0.05")
    return root


@pytest.fixture
def cli(runs_root: Path, tmp_path: Path):
    """Run the real `cellpipe` command in a subprocess, as a user would."""

    def run(*args: str, timeout: float = 120, check: bool = False, **kw):
        env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(runs_root), CELLPIPE_RETRY_BACKOFF="0.05")
        env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-m", "cellpipe", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=kw.pop("cwd", tmp_path),
            env={**env, **kw.pop("env", {})},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict:
    """A real jupyter_server with the cellpipe extension, its runs under tmp_path."""
    return {
        "ServerApp": {"jpserver_extensions": {"cellpipe_server": True}},
        "CellpipeApp": {"runs_root": str(tmp_path / "cellpipe-runs"), "poll_interval": 0.05},
    }
