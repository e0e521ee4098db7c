"""Comparing runs, keyboard use and accessibility (GitHub issue 21, UX.md §2.4 and §5.15-17).

Two runs of params.ipynb with different `scale` happen once, in a module fixture; the tests
read the page they left. Screenshot for the README: docs/images/compare-runs.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .harness import NOTEBOOKS, REPO, CopyNotebook, Lab, copy_into, new_page
from .lab import (
    AXE,
    SIDEBAR,
    active_cell_index,
    axe_violations,
    cell_index,
    cell_with_source,
    click_button,
    focused,
    open_notebook,
    outputs,
    show_sidebar,
    wait_for_run_end,
    wait_for_steps,
)
from .test_sidebar import WINE, screenshot, steps_of

PARAMS = NOTEBOOKS / "params.ipynb"
RENAMING = NOTEBOOKS / "renaming.ipynb"
AXE_JS = str(REPO / AXE)
COMPARE = "#cellpipe-compare"


@dataclass
class Compared:
    page: Page
    name: str
    runs: list[str]  # newest first, as the history lists them


def history_rows(page: Page) -> Locator:
    return page.locator(f"{SIDEBAR} li.cellpipe-run-row")


def run_and_wait(page: Page, expected_rows: int) -> None:
    click_button(page, "Compile and Run")
    expect(history_rows(page)).to_have_count(expected_rows)
    expect(history_rows(page).first).to_have_attribute("data-cellpipe-state", "succeeded")
    wait_for_run_end(page)


@pytest.fixture(scope="module")
def compared(browser: Browser, lab: Lab) -> Iterator[Compared]:
    page = new_page(browser)
    name = copy_into(lab, PARAMS, "compare")
    open_notebook(page, lab.url, name)
    show_sidebar(page)
    wait_for_steps(page, steps_of(PARAMS))
    run_and_wait(page, 1)
    page.locator(f'{SIDEBAR} input[name="param-scale"]').fill("3")
    run_and_wait(page, 2)
    runs = history_rows(page).evaluate_all("rows => rows.map(r => r.dataset.cellpipeRun)")
    for row in history_rows(page).all():
        row.get_by_role("checkbox").check()
    page.locator(SIDEBAR).get_by_role("button", name="Compare", exact=True).click()
    page.locator(f"{COMPARE} table.cellpipe-compare").wait_for()
    expect(page.locator(f"{COMPARE} .cellpipe-chart .ct-point")).to_have_count(2)
    # The two runs' success toasts close after 5 s; the README's screenshot is without them.
    expect(page.locator(".jp-Notification-Toast-success")).to_have_count(0, timeout=20_000)
    screenshot(page, "compare-runs.png")
    yield Compared(page, name, runs)
    page.context.close()


def column(compared: Compared, key: str) -> list[str]:
    cells = compared.page.locator(f'{COMPARE} tbody td[data-cellpipe-column="{key}"]')
    return cells.evaluate_all("cs => cs.map(c => c.textContent.trim())")


def test_the_compare_table_has_one_row_per_ticked_run(compared: Compared) -> None:
    rows = compared.page.locator(f"{COMPARE} tbody tr[data-cellpipe-run]")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.cellpipeRun)") == compared.runs


def test_the_differing_parameter_and_metric_are_marked(compared: Compared) -> None:
    assert column(compared, "param:scale") == ["3", "2"]
    assert column(compared, "metric:total") == ["135", "90"]
    for key in ("param:scale", "metric:total"):
        header = compared.page.locator(f'{COMPARE} thead th[data-cellpipe-column="{key}"]')
        expect(header).to_contain_text("≠")
        differs = compared.page.locator(
            f'{COMPARE} tbody td[data-cellpipe-column="{key}"][data-cellpipe-differs="true"]'
        )
        expect(differs).to_have_count(2)
    for value in column(compared, "step:compute"):
        assert re.fullmatch(r"succeeded · [\d.]+ s · ran", value), value
    # The step's state did not change between the runs: not marked.
    expect(
        compared.page.locator(
            f'{COMPARE} td[data-cellpipe-column="step:compute"][data-cellpipe-differs]'
        )
    ).to_have_count(0)


def test_the_chart_draws_one_point_per_run_of_the_metric(compared: Compared) -> None:
    chart = compared.page.locator(f'{COMPARE} .cellpipe-chart[data-cellpipe-chart="total"]')
    expect(chart.locator(".ct-point")).to_have_count(2)
    expect(chart).to_have_attribute(
        "aria-label",
        f"total across 2 runs, oldest first. "
        f"run {compared.runs[1]}: 90; run {compared.runs[0]}: 135",
    )


def test_the_compare_view_has_no_serious_accessibility_violations(compared: Compared) -> None:
    assert axe_violations(compared.page, COMPARE, AXE_JS) == []


def test_rerun_with_these_parameters_starts_a_run_with_them(compared: Compared, lab: Lab) -> None:
    page = compared.page
    scaled = page.locator(f'{COMPARE} tbody tr[data-cellpipe-run="{compared.runs[0]}"]')
    scaled.get_by_role("button", name="Re-run with these parameters").click()
    expect(history_rows(page)).to_have_count(3)
    new = history_rows(page).first
    expect(new).to_have_attribute("data-cellpipe-state", "succeeded")
    response = page.request.get(
        f"{lab.url}/cellpipe/api/runs/{new.get_attribute('data-cellpipe-run')}"
    )
    assert response.ok, response.status
    assert response.json()["parameters"] == {"scale": 3}


def test_apply_outputs_writes_that_runs_outputs_into_the_open_notebook(compared: Compared) -> None:
    page = compared.page
    compute = cell_with_source(page, "total = sum(range(10)) * scale")
    older = page.locator(f'{COMPARE} tbody tr[data-cellpipe-run="{compared.runs[1]}"]')
    older.get_by_role("button", name="Apply outputs").click()
    expect(outputs(compute)).to_contain_text("total 90")
    newer = page.locator(f'{COMPARE} tbody tr[data-cellpipe-run="{compared.runs[0]}"]')
    page.locator(".jp-MainAreaWidget#cellpipe-compare").wait_for(state="attached")
    page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="Compare runs").click()
    newer.get_by_role("button", name="Apply outputs").click()
    expect(outputs(compute)).to_contain_text("total 135")


def test_the_history_is_one_tab_stop_moved_with_arrows_and_enter_shows_a_run(
    compared: Compared,
) -> None:
    page = compared.page
    rows = history_rows(page)
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.cellpipeRun)")
    assert rows.evaluate_all("rs => rs.map(r => r.tabIndex)").count(0) == 1
    rows.first.focus()
    page.keyboard.press("ArrowDown")
    assert focused(page)["run"] == ids[1], focused(page)
    page.keyboard.press("End")
    assert focused(page)["run"] == ids[-1], focused(page)
    page.keyboard.press("Enter")
    expect(rows.last).to_have_class(re.compile(r"\bcellpipe-mod-shown\b"))
    # The focused row holds the stop: its checkbox is on the Tab path, the others' are not.
    tab_order = rows.evaluate_all(
        "rs => rs.map(r => [r.tabIndex, r.querySelector('input').tabIndex])"
    )
    assert tab_order[-1] == [0, 0] and all(t == [-1, -1] for t in tab_order[:-1]), tab_order


# -- keyboard and accessibility of the sidebar and the tag form --------------------------------


def test_keyboard_only_tab_to_the_steps_then_arrows_and_enter_jump_to_a_cell(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(WINE))
    show_sidebar(page)
    steps = list(wait_for_steps(page, steps_of(WINE)))
    page.locator(SIDEBAR).get_by_role("button", name="Compile and Run", exact=True).focus()
    for _ in range(30):
        if focused(page)["step"]:
            break
        page.keyboard.press("Tab")
    assert focused(page)["step"] == steps[0], focused(page)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused(page)["step"] == steps[2], focused(page)
    page.keyboard.press("ArrowUp")
    assert focused(page)["step"] == steps[1], focused(page)
    # The steps list is one Tab stop: the next Tab leaves it.
    page.keyboard.press("Tab")
    assert focused(page)["step"] == "", focused(page)
    page.keyboard.press("Shift+Tab")
    assert focused(page)["step"] == steps[1], focused(page)
    page.keyboard.press("End")
    assert focused(page)["step"] == steps[-1], focused(page)
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    target = cell_with_source(page, "X = df.drop")  # the first cell of the second step
    page.wait_for_function(
        "(i) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i",
        arg=cell_index(target),
    )
    assert active_cell_index(page) == cell_index(target)


def test_the_sidebar_has_no_serious_accessibility_violations(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(WINE))
    show_sidebar(page)
    wait_for_steps(page, steps_of(WINE))
    assert axe_violations(page, SIDEBAR, AXE_JS) == []


def test_the_tag_forms_have_no_serious_accessibility_violations(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(RENAMING))
    show_sidebar(page)
    wait_for_steps(page, steps_of(RENAMING))
    cell = cell_with_source(page, "ordered = sorted(values)")
    cell.locator(".jp-InputPrompt").click()
    # The property inspector's "Pipeline step" section.
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jp-property-inspector"]').click()
    section = page.locator(".jp-NotebookTools", has_text="Pipeline step")
    section.get_by_text("Pipeline step", exact=True).first.click()
    form = page.locator(".cellpipe-form")
    expect(form.locator('input[aria-label="Step name"]')).to_have_value("sort")
    assert axe_violations(page, ".cellpipe-form", AXE_JS) == []
    # The cell toolbar's dialog.
    cell.locator('[data-command="cellpipe:set-step"]').click()
    page.locator(".jp-Dialog .cellpipe-step-dialog").wait_for()
    assert axe_violations(page, ".jp-Dialog .cellpipe-step-dialog", AXE_JS) == []
    page.locator(".jp-Dialog .jp-mod-reject").click()
