"""Which notebook is this kernel running? The one ``%cellpipe run`` runs by default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellpipe.core.errors import ParameterError


def current_notebook(namespace: Mapping[str, Any] | None = None) -> Path:
    """The notebook this kernel belongs to.

    jupyter_server tells the kernel in ``JPY_SESSION_NAME`` (ipykernel also copies it into
    the namespace as ``__session__``). Raises ParameterError, saying to pass the path, when
    neither names an existing ``.ipynb`` (a console, nbclient, an older Jupyter).
    """
    candidates = []
    if namespace is not None and namespace.get("__session__"):
        candidates.append(str(namespace["__session__"]))
    if os.environ.get("JPY_SESSION_NAME"):
        candidates.append(os.environ["JPY_SESSION_NAME"])
    for name in candidates:
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if path.suffix == ".ipynb" and path.is_file():
            return path
    seen = (
        f" (the kernel was told {candidates[0]!r}, which is not a notebook file)"
        if (candidates)
        else ""
    )
    raise ParameterError(
        "cannot tell which notebook this kernel runs" + seen + "; name it: "
        "`%cellpipe run path/to/notebook.ipynb`"
    )
