"""A composed notebook in the sidebar (GitHub issue 20): one collapsible group per part.

The main notebook of tests/notebooks/composition (`notebook:` cells for three notebooks and
a step of its own) lists its parts' qualified steps under one header per part, in the steps
list and in the DAG; the keyboard moves through the headers and the visible steps, opens and
closes a group; a run shows each part's steps going to `succeeded`. A `foreach` step shows
how many of its iterations are done.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cellpipe
from playwright.sync_api import Page, expect

from .harness import REPO, CopyNotebook, Lab
from .lab import (
    SIDEBAR,
    active_cell_index,
    axe_violations,
    cell_index,
    cells,
    click_button,
    focused,
    open_notebook,
    show_sidebar,
    step_row,
    wait_for_run_end,
    wait_for_steps,
)
from .test_compare import AXE_JS
from .test_sidebar import screenshot, steps_of

COMPOSITION = REPO / "tests" / "notebooks" / "composition"
MAIN = COMPOSITION / "main_mixed.ipynb"
FOREACH = REPO / "tests" / "notebooks" / "foreach_accumulators.ipynb"
PARTS = ["notebook_a", "notebook_b", "notebook_c"]


def copy_composition(lab: Lab, label: str) -> str:
    """The main notebook and the notebooks it references, in a folder of their own (the
    references are relative paths); returns the main notebook's path under the server root."""
    folder = lab.root / label
    folder.mkdir()
    for nb in COMPOSITION.glob("*.ipynb"):
        shutil.copyfile(nb, folder / nb.name)
    return f"{label}/{MAIN.name}"


def group_header(page: Page, group: str):
    return page.locator(f'{SIDEBAR} .cellpipe-group-row[data-cellpipe-group="{group}"]')


def focused_row(page: Page) -> str:
    """The row that has the focus: a step's name, or `group:NAME` for a part's header."""
    return page.evaluate("() => document.activeElement?.dataset?.cellpipeRow ?? ''")


def open_composed(page: Page, lab: Lab, label: str) -> list[str]:
    name = copy_composition(lab, label)
    open_notebook(page, lab.url, name)
    show_sidebar(page)
    steps = steps_of(MAIN)
    wait_for_steps(page, steps)
    return steps


def test_a_composed_notebook_lists_its_parts_steps_under_one_header_per_part(
    page: Page, lab: Lab
) -> None:
    steps = open_composed(page, lab, "groups")
    assert steps[-1] == "final" and steps[0].startswith("notebook_a.")
    for part in PARTS:
        header = group_header(page, part)
        expect(header).to_have_attribute("aria-expanded", "true")
        own = [s for s in steps if s.startswith(f"{part}.")]
        expect(header).to_contain_text(f"{len(own)} steps")
        expect(header).to_contain_text(f"{part}.ipynb")
        # A part's step shows its own name under the header; its hook keeps the full name.
        short = own[0].split(".", 1)[1]
        expect(step_row(page, own[0]).locator(".cellpipe-step-name")).to_have_text(short)
    # The headers carry no step hook: one element per step still carries it.
    expect(page.locator(f"{SIDEBAR} [data-cellpipe-step]")).to_have_count(len(steps))
    # The DAG draws each part as a box around its steps.
    clusters = page.locator(f"{SIDEBAR} .cellpipe-dag [data-cellpipe-cluster]")
    assert sorted(clusters.evaluate_all("gs => gs.map(g => g.dataset.cellpipeCluster)")) == PARTS
    # In the notebook, each cell that stands for a part says so; only `final` is a step's cell.
    for index, part in enumerate(PARTS, start=2):
        ref = cells(page).nth(index)
        expect(ref).to_have_attribute("data-cellpipe-role", "notebook")
        own = [s for s in steps if s.startswith(f"{part}.")]
        expect(ref.locator(".cellpipe-chip")).to_have_text(f"{part} · {len(own)} steps")
    expect(page.locator(".jp-Notebook .jp-Cell[data-cellpipe-step]")).to_have_count(1)
    expect(cells(page).nth(5)).to_have_attribute("data-cellpipe-step", "final")
    assert axe_violations(page, SIDEBAR, AXE_JS) == []
    screenshot(page, "sidebar-composed.png")


def test_run_cells_compose_the_same_groups_and_are_no_steps_cells(page: Page, lab: Lab) -> None:
    name = copy_composition(lab, "percent-run")
    main_run = name.replace(MAIN.name, "main_run.ipynb")
    open_notebook(page, lab.url, main_run)
    show_sidebar(page)
    wait_for_steps(page, steps_of(COMPOSITION / "main_run.ipynb"))
    for part in PARTS:
        expect(group_header(page, part)).to_have_attribute("aria-expanded", "true")
    # The %run cells stand for their notebooks: not the cells of a step `main`.
    refs = page.locator('.jp-Notebook .jp-Cell[data-cellpipe-role="notebook"]')
    expect(refs).to_have_count(len(PARTS))
    expect(page.locator(".jp-Notebook .jp-Cell[data-cellpipe-step]")).to_have_count(1)
    expect(cells(page).last).to_have_attribute("data-cellpipe-step", "final")


def test_keyboard_only_a_group_header_opens_and_closes_and_arrows_skip_hidden_steps(
    page: Page, lab: Lab
) -> None:
    steps = open_composed(page, lab, "keyboard")
    a_steps = [s for s in steps if s.startswith("notebook_a.")]
    header = group_header(page, "notebook_a")
    page.locator(SIDEBAR).get_by_role("button", name="Compile and Run", exact=True).focus()
    for _ in range(30):
        if focused_row(page):
            break
        page.keyboard.press("Tab")
    # The list's Tab stop is its first row: the first part's header.
    assert focused_row(page) == "group:notebook_a", focused(page)

    page.keyboard.press("Enter")
    expect(header).to_have_attribute("aria-expanded", "false")
    for s in a_steps:
        expect(step_row(page, s)).to_be_hidden()
    # Folded in the DAG too: one node stands for the part.
    expect(page.locator(f'{SIDEBAR} [data-cellpipe-group-node="notebook_a"]')).to_have_count(1)
    # ↓ skips the hidden steps: the next visible row is the next part's header.
    page.keyboard.press("ArrowDown")
    assert focused_row(page) == "group:notebook_b", focused(page)
    page.keyboard.press("ArrowUp")
    assert focused_row(page) == "group:notebook_a", focused(page)

    page.keyboard.press("ArrowRight")
    expect(header).to_have_attribute("aria-expanded", "true")
    for s in a_steps:
        expect(step_row(page, s)).to_be_visible()
    page.keyboard.press("ArrowDown")
    assert focused_row(page) == a_steps[0], focused(page)
    # ← on a part's step goes back to its header; ← there closes the group.
    page.keyboard.press("ArrowLeft")
    assert focused_row(page) == "group:notebook_a", focused(page)
    page.keyboard.press("ArrowLeft")
    expect(header).to_have_attribute("aria-expanded", "false")

    # Enter on a part's step goes to the cell of the main notebook that stands for the part.
    page.keyboard.press("ArrowDown")
    assert focused_row(page) == "group:notebook_b", focused(page)
    page.keyboard.press("ArrowDown")
    assert focused_row(page).startswith("notebook_b."), focused(page)
    page.keyboard.press("Enter")
    reference = cells(page).nth(3)  # title, parameters, notebook:notebook_a, notebook:notebook_b
    page.wait_for_function(
        "(i) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i",
        arg=cell_index(reference),
    )
    assert active_cell_index(page) == 3


def test_a_run_of_a_composed_notebook_shows_each_parts_steps_succeed(page: Page, lab: Lab) -> None:
    steps = open_composed(page, lab, "run")
    group_header(page, "notebook_b").click()  # a closed group follows the run too
    click_button(page, "Compile and Run")
    states = wait_for_run_end(page)
    assert states == dict.fromkeys(steps, "succeeded"), states
    for part in PARTS:
        own = [s for s in steps if s.startswith(f"{part}.")]
        header = group_header(page, part)
        expect(header).to_have_attribute("data-cellpipe-group-state", "succeeded")
        expect(header).to_contain_text(f"{len(own)}/{len(own)} done")
        ref = cells(page).nth(2 + PARTS.index(part))
        expect(ref.locator(".cellpipe-chip")).to_have_text(f"{part} · {len(own)}/{len(own)} done")
    expect(group_header(page, "notebook_b")).to_have_attribute("aria-expanded", "false")


def test_a_foreach_step_shows_its_iterations_done(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    name = copy_notebook(FOREACH)
    open_notebook(page, lab.url, name)
    show_sidebar(page)
    wait_for_steps(page, steps_of(FOREACH))
    click_button(page, "Compile and Run")
    states = wait_for_run_end(page)
    assert states["sweep"] == "succeeded", states
    total = len(_alphas(FOREACH))
    expect(step_row(page, "sweep").locator(".cellpipe-step-iterations")).to_have_text(
        f"{total}/{total} iterations"
    )
    # Only the fan-out step has iterations.
    expect(step_row(page, "report").locator(".cellpipe-step-iterations")).to_have_count(0)


def _alphas(notebook: Path) -> list[float]:
    """The foreach loop's items: the notebook's `alphas` parameter."""
    (param,) = [p for p in cellpipe.compile(notebook).parameters if p.name == "alphas"]
    return list(param.default)
