"""Tell someone outside the browser that a run ended: a webhook, or a command.

The driver calls ``send`` once, after the run's final state is on disk, so the run's
outcome never depends on it: every failure is logged and swallowed. A webhook gets the
run's status (``RunStatus.to_json``) as a JSON POST; a command gets the same JSON on
stdin. A failing attempt (an error, a timeout, a status other than 2xx, a non-zero exit)
is logged with its status code and retried with exponential backoff, at most ``retries``
times, and all attempts together stop at ``timeout`` seconds: the driver's end is delayed
by at most that much.

Secrets: a webhook URL is a template. ``${NAME}`` in it is replaced from the driver's
environment when sending, and ``webhook_env`` names a variable holding the whole URL; the
run directory keeps the template, and logs show the URL without its query string.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Seconds all attempts of one notification may take together.
DEFAULT_TIMEOUT_S = 10.0
#: Attempts after the first one.
DEFAULT_RETRIES = 3
#: Wait before the first retry; doubled before each next one.
BACKOFF_S = 0.5
#: The run states that notify unless ``on`` says otherwise.
FINAL_STATES = ("succeeded", "failed", "cancelled")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Notify:
    """Where to say that a run ended. Exactly one of webhook, webhook_env, command."""

    webhook: str | None = None
    webhook_env: str | None = None
    command: str | None = None
    on: tuple[str, ...] = FINAL_STATES
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @classmethod
    def parse(cls, value: Any, where: str = "notify") -> Notify | None:
        """Read ``metadata.cellpipe.notify``, ``--notify`` or ``c.CellpipeApp.notify``.

        A string is a webhook URL (``http://``, ``https://`` or starting with ``${``) or
        else a shell command; a mapping has one of ``webhook``, ``webhook_env`` or
        ``command`` and optionally ``on`` (states), ``timeout`` (seconds) and ``retries``.
        None or "" means no notification. Raises ValueError naming ``where``.
        """
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, str):
            if value.startswith(("http://", "https://", "${")):
                return cls(webhook=value)
            return cls(command=value)
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a URL, a command or an object, not {value!r}")
        unknown = set(value) - {"webhook", "webhook_env", "command", "on", "timeout", "retries"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        kinds = [k for k in ("webhook", "webhook_env", "command") if value.get(k)]
        if len(kinds) != 1:
            raise ValueError(f"{where}: give exactly one of webhook, webhook_env, command")
        on = value.get("on", FINAL_STATES)
        on = (on,) if isinstance(on, str) else tuple(on)
        bad = [s for s in on if s not in FINAL_STATES]
        if bad:
            raise ValueError(f"{where}: `on` takes {', '.join(FINAL_STATES)}, not {bad[0]!r}")
        try:
            timeout = float(value.get("timeout", DEFAULT_TIMEOUT_S))
            retries = int(value.get("retries", DEFAULT_RETRIES))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: timeout and retries must be numbers") from None
        if timeout <= 0 or retries < 0:
            raise ValueError(f"{where}: timeout must be > 0 and retries >= 0")
        return cls(
            webhook=value.get("webhook") or None,
            webhook_env=value.get("webhook_env") or None,
            command=value.get("command") or None,
            on=on,
            timeout_s=timeout,
            retries=retries,
        )

    def to_json(self) -> dict[str, Any]:
        """What the run directory keeps: templates and variable names, never their values."""
        out: dict[str, Any] = {"on": list(self.on), "timeout": self.timeout_s}
        out["retries"] = self.retries
        for key in ("webhook", "webhook_env", "command"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def variables(self) -> list[str]:
        """The environment variables sending needs: the URL's ``${NAME}`` parts, or its
        ``webhook_env`` (an Argo exit handler gets each from a Kubernetes Secret)."""
        if self.webhook_env:
            return [self.webhook_env]
        return list(dict.fromkeys(_VAR.findall(self.webhook or "")))

    def describe(self) -> str:
        """The target as logs show it: no query string, no password, no expanded secret."""
        if self.command:
            return f"command `{self.command.split()[0]}`"
        if self.webhook_env:
            return f"the webhook in ${self.webhook_env}"
        parts = urllib.parse.urlsplit(self.webhook or "")
        host = parts.hostname or parts.netloc.rpartition("@")[2]
        return f"webhook {parts.scheme}://{host}{parts.path}" if parts.scheme else "webhook"


def send(
    target: Notify,
    status: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Deliver ``status`` to ``target`` if its state is one ``target.on`` names.

    Returns True once an attempt succeeded, False otherwise (also when not sent). Never
    raises for the target's failures: they are logged (WARNING) with their status code.
    """
    state = str(status.get("state", ""))
    if state not in target.on:
        return False
    env = os.environ if env is None else env
    body = json.dumps(status, default=str).encode()
    deadline = clock() + target.timeout_s
    attempts = target.retries + 1
    for attempt in range(1, attempts + 1):
        left = deadline - clock()
        if left <= 0:
            break
        try:
            problem = _attempt(target, body, left, env)
        except _Unsendable as exc:
            log.warning("cellpipe: notify: %s; not sent", exc)
            return False
        if problem is None:
            log.info("cellpipe: notify: %s told (run %s)", target.describe(), state)
            return True
        wait = BACKOFF_S * 2 ** (attempt - 1)
        more = attempt < attempts and deadline - clock() > wait
        log.warning(
            "cellpipe: notify: %s %s (attempt %d of %d)%s",
            target.describe(),
            problem,
            attempt,
            attempts,
            f"; retrying in {wait:g} s" if more else "; giving up",
        )
        if not more:
            break
        sleep(wait)
    return False


class _Unsendable(Exception):
    """The target cannot be used at all (a variable it needs is not set)."""


def _attempt(target: Notify, body: bytes, timeout: float, env: Mapping[str, str]) -> str | None:
    """One try; None when it worked, else what went wrong ("answered 500", ...)."""
    if target.command:
        try:
            proc = subprocess.run(
                target.command,
                shell=True,
                input=body,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                env=dict(env),
            )
        except subprocess.TimeoutExpired:
            return f"did not finish within {timeout:.1f} s"
        except OSError as exc:
            return f"could not start: {exc.strerror}"
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            return f"exited {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")
        return None
    url = _url(target, env)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "cellpipe-notify"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"unreachable: {type(reason).__name__}"  # the message may repeat the URL
    if not 200 <= code < 300:
        return f"answered {code}"
    return None


def _url(target: Notify, env: Mapping[str, str]) -> str:
    if target.webhook_env:
        url = env.get(target.webhook_env, "")
        if not url:
            raise _Unsendable(f"${target.webhook_env} is not set")
        return url
    template = target.webhook or ""
    missing = [name for name in _VAR.findall(template) if not env.get(name)]
    if missing:
        raise _Unsendable(f"{target.describe()} needs ${missing[0]}, which is not set")
    return _VAR.sub(lambda m: env[m.group(1)], template)


def notify_target(from_notebook: Any, default: Any) -> Notify | None:
    """Where a run notifies: the notebook's ``metadata.cellpipe.notify``, else ``default``
    (``--notify``, ``c.CellpipeApp.notify``). Raises NotebookError for a bad notebook
    setting, ParameterError for a bad default."""
    from cellpipe.core.errors import NotebookError, ParameterError

    try:
        target = Notify.parse(from_notebook, "metadata.cellpipe.notify")
    except ValueError as exc:
        raise NotebookError(str(exc)) from None
    if target is not None:
        return target
    try:
        return Notify.parse(default, "notify")
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
