"""The machinery under the browser tests: a `jupyter lab` subprocess and browser pages.

conftest.py turns these into fixtures; tests import the names they need from here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from .lab import PHASE_MS, PHASE_S

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(__file__).parent / "notebooks"
CHROMIUM = os.environ.get("CELLPIPE_TEST_CHROMIUM", "/usr/bin/chromium")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Lab:
    """A running `jupyter lab` whose root directory the tests copy notebooks into."""

    url: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_bytes()[-chars:].decode("utf-8", "replace")


def require_labextension() -> None:
    """Fail (never skip) when the extension is not installed: CI builds it, so its absence
    is a broken build, not a missing optional part."""
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=PHASE_S,
    )
    listing = _ANSI.sub("", proc.stdout + proc.stderr)
    line = next((ln for ln in listing.splitlines() if ln.split()[:1] == ["cellpipe"]), None)
    if line is None or not {"enabled", "OK"} <= set(line.split()):
        pytest.fail(
            "The cellpipe JupyterLab extension is not installed, enabled and OK "
            f"(`jupyter labextension list` shows: {line or 'no cellpipe line'}). Build it with "
            "`pip install -e '.[test]'` (or `jlpm build` after editing labextension/src); "
            "see docs/labextension.md.\n" + listing,
            pytrace=False,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_settings(settings: Path) -> None:
    for plugin, values in {
        # The "get Jupyter news?" toast would cover the sidebar in screenshots; CI is offline.
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        # Autosave (every 120 s) would write the notebook, and tests check that cellpipe never
        # does: on a slow machine a page can stay open that long.
        "docmanager-extension/plugin": {"autosave": False},
    }.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _wait_until_up(lab: Lab) -> None:
    deadline = time.monotonic() + PHASE_S
    while time.monotonic() < deadline:
        if lab.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(
        f"jupyter lab did not answer {lab.url}/api/status within {PHASE_S} s "
        f"(exit code {lab.proc.poll()}). Log tail:\n{lab.log_tail()}",
        pytrace=False,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # The whole group: kernels and detached run drivers started by the server die with it.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_lab(work: Path, extra_env: Mapping[str, str] | None = None) -> Lab:
    """Start `jupyter lab` with its state under work; returns once it answers.

    `extra_env`: variables the server (and the runs it starts) get besides the tests' own,
    e.g. the real cluster's KUBECONFIG for the Argo backend.
    """
    root = work / "root"
    root.mkdir()
    _user_settings(work / "settings")
    env = dict(
        os.environ,
        **(extra_env or {}),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
    )
    env.pop("CELLPIPE_RUNS_ROOT", None)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        f"--CellpipeApp.runs_root={work / 'runs'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # window.jupyterapp: read the notebook model (tags) the way the extension writes it
        "--LabApp.expose_app_in_browser=True",
    ]
    log = work / "jupyter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    server = Lab(url=f"http://127.0.0.1:{port}", root=root, log=log, proc=proc)
    try:
        _wait_until_up(server)
    except BaseException:
        stop(proc)
        raise
    return server


def copy_into(lab: Lab, source: Path, label: str) -> str:
    """Copy a notebook into the server root under a name made from label; returns the name.

    Each test works on its own copy: unsaved edits and run history never leak between tests.
    """
    name = f"{re.sub(r'[^A-Za-z0-9]+', '-', label).strip('-')}-{source.name}"
    shutil.copyfile(source, lab.root / name)
    return name


CopyNotebook = Callable[[Path], str]


CopyNotebook = Callable[[Path], str]


# Every browser error of the session, for test_no_cellpipe_errors_in_the_browser.
BROWSER_ERRORS: list[str] = []


def _note_error(page_errors: list[str], text: str) -> None:
    page_errors.append(text)
    BROWSER_ERRORS.append(text)


def new_page(browser: Browser) -> Page:
    """A fresh context (no shared storage) at 1280x800, the size of the README's screenshots."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(PHASE_MS)
    # Kept for failure messages: a broken extension usually shows up here first. The stack
    # and the script URL say whether an error came from cellpipe's bundle.
    errors: list[str] = []
    page.on("pageerror", lambda e: _note_error(errors, f"pageerror: {e.message}\n{e.stack}"))
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and _note_error(errors, f"console.error: {m.text} (at {m.location.get('url', '?')})")
        ),
    )
    page.cellpipe_errors = errors  # type: ignore[attr-defined]
    return page
