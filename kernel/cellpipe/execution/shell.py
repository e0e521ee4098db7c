"""Run a step's cells in IPython and record their outputs as Jupyter would.

A step runs in IPython's own ``InteractiveShell`` (no kernel, no ZMQ), so magics, ``!cmd``,
rich display and matplotlib's inline backend behave as in a notebook. What ipykernel would
send to the front end is recorded instead, in the nbformat v4 form nbclient gives it:
``stream`` outputs (consecutive writes to one stream merged), ``display_data``,
``execute_result`` and ``error``; ``clear_output`` and display updates follow nbclient's
rules. Stream text reaches the outputs when ipykernel would send it (see
:class:`_Recorder`), so stdout and stderr interleave as they do under a kernel. Importing
this module imports IPython and nothing else heavy.
"""

from __future__ import annotations

import atexit
import base64
import builtins
import codecs
import contextlib
import datetime
import getpass
import hashlib
import io
import numbers
import os
import re
import select
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO


def _import_ipython_without_jedi() -> None:
    """IPython imports jedi for tab completion, which a step never uses; it is a quarter of
    IPython's import time, paid by every step. Block it during the import only, so user code
    can still import jedi."""
    if "jedi" in sys.modules or "IPython" in sys.modules:
        return
    sys.modules["jedi"] = None  # type: ignore[assignment]
    try:
        import IPython  # noqa: F401
    finally:
        del sys.modules["jedi"]


_import_ipython_without_jedi()

from IPython.core.compilerop import CachingCompiler  # noqa: E402
from IPython.core.displayhook import DisplayHook  # noqa: E402
from IPython.core.displaypub import DisplayPublisher  # noqa: E402
from IPython.core.error import StdinNotImplementedError, UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.core.magic import Magics, line_magic, magics_class  # noqa: E402
from traitlets import Type  # noqa: E402
from traitlets.config import Config  # noqa: E402

__all__ = ["CellRun", "StepShell"]

Output = dict[str, Any]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# What ipykernel puts in a kernel's environment (``ZMQInteractiveShell.init_environment``),
# plus its matplotlib default; a step sees the environment a notebook cell sees.
_KERNEL_ENVIRON = {
    "TERM": "xterm-color",
    "CLICOLOR": "1",
    "FORCE_COLOR": "1",
    "CLICOLOR_FORCE": "1",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
}
_NO_STDIN = (
    "cellpipe steps cannot read from standard input ({what} was called); "
    "make the value a notebook parameter instead"
)


@dataclass
class CellRun:
    """What running one cell produced.

    Attributes
    ----------
    outputs
        nbformat v4 output dicts, as nbclient would store them for the cell. A later cell's
        ``update_display`` changes these dicts in place, as nbclient does.
    success
        False when the cell raised (including ``SystemExit`` and a ``SyntaxError``).
    error
        ``{"ename", "evalue", "traceback"}`` when it raised, else None; the traceback is the
        error output's, one plain-text string per entry, ANSI codes removed.
    execution_count
        The cell's prompt number, ``In [n]``.
    """

    outputs: list[Output]
    success: bool
    error: dict[str, Any] | None
    execution_count: int


#: ipykernel's ``OutStream.flush_interval``: a stream's text is sent this long after the
#: first write that found its buffer with no send pending.
FLUSH_INTERVAL = 0.2
#: The order ipykernel flushes its streams in before any other output and when a cell ends
#: (``sys.stdout.flush()`` then ``sys.stderr.flush()``).
_FLUSH_ORDER = ("stdout", "stderr")


class _Recorder:
    """The running cell's outputs, kept by nbclient's rules.

    Shared by the streams, the display publisher, the display hook and the traceback
    printer; any thread may write, so every change happens under one lock.

    Stream text is buffered per stream as ipykernel's ``OutStream`` buffers it, because
    that decides how stdout and stderr interleave in the notebook: a write to a stream with
    no send pending schedules one :data:`FLUSH_INTERVAL` later (a timer an explicit flush
    does not cancel); ``flush()`` on the stream sends its text at once (``print(...,
    flush=True)``, and every record of a logging handler); before a display, a result, an
    error or a ``clear_output``, and when the cell ends, stdout is flushed and then stderr.
    So a short cell that writes stderr between two prints shows both prints, then stderr,
    as under a kernel. The log gets every text as it is written.
    """

    def __init__(self, log: TextIO | None, on_output: Callable[[list[Output]], None] | None):
        self.lock = threading.RLock()
        self.log = log
        self.on_output = on_output
        self.outputs: list[Output] | None = None  # None between cells
        self.last_error: Output | None = None
        # The process running the cell: a process it forks writes to descriptors instead.
        self.pid = os.getpid()
        # Called before an output is added, so that text already written to descriptors
        # 1 and 2 lands before it (see _FdCapture.drain).
        self.before_output: Callable[[], None] | None = None
        # nbclient's ``clear_before_next_output``: set by clear_output(wait=True).
        self._clear_pending = False
        # display_id -> the outputs it was shown in, in any cell (nbclient's _display_id_map).
        self._displays: dict[str, list[Output]] = {}
        self._notifying = False
        # Stream text not sent yet, per stream; the streams with a send pending; the sends
        # scheduled (monotonic time, stream), in time order. ``_cell`` tells a timer of an
        # earlier cell from one of this cell.
        self._buffers: dict[str, list[str]] = {}
        self._send_pending: set[str] = set()
        self._sends: list[tuple[float, str]] = []
        self._cell = 0

    def start(self) -> None:
        if self.pid != os.getpid():
            # A forked step process (the fork server's): a thread of the parent may have
            # held the lock at the fork, and no thread here would ever release it.
            self.lock = threading.RLock()
            self.pid = os.getpid()
        with self.lock:
            self.outputs = []
            self.last_error = None
            self._clear_pending = False
            self._buffers, self._send_pending, self._sends = {}, set(), []
            self._cell += 1

    def stop(self) -> list[Output]:
        with self.lock:
            if self.outputs is not None:
                self._send_due()
                self.flush_all()  # the kernel flushes both streams before its reply
            outputs, self.outputs = self.outputs or [], None
            self._buffers, self._send_pending, self._sends = {}, set(), []
            return outputs

    def stream(self, name: str, text: str, *, captured: bool = False) -> bool:
        """Add stream text to the running cell; False when no cell is running.

        The text joins the stream's buffer and is added to the outputs when ipykernel would
        send it. ``captured`` is text read from a descriptor, which needs no draining first.
        """
        if not captured:
            self._drain()
        with self.lock:
            if self.outputs is None:
                return False
            self._send_due()
            self._buffers.setdefault(name, []).append(text)
            if name not in self._send_pending:
                self._send_pending.add(name)
                at = time.monotonic() + FLUSH_INTERVAL
                self._sends.append((at, name))
                timer = threading.Timer(FLUSH_INTERVAL, self._on_timer, args=(self._cell,))
                timer.daemon = True
                timer.start()
            self.write_log(text)
            return True

    def flush(self, name: str) -> None:
        """Send ``name``'s buffered text now (the stream's ``flush()``)."""
        self._drain()
        with self.lock:
            if self.outputs is not None:
                self._send_due()
                self._send(name)

    def flush_all(self) -> None:
        """What ipykernel does before any other output: flush stdout, then stderr."""
        with self.lock:
            for name in _FLUSH_ORDER:
                self._send(name)
            for name in list(self._buffers):  # a stream of another name, if any
                self._send(name)

    def _on_timer(self, cell: int) -> None:
        with self.lock:
            if cell == self._cell and self.outputs is not None:
                self._send_due()

    def _send_due(self) -> None:
        """Send what the timers due by now would have sent, in the order they fire."""
        now = time.monotonic()
        while self._sends and self._sends[0][0] <= now:
            _, name = self._sends.pop(0)
            self._send(name)

    def _send(self, name: str) -> None:
        # As ipykernel's _flush: the stream has no send pending any more, and whatever its
        # buffer holds becomes one output.
        self._send_pending.discard(name)
        parts = self._buffers.pop(name, None)
        if not parts or self.outputs is None:
            return
        text = "".join(parts)
        self._before_new_output()
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            # Popped first, the text has one reference and ``+=`` can grow it in place:
            # a cell printing 100,000 lines must not copy its output 100,000 times.
            so_far = last.pop("text")
            so_far += text
            last["text"] = so_far
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})
        self._notify()

    def add(self, output: Output, display_id: str | None = None) -> None:
        self._drain()
        with self.lock:
            if self.outputs is None:
                return  # nbclient only listens while a cell runs
            self._send_due()
            self.flush_all()
            if display_id:
                # A new display with a known id also refreshes the earlier ones (nbclient).
                self._update(display_id, output["data"], output["metadata"])
            self._before_new_output()
            self.outputs.append(output)
            if display_id:
                self._displays.setdefault(display_id, []).append(output)
            if output["output_type"] == "error":
                self.last_error = output
            self._notify()

    def update(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self._drain()
        with self.lock:
            if self.outputs is None:
                return
            self._send_due()
            self.flush_all()  # ipykernel flushes the streams before an update too
            # An update is not an output: it does not trigger a pending clear_output(wait=True).
            if self._update(display_id, data, metadata):
                self._notify()

    def clear(self, wait: bool) -> None:
        self._drain()
        with self.lock:
            if self.outputs is None:
                return
            self._send_due()
            self.flush_all()
            if wait:
                self._clear_pending = True
            else:
                self._clear_now()
                self._notify()

    def write_log(self, text: str) -> None:
        if self.log is not None:
            # A full disk or a closed log must not fail the user's cell.
            with contextlib.suppress(OSError, ValueError):
                self.log.write(text)

    def _drain(self) -> None:
        # Never while this thread holds the lock (inside on_output): the thread that reads
        # descriptors may be waiting for it.
        if self.before_output is not None and not self._notifying:
            self.before_output()

    def _update(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any]) -> bool:
        shown = self._displays.get(display_id, [])
        for out in shown:
            out["data"], out["metadata"] = data, metadata
        return bool(shown)

    def _before_new_output(self) -> None:
        if self._clear_pending:
            self._clear_now()

    def _clear_now(self) -> None:
        assert self.outputs is not None
        gone = {id(out) for out in self.outputs}
        self.outputs.clear()  # in place: on_output may hold this list
        self._clear_pending = False
        for display_id, shown in list(self._displays.items()):
            kept = [out for out in shown if id(out) not in gone]
            if kept:
                self._displays[display_id] = kept
            else:
                del self._displays[display_id]

    def _notify(self) -> None:
        if self.on_output is None or self._notifying:
            return  # a callback that prints must not call itself again
        self._notifying = True
        try:
            self.on_output(self.outputs or [])
        except Exception:
            pass  # live progress must never fail the user's cell
        finally:
            self._notifying = False


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy of a mime bundle or metadata, converted as ipykernel's message
    serialisation converts it (bytes become base64 text)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


class _Publisher(DisplayPublisher):
    """``display()``, ``update_display`` and ``clear_output`` land in the running cell."""

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
        recorder: _Recorder = self.shell.recorder  # type: ignore[union-attr]
        # transient data (the display_id) is not part of the stored output, as in nbformat.
        display_id = (transient or {}).get("display_id")
        data, metadata = _jsonable(data), _jsonable(metadata or {})
        if update:
            if display_id:
                recorder.update(display_id, data, metadata)
            return
        recorder.add(
            {"output_type": "display_data", "metadata": metadata, "data": data}, display_id
        )

    def clear_output(self, wait: bool = False) -> None:
        self.shell.recorder.clear(wait)  # type: ignore[union-attr]


class _DisplayHook(DisplayHook):
    """The value of a cell's last expression becomes an ``execute_result`` (no ``Out[n]:``)."""

    _pending: tuple[dict[str, Any], dict[str, Any]] | None = None

    def start_displayhook(self) -> None:
        self._pending = None

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(
        self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None
    ) -> None:
        self._pending = (format_dict, md_dict or {})

    def finish_displayhook(self) -> None:
        if self._pending is None:
            return
        data, metadata = self._pending
        self._pending = None
        self.shell.recorder.add(  # type: ignore[union-attr]
            {
                "output_type": "execute_result",
                "metadata": _jsonable(metadata),
                "data": _jsonable(data),
                "execution_count": self.prompt_count,
            }
        )


class _Stream(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` while a cell runs.

    Text goes to the running cell's outputs and to the log. The same object stays valid
    after the cell (a logging handler may keep it): between cells it passes text on to the
    stream it replaced. In a process the cell forked (multiprocessing), it writes to the
    descriptor, where the cell's descriptor capture reads it.
    """

    def __init__(self, name: str, fd: int, recorder: _Recorder, fallback: TextIO):
        super().__init__()
        self.name = name  # as on ipykernel's streams
        self.fd = fd
        self._recorder = recorder
        self.fallback = fallback
        self._fork_pid = 0
        self._fork_buffer = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that hands sys.stdout to a subprocess gets the process's real descriptor.
        return self.fallback.fileno()

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        if os.getpid() != self._recorder.pid:
            self._write_in_fork(text)
        elif not self._recorder.stream(self.name, text):
            self.fallback.write(text)
        return len(text)

    def write_captured(self, text: str) -> None:
        """Text read from this stream's descriptor."""
        if not self._recorder.stream(self.name, text, captured=True):
            self.fallback.write(text)

    def _write_in_fork(self, text: str) -> None:
        # Whole lines, so that the lines of several workers do not interleave mid-line
        # (a write of up to 4 KiB to a pipe is atomic).
        if self._fork_pid != os.getpid():
            self._fork_pid, self._fork_buffer = os.getpid(), ""
        head, newline, self._fork_buffer = (self._fork_buffer + text).rpartition("\n")
        self._write_fd(head + newline)

    def _write_fd(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(self.fd, data) :]

    def flush(self) -> None:
        if self._fork_pid == os.getpid() != self._recorder.pid:
            text, self._fork_buffer = self._fork_buffer, ""
            self._write_fd(text)
            return
        if os.getpid() == self._recorder.pid:
            self._recorder.flush(self.name)
        log = self._recorder.log
        if log is not None:
            with contextlib.suppress(OSError, ValueError):
                log.flush()


class _Pipe:
    """One redirected descriptor: ``fd`` writes into a pipe read by ``reader``."""

    def __init__(self, stream: _Stream, saved: int, read_end: int):
        self.stream = stream
        self.saved = saved  # the descriptor's original target, restored after the cell
        self.read_end = read_end
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.reader: threading.Thread | None = None
        self.closed = False  # read_end closed (by the reader, under the lock)


class _FdCapture:
    """Text written straight to descriptors 1 and 2 while a cell runs (``os.system``,
    subprocesses, C libraries, forked workers) becomes the cell's stream output, as
    ipykernel (6 and later) captures it.

    A reader thread per descriptor forwards what arrives; :meth:`drain` forwards everything
    written so far from the calling thread, so that a later output never overtakes it. One
    lock orders all reading, so bytes are forwarded in the order they were written.
    """

    def __init__(self, streams: tuple[_Stream, ...]):
        self._streams = streams
        self._lock = threading.Lock()
        self._pipes: list[_Pipe] = []
        self._pid = os.getpid()
        self._poller: select.poll | None = None
        self._poll_lock = threading.Lock()  # a poll object refuses concurrent calls

    def start(self, skip: set[int]) -> None:
        """Redirect the descriptors, except those in ``skip`` (the log's, which would
        otherwise read back its own copy of every line)."""
        if not hasattr(select, "poll"):
            return  # Windows: nothing can wait on a pipe there
        _flush_process_streams(*(stream.fallback for stream in self._streams))
        if self._pid != os.getpid():  # forked: the parent's readers may have held these
            self._lock, self._poll_lock = threading.Lock(), threading.Lock()
            self._pid = os.getpid()
        self._poller = select.poll()
        for stream in self._streams:
            if stream.fd in skip:
                continue
            try:
                saved = os.dup(stream.fd)
            except OSError:
                continue  # a closed descriptor: nothing can be written there anyway
            try:
                read_end, write_end = os.pipe()
            except OSError:  # out of descriptors: the cell runs uncaptured rather than not
                os.close(saved)
                continue
            os.dup2(write_end, stream.fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._poller.register(read_end, select.POLLIN)
            pipe = _Pipe(stream, saved, read_end)
            pipe.reader = threading.Thread(
                target=self._pump, args=(pipe,), name=f"cellpipe-{stream.name}", daemon=True
            )
            pipe.reader.start()
            self._pipes.append(pipe)

    def stop(self) -> None:
        """Restore the descriptors and forward what the cell wrote to them."""
        if not self._pipes:
            return
        _flush_process_streams()
        for pipe in self._pipes:
            os.dup2(pipe.saved, pipe.stream.fd)
            os.close(pipe.saved)
        self.drain()
        # A background process the cell started may keep a write end open: its reader then
        # lives on, forwarding to whichever cell runs (as ipykernel's does), and we go on.
        deadline = time.monotonic() + 0.2
        for pipe in self._pipes:
            assert pipe.reader is not None
            pipe.reader.join(timeout=max(0.0, deadline - time.monotonic()))
        self._pipes, self._poller = [], None

    def drain(self) -> None:
        """Forward what has been written so far (called before every other output)."""
        poller = self._poller
        if poller is None or os.getpid() != self._pid:
            return
        # poll() first, so that reads (ten times its cost) happen only when there is data;
        # a cell may print a million lines.
        with self._poll_lock:
            ready = poller.poll(0)
        # Always pass through the lock: a reader thread may have taken the bytes off the
        # pipe already and be forwarding them right now; they must land before our output.
        with self._lock:
            if ready:
                for pipe in self._pipes:
                    self._forward(pipe)

    def _pump(self, pipe: _Pipe) -> None:
        poller = select.poll()  # not select(): descriptors may be numbered above 1023
        poller.register(pipe.read_end, select.POLLIN)
        while True:
            poller.poll()
            with self._lock:
                if not self._forward(pipe):
                    # Closed under the lock, so no other thread reads a reused number.
                    pipe.closed = True
                    os.close(pipe.read_end)
                    return

    @staticmethod
    def _forward(pipe: _Pipe) -> bool:
        """Forward what can be read now; False at end of file."""
        while not pipe.closed:
            try:
                data = os.read(pipe.read_end, 65536)
            except BlockingIOError:
                return True
            text = pipe.decoder.decode(data, final=not data)
            if text:
                pipe.stream.write_captured(text)
            if not data:
                return False
        return False


def _flush_process_streams(*streams: TextIO) -> None:
    """Text buffered for descriptors 1 and 2 belongs where it was written: before or
    inside the cell."""
    for stream in (sys.__stdout__, sys.__stderr__, *streams):
        if stream is not None and not isinstance(stream, _Stream):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


def _no_input(prompt: str = "") -> str:
    raise StdinNotImplementedError(_NO_STDIN.format(what="input()"))


def _no_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
    raise StdinNotImplementedError(_NO_STDIN.format(what="getpass()"))


@magics_class
class _KernelMagics(Magics):
    """The kernel-only magic that notebooks commonly contain, with ipykernel's output."""

    @line_magic
    def autosave(self, arg_s: str) -> None:
        """Set the notebook's autosave interval in seconds (``%autosave 0`` disables it)."""
        from IPython.display import Javascript, display

        try:
            interval = int(arg_s)
        except ValueError as exc:
            raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from exc
        display(
            Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"),
            include=["application/javascript"],
        )
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")


class _KernelLikeCompiler(CachingCompiler):
    """Names cells as ipykernel does: a ``.py`` path in a per-process folder that is never
    written. IPython 9 formats a traceback through such a frame on its fast path (plain
    colouring, no highlighted expression), so a step's traceback reads exactly like the
    kernel's; the source still comes from linecache, where every cell is registered."""

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        digest = hashlib.sha1(transformed_code.encode("utf-8", "surrogatepass")).hexdigest()
        folder = os.path.join(tempfile.gettempdir(), f"cellpipe_{os.getpid()}")
        return os.path.join(folder, f"{digest[:12]}.py")


class StepInteractiveShell(InteractiveShell):
    """IPython's shell with a notebook front end's display machinery, recording instead of
    sending messages."""

    displayhook_class = Type(_DisplayHook)
    display_pub_class = Type(_Publisher)
    compiler_class = Type(_KernelLikeCompiler)
    #: Libraries ask `hasattr(get_ipython(), "kernel")` to tell a notebook from a terminal
    #: (pandas shows 20 columns in a notebook, all of them in a terminal): look like a notebook.
    kernel = None

    def __init__(self, recorder: _Recorder, **kwargs: Any):
        self.recorder = recorder
        self.saved_environ: dict[str, str | None] = {}
        super().__init__(**kwargs)
        self.register_magics(_KernelMagics)

    def init_environment(self) -> None:
        """Give cells the environment a kernel gives them; remember what it replaced."""
        wanted = dict(_KERNEL_ENVIRON)
        # matplotlib reads this when imported: pyplot then draws inline, as in Jupyter.
        wanted["MPLBACKEND"] = os.environ.get("MPLBACKEND") or _INLINE_BACKEND
        for key, value in wanted.items():
            if os.environ.get(key) != value:
                self.saved_environ[key] = os.environ.get(key)
                os.environ[key] = value

    def init_hooks(self) -> None:
        super().init_hooks()
        # `obj?` goes to a pager; nbclient keeps no output for it, and `less` would hang.
        self.set_hook("show_in_pager", lambda *args, **kwargs: None, 99)

    def ask_exit(self) -> None:
        """``exit()`` ends a kernel; a step goes on with its next cell."""
        self.exit_now = True

    def enable_gui(self, gui: str | None = None) -> None:
        if gui not in (None, "inline"):
            raise UsageError(
                f"cellpipe steps have no GUI event loop for {gui!r}; use %matplotlib inline"
            )

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:  # type: ignore[override]
        self.recorder.add(
            {
                "output_type": "error",
                "ename": str(getattr(etype, "__name__", etype)),
                "evalue": str(evalue),
                "traceback": list(stb),
            }
        )
        self.recorder.write_log(_strip_ansi("\n".join(stb)) + "\n")


# Libraries and notebooks tell a notebook from a terminal by the shell's class name (rich's
# `_is_jupyter`, the common `get_ipython().__class__.__name__ == "ZMQInteractiveShell"`
# check): a step's shell answers as a kernel's does.
StepInteractiveShell.__name__ = StepInteractiveShell.__qualname__ = "ZMQInteractiveShell"


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _fileno(stream: TextIO | None) -> int:
    try:
        return stream.fileno() if stream is not None else -1
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return -1


class StepShell:
    """Runs cells one by one in one IPython namespace, recording each cell's outputs.

    Parameters
    ----------
    log
        Every stream text a cell writes is also written here as it happens, and the plain
        text traceback of a cell that raised. May be changed between cells (``shell.log``).
    on_output
        Called with the running cell's outputs list after each change (new output, clear,
        display update), from the thread that made it; exceptions it raises are ignored.
        May be changed between cells.

    Notes
    -----
    One IPython shell is the process's ``get_ipython()`` while one of its cells runs, so
    several ``StepShell`` objects may exist one after another (call :meth:`close`). Creating
    one sets the environment variables ipykernel sets (``MPLBACKEND`` among them, only when
    not set); :meth:`close` restores them.
    """

    def __init__(
        self,
        *,
        log: TextIO | None = None,
        on_output: Callable[[list[Output]], None] | None = None,
    ):
        self._recorder = _Recorder(log, on_output)
        self._main_module = sys.modules.get("__main__")  # IPython puts its own there
        config = Config()
        config.HistoryManager.enabled = False  # no SQLite history file under ~/.ipython
        self.ipython = StepInteractiveShell(self._recorder, config=config)
        self._stdout = _Stream("stdout", 1, self._recorder, sys.stdout)
        self._stderr = _Stream("stderr", 2, self._recorder, sys.stderr)
        self._capture = _FdCapture((self._stdout, self._stderr))
        self._recorder.before_output = self._capture.drain
        self._closed = False
        self._adopt_inline_backend()

    @property
    def user_ns(self) -> dict[str, Any]:
        """The cells' global namespace."""
        return self.ipython.user_ns

    @property
    def log(self) -> TextIO | None:
        return self._recorder.log

    @log.setter
    def log(self, log: TextIO | None) -> None:
        self._recorder.log = log

    # The runner was written against this name; both refer to the same file.
    step_log = log

    @property
    def on_output(self) -> Callable[[list[Output]], None] | None:
        return self._recorder.on_output

    @on_output.setter
    def on_output(self, fn: Callable[[list[Output]], None] | None) -> None:
        self._recorder.on_output = fn

    def run_cell(self, source: str) -> CellRun:
        """Run one cell as a notebook kernel would and return what it produced.

        An error in the cell (an exception, a ``SyntaxError``, ``SystemExit``) is not
        raised: it becomes an ``error`` output and ``success=False``. ``exit()`` does not end
        the process. ``input()`` and ``getpass()`` raise ``StdinNotImplementedError`` in the
        cell instead of waiting. Raises RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("this StepShell is closed")
        ip = self.ipython
        count = ip.execution_count
        self._recorder.start()
        try:
            with self._patched():
                result = ip.run_cell(source, store_history=True)
        finally:
            outputs = self._recorder.stop()
        error = None
        if not result.success:
            raised = result.error_in_exec or result.error_before_exec
            shown = self._recorder.last_error
            if shown is None:  # e.g. a UsageError, which IPython prints instead of raising
                shown = {"ename": type(raised).__name__, "evalue": str(raised), "traceback": []}
            error = {
                "ename": shown["ename"],
                "evalue": shown["evalue"],
                "traceback": [_strip_ansi(entry) for entry in shown["traceback"]],
            }
        return CellRun(outputs, bool(result.success), error, count)

    # The runner was written against this name.
    execute = run_cell

    @contextlib.contextmanager
    def kernel_context(self) -> Iterator[None]:
        """Code run here (loading a step's inputs) sees what a cell sees when it imports a
        library: this shell as ``get_ipython()``, in builtins too. Libraries decide at
        import time what kind of front end they run in (pandas' display mode, tqdm, rich,
        matplotlib's backend); imported by an unpickler outside a cell, pandas would think
        it runs in a terminal and stop truncating wide frames as a notebook does."""
        ip = self.ipython
        previous_shell = InteractiveShell._instance
        InteractiveShell._instance = ip
        try:
            with ip.builtin_trap:
                yield
                self._resolve_figure_backend()
        finally:
            InteractiveShell._instance = previous_shell

    def _resolve_figure_backend(self) -> None:
        """A figure made in an earlier step was made through pyplot, which then loaded its
        backend, and matplotlib_inline registered the formatter that shows a figure as a
        PNG: in a kernel that happened earlier in the same process. A step that only
        receives the figure must do the same, or ``fig`` shows as text alone."""
        figure = sys.modules.get("matplotlib.figure")
        if figure is None:
            return
        kinds = (figure.Figure, figure.SubFigure)
        axes = sys.modules.get("matplotlib.axes")
        if axes is not None:
            kinds += (axes.Axes,)
        if not any(isinstance(v, kinds) for v in list(self.user_ns.values())):
            return
        try:
            import matplotlib.pyplot as plt

            plt._get_backend_mod()  # resolves the backend once; a no-op after that
        except Exception as exc:  # a broken backend shows when a cell draws, not here
            self._recorder.write_log(f"--- cellpipe: matplotlib backend: {exc!r} ---\n")
        self._adopt_inline_backend()

    def close(self) -> None:
        """Undo this shell's process-wide changes: environment variables, ``__main__`` and
        IPython's exit hook. The namespace is left as it is. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        ip = self.ipython
        atexit.unregister(ip.atexit_operations)
        for key, value in ip.saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if sys.modules.get("__main__") is ip.user_module and self._main_module is not None:
            sys.modules["__main__"] = self._main_module

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        """What a kernel provides while a cell runs: its streams, no stdin, and this shell
        as ``get_ipython()``."""
        saved = (sys.stdout, sys.stderr, builtins.input, getpass.getpass)
        previous_shell = InteractiveShell._instance
        if sys.stdout is not self._stdout:  # not a cell run from inside one of ours
            self._stdout.fallback, self._stderr.fallback = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._stdout, self._stderr  # type: ignore[assignment]
        builtins.input = _no_input
        getpass.getpass = _no_getpass
        InteractiveShell._instance = self.ipython
        try:
            self._capture.start(skip={_fileno(self.log)})
            yield
        finally:
            self._capture.stop()
            InteractiveShell._instance = previous_shell
            sys.stdout, sys.stderr, builtins.input, getpass.getpass = saved

    def _adopt_inline_backend(self) -> None:
        """matplotlib_inline sets up the shell that is current when pyplot first loads it,
        and only once per process; a later shell in the same process needs the same."""
        backend = sys.modules.get("matplotlib_inline.backend_inline")
        if backend is None or "matplotlib.pyplot" not in sys.modules:
            return
        import matplotlib
        from IPython.core.pylabtools import select_figure_formats

        if matplotlib.get_backend() in (_INLINE_BACKEND, "inline"):
            backend.configure_inline_support(self.ipython, _INLINE_BACKEND)
            settings = backend.InlineBackend.instance()
            select_figure_formats(
                self.ipython, settings.figure_formats, **settings.print_figure_kwargs
            )
