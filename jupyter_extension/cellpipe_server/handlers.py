"""REST handlers: thin, authenticated and authorized, over the RunManager.

``_CellpipeHandler.fail`` is the one place errors become HTTP statuses and JSON bodies:
engine errors carry their status (compile errors 400 with every problem, unknown runs 404,
conflicting actions 409, unavailable backends 503); bad JSON and invalid bodies are 400;
anything unexpected is logged with its traceback and answered with a plain 500.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cellpipe.core.errors import CellpipeError
from cellpipe.reports.report import CSP as REPORT_CSP
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from pydantic import BaseModel, ValidationError
from tornado import web

from .manager import RunManager
from .models import CompileRequest, CreateRun, ListRunsResponse, ResumeRun, SplitRequest

_M = TypeVar("_M", bound=BaseModel)
_RUN = r"(?P<run_id>[^/]+)"
_STEP = r"(?P<step>[^/]+)"
_MAX_DEPTH = 100  # a notebook is ~6 levels deep; deeper is an attack or a mistake
_MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (CellpipeApp's traitlets of the same name)."""

    max_queued_runs: int = 64
    max_request_bytes: int = 32 * 2**20
    max_parameter_bytes: int = 64 * 2**10


def _api(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(method)
    async def wrapper(self: _CellpipeHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except web.HTTPError:
            raise
        except Exception as exc:
            self.fail(exc)

    return wrapper


class _CellpipeHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "cellpipe"

    @property
    def manager(self) -> RunManager:
        return self.settings["cellpipe_manager"]

    @property
    def limits(self) -> Limits:
        return self.settings.get("cellpipe_limits") or Limits()

    def body(self, model: type[_M]) -> _M:
        raw = self.request.body or b"{}"
        limit = self.limits.max_request_bytes
        if len(raw) > limit:
            raise TooLarge(
                f"the request body is {len(raw)} bytes, over CellpipeApp.max_request_bytes "
                f"({limit} bytes)"
            )
        try:
            data = json.loads(raw)
        except RecursionError:
            raise _BadRequest(
                f"the request body is nested more than {_MAX_DEPTH} levels deep"
            ) from None
        except ValueError as exc:
            raise _BadRequest(f"the request body is not valid JSON: {exc}") from None
        if _depth_over(data, _MAX_DEPTH):
            raise _BadRequest(f"the request body is nested more than {_MAX_DEPTH} levels deep")
        return model.model_validate(data)

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        self.finish(json.dumps(data, default=str))

    def fail(self, exc: Exception) -> None:
        if isinstance(exc, CellpipeError):
            status, body = exc.http_status, exc.to_json()
        elif isinstance(exc, ValidationError):
            status = 400
            body = {
                "error": "InvalidRequest",
                "message": "the request body does not fit: "
                + "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
                ),
                "problems": exc.errors(
                    include_url=False, include_context=False, include_input=False
                ),
            }
        else:
            self.log.error(
                "cellpipe: unexpected error in %s %s",
                self.request.method,
                self.request.path,
                exc_info=exc,
            )
            status, body = (
                500,
                {
                    "error": "InternalError",
                    "message": "unexpected server error; see the server log",
                },
            )
        self.set_status(status)
        self.finish(json.dumps(body, default=str))


class _BadRequest(CellpipeError):
    exit_code = 2
    http_status = 400


class TooLarge(CellpipeError):
    exit_code = 2
    http_status = 413


class QueueFull(CellpipeError):
    exit_code = 2
    http_status = 429


def _depth_over(data: Any, limit: int) -> bool:
    """Whether ``data`` nests lists and dicts more than ``limit`` deep (without recursing:
    checking must not itself hit the recursion limit)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class CompileHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def post(self) -> None:
        self.reply(await self.manager.compile(self.body(CompileRequest)))


class SplitHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def post(self) -> None:
        self.reply(await self.manager.split(self.body(SplitRequest)))


class RunsHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self) -> None:
        try:
            page = max(1, int(self.get_query_argument("page", "1")))
            page_size = min(200, max(1, int(self.get_query_argument("page_size", "50"))))
        except ValueError:
            raise _BadRequest("page and page_size must be whole numbers") from None
        if page > _MAX_PAGE:  # its offset would overflow SQLite's integers
            raise _BadRequest(f"page must be at most {_MAX_PAGE}")
        path = self.get_query_argument("path", None)
        runs, total = await self.manager.list(path, page, page_size)
        self.reply(ListRunsResponse(runs=runs, total=total, page=page, page_size=page_size))

    @web.authenticated
    @authorized(action="execute")
    @_api
    async def post(self) -> None:
        req = self.body(CreateRun)
        limit = self.limits.max_parameter_bytes
        for name, value in req.parameters.items():
            size = len(json.dumps(value, default=str))
            if size > limit:
                raise TooLarge(
                    f"parameter {name!r} is {size} bytes as JSON, over "
                    f"CellpipeApp.max_parameter_bytes ({limit} bytes); pass a path to a "
                    "file instead"
                )
        self._check_queue()
        self.reply(await self.manager.create(req), status=201)

    def _check_queue(self) -> None:
        limit = self.limits.max_queued_runs
        if self.manager.queued() >= limit:
            raise QueueFull(
                f"{limit} runs are already waiting for a free slot "
                "(CellpipeApp.max_queued_runs); retry when one has started"
            )


class RunHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self, run_id: str) -> None:
        self.reply(await self.manager.describe(run_id))


class StepOutputsHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self, run_id: str, step: str) -> None:
        self.reply(await self.manager.outputs(run_id, step))


class StepLogHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self, run_id: str, step: str) -> None:
        text = await self.manager.log_text(run_id, step)
        self.finish(text, set_content_type="text/plain; charset=utf-8")


class ReportHandler(_CellpipeHandler):
    """The run as one HTML page (cellpipe.reports.report), rendered from its directory on request."""

    @property
    def content_security_policy(self) -> str:
        # The page fetches nothing and runs nothing; sandboxed, so no user output in it can
        # act as the server's origin (its cookies, its API). An admin's policy is kept,
        # but never its own sandbox directive: one allowing scripts and the same origin
        # would give the report's outputs the server's origin.
        if "Content-Security-Policy" in self.settings.get("headers", {}):
            policy = "; ".join(
                d.strip()
                for d in super().content_security_policy.split(";")
                if d.strip() and not re.match(r"sandbox\b", d.strip(), re.IGNORECASE)
            )
        else:
            policy = f"{REPORT_CSP}; frame-ancestors 'self'"
        return f"{policy}; sandbox allow-popups"

    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self, run_id: str) -> None:
        from cellpipe.reports.report import render_report
        from cellpipe.rundir.runs import RunDir

        rd = await asyncio.to_thread(RunDir.open, self.manager.runs_root, run_id)
        page = await asyncio.to_thread(render_report, rd)
        self.finish(page, set_content_type="text/html; charset=utf-8")


class CancelHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="write")
    @_api
    async def post(self, run_id: str) -> None:
        self.reply(await self.manager.cancel(run_id))


class ResumeHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="execute")
    @_api
    async def post(self, run_id: str) -> None:
        req = self.body(ResumeRun)
        RunsHandler._check_queue(self)  # type: ignore[arg-type]
        self.reply(await self.manager.resume(run_id, req))


class ProfilesHandler(_CellpipeHandler):
    """The cluster profiles an argo run can use (their settings hold no credentials: those
    are refused in profiles as in notebooks)."""

    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self) -> None:
        self.reply(await asyncio.to_thread(self.manager.profiles))


class BackendsHandler(_CellpipeHandler):
    @web.authenticated
    @authorized(action="read")
    @_api
    async def get(self) -> None:
        self.reply([b.model_dump() for b in self.manager.backends()])


def handlers(base: str = "/cellpipe/api") -> list[tuple[str, type[APIHandler]]]:
    """DESIGN's route table."""
    return [
        (f"{base}/compile", CompileHandler),
        (f"{base}/split", SplitHandler),
        (f"{base}/runs", RunsHandler),
        (f"{base}/runs/{_RUN}", RunHandler),
        (f"{base}/runs/{_RUN}/steps/{_STEP}/outputs", StepOutputsHandler),
        (f"{base}/runs/{_RUN}/steps/{_STEP}/log", StepLogHandler),
        (f"{base}/runs/{_RUN}/report", ReportHandler),
        (f"{base}/runs/{_RUN}/cancel", CancelHandler),
        (f"{base}/runs/{_RUN}/resume", ResumeHandler),
        (f"{base}/backends", BackendsHandler),
        (f"{base}/profiles", ProfilesHandler),
    ]
