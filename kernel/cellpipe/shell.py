"""An IPython shell that records each cell's outputs the way Jupyter shows them.

Steps run in IPython's own ``InteractiveShell`` (no kernel, no ZMQ), so magics, ``!cmd``,
rich display and matplotlib's inline backend behave as in a notebook. What a kernel would
send to the front end is recorded instead as nbformat v4 outputs: ``stream`` (consecutive
writes to one stream merged, as nbclient does), ``display_data``, ``execute_result`` and
``error``. ``clear_output`` and display updates follow nbclient's rules.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


def _import_ipython_without_jedi() -> None:
    """IPython imports jedi for tab completion, which a step never does; it is a quarter of
    IPython's import time, paid by every run. Block it during the import only, so user code
    can still import jedi."""
    if "jedi" in sys.modules:
        return
    sys.modules["jedi"] = None  # type: ignore[assignment]
    try:
        import IPython  # noqa: F401
    finally:
        del sys.modules["jedi"]


_import_ipython_without_jedi()

from IPython.core.displayhook import DisplayHook  # noqa: E402
from IPython.core.displaypub import DisplayPublisher  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from traitlets import Type  # noqa: E402
from traitlets.config import Config  # noqa: E402

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class CellRun:
    outputs: list[dict[str, Any]]
    success: bool
    error: dict[str, Any] | None
    execution_count: int


class _Outputs:
    """The outputs of the cell running now."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.clear_pending = False
        self.by_display_id: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.RLock()
        self.on_change: Callable[[list[dict[str, Any]]], None] | None = None

    def reset(self) -> None:
        with self.lock:
            self.items = []
            self.clear_pending = False

    def _before_add(self) -> None:
        if self.clear_pending:
            self.items.clear()
            self.clear_pending = False

    def add(self, output: dict[str, Any], display_id: str | None = None) -> None:
        with self.lock:
            self._before_add()
            self.items.append(output)
            if display_id:
                self.by_display_id.setdefault(display_id, []).append(output)
        self._changed()

    def stream(self, name: str, text: str) -> None:
        with self.lock:
            self._before_add()
            last = self.items[-1] if self.items else None
            if last and last["output_type"] == "stream" and last["name"] == name:
                last["text"] += text
            else:
                self.items.append({"output_type": "stream", "name": name, "text": text})
        self._changed()

    def update(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        with self.lock:
            for out in self.by_display_id.get(display_id, []):
                out["data"], out["metadata"] = data, metadata
        self._changed()

    def clear(self, wait: bool) -> None:
        with self.lock:
            if wait:
                self.clear_pending = True
            else:
                self.items.clear()
                self.clear_pending = False
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            # A failing progress writer must never fail the user's cell.
            with contextlib.suppress(Exception):
                self.on_change(self.items)


class _Publisher(DisplayPublisher):
    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        outputs: _Outputs = self.shell._outputs  # type: ignore[attr-defined]
        display_id = (transient or {}).get("display_id")
        if update and display_id:
            outputs.update(display_id, data, metadata or {})
            return
        outputs.add(
            {"output_type": "display_data", "data": data, "metadata": metadata or {}}, display_id
        )

    def clear_output(self, wait: bool = False) -> None:
        self.shell._outputs.clear(wait)  # type: ignore[attr-defined]


class _DisplayHook(DisplayHook):
    """Records the value of a cell's last expression as an ``execute_result``."""

    def start_displayhook(self) -> None:
        self._result: tuple[dict[str, Any], dict[str, Any]] | None = None

    def write_output_prompt(self) -> None:
        return None

    def write_format_data(
        self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None
    ) -> None:
        self._result = (format_dict, md_dict or {})

    def finish_displayhook(self) -> None:
        if self._result is None:
            return
        data, md = self._result
        self.shell._outputs.add(  # type: ignore[union-attr]
            {
                "output_type": "execute_result",
                "data": data,
                "metadata": md,
                "execution_count": self.prompt_count,
            }
        )
        self._result = None


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr while a cell runs: into the cell's outputs and the log."""

    def __init__(self, name: str, shell: StepShell, original: TextIO):
        self.name_ = name
        self.shell = shell
        self.original = original

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that hands sys.stdout to a subprocess gets the real descriptor (the log).
        return self.original.fileno()

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self.shell._outputs.stream(self.name_, text)
            log = self.shell.step_log
            if log is not None:
                with contextlib.suppress(OSError, ValueError):
                    log.write(text)
        return len(text)

    def flush(self) -> None:
        log = self.shell.step_log
        if log is not None:
            with contextlib.suppress(OSError, ValueError):
                log.flush()


def _no_input(*args: Any, **kwargs: Any) -> str:
    raise RuntimeError(
        "cellpipe steps cannot read from standard input; make the value a parameter instead"
    )


class StepShell(InteractiveShell):
    """An ``InteractiveShell`` that records nbformat outputs per cell.

    Parameters
    ----------
    log
        Stream output is also written here as it happens, and tracebacks as plain text.
    on_output
        Called with the running cell's outputs after each change (for live progress).
    """

    displayhook_class = Type(_DisplayHook)
    display_pub_class = Type(_Publisher)

    def __init__(
        self,
        *,
        log: TextIO | None = None,
        on_output: Callable[[list[dict[str, Any]]], None] | None = None,
        **kwargs: Any,
    ):
        # matplotlib must pick the inline backend before anything imports pyplot, as in Jupyter.
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self._outputs = _Outputs()
        self.step_log = log
        config = Config()
        config.HistoryManager.enabled = False  # no SQLite history file in ~/.ipython
        config.InteractiveShell.colors = "Linux"  # the scheme Jupyter front ends expect
        config.InteractiveShell.xmode = "Context"
        super().__init__(config=config, **kwargs)
        self.on_output = on_output
        # get_ipython() must find this shell: matplotlib_inline and display() use it.
        InteractiveShell._instance = self
        StepShell._instance = self

    @property
    def on_output(self) -> Callable[[list[dict[str, Any]]], None] | None:
        return self._outputs.on_change

    @on_output.setter
    def on_output(self, fn: Callable[[list[dict[str, Any]]], None] | None) -> None:
        self._outputs.on_change = fn

    def init_io(self) -> None:
        return None

    def enable_gui(self, gui: str | None = None) -> None:
        return None  # `%matplotlib inline` asks for no GUI event loop; nothing to do

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:  # type: ignore[override]
        self._last_error = {
            "output_type": "error",
            "ename": getattr(etype, "__name__", str(etype)),
            "evalue": str(evalue),
            "traceback": list(stb),
        }
        self._outputs.add(dict(self._last_error))
        if self.step_log is not None:
            with contextlib.suppress(OSError, ValueError):
                self.step_log.write(strip_ansi("\n".join(stb)) + "\n")

    def execute(self, source: str) -> CellRun:
        """Run one cell as Jupyter would and return its outputs.

        (Not an override of ``run_cell``: cell magics such as ``%%capture`` call that one
        for their body and must get IPython's behaviour.)
        """
        self._outputs.reset()
        self._last_error: dict[str, Any] | None = None
        count = self.execution_count
        out, err = sys.stdout, sys.stderr
        sys.stdout = _Stream("stdout", self, sys.__stdout__ or out)  # type: ignore[assignment]
        sys.stderr = _Stream("stderr", self, sys.__stderr__ or err)  # type: ignore[assignment]
        saved_input = builtins.input
        builtins.input = _no_input
        try:
            result = self.run_cell(source, store_history=True, silent=False)
        finally:
            builtins.input = saved_input
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                sys.stdout, sys.stderr = out, err
        error = None
        if not result.success:
            e = self._last_error or {
                "ename": type(result.error_in_exec or result.error_before_exec).__name__,
                "evalue": str(result.error_in_exec or result.error_before_exec),
                "traceback": [],
            }
            error = {
                "ename": e["ename"],
                "evalue": e["evalue"],
                "traceback": [strip_ansi(line) for line in e["traceback"]],
            }
        with self._outputs.lock:
            outputs = list(self._outputs.items)
        return CellRun(outputs, result.success, error, count)

    def close(self) -> None:
        """Forget this shell so another can be created in the same process."""
        InteractiveShell.clear_instance()
        StepShell.clear_instance()
