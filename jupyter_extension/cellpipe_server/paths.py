"""Paths from the browser, confined to the server's root directory."""

from __future__ import annotations

from pathlib import Path

from cellpipe.core.errors import CellpipeError


class PathRefused(CellpipeError):
    """A path outside the server root (``..``, absolute, or a symlink pointing out)."""

    exit_code = 2
    http_status = 403


def resolve(root: Path, api_path: str) -> Path:
    """The file ``api_path`` (relative, with ``/``) names under ``root``, symlinks resolved.

    Raises PathRefused for anything that ends up outside ``root``.
    """
    if not api_path or "\0" in api_path:
        raise PathRefused("no notebook path given")
    rel = api_path.replace("\\", "/")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise PathRefused(f"{api_path!r} is absolute; paths are relative to the server root")
    root = root.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise PathRefused(f"{api_path!r} is outside the server root")
    return target


def relative(root: Path, path: str | Path | None) -> str | None:
    """A server-side path as the API path the browser uses, or None when outside ``root``."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
