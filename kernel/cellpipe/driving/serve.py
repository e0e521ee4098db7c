"""``cellpipe serve NB``: a notebook pipeline as an HTTP endpoint.

::

    POST /run   {"parameters": {"x": 3}, "return": ["prediction"]}
      200 {"run_id": ..., "state": "succeeded", "metrics": {...}, "values": {...},
           "steps": {"load": "cached", "predict": "succeeded"}, "duration_s": 0.21}
    GET  /health

Each request is a run of the local backend in its own run directory, so it is in the
history, has lineage and logs like any other. What makes it fast:

- the notebook is compiled once, when the server starts (the file is read then: restart
  the server to serve a changed notebook);
- a warm step process (interpreter started, IPython and the notebook's imports loaded) is
  prepared before each request arrives, so a request never waits for a Python start;
- the cache makes every step whose code, inputs and *the parameters it reads* are unchanged
  ``cached``: a model loaded and trained once is reused, only the steps that depend on the
  request's parameters run.

Concurrency is bounded: at most ``max_concurrent`` requests run at once; one more is
answered ``429 Too Many Requests`` with ``Retry-After`` at once rather than queued, so a
client (or a load balancer) decides whether to wait, and a burst cannot pile up work.

Safe by default (see SECURITY.md): the endpoint runs code, so it answers only requests that
a browser page elsewhere cannot forge or read. A request needs ``Content-Type:
application/json`` (no "simple" cross-site form post), a ``Host`` naming the loopback
address unless a token is set (no DNS rebinding), no foreign ``Origin``, and, with
``token``, ``Authorization: Bearer <token>``; binding a non-loopback address requires a
token. Connections are bounded too: ``workers`` threads serve them, a connection waits for
a worker only once it has sent its first bytes (an idle one costs no thread), each must
send its request within ``request_timeout`` seconds, and one past ``backlog`` waiting is
answered 503 at once. A legitimate request is answered within ``request_timeout`` plus its
run time even while other clients stall up to ``workers - 1`` connections.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import math
import queue
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from cellpipe.core.errors import CellpipeError, ParameterError
from cellpipe.core.model import State
from cellpipe.core.pseudo import HIDDEN, is_pseudo
from cellpipe.rundir.runs import RunDir

_MAX_BODY = 1 << 20  # parameters are small; a bigger body is a mistake
REQUEST_TIMEOUT = 10.0  # seconds a connection has to send each part of its request
WORKERS = 16  # connections served at once (each holds one thread)
BACKLOG = 64  # connections with a request waiting for a worker; one more is answered 503
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class RequestError(Exception):
    """A request the server answers with a 4xx and a message saying what to fix."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class PipelineService:
    """Runs one notebook's pipeline on request, with warm processes and the cache."""

    def __init__(self, notebook: str | Path, runs_root: Path, *, max_concurrent: int = 2):
        from cellpipe.compiling.compiler import compile_notebook, inline_references
        from cellpipe.compiling.notebook import read_notebook

        self.path = Path(notebook).resolve()
        self.nb, _ = read_notebook(self.path)
        self.pipeline = compile_notebook(self.nb, path=str(self.path))
        # Runs keep the notebook they were compiled from: references inlined (compose.py).
        self.nb = inline_references(self.nb, str(self.path)).nb
        self.runs_root = Path(runs_root)
        self._writers = _last_writers(self.pipeline)
        self.preload = preload_modules(self.pipeline, self.path.parent)
        self._pipelines: dict[tuple[str, ...], Any] = {}
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._spares: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self.served = 0
        self._counter_lock = threading.Lock()
        for _ in range(max_concurrent):
            self._spares.put(self._warm_backend())

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            p.name: p.default if p.type != "expression" else None for p in self.pipeline.parameters
        }

    def names(self) -> set[str]:
        """Values a request may ask for: every name a step's cells assign."""
        return set(self._writers)

    def _pipeline_for(self, wanted: list[str]) -> Any:
        """The pipeline, its steps also saving the values ``wanted`` (a step only saves
        what a later step reads, and the last step's results are read by none)."""
        import dataclasses

        key = tuple(sorted(wanted))
        if key not in self._pipelines:
            extra: dict[str, list[str]] = {}
            for name in key:
                step = self._writers[name]
                if name not in self.pipeline.step(step).outputs:
                    extra.setdefault(step, []).append(name)
            steps = tuple(
                dataclasses.replace(s, outputs=(*s.outputs, *extra[s.name]))
                if s.name in extra
                else s
                for s in self.pipeline.steps
            )
            self._pipelines[key] = dataclasses.replace(self.pipeline, steps=steps)
        return self._pipelines[key]

    # -- one request ------------------------------------------------------------------

    def handle(self, body: Any) -> dict[str, Any]:
        """Run the pipeline for one request body; raises RequestError for a bad request."""
        parameters, wanted = self._check(body)
        if not self._slots.acquire(blocking=False):
            raise RequestError(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"{self.max_concurrent} request(s) already running; retry shortly",
            )
        try:
            return self._run(parameters, wanted)
        finally:
            self._slots.release()

    def _check(self, body: Any) -> tuple[dict[str, Any], list[str]]:
        from cellpipe.compiling.notebook import resolve_parameters

        if not isinstance(body, dict):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                'the body must be a JSON object: {"parameters": {...}, "return": [...]}',
            )
        unknown = sorted(set(body) - {"parameters", "return"})
        if unknown:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"unknown field {', '.join(map(repr, unknown))}; use `parameters` and `return`",
            )
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "`parameters` must be a JSON object")
        wanted = body.get("return") or []
        if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
            raise RequestError(HTTPStatus.BAD_REQUEST, "`return` must be a list of names")
        try:
            values = resolve_parameters(list(self.pipeline.parameters), parameters)
        except ParameterError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        missing = [n for n in wanted if n not in self._writers]
        if missing:
            known = ", ".join(sorted(self._writers)) or "none"
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"cannot return {', '.join(map(repr, missing))}: no step assigns it. "
                f"Names the steps assign: {known}",
            )
        return values, wanted

    def _run(self, parameters: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
        from cellpipe.backends import RunOptions

        started = time.perf_counter()
        pipeline = self._pipeline_for(wanted)
        rd = RunDir.create(
            self.runs_root,
            pipeline,
            self.nb,
            parameters=parameters,
            options={"jobs": None, "no_cache": False},
            via="serve",
        )
        backend = self._take_backend()
        try:
            state = backend.execute(rd, RunOptions())
        finally:
            self._give_back(backend)
        status = rd.status()
        with self._counter_lock:
            self.served += 1
        result: dict[str, Any] = {
            "run_id": rd.run_id,
            "state": state.value,
            "steps": {n: s.state.value for n, s in status.steps.items()},
            "metrics": _metrics(rd),
            "duration_s": round(time.perf_counter() - started, 4),
        }
        if state is not State.SUCCEEDED:
            failed = {n: s.message for n, s in status.steps.items() if s.state is State.FAILED}
            result["error"] = status.message or "the run did not succeed"
            result["failed"] = failed
            return result
        result["values"] = self._values(rd, wanted)
        return result

    def _values(self, rd: RunDir, wanted: list[str]) -> dict[str, Any]:
        from cellpipe.execution.marshal import load_value

        out: dict[str, Any] = {}
        for name in wanted:
            step = self._writers[name]
            directory = rd.data_dir(step)
            record = rd.manifest(step).get(name)
            if record is None:
                raise RequestError(
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    f"step {step} did not define `{name}` on this run (run {rd.run_id})",
                )
            value = load_value(record, directory)
            try:
                out[name] = to_json(value)
            except TypeError as exc:
                raise RequestError(
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    f"`{name}` ({record.type}) cannot be sent as JSON: {exc}. Return a "
                    f"number, string, list, dict, numpy array or pandas object instead; "
                    f"fetch the value itself with cellpipe.load({rd.run_id!r}, {step!r}, "
                    f"{name!r})",
                ) from None
        return out

    # -- warm processes ---------------------------------------------------------------------

    def _warm_backend(self) -> Any:
        from cellpipe.backends.local import LocalBackend

        backend = LocalBackend(keep_unused_warm=True)
        backend.prepare(self.preload)  # starts the warm process now, before a request needs it
        return backend

    def _take_backend(self) -> Any:
        try:
            return self._spares.get_nowait()
        except queue.Empty:
            return self._warm_backend()

    def _give_back(self, backend: Any) -> None:
        """Back to the pool, with a new warm process if the run used its own."""
        if self._closed:
            backend.discard_warm()
        elif backend.warm_ready:
            self._spares.put(backend)  # every step was cached: its process still waits
        else:
            backend.discard_warm()
            self._spares.put(self._warm_backend())

    def close(self) -> None:
        """Stop the warm processes waiting for requests."""
        self._closed = True
        while True:
            try:
                backend = self._spares.get_nowait()
            except queue.Empty:
                return
            backend.discard_warm()


def to_json(value: Any) -> Any:
    """``value`` as JSON data: numpy scalars and arrays, pandas objects included.

    Raises TypeError for anything else that JSON cannot hold.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and hasattr(value, "tolist"):
        return to_json(value.tolist())
    if module == "pandas" and hasattr(value, "to_dict"):
        # A DataFrame as a list of rows, a Series as {index: value}.
        return to_json(value.to_dict("records") if hasattr(value, "columns") else value.to_dict())
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON data")


def _metrics(rd: RunDir) -> dict[str, Any]:
    from cellpipe.rundir.runs import metric_columns

    return metric_columns(rd.metrics())


def preload_modules(pipeline: Any, workdir: Path) -> list[str]:
    """Modules the prelude imports that a warm process may import ahead of the run.

    Only where that cannot change what the prelude computes: none when a prelude cell sets
    environment variables, ``sys.path`` or the working directory (an import may depend on
    them), and never a module of the notebook's own directory (steps run there: it would
    shadow another module of that name)."""
    from cellpipe.compiling.analysis import CellSyntaxError, analyse_cell

    modules: list[str] = []
    for cell in pipeline.prelude:
        try:
            flow = analyse_cell(cell.source)
        except CellSyntaxError:
            return []
        if any(HIDDEN[n].imports for n in flow.mutates if n in HIDDEN):
            return []
        for dotted in flow.imports.values():
            top = dotted.split(".")[0]
            if (workdir / f"{top}.py").exists() or (workdir / top).is_dir():
                continue
            # `from pkg import name`: name may be a function; then its module is imported.
            parent = dotted.rpartition(".")[0]
            modules += [m for m in (parent, dotted) if m]
    return list(dict.fromkeys(modules))


def _last_writers(pipeline: Any) -> dict[str, str]:
    """name -> the step whose value of it a top-to-bottom run ends with (the step of the
    last cell, in notebook order, that assigns it)."""
    from cellpipe.compiling.analysis import CellSyntaxError, analyse_cell
    from cellpipe.core.model import Role

    out: dict[str, str] = {}
    for cell in pipeline.cells:
        if cell.role is not Role.STEP or cell.kind != "code" or cell.step is None:
            continue
        try:
            flow = analyse_cell(cell.source)
        except CellSyntaxError:
            continue
        for name in flow.writes | flow.maybe_writes:
            if not is_pseudo(name) and name not in flow.imports:
                out[name] = cell.step
    return out


class _Handler(BaseHTTPRequestHandler):
    service: PipelineService
    server_version = "cellpipe-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def setup(self) -> None:
        # Each read waits at most `request_timeout`, and the whole request must arrive
        # within it too: a client sending a byte every few seconds is cut off all the same.
        self.timeout = getattr(self.server, "request_timeout", REQUEST_TIMEOUT)
        super().setup()
        self._received = False
        self._deadline = threading.Timer(self.timeout, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        if not self._received:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _refused(self) -> bool:
        """Answer (and return True for) a request the endpoint must not serve: a Host or
        Origin that is not this server's, a missing or wrong token."""
        server: Any = self.server
        token = getattr(server, "token", None)
        problem = _foreign(self.headers.get("Host"), self.headers.get("Origin"), token is not None)
        if problem:
            self._send(HTTPStatus.FORBIDDEN, {"error": problem})
            return True
        if token is not None:
            given = self.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    {"error": "this endpoint needs `Authorization: Bearer <token>`"},
                    {"WWW-Authenticate": "Bearer"},
                )
                return True
        return False

    def do_GET(self) -> None:
        self._received = True
        if self._refused():
            return None
        if self.path.split("?")[0] != "/health":
            return self._send(HTTPStatus.NOT_FOUND, {"error": "GET /health or POST /run"})
        s = self.service
        self._send(
            HTTPStatus.OK,
            {
                "status": "ok",
                "notebook": s.path.name,  # not its absolute path: that says who runs it
                "steps": [st.name for st in s.pipeline.steps],
                "parameters": s.parameters,
                "returnable": sorted(s.names()),
                "max_concurrent": s.max_concurrent,
                "served": s.served,
            },
        )

    def do_POST(self) -> None:
        if self._refused():
            return None
        if self.path.split("?")[0] != "/run":
            return self._send(HTTPStatus.NOT_FOUND, {"error": "POST /run or GET /health"})
        try:
            body = self._body()
            result = self.service.handle(body)
        except RequestError as exc:
            headers = {"Retry-After": "1"} if exc.status == HTTPStatus.TOO_MANY_REQUESTS else {}
            return self._send(exc.status, {"error": str(exc)}, headers)
        except CellpipeError as exc:
            return self._send(HTTPStatus(exc.http_status), {"error": str(exc)})
        status = (
            HTTPStatus.OK if result["state"] == "succeeded" else HTTPStatus.INTERNAL_SERVER_ERROR
        )
        self._send(status, result)

    def _body(self) -> Any:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with `Content-Type: application/json`",
            )
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"
            )
        raw_length = (self.headers.get("Content-Length") or "0").strip()
        if not raw_length.isdigit():  # also refuses "-1" and "+5": read to EOF otherwise
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw_length[:20]!r}")
        length = int(raw_length)
        if length > _MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is over 1 MiB")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length"
            )
        self._received = True  # the run may take long: the deadline is for the request only
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}"
            ) from None

    def _send(
        self, status: HTTPStatus, data: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        payload = json.dumps(data).encode()
        # One request per connection: a worker is never held by an idle keep-alive client.
        self.close_connection = True
        self.send_response(status)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _foreign(host: str | None, origin: str | None, has_token: bool) -> str:
    """Why a request with these headers is not for this server ("" when it is).

    Without a token, only loopback names are accepted as ``Host``: a page whose DNS name an
    attacker re-points at 127.0.0.1 (DNS rebinding) then still cannot reach the endpoint.
    A browser sends ``Origin`` on cross-site requests; one that is not this same host is a
    page elsewhere trying to run the pipeline."""
    if not host:
        return "a request needs a Host header"
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if not has_token and not is_loopback(hostname):
        return f"Host {host[:100]!r} is not this server; use http://127.0.0.1"
    if origin is not None:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
            return f"cross-origin requests are refused (Origin {origin[:100]!r})"
    return ""


class BoundedHTTPServer(HTTPServer):
    """An HTTP server with a fixed pool of worker threads.

    ``ThreadingHTTPServer`` starts a thread per connection, so 100 stalled clients hold 100
    threads. Here an accepted connection is first watched by one selector thread and given
    to a worker only once it has sent its first bytes (or closed); one silent for
    ``request_timeout`` seconds is closed there. Waiting connections are bounded by
    ``backlog``: one more is answered 503 and closed."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        workers: int = WORKERS,
        backlog: int = BACKLOG,
        request_timeout: float = REQUEST_TIMEOUT,
        token: str | None = None,
    ):
        self.workers, self.backlog, self.request_timeout = workers, backlog, request_timeout
        self.token = token or None
        self.verbose = False
        super().__init__(address, handler)
        self._ready: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(backlog)
        self._idle = selectors.DefaultSelector()
        self._idle_lock = threading.Lock()
        self._idle_since: dict[socket.socket, tuple[float, Any]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._idle.register(self._wake_r, selectors.EVENT_READ)
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"cellpipe-serve-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._watch_idle, daemon=True))
        for t in self._threads:
            t.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.request_timeout)
        with self._idle_lock:
            if len(self._idle_since) >= self.backlog:
                return self._turn_away(request)
            self._idle_since[request] = (time.monotonic(), client_address)
            self._idle.register(request, selectors.EVENT_READ)
        self._wake_w.send(b"x")

    def _watch_idle(self) -> None:
        """Hand connections that have sent something to the workers; close silent ones."""
        while not self._stopping:
            events = self._idle.select(timeout=min(1.0, self.request_timeout))
            ready = []
            with self._idle_lock:
                for key, _ in events:
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                        continue
                    sock = key.fileobj
                    self._idle.unregister(sock)
                    ready.append((sock, self._idle_since.pop(sock)[1]))
                cutoff = time.monotonic() - self.request_timeout
                stale = [s for s, (t, _) in self._idle_since.items() if t < cutoff]
                for sock in stale:
                    self._idle.unregister(sock)
                    del self._idle_since[sock]
            for sock in stale:
                self.shutdown_request(sock)
            for item in ready:
                try:
                    self._ready.put_nowait(item)
                except queue.Full:
                    self._turn_away(item[0])

    def _turn_away(self, request: socket.socket) -> None:
        body = b'{"error": "the server is busy; retry shortly"}'
        with contextlib.suppress(OSError):
            request.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 1\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        self._stopping = True
        super().server_close()
        for _ in range(self.workers):
            try:
                self._ready.put_nowait(None)
            except queue.Full:
                break
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._threads[-1].join(timeout=5)  # the idle watcher, before its sockets close
        with self._idle_lock:
            for sock in self._idle_since:
                self.shutdown_request(sock)
            self._idle_since.clear()
        self._idle.close()
        self._wake_r.close()
        self._wake_w.close()


def make_server(
    service: PipelineService,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    workers: int = WORKERS,
    backlog: int = BACKLOG,
    request_timeout: float = REQUEST_TIMEOUT,
) -> BoundedHTTPServer:
    """An HTTP server for ``service`` (``port`` 0: any free port, see ``server_address``).

    Raises ValueError for a non-loopback ``host`` without a ``token``: the endpoint runs the
    notebook's code for whoever can reach it."""
    if not token and not is_loopback(host):
        raise ValueError(
            f"serving on {host} makes the endpoint reachable from other machines: "
            "give a --token (clients then send `Authorization: Bearer <token>`), or bind "
            "127.0.0.1 behind a proxy that authenticates"
        )
    handler = type("Handler", (_Handler,), {"service": service})
    return BoundedHTTPServer(
        (host, port),
        handler,
        workers=workers,
        backlog=backlog,
        request_timeout=request_timeout,
        token=token,
    )
