"""The live monitor: an ipywidgets view of one run that updates while the kernel stays free.

A background thread reads the run directory's status a few times a second and sets widget
traits; ipykernel sends trait changes made from any thread to the browser, so the cell that
started the run has long finished while the boxes still change colour. Everything a test or
a user wants to read is on the :class:`Monitor` itself (``states``, ``state``), the widgets
only show it.
"""

from __future__ import annotations

import contextlib
import html
import subprocess
import threading
import time
from typing import Any

import ipywidgets as widgets

from cellpipe.core.model import State
from cellpipe.rundir.runs import RunDir, RunStatus

_POLL_S = 0.25
_LOG_TAIL_LINES = 200

# Theme colours (UX.md §3), so the monitor follows JupyterLab's light and dark themes.
_COLOUR = {
    "pending": "var(--jp-ui-font-color3, #999)",
    "running": "var(--jp-brand-color1, #1976d2)",
    "succeeded": "var(--jp-success-color1, #388e3c)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "cached": "var(--jp-info-color1, #0097a7)",
    "skipped": "var(--jp-ui-font-color2, #616161)",
    "cancelled": "var(--jp-warn-color1, #f57c00)",
}


def _word(st: Any, now: float) -> str:
    """What a step box says: the state, and a time where there is one."""
    state = st.state.value
    if state == "running" and st.started_at:
        return f"running {now - st.started_at:.0f} s"
    if state == "succeeded" and st.duration_s is not None:
        return f"succeeded {st.duration_s:.1f} s"
    if state == "pending":
        return "waiting"
    return state


class Monitor:
    """A run being watched. ``states`` maps each step to its state (``"succeeded"``, ...);
    ``state`` is the run's. Display it (or the ``widget``) in a notebook to see it live."""

    def __init__(self, rd: RunDir, driver: subprocess.Popen[bytes] | None = None):
        self.rd = rd
        self.run_id = rd.run_id
        self._driver = driver
        self._lock = threading.Lock()
        self._finished = threading.Event()
        steps = [s.name for s in rd.pipeline().steps]
        self.states: dict[str, str] = dict.fromkeys(steps, "pending")
        self.state = "pending"
        self.status: RunStatus | None = None

        self.header = widgets.HTML()
        self.step_buttons: dict[str, widgets.Button] = {}
        for name in steps:
            button = widgets.Button(
                description=name,
                tooltip=f"show the log of step {name}",
                layout=widgets.Layout(width="auto", margin="2px"),
            )
            button.on_click(lambda _, n=name: self.show_log(n))
            self.step_buttons[name] = button
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", tooltip="stop this run", button_style="warning"
        )
        self.cancel_button.on_click(lambda _: self._cancel_in_background())
        self.log = widgets.Output(layout=widgets.Layout(max_height="20em", overflow="auto"))
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.header, self.cancel_button]),
                widgets.HBox(
                    list(self.step_buttons.values()), layout=widgets.Layout(flex_flow="row wrap")
                ),
                self.log,
            ]
        )
        self.refresh()
        self._thread = threading.Thread(
            target=self._follow, name=f"cellpipe-monitor-{self.run_id}", daemon=True
        )
        self._thread.start()

    # -- what a user calls ----------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run ends (and the widgets show it); return its final status.

        Raises TimeoutError when ``timeout`` seconds pass first.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(
                f"run {self.run_id} still {self.state} after {timeout:g} s: "
                f"{', '.join(f'{k}={v}' for k, v in self.states.items())}"
            )
        assert self.status is not None
        return self.status

    def cancel(self) -> None:
        """Stop the run: running steps end cancelled, the others are not started."""
        from cellpipe.backends import get_backend
        from cellpipe.core.errors import Conflict

        with contextlib.suppress(Conflict):  # it ended in the meantime
            get_backend(self.rd.info().get("backend", "local")).cancel(self.rd)
        self.refresh()

    def show_log(self, step: str) -> None:
        """Show the end of ``step``'s log below the boxes (what clicking a step does)."""
        path = self.rd.log_path(step)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            lines = [f"step {step} has not written a log yet"]
        self.log.clear_output()
        text = "\n".join(lines[-_LOG_TAIL_LINES:])
        self.log.append_display_data(
            widgets.HTML(
                f"<b>{html.escape(step)}</b> · <code>{html.escape(str(path))}</code>"
                f"<pre style='margin:0'>{html.escape(text)}</pre>"
            )
        )

    def refresh(self) -> RunStatus:
        """Read the run's status now and update the widgets."""
        with self._lock:
            status = self.rd.status()
            now = time.time()
            for name, st in status.steps.items():
                state = st.state.value
                self.states[name] = state
                button = self.step_buttons.get(name)
                if button is None:
                    continue
                button.description = f"{name} · {_word(st, now)}"
                button.tooltip = st.message or f"show the log of step {name}"
                # ButtonStyle accepts only plain colours and var(); the tint UX.md asks for
                # (color-mix) goes in the border, which Layout passes to CSS as it is.
                button.style.button_color = "var(--jp-layout-color2)"
                button.layout.border = f"2px solid {_COLOUR[state]}"
                button.style.font_weight = "bold" if state == "running" else ""
            self.state = status.state.value
            elapsed = f" · {status.duration_s:.1f} s" if status.duration_s is not None else ""
            colour = _COLOUR[self.state]
            message = f" · {html.escape(status.message)}" if status.message else ""
            self.header.value = (
                f"<span style='color:{colour}'>●</span> cellpipe run <code>{self.run_id}</code>"
                f" · <b>{self.state}</b>{elapsed}{message}"
            )
            self.cancel_button.disabled = status.state.terminal
            self.status = status
            return status

    # -- display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        steps = ", ".join(f"{k}={v}" for k, v in self.states.items())
        return f"<cellpipe run {self.run_id}: {self.state} ({steps})>"

    # -- the background thread -------------------------------------------------------------

    def _follow(self) -> None:
        while True:
            try:
                status = self.refresh()
            except (OSError, ValueError):
                status = None  # a file being replaced right now; read it next time
            code = self._driver.poll() if self._driver is not None else None
            if code is not None and status is not None and not status.state.terminal:
                status = self._driver_died(code)
            if status is not None and status.state.terminal:
                self._finished.set()
                return
            time.sleep(_POLL_S)

    def _driver_died(self, code: int) -> RunStatus:
        """The driving process is gone but the run never ended: it died before it could say
        so (before writing driver.json). Settle the run directory so nobody waits forever."""
        status = self.refresh()
        if status.state.terminal:
            return status  # it ended between our two reads
        log = self.rd.driver_log_path()
        self.rd.emit(
            State.FAILED,
            message=f"the process running this pipeline exited with code {code} before the "
            f"run ended; see {log}",
        )
        return self.refresh()

    def _cancel_in_background(self) -> None:
        # Cancelling waits for the driver to stop; the kernel must keep answering meanwhile.
        self.cancel_button.disabled = True
        threading.Thread(target=self.cancel, name="cellpipe-cancel", daemon=True).start()

    @property
    def ok(self) -> bool:
        return State(self.state).ok
