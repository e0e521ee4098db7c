"""Errors of the Argo backend, each one line a user can act on.

The Kubernetes client reports everything as ``ApiException`` (status, reason, a JSON body)
or as urllib3 connection errors; :func:`translate` turns those into the errors below, naming
the verb and resource that was refused, the namespace and the cluster. Pure: this module
imports neither ``kubernetes`` nor ``urllib3`` (it reads the exceptions' attributes).
"""

from __future__ import annotations

import json
from typing import Any

from cellpipe.core.errors import BackendUnavailable, CellpipeError, Conflict


class ArgoSettingsError(CellpipeError):
    """A bad value in ``metadata.cellpipe.argo`` or an Argo option (exit 2)."""

    exit_code = 2
    http_status = 400


class ProfileError(ArgoSettingsError):
    """A profile that is missing, unreadable or holds a bad setting (exit 2)."""


class ClusterError(CellpipeError):
    """The cluster refused or failed a request (the message says which and why)."""

    exit_code = 1
    http_status = 502


class NoKubeconfig(BackendUnavailable):
    """No kubeconfig and not inside a cluster."""


class ClusterUnreachable(BackendUnavailable):
    """The API server named by the kubeconfig does not answer."""


class ArgoNotInstalled(BackendUnavailable):
    """The cluster has no ``workflows.argoproj.io`` resource: Argo's CRDs are not installed."""


class Unauthorized(ClusterError):
    """401: the credentials were rejected."""

    http_status = 401


class Forbidden(ClusterError):
    """403: the credentials lack a permission (the message names verb and resource)."""

    http_status = 403


class NameClash(Conflict):
    """409: an object of that name already exists."""


class Invalid(ClusterError):
    """422/400: the API server rejected the manifest (strict field validation included)."""

    http_status = 422


def translate(
    exc: BaseException, *, verb: str, resource: str, namespace: str | None, server: str = ""
) -> CellpipeError:
    """The cellpipe error for ``exc``, raised while doing ``verb`` on ``resource``.

    ``resource`` is plural and group-qualified as RBAC names it (``workflows.argoproj.io``,
    ``pods/log``). Exceptions that are neither an API answer nor a connection failure are
    returned as a generic ClusterError with their text.
    """
    where = f" in namespace {namespace}" if namespace else ""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        body = _body(getattr(exc, "body", None))
        message = str(body.get("message") or getattr(exc, "reason", "") or "").strip()
        if status == 401:
            return Unauthorized(
                f"the Kubernetes API server{_at(server)} rejected the credentials (401 "
                "Unauthorized): log in again or refresh the token of the kubeconfig's user"
            )
        if status == 403:
            return Forbidden(
                f"not allowed to {verb} {resource}{where} (403 Forbidden: {message}); ask an "
                "administrator to bind the role in deploy/submitter-rbac.yaml (see deploy/README.md)"
            )
        if status == 404 and _is_missing_namespace(body, namespace):
            return ClusterError(
                f"namespace {namespace} does not exist on the cluster{_at(server)}; create it "
                "(`kubectl create namespace ...`) or pass another with --namespace"
            )
        if status == 404 and resource.endswith(".argoproj.io") and _is_missing_resource(body):
            return ArgoNotInstalled(
                f"Argo Workflows is not installed on the cluster{_at(server)}: the API server has "
                f"no {resource} resource. Install it (https://argo-workflows.readthedocs.io/en/"
                "latest/installation/) or use another backend"
            )
        if status == 409:
            return NameClash(
                f"cannot {verb} {resource}{where}: {message or 'the name is taken'} (409 "
                "Conflict); delete the old object or choose another name"
            )
        if status in (400, 422):
            return Invalid(f"the API server rejected the {resource} ({status}): {message}")
        return ClusterError(
            f"could not {verb} {resource}{where}: the API server answered {status} "
            f"{getattr(exc, 'reason', '') or ''}".rstrip()
            + (f": {message}" if message else "")
        )
    if _is_connection_error(exc):
        return ClusterUnreachable(
            f"cannot reach the Kubernetes API server{_at(server)}: {_root_cause(exc)}; is the "
            "cluster up, and is the kubeconfig's current context the right one?"
        )
    return ClusterError(f"could not {verb} {resource}{where}: {type(exc).__name__}: {exc}")


def transient(exc: BaseException) -> bool:
    """Worth retrying: the server was briefly unable (5xx, 429) or the connection dropped."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return status >= 500 or status == 429
    return _is_connection_error(exc)


def _at(server: str) -> str:
    return f" at {server}" if server else ""


def _body(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError:
            return {"message": raw.strip()[:300]}
        return data if isinstance(data, dict) else {}
    return {}


def _is_missing_namespace(body: dict[str, Any], namespace: str | None) -> bool:
    details = body.get("details") or {}
    return bool(namespace) and details.get("kind") == "namespaces"


def _is_missing_resource(body: dict[str, Any]) -> bool:
    # A missing CRD is answered by the API server's mux ("404 page not found", no Status
    # details); a missing *object* has details naming its kind.
    details = body.get("details") or {}
    return not details.get("kind") and not details.get("name")


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        name = type(cur).__name__
        if name in (
            "MaxRetryError",
            "NewConnectionError",
            "ProtocolError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionError",
            "ConnectionRefusedError",
            "ConnectionResetError",
            "SSLError",
        ) or isinstance(cur, (ConnectionError, TimeoutError)):
            return True
        cur = (
            getattr(cur, "reason", None)
            if isinstance(getattr(cur, "reason", None), BaseException)
            else (cur.__cause__ or cur.__context__)
        )
    return False


def _root_cause(exc: BaseException) -> str:
    cur: BaseException = exc
    for _ in range(6):
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.__cause__
        if not isinstance(nxt, BaseException):
            break
        cur = nxt
    text = str(cur)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "timed out" in text.lower():
        return "the connection timed out"
    return text.split(": ", 1)[-1][:200] or type(cur).__name__
