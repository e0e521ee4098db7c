"""Browser tests: a real `jupyter lab` with cellpipe, driven through Debian's Chromium.

One server and one browser per session (starting either costs seconds on two shared cores);
each test gets a fresh browser context and its own copy of a notebook, so tests never see
each other's unsaved edits. Playwright drives `/usr/bin/chromium` (never `playwright
install`: its CDN is unreachable here and CI installs Chromium with apt).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .harness import (
    CHROMIUM,
    CopyNotebook,
    Lab,
    copy_into,
    new_page,
    require_labextension,
    start_lab,
    stop,
)
from .lab import PHASE_MS

FAILURE_SHOTS = Path(os.environ.get("CELLPIPE_UI_FAILURES", "/tmp/cellpipe-ui-failures"))

# `expect` has its own timeout (5 s by default), separate from the page's.
expect.set_options(timeout=PHASE_MS)


# pytest-jupyter (tests/conftest.py) adds two autouse fixtures to every test: one closes the
# current event loop after each test, which here is Playwright's (its sync API runs one for
# the whole session), the other cleans up an in-process ServerApp on that loop. These tests
# run their server as a subprocess, so both are replaced by nothing here.
@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> None:
    return None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_labextension()
    server = start_lab(tmp_path_factory.mktemp("lab"))
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def browser(lab: Lab) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: `apt-get install -y chromium` "
            "(or set CELLPIPE_TEST_CHROMIUM to its path).",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"], timeout=PHASE_MS
        )
        yield b
        b.close()


@pytest.fixture
def copy_notebook(lab: Lab, request: pytest.FixtureRequest) -> CopyNotebook:
    return lambda source: copy_into(lab, source, request.node.name)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = new_page(browser)
    yield p
    p.context.close()


def _page_of(item: pytest.Item) -> Page | None:
    """The page a test used: its own, or the one of a module fixture it reads (`.page`)."""
    for value in getattr(item, "funcargs", {}).values():
        candidate = value if isinstance(value, Page) else getattr(value, "page", None)
        if isinstance(candidate, Page):
            return candidate
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On a failure, attach the server log and a screenshot of the page as the test left it."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        page = _page_of(item)
        if page is not None and not page.is_closed():
            FAILURE_SHOTS.mkdir(parents=True, exist_ok=True)
            shot = FAILURE_SHOTS / f"{re.sub(r'[^A-Za-z0-9]+', '-', item.name)}.png"
            try:
                page.screenshot(path=shot)
                report.sections.append(("screenshot", str(shot)))
            except Exception as e:  # a crashed page must not hide the original failure
                report.sections.append(("screenshot", f"not taken: {e}"))
            errors = getattr(page, "cellpipe_errors", [])
            report.sections.append(("browser errors", "\n".join(errors) or "none"))
        lab = getattr(item, "funcargs", {}).get("lab")
        if isinstance(lab, Lab):
            report.sections.append(("jupyter lab log (tail)", lab.log_tail()))
    return report
