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
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cellpipe.core.errors import CellpipeError, ParameterError
from cellpipe.core.model import State
from cellpipe.core.pseudo import HIDDEN, is_pseudo
from cellpipe.rundir.runs import RunDir

_MAX_BODY = 1 << 20  # parameters are small; a bigger body is a mistake


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

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            return self._send(HTTPStatus.NOT_FOUND, {"error": "GET /health or POST /run"})
        s = self.service
        self._send(
            HTTPStatus.OK,
            {
                "status": "ok",
                "notebook": str(s.path),
                "steps": [st.name for st in s.pipeline.steps],
                "parameters": s.parameters,
                "returnable": sorted(s.names()),
                "max_concurrent": s.max_concurrent,
                "served": s.served,
            },
        )

    def do_POST(self) -> None:
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
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > _MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is over 1 MiB")
        raw = self.rfile.read(length)
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
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


def make_server(
    service: PipelineService, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` (``port`` 0: any free port, see ``server_address``)."""
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
