"""cellpipe's Jupyter server extension: the REST API the JupyterLab sidebar talks to."""

from __future__ import annotations

from typing import Any

from .app import CellpipeApp

__all__ = ["CellpipeApp"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "cellpipe_server", "app": CellpipeApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # Lets `jupyter labextension develop . --overwrite` link the built extension (`jlpm build`).
    return [{"src": "labextension", "dest": "cellpipe"}]
