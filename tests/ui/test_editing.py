"""Building a pipeline without tagging cell by cell (GitHub issue 21): split an untagged
notebook at its headings, and rename a step with its dependants following.

Each edit must be one undoable change of the open notebook's model: dirty, never saved.
"""

from __future__ import annotations

import re

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect

from .harness import NOTEBOOKS, CopyNotebook, Lab
from .lab import (
    SIDEBAR,
    cell_tags,
    cells,
    click_button,
    notebook_tab,
    open_notebook,
    show_sidebar,
    step_row,
    wait_for_run_end,
    wait_for_steps,
)
from .test_sidebar import screenshot, steps_of

UNTAGGED = NOTEBOOKS / "untagged.ipynb"
RENAMING = NOTEBOOKS / "renaming.ipynb"
# What the engine makes of untagged.ipynb's headings (cellpipe tag --at-headings says the same).
SPLIT_STEPS = ["sensor_readings", "load_the_readings", "clean_outliers", "summary"]
PREVIEW = ".jp-Dialog .cellpipe-split-preview"


def all_tags(page: Page) -> list[list[str]]:
    return [cell_tags(page, i) for i in range(cells(page).count())]


def undo(page: Page) -> None:
    """Edit > Undo in the notebook (command mode's `z`)."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:undo-cell-action')")


def open_palette(page: Page) -> Locator:
    """The command palette, opened through its command. The modal palette closes when it
    loses the focus, which a notebook still starting its kernel may take: open it again."""
    palette = page.locator("#command-palette")
    for _ in range(5):
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:activate-command-palette')"
        )
        try:
            palette.locator("input").wait_for(state="visible", timeout=5_000)
            return palette
        except PlaywrightError:
            continue
    raise AssertionError("the command palette did not stay open")


def run_from_palette(page: Page, query: str, item: str) -> None:
    """Type `query` in the command palette and click its item `item`. The palette closes
    whenever something else takes the focus (the file browser the fresh workspace restores,
    a starting kernel), also between opening and typing: then the whole gesture is redone."""
    for _ in range(5):
        palette = open_palette(page)
        try:
            palette.locator("input").fill(query, timeout=5_000)
            palette.locator(".lm-CommandPalette-item", has_text=item).click(timeout=5_000)
            return
        except PlaywrightError:
            continue
    raise AssertionError(f"the command palette did not stay open long enough to run {item!r}")


def open_split_preview(page: Page) -> None:
    sidebar = show_sidebar(page)
    expect(sidebar.locator(".cellpipe-start")).to_contain_text("No steps yet.")
    sidebar.get_by_role(
        "button", name="Split into steps at each markdown heading", exact=True
    ).click()
    page.locator(PREVIEW).wait_for()


def preview_names(page: Page) -> list[str]:
    return page.locator(f'{PREVIEW} input[name^="split-name-"]').evaluate_all(
        "inputs => inputs.map(i => i.value)"
    )


def test_split_at_headings_previews_applies_and_runs(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    name = copy_notebook(UNTAGGED)
    on_disk = (lab.root / name).read_bytes()
    open_notebook(page, lab.url, name)
    open_split_preview(page)

    # The preview: one row per step, names from the headings, cells and heading shown.
    assert preview_names(page) == SPLIT_STEPS
    preview = page.locator(PREVIEW)
    expect(preview.locator("[data-cellpipe-split-step]").nth(2)).to_contain_text(
        "cells 7\u20138 · \u201cClean outliers\u201d"
    )
    expect(preview).to_contain_text("1 cell that only imports becomes imports")
    screenshot(page, "split-preview.png")

    # A name that is not valid, or already taken, is refused before anything is written.
    renamed = preview.locator('input[name="split-name-3"]')
    renamed.fill("load_the_readings")
    expect(preview.locator("[role=alert]")).to_contain_text("also the name of step 2")
    expect(page.locator(".jp-Dialog .jp-mod-accept")).to_be_disabled()
    renamed.fill("report")
    expect(preview.locator("[role=alert]")).to_have_count(0)
    page.locator(".jp-Dialog .jp-mod-accept").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)

    steps = ["sensor_readings", "load_the_readings", "clean_outliers", "report"]
    wait_for_steps(page, steps)
    assert all_tags(page) == [
        [],
        ["imports"],
        ["step:sensor_readings"],
        [],
        ["step:load_the_readings"],
        [],
        ["step:clean_outliers"],
        [],
        [],
        [],
        ["step:report"],
    ]
    expect(page.locator(f"{SIDEBAR} .cellpipe-start")).to_have_count(0)
    # The inferred data edges arrive with the server's compile of the open content.
    expect(step_row(page, "clean_outliers")).to_contain_text("after: load_the_readings")
    expect(step_row(page, "report")).to_contain_text("after: clean_outliers")
    expect(notebook_tab(page)).to_have_class(re.compile(r"\bjp-mod-dirty\b"))
    assert (lab.root / name).read_bytes() == on_disk, "Apply must not save the notebook"

    click_button(page, "Compile and Run")
    ended = wait_for_run_end(page)
    assert ended == dict.fromkeys(steps, "succeeded"), ended
    assert (lab.root / name).read_bytes() == on_disk


def test_one_undo_reverts_the_whole_split(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(UNTAGGED))
    before = all_tags(page)
    open_split_preview(page)
    page.locator(".jp-Dialog .jp-mod-accept").click()
    wait_for_steps(page, SPLIT_STEPS)

    undo(page)
    page.wait_for_function(
        """(want) => {
            const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
            const got = [];
            for (let i = 0; i < cells.length; i++) got.push(cells.get(i).getMetadata('tags') || []);
            return JSON.stringify(got) === JSON.stringify(want);
        }""",
        arg=before,
    )
    expect(page.locator(f"{SIDEBAR} .cellpipe-start")).to_contain_text("No steps yet.")


def test_the_split_is_in_the_command_palette_with_a_heading_level(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(UNTAGGED))
    before = all_tags(page)
    run_from_palette(page, "Split into steps", "Split into steps at markdown headings")
    page.locator(PREVIEW).wait_for()
    # Level 3 also splits at "### A note", which has no code cell under it: no step for it.
    page.locator(PREVIEW).get_by_label("Heading level").select_option("3")
    expect(page.locator(f'{PREVIEW} input[name^="split-name-"]')).to_have_count(4)
    page.locator(PREVIEW).get_by_label("Heading level").select_option("1")
    expect(page.locator(f'{PREVIEW} input[name^="split-name-"]')).to_have_count(1)
    assert preview_names(page) == ["sensor_readings"]
    page.locator(".jp-Dialog .jp-mod-reject").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    assert all_tags(page) == before, "Cancel writes nothing"


def test_renaming_a_step_renames_every_prev_naming_it_in_one_edit(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(RENAMING))
    show_sidebar(page)
    wait_for_steps(page, steps_of(RENAMING))
    before = all_tags(page)

    load = cells(page).nth(1)
    load.locator(".jp-InputPrompt").click()
    load.locator('[data-command="cellpipe:set-step"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[aria-label="Step name"]').fill("ingest")
    dialog.locator(".jp-mod-accept").click()

    wait_for_steps(page, ["ingest", "sort", "report"])
    assert all_tags(page)[1:] == [
        ["step:ingest"],
        ["step:sort", "prev:ingest"],
        ["step:report", "prev:ingest", "prev:sort", "hide-input"],
    ]
    expect(step_row(page, "sort")).to_contain_text("after: ingest")

    undo(page)
    wait_for_steps(page, ["load", "sort", "report"])
    assert all_tags(page) == before


def test_renaming_in_the_property_inspector_form_renames_the_dependants_too(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(RENAMING))
    show_sidebar(page)
    wait_for_steps(page, steps_of(RENAMING))
    cells(page).nth(1).locator(".jp-InputPrompt").click()
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jp-property-inspector"]').click()
    page.locator(".jp-NotebookTools").get_by_text("Pipeline step", exact=True).first.click()
    name = page.locator('.cellpipe-form input[aria-label="Step name"]')
    expect(name).to_have_value("load")
    name.fill("source")
    name.press("Enter")

    wait_for_steps(page, ["source", "sort", "report"])
    assert all_tags(page)[1:] == [
        ["step:source"],
        ["step:sort", "prev:source"],
        ["step:report", "prev:source", "prev:sort", "hide-input"],
    ]
    expect(notebook_tab(page)).to_have_class(re.compile(r"\bjp-mod-dirty\b"))


def test_tag_the_active_cell_in_the_empty_state_opens_the_tag_dialog(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    open_notebook(page, lab.url, copy_notebook(UNTAGGED))
    sidebar = show_sidebar(page)
    sidebar.get_by_role("button", name="Tag the active cell", exact=True).click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[aria-label="Step name"]').fill("intro")
    dialog.locator(".jp-mod-accept").click()
    # The title (markdown) was active: the first code cell gets the tag.
    page.wait_for_function(
        "() => (window.jupyterapp.shell.currentWidget.content.model.cells.get(1)"
        ".getMetadata('tags') || []).includes('step:intro')"
    )
    expect(sidebar.locator(".cellpipe-start")).to_have_count(0)


def _stem_step(name: str) -> str:
    """The step "Make the whole notebook one step" names after the notebook's file."""
    return name.removesuffix(".ipynb")


def test_make_the_whole_notebook_one_step_tags_it_in_one_undoable_edit_and_runs(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    name = copy_notebook(UNTAGGED)
    on_disk = (lab.root / name).read_bytes()
    open_notebook(page, lab.url, name)
    before = all_tags(page)
    sidebar = show_sidebar(page)
    expect(sidebar.locator(".cellpipe-start")).to_contain_text("No steps yet.")
    sidebar.get_by_role("button", name="Make the whole notebook one step", exact=True).click()

    step = _stem_step(name)
    wait_for_steps(page, [step])
    # One tag on the first code cell; every later code cell continues the step.
    after = all_tags(page)
    assert after[1] == [f"step:{step}"]
    assert after[:1] + after[2:] == before[:1] + before[2:]
    expect(sidebar.locator(".cellpipe-start")).to_have_count(0)
    expect(notebook_tab(page)).to_have_class(re.compile(r"\bjp-mod-dirty\b"))
    assert (lab.root / name).read_bytes() == on_disk, "the edit must not save the notebook"

    undo(page)
    page.wait_for_function(
        """(want) => {
            const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
            const got = [];
            for (let i = 0; i < cells.length; i++) got.push(cells.get(i).getMetadata('tags') || []);
            return JSON.stringify(got) === JSON.stringify(want);
        }""",
        arg=before,
    )
    expect(sidebar.locator(".cellpipe-start")).to_contain_text("No steps yet.")

    # Done again, the notebook runs as that one step at once.
    sidebar.get_by_role("button", name="Make the whole notebook one step", exact=True).click()
    wait_for_steps(page, [step])
    click_button(page, "Compile and Run")
    assert wait_for_run_end(page) == {step: "succeeded"}
    assert (lab.root / name).read_bytes() == on_disk


def test_make_the_whole_notebook_one_step_is_in_the_command_palette(
    page: Page, lab: Lab, copy_notebook: CopyNotebook
) -> None:
    name = copy_notebook(UNTAGGED)
    open_notebook(page, lab.url, name)
    run_from_palette(page, "whole notebook", "Make the whole notebook one step")
    page.wait_for_function(
        "(tag) => (window.jupyterapp.shell.currentWidget.content.model.cells.get(1)"
        ".getMetadata('tags') || []).includes(tag)",
        arg=f"step:{_stem_step(name)}",
    )
    # With steps, the command is off: it would merge them (the tag editor's job).
    assert not page.evaluate("() => window.jupyterapp.commands.isEnabled('cellpipe:make-one-step')")
