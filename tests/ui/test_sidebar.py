"""The Pipeline sidebar in a real JupyterLab, as a user drives it (GitHub issue 6).

Runs are the slow part, so each run happens once, in a module fixture, and several tests
read what it left on the page; everything else gets its own page and notebook copy.
Screenshots for the README are written to docs/images/ on every run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cellpipe
import pytest
from playwright.sync_api import Browser, Page, expect

from .harness import BROWSER_ERRORS, NOTEBOOKS, REPO, CopyNotebook, Lab, copy_into, new_page
from .lab import (
    SIDEBAR,
    SIDEBAR_TAB,
    active_cell_index,
    cell_index,
    cell_tags,
    cell_with_source,
    cells,
    click_button,
    notebook_tab,
    open_notebook,
    outputs,
    record_states,
    replace_source,
    seen_states,
    show_sidebar,
    step_row,
    wait_for_run_end,
    wait_for_steps,
)
from .notebooks.make import FIXED_SOURCE

WINE = REPO / "examples" / "wine.ipynb"
FAILING = NOTEBOOKS / "failing.ipynb"
COMPILE_ERROR = NOTEBOOKS / "compile_error.ipynb"
SLOW = NOTEBOOKS / "slow.ipynb"
IMAGES = REPO / "docs" / "images"


def steps_of(notebook: Path) -> list[str]:
    """The steps the engine compiles, in its order: what the sidebar must list."""
    return [step.name for step in cellpipe.compile(notebook).steps]


def screenshot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=IMAGES / name)


def open_with_sidebar(page: Page, lab: Lab, name: str, steps: list[str]) -> dict[str, str]:
    open_notebook(page, lab.url, name)
    show_sidebar(page)
    return wait_for_steps(page, steps)


@dataclass
class Run:
    """A notebook opened in its own page, run from the sidebar until every step ended."""

    page: Page
    name: str
    states: dict[str, str]
    seen: dict[str, list[str]]
    file_before: bytes
    toast: str = ""


def run_from_sidebar(browser: Browser, lab: Lab, source: Path, tag: str) -> Run:
    name = copy_into(lab, source, tag)
    page = new_page(browser)
    open_with_sidebar(page, lab, name, steps_of(source))
    file_before = (lab.root / name).read_bytes()
    record_states(page)
    click_button(page, "Compile and Run")
    states = wait_for_run_end(page)
    # Success toasts close after 5 s: read the one this run raised now.
    success = page.locator(".jp-Notification-Toast-success .jp-toast-message")
    toast = ""
    if "failed" not in states.values():
        success.first.wait_for(timeout=10_000)
        toast = success.first.inner_text()
        # Slid in completely, for the screenshots the fixtures take.
        expect(success.first).to_be_in_viewport(ratio=1.0)
    return Run(page, name, states, seen_states(page), file_before, toast)


# -- opening a notebook ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine_page(browser: Browser, lab: Lab) -> Iterator[Page]:
    """The example notebook, opened with the sidebar shown; tests here only look."""
    page = new_page(browser)
    open_with_sidebar(page, lab, copy_into(lab, WINE, "wine-page"), steps_of(WINE))
    yield page
    page.context.close()


def test_the_sidebar_lists_the_notebooks_steps_in_order_before_any_run(wine_page: Page) -> None:
    states = wait_for_steps(wine_page, steps_of(WINE))
    assert list(states) == steps_of(WINE)
    assert set(states.values()) == {"pending"}, states
    screenshot(wine_page, "sidebar-steps.png")


def test_exactly_one_sidebar_element_per_step_carries_the_step_hook(wine_page: Page) -> None:
    # DESIGN's hook: `#cellpipe-sidebar [data-cellpipe-step="x"]` is unambiguous (the row).
    steps = steps_of(WINE)
    expect(wine_page.locator(f"{SIDEBAR} [data-cellpipe-step]")).to_have_count(len(steps))
    for name in steps:
        expect(wine_page.locator(f'{SIDEBAR} [data-cellpipe-step="{name}"]')).to_have_count(1)


def test_the_sidebar_has_one_compile_and_run_button(wine_page: Page) -> None:
    buttons = wine_page.locator(SIDEBAR).get_by_role("button", name="Compile and Run", exact=True)
    expect(buttons).to_have_count(1)
    expect(buttons).to_be_enabled()


def test_each_code_cell_of_a_step_carries_the_step_name(wine_page: Page) -> None:
    pipeline = cellpipe.compile(WINE)
    for step in pipeline.steps:
        expect(wine_page.locator(f'.jp-Cell[data-cellpipe-step="{step.name}"]')).to_have_count(
            len(step.cells)
        )
    expect(wine_page.locator(".jp-MarkdownCell[data-cellpipe-step]")).to_have_count(0)


def test_parameters_are_prefilled_from_the_parameters_cell(wine_page: Page) -> None:
    sidebar = wine_page.locator(SIDEBAR)
    expect(sidebar.locator('input[name="param-n_estimators"]')).to_have_value("50")
    expect(sidebar.locator('input[name="param-test_size"]')).to_have_value("0.25")
    expect(sidebar.locator('input[name="param-seed"]')).to_have_value("0")


def test_the_backend_select_offers_local_docker_and_argo(wine_page: Page) -> None:
    select = wine_page.locator(SIDEBAR).locator('select[aria-label="Backend"]')
    values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert values == ["local", "docker", "argo"]
    expect(select).to_have_value("local")
    # One that cannot work here (Argo without a kubeconfig) is disabled and says why.
    reasons = select.locator("option:disabled").evaluate_all("os => os.map(o => o.title)")
    assert all(reason.strip() for reason in reasons), reasons


# -- tagging a cell ----------------------------------------------------------------------------


def test_a_new_cell_tagged_through_the_cell_toolbar_becomes_a_step(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_with_sidebar(page, lab, copy_notebook(WINE), steps_of(WINE))
    cells(page).last.locator(".jp-InputPrompt").click()
    before = cells(page).count()
    page.locator('.jp-NotebookPanel-toolbar [data-command="notebook:insert-cell-below"]').click()
    expect(cells(page)).to_have_count(before + 1)
    new = cells(page).nth(before)
    replace_source(
        page, new, 'best = scores.sort_values("accuracy").iloc[-1]["model"]\nprint(best)'
    )

    new.locator('[data-command="cellpipe:set-step"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[aria-label="Step name"]').fill("best")
    dialog.locator(".jp-mod-accept").click()

    wait_for_steps(page, [*steps_of(WINE), "best"])
    expect(step_row(page, "best")).to_have_attribute("data-cellpipe-state", "pending")
    # `best` reads `scores`, which `compare` makes: the server's compile adds that edge.
    expect(step_row(page, "best")).to_contain_text("after: compare")
    # ...and the cell no longer counts as part of `metrics`, the step above it.
    expect(step_row(page, "metrics")).not_to_contain_text("compare")
    expect(
        page.locator(f'{SIDEBAR} svg.cellpipe-dag .cellpipe-dag-node[data-cellpipe-node="best"]')
    ).to_have_count(1)
    expect(new).to_have_attribute("data-cellpipe-step", "best")
    assert cell_tags(page, before) == ["step:best"]
    screenshot(page, "sidebar-tagged.png")


# -- Compile and Run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine_run(browser: Browser, lab: Lab) -> Iterator[Run]:
    run = run_from_sidebar(browser, lab, WINE, "wine-run")
    # For the README: the history row in the sidebar, the plot of `compare` in the notebook.
    run.page.locator(f"{SIDEBAR} [data-cellpipe-run]").first.wait_for()
    step_row(run.page, "compare").click()
    screenshot(run.page, "sidebar-run.png")
    yield run
    run.page.context.close()


def test_compile_and_run_brings_every_step_to_succeeded(wine_run: Run) -> None:
    assert wine_run.states == dict.fromkeys(steps_of(WINE), "succeeded")


def test_steps_show_running_while_the_run_goes_on(wine_run: Run) -> None:
    assert any("running" in states for states in wine_run.seen.values()), wine_run.seen


def test_each_steps_printed_output_appears_in_its_cell(wine_run: Run) -> None:
    page = wine_run.page
    expect(outputs(cell_with_source(page, "df = wine.frame"))).to_contain_text("(178, 14)")
    expect(outputs(cell_with_source(page, "X = df.drop"))).to_contain_text(
        "133 training rows, 45 test rows"
    )
    expect(outputs(cell_with_source(page, "forest.fit("))).to_contain_text(
        re.compile(r"random forest: [01]\.\d{3}")
    )


def test_a_plot_made_by_a_step_appears_in_its_cell(wine_run: Run) -> None:
    compare = cell_with_source(wine_run.page, "ax.bar(")
    expect(outputs(compare)).to_contain_text("logistic regression")
    expect(outputs(compare).locator("img")).to_have_count(1)


def test_outputs_make_the_notebook_dirty_but_leave_the_file_alone(wine_run: Run, lab: Lab) -> None:
    expect(notebook_tab(wine_run.page)).to_have_class(re.compile(r"\bjp-mod-dirty\b"))
    assert (lab.root / wine_run.name).read_bytes() == wine_run.file_before


def test_the_run_is_listed_in_the_history_as_the_server_knows_it(wine_run: Run, lab: Lab) -> None:
    row = wine_run.page.locator(f"{SIDEBAR} [data-cellpipe-run]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-cellpipe-state", "succeeded")
    response = wine_run.page.request.get(f"{lab.url}/cellpipe/api/runs?path={wine_run.name}")
    assert response.ok, response.status
    server_runs = {r["run_id"]: r["state"] for r in response.json()["runs"]}
    assert server_runs == {row.get_attribute("data-cellpipe-run"): "succeeded"}


def test_the_status_bar_says_the_run_succeeded(wine_run: Run) -> None:
    item = wine_run.page.locator("#cellpipe-statusbar")
    expect(item).to_have_attribute("data-cellpipe-state", "succeeded")
    expect(item).to_have_text(re.compile(r"^✓ Pipeline \d"))


def test_a_toast_says_the_run_succeeded(wine_run: Run) -> None:
    assert re.fullmatch(
        r"Pipeline run \d{8}-\d{6}-[0-9a-f]{6} succeeded in [\d.]+ s \(6 steps\)\.",
        wine_run.toast,
    ), wine_run.toast


def test_clicking_the_status_bar_opens_the_sidebar(wine_run: Run) -> None:
    page = wine_run.page
    page.locator(SIDEBAR_TAB).click()  # the current tab: collapses the sidebar
    expect(page.locator(SIDEBAR)).to_be_hidden()
    page.locator("#cellpipe-statusbar").click()
    expect(page.locator(SIDEBAR)).to_be_visible()


def test_open_report_shows_the_executed_notebook(wine_run: Run) -> None:
    page = wine_run.page
    row = page.locator(f"{SIDEBAR} [data-cellpipe-run]")
    run_id = row.get_attribute("data-cellpipe-run")
    row.get_by_role("button", name="Open report").click()
    report = page.frame_locator(f"#cellpipe-report-{run_id} iframe")
    expect(report.locator("body")).to_contain_text("(178, 14)")


# -- a failing step ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_run(browser: Browser, lab: Lab) -> Iterator[Run]:
    run = run_from_sidebar(browser, lab, FAILING, "failing-run")
    screenshot(run.page, "sidebar-failed.png")
    yield run
    run.page.context.close()


def test_a_failing_step_shows_failed_and_its_dependants_skipped(failed_run: Run) -> None:
    # `load` is cached if another test of this session already ran the same cell.
    assert failed_run.states["load"] in ("succeeded", "cached"), failed_run.states
    assert {k: v for k, v in failed_run.states.items() if k != "load"} == {
        "check": "failed",
        "report": "skipped",
    }


def test_the_traceback_is_in_the_cell_that_raised(failed_run: Run) -> None:
    page = failed_run.page
    raising = outputs(cell_with_source(page, "raise ValueError"))
    expect(raising).to_contain_text("ValueError: total 55 is over the limit 50")
    first_of_step = outputs(cell_with_source(page, "total = sum(numbers)"))
    expect(first_of_step).to_contain_text("total 55")
    expect(first_of_step).not_to_contain_text("ValueError")


def test_the_status_bar_names_the_failed_step(failed_run: Run) -> None:
    item = failed_run.page.locator("#cellpipe-statusbar")
    expect(item).to_have_attribute("data-cellpipe-state", "failed")
    expect(item).to_have_text("✗ Pipeline failed: check")


def test_show_log_in_the_toast_opens_the_steps_log(failed_run: Run) -> None:
    page = failed_run.page
    toast = page.locator(".jp-Notification-Toast-error").filter(has_text="Step check failed")
    toast.get_by_role("button", name="Show log").click()  # the toast stays for Go to error
    log = page.locator(".cellpipe-log")
    expect(log).to_contain_text("total 55")
    expect(log).to_contain_text("ValueError: total 55 is over the limit 50")
    # Back to the notebook, for the tests that follow.
    page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=failed_run.name).click()
    expect(notebook_tab(page)).to_contain_text(failed_run.name)


def test_an_error_toast_names_the_step_and_goes_to_the_cell_that_raised(failed_run: Run) -> None:
    page = failed_run.page
    toast = page.locator(".jp-Notification-Toast-error").filter(has_text="Step check failed")
    expect(toast).to_contain_text("ValueError: total 55 is over the limit 50")
    cell_with_source(page, "numbers = list(").locator(".jp-InputPrompt").click()
    raising = cell_with_source(page, "raise ValueError")
    assert active_cell_index(page) != cell_index(raising)
    toast.get_by_role("button", name="Go to error").click()
    expect(raising).to_have_class(re.compile(r"\bjp-mod-active\b"))


def test_clicking_the_failed_step_activates_the_cell_that_raised(failed_run: Run) -> None:
    page = failed_run.page
    cell_with_source(page, "numbers = list(").locator(".jp-InputPrompt").click()
    raising = cell_with_source(page, "raise ValueError")
    assert active_cell_index(page) != cell_index(raising)
    step_row(page, "check").click()
    expect(raising).to_have_class(re.compile(r"\bjp-mod-active\b"))


def test_resume_after_fixing_the_raising_cell_succeeds(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_with_sidebar(page, lab, copy_notebook(FAILING), steps_of(FAILING))
    click_button(page, "Compile and Run")
    failed = wait_for_run_end(page)
    assert failed["check"] == "failed", failed

    raising = cell_with_source(page, "raise ValueError")
    replace_source(page, raising, FIXED_SOURCE)
    expect(raising.locator(".jp-InputArea-editor")).to_contain_text("limit = 100")
    click_button(page, "Resume")

    resumed = wait_for_run_end(page, leaving=failed)
    assert resumed == {"load": "cached", "check": "succeeded", "report": "succeeded"}
    expect(outputs(raising)).to_contain_text("within the limit")
    expect(outputs(raising)).not_to_contain_text("ValueError")
    expect(outputs(cell_with_source(page, "report: total"))).to_contain_text("report: total 55")
    screenshot(page, "sidebar-resumed.png")
    # The notebook reads as after a top-to-bottom run: the kept step and the other cell of the
    # fixed step still show their outputs.
    expect(outputs(cell_with_source(page, "total = sum(numbers)"))).to_contain_text("total 55")
    expect(outputs(cell_with_source(page, "numbers = list("))).to_contain_text("loaded 10 numbers")


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_stops_the_running_step_and_what_depends_on_it(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_with_sidebar(page, lab, copy_notebook(SLOW), steps_of(SLOW))
    click_button(page, "Compile and Run")
    expect(step_row(page, "wait")).to_have_attribute("data-cellpipe-state", "running")
    click_button(page, "Cancel")
    ended = wait_for_run_end(page)
    assert ended == {"prepare": "succeeded", "wait": "cancelled", "after": "cancelled"}
    expect(outputs(cell_with_source(page, 'print("prepared")'))).to_contain_text("prepared")


# -- compile errors ----------------------------------------------------------------------------


def test_compile_errors_are_listed_and_jump_to_their_cell(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    name = copy_notebook(COMPILE_ERROR)
    open_notebook(page, lab.url, name)
    show_sidebar(page)
    click_button(page, "Compile and Run")

    problems = page.locator(f"{SIDEBAR} li.cellpipe-diagnostic")
    expect(problems).to_have_count(2)
    expect(problems.nth(0)).to_contain_text("Cell 3")
    expect(problems.nth(0)).to_contain_text("2nd")
    expect(problems.nth(1)).to_contain_text("Cell 4")
    expect(problems.nth(1)).to_contain_text(re.compile(r"\bz\b"))

    cells(page).first.click()
    problems.nth(0).click()
    expect(cells(page).nth(2)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    response = page.request.get(f"{lab.url}/cellpipe/api/runs?path={name}")
    assert response.json()["runs"] == [], "a notebook that does not compile must not start a run"


def test_no_cellpipe_errors_in_the_browser() -> None:
    """Last in this file on purpose: it reads the errors of every page the tests above used."""
    # "Failed to load resource" is Chromium noting any 4xx, such as the 400 that a compile
    # error is by design; the tests check those responses themselves.
    ours = [
        e for e in BROWSER_ERRORS if "cellpipe" in e.lower() and "Failed to load resource" not in e
    ]
    assert not ours, "cellpipe logged errors in the browser:\n" + "\n".join(ours)
