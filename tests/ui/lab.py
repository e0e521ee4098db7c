"""What a user does in JupyterLab, as Playwright calls, and what they see, as values.

Every wait is on a selector or an attribute, never a sleep: the machines are small and
shared, so a phase may take many seconds, and a sleep would be either flaky or slow.
The selectors are the extension's documented hooks (docs/labextension.md).
"""

from __future__ import annotations

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect

PHASE_S = 60  # two shared cores: starting a kernel or a run can take many seconds
PHASE_MS = PHASE_S * 1000
TERMINAL = ("succeeded", "failed", "cached", "skipped", "cancelled")

SIDEBAR = "#cellpipe-sidebar"
SIDEBAR_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="cellpipe-sidebar"]'
STEP_ROW = f"{SIDEBAR} .cellpipe-step-row[data-cellpipe-step]"
CELLS = ".jp-NotebookPanel .jp-Notebook .jp-Cell"


class LabUIError(AssertionError):
    """The UI did not reach the state a test waited for; the message says what it showed."""


def open_notebook(page: Page, base_url: str, name: str) -> None:
    """Open NAME in a fresh workspace (`?reset`: no tabs left over from another test)."""
    page.goto(f"{base_url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    # Lab attaches cells in batches: wait until every cell of the model has its node.
    page.wait_for_function(
        """(sel) => {
            const panel = window.jupyterapp?.shell.currentWidget;
            const model = panel?.content?.model;
            return !!panel?.context?.isReady && !!model && model.cells.length > 0
                && document.querySelectorAll(sel).length === model.cells.length;
        }""",
        arg=CELLS,
    )


def show_sidebar(page: Page) -> Locator:
    """Open the Pipeline tab of the left area, as a user clicks it, and wait for its steps."""
    sidebar = page.locator(SIDEBAR)
    if not sidebar.is_visible():
        tab = page.locator(SIDEBAR_TAB)
        try:
            tab.wait_for()
        except PlaywrightError as e:
            raise LabUIError(
                "JupyterLab rendered, but its left area has no cellpipe tab "
                f"({SIDEBAR_TAB}): the labextension is installed but did not load. "
                f"Browser errors: {page_errors(page) or 'none'}"
            ) from e
        tab.click()
    sidebar.wait_for()
    return sidebar


def page_errors(page: Page) -> list[str]:
    return list(getattr(page, "cellpipe_errors", []))


def step_row(page: Page, step: str) -> Locator:
    return page.locator(f'{SIDEBAR} .cellpipe-step-row[data-cellpipe-step="{step}"]')


def step_states(page: Page) -> dict[str, str]:
    """{step: state} as the sidebar shows it, in the sidebar's order."""
    return page.eval_on_selector_all(
        STEP_ROW,
        "rows => Object.fromEntries(rows.map(r => [r.dataset.cellpipeStep, r.dataset.cellpipeState]))",
    )


def status_line(page: Page) -> str:
    status = page.locator(f"{SIDEBAR} .cellpipe-status")
    return status.inner_text() if status.count() else "(no status line)"


def wait_for_steps(page: Page, names: list[str]) -> dict[str, str]:
    """Wait until the sidebar lists exactly these steps; returns their states."""
    try:
        page.wait_for_function(
            """([sel, want]) => {
                const got = [...document.querySelectorAll(sel)].map(r => r.dataset.cellpipeStep);
                return JSON.stringify([...got].sort()) === JSON.stringify([...want].sort());
            }""",
            arg=[STEP_ROW, names],
            timeout=PHASE_MS,
        )
    except PlaywrightError as e:
        raise LabUIError(
            f"the sidebar should list the steps {names}; it shows {step_states(page)}"
        ) from e
    return step_states(page)


def record_states(page: Page) -> None:
    """Note every state each step row passes through from now on (window.__cellpipeSeen)."""
    page.evaluate(
        """(sel) => {
            const seen = (window.__cellpipeSeen = {});
            const note = (row) => {
                const step = row.dataset.cellpipeStep, state = row.dataset.cellpipeState;
                const list = (seen[step] = seen[step] || []);
                if (list[list.length - 1] !== state) list.push(state);
            };
            const scan = () => document.querySelectorAll(sel).forEach(note);
            scan();
            // rows may be re-rendered rather than updated in place: rescan on any change
            new MutationObserver(scan).observe(document.querySelector('#cellpipe-sidebar'), {
                subtree: true, childList: true, attributes: true,
                attributeFilter: ['data-cellpipe-state'],
            });
        }""",
        STEP_ROW,
    )


def seen_states(page: Page) -> dict[str, list[str]]:
    return page.evaluate("() => window.__cellpipeSeen || {}")


def wait_for_run_end(
    page: Page, *, leaving: dict[str, str] | None = None, timeout_s: float = PHASE_S
) -> dict[str, str]:
    """Wait until every step row shows a final state; returns {step: state}.

    `leaving`: states shown before the run started (a resume starts from final states), of
    which at least one must change first, so the old run's states are not taken for the new.
    `timeout_s`: longer for a run whose steps are pods on a cluster.
    """
    try:
        page.wait_for_function(
            """([sel, terminal, before]) => {
                const rows = [...document.querySelectorAll(sel)];
                if (!rows.length || !rows.every(r => terminal.includes(r.dataset.cellpipeState)))
                    return false;
                if (before && rows.every(r => before[r.dataset.cellpipeStep] === r.dataset.cellpipeState))
                    return false;
                // The run itself ends a moment after its last step: Cancel goes disabled then.
                const cancel = [...document.querySelectorAll('#cellpipe-sidebar button')]
                    .find(b => b.textContent.trim() === 'Cancel');
                return !!cancel && cancel.disabled;
            }""",
            arg=[STEP_ROW, list(TERMINAL), leaving],
            timeout=timeout_s * 1000,
        )
    except PlaywrightError as e:
        raise LabUIError(
            f"the run did not end within {timeout_s:g} s: steps {step_states(page)}, "
            f"status line {status_line(page)!r}"
        ) from e
    return step_states(page)


def click_button(page: Page, text: str) -> None:
    page.locator(SIDEBAR).get_by_role("button", name=text, exact=True).click()


def cells(page: Page) -> Locator:
    return page.locator(CELLS)


def cell_with_source(page: Page, snippet: str) -> Locator:
    """The one cell whose source (not its outputs) contains snippet."""
    cell = cells(page).filter(has=page.locator(".jp-InputArea-editor", has_text=snippet))
    expect(cell, f"one cell whose source contains {snippet!r}").to_have_count(1)
    return cell


def cell_index(cell: Locator) -> int:
    return cell.evaluate(
        "(c) => [...c.parentElement.children].filter(e => e.classList.contains('jp-Cell')).indexOf(c)"
    )


def active_cell_index(page: Page) -> int:
    return page.eval_on_selector_all(
        CELLS, "cs => cs.findIndex(c => c.classList.contains('jp-mod-active'))"
    )


def outputs(cell: Locator) -> Locator:
    """The cell's output area: check it with `expect`, as outputs arrive after the state."""
    return cell.locator(".jp-OutputArea")


def replace_source(page: Page, cell: Locator, source: str) -> None:
    """Select all of the cell's code and type the new code, as a user edits a cell."""
    index = cell_index(cell)
    cell.locator(".cm-content").click()
    page.keyboard.press("ControlOrMeta+a")
    # insert_text sends the text as one input: no auto-indent or bracket closing on the way
    page.keyboard.insert_text(source)
    page.keyboard.press("Escape")  # back to command mode, as after finishing an edit
    # The editor updates the notebook model a moment later; runs read the model.
    page.wait_for_function(
        """([i, source]) => window.jupyterapp.shell.currentWidget.content.model.cells
            .get(i).sharedModel.getSource() === source""",
        arg=[index, source],
    )


def cell_tags(page: Page, index: int) -> list[str]:
    """The tags in the open notebook's model (unsaved), as the extension wrote them."""
    tags = page.evaluate(
        "(i) => window.jupyterapp.shell.currentWidget.content.model.cells.get(i).getMetadata('tags')",
        index,
    )
    return list(tags or [])


def notebook_tab(page: Page) -> Locator:
    """The main-area tab of the open notebook (class jp-mod-dirty while it has unsaved edits)."""
    return page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current")


AXE = "node_modules/axe-core/axe.min.js"  # under the repository root: `jlpm install` puts it


def axe_violations(page: Page, selector: str, axe_path: str) -> list[str]:
    """Serious and critical axe-core violations inside `selector`, one line each."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=axe_path)
    return page.evaluate(
        """async (sel) => {
            const result = await window.axe.run(document.querySelector(sel), {
                resultTypes: ['violations'],
            });
            return result.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => `${v.impact} ${v.id}: ${v.help} — ` +
                    v.nodes.map(n => n.target.join(' ')).slice(0, 5).join(' | '));
        }""",
        selector,
    )


def focused(page: Page) -> dict[str, str]:
    """What has the keyboard focus: its tag, class, step or run hook, and text."""
    return page.evaluate(
        """() => {
            const e = document.activeElement;
            return {
                tag: e?.tagName ?? '', cls: e?.className?.toString() ?? '',
                step: e?.dataset?.cellpipeStep ?? '', run: e?.dataset?.cellpipeRun ?? '',
                text: (e?.textContent ?? '').trim().slice(0, 60),
            };
        }"""
    )
