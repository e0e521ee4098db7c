"""The wheel carries everything a user needs: installed into a fresh virtualenv (no Node.js,
no source tree), JupyterLab lists the prebuilt cellpipe extension as enabled and OK and the
server extension is enabled.

Set CELLPIPE_TEST_WHEEL=path/to/cellpipe-*.whl to check an already built wheel; otherwise
the test builds one from this tree (reusing the labextension build when it is there).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    out = _ANSI.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CELLPIPE_TEST_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend and jupyterlab (jlpm, jupyter-builder) are already in
    # the test environment; an isolated build would download them again.
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(REPO)])
    (built,) = out.glob("cellpipe-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheelcheck")
    prefix = root / "venv"
    venv.create(prefix, with_pip=True)
    bindir = prefix / "bin"
    # Only the venv and the base system on PATH, and Jupyter's per-user dirs moved away,
    # so nothing from this checkout's environment (or a `labextension develop` link) counts.
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(root),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    _run([str(bindir / "pip"), "install", "--quiet", str(wheel)], env=env, timeout=600)
    return prefix, env


def test_the_wheel_contains_the_prebuilt_labextension(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    data = "cellpipe-{v}.data/data/share/jupyter/labextensions/cellpipe/"
    version = wheel.name.split("-")[1]
    shipped = [n for n in names if n.startswith(data.format(v=version))]
    assert any(n.endswith("/package.json") for n in shipped), shipped
    assert any(n.endswith("/install.json") for n in shipped), shipped
    assert any(re.search(r"/static/remoteEntry\.[0-9a-f]+\.js$", n) for n in shipped), shipped
    assert any(n.endswith("/schemas/cellpipe/plugin.json") for n in shipped), shipped


def test_jupyterlab_lists_the_extension_enabled_and_ok_in_a_fresh_venv(
    fresh_env: tuple[Path, dict[str, str]],
) -> None:
    prefix, env = fresh_env
    out = _run([str(prefix / "bin" / "jupyter"), "labextension", "list"], env=env)
    line = next((ln for ln in out.splitlines() if ln.strip().startswith("cellpipe ")), "")
    assert "enabled" in line and "OK" in line, out
    assert "(python, cellpipe)" in line, out
    assert f"{prefix}/share/jupyter/labextensions" in out, out


def test_the_server_extension_is_enabled_in_a_fresh_venv(
    fresh_env: tuple[Path, dict[str, str]],
) -> None:
    prefix, env = fresh_env
    out = _run([str(prefix / "bin" / "jupyter"), "server", "extension", "list"], env=env)
    assert re.search(r"cellpipe_server\s+enabled", out), out
    assert re.search(r"cellpipe_server\s+OK", out), out


def test_the_installed_command_runs_a_pipeline(
    fresh_env: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    import json

    from nbbuild import notebook, write

    prefix, env = fresh_env
    write(tmp_path / "nb.ipynb", notebook(("step:a", "a = 20"), ("step:b", "print(a + 1)")))
    out = subprocess.run(
        [str(prefix / "bin" / "cellpipe"), "run", "nb.ipynb", "--json"],
        cwd=tmp_path,
        env=dict(env, CELLPIPE_RUNS_ROOT=str(tmp_path / "runs")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["state"] == "succeeded"
    log = (tmp_path / "runs" / status["run_id"] / "logs" / "_run.log").read_text()
    assert "warm start" in log
