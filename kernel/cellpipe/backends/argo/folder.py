"""The notebook's folder, shipped into an Argo run's working directory.

Locally (and in Docker) a step's working directory is the notebook's folder, so a module
next to the notebook imports, the notebook file reads and ``!ls`` lists what it lists top to
bottom. On Argo the working directory is ``/cellpipe/work`` on the run's volume. So at
submission the folder is packed (:func:`pack`: a gzipped tar, files only, sorted, with the
usual clutter left out and a size bound) into the Workflow itself, as the text of one raw
input artifact of a first task, ``cellpipe-folder``; its pod unpacks it into the working
directory (:func:`unpack`, ``python3 -m cellpipe.backends.argo.folder ARCHIVE DEST``) before
any step starts. Every submission packs the folder as it is then, so a re-run or a resume
sees the files as they are now. See docs/design.md ("Argo backend") for why not the image.

The pod side needs only the standard library (and the engine every step image has).
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import hashlib
import io
import json
import os
import posixpath
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from cellpipe.backends.argo.errors import ArgoSettingsError

if TYPE_CHECKING:
    from cellpipe.backends.argo.manifest import ArgoSettings

#: Left out of every folder: version control, editors' and tools' caches, virtual
#: environments, and cellpipe's own runs (``.cellpipe/runs``, the default runs root).
DEFAULT_IGNORE = (
    ".git",
    ".hg",
    ".svn",
    ".ipynb_checkpoints",
    "__pycache__",
    "*.pyc",
    ".cellpipe",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
    ".DS_Store",
)

LIMIT_SETTING = "metadata.cellpipe.argo.folder_limit"
IGNORE_SETTING = "metadata.cellpipe.argo.folder_ignore"


class FolderTooBig(ArgoSettingsError):
    """The packed folder is over its limit (the message is one line naming the setting)."""


@dataclass(frozen=True, slots=True)
class Folder:
    """A packed notebook folder: ``text`` (base64 of the gzipped tar, what the manifest
    carries), its size compressed, and each file's sha256 by relative POSIX path."""

    text: str
    size: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _ignored(rel: PurePosixPath, patterns: Sequence[str]) -> bool:
    """Whether ``rel`` (or a folder above it) matches a pattern: a pattern without ``/``
    matches any path component (``.git``, ``*.pyc``), one with ``/`` the path from the
    folder (``data/raw/*``)."""
    text = str(rel)
    for pat in patterns:
        pat = pat.strip().rstrip("/")
        if not pat:
            continue
        if "/" in pat:
            pat = pat.lstrip("/")
            if fnmatch.fnmatchcase(text, pat) or fnmatch.fnmatchcase(text, pat + "/*"):
                return True
        elif any(fnmatch.fnmatchcase(part, pat) for part in rel.parts):
            return True
    return False


def left_out(rel: str, ignore: Sequence[str] = ()) -> bool:
    """Whether the file ``rel`` (relative to the notebook's folder) is not shipped: the
    default ignores and ``ignore`` (``folder_ignore``)."""
    path = PurePosixPath(posixpath.normpath(rel.replace(os.sep, "/")))
    return _ignored(path, (*DEFAULT_IGNORE, *ignore))


def _walk(root: Path, patterns: Sequence[str], exclude: set[Path]) -> Iterable[Path]:
    """Files under ``root`` in sorted order, ignored ones and ``exclude`` left out. A link
    to a file counts as that file; links to folders are not followed (no loops)."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not (here / d).is_symlink()
            and (here / d).resolve() not in exclude
            and not _ignored(PurePosixPath((here / d).relative_to(root).as_posix()), patterns)
        )
        for name in sorted(filenames):
            path = here / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if _ignored(rel, patterns) or not path.is_file():
                continue
            yield path


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class _Bounded(io.BytesIO):
    """The compressed archive as it is written, stopping at ``limit`` bytes."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def write(self, b: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(b) > self.limit:
            raise _Over
        return super().write(b)


class _Over(Exception):
    pass


class _Hashing(io.RawIOBase):
    """A file read once, in chunks, while its sha256 is taken."""

    def __init__(self, fh: io.BufferedReader):
        self.fh, self.h = fh, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.h.update(data)
        return data


def _without_outputs(data: bytes) -> bytes:
    """A notebook file with its code cells' outputs and execution counts cleared: what a
    run computes, not what it needs (a notebook saved with its figures would take the
    folder's whole bound). Anything that is not a notebook's JSON is kept as it is."""
    try:
        nb = json.loads(data)
        cells = nb["cells"]
    except (ValueError, KeyError, TypeError):
        return data
    if not isinstance(cells, list):
        return data
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def pack(
    root: Path,
    *,
    limit: int,
    limit_text: str,
    ignore: Sequence[str] = (),
    exclude: Sequence[Path] = (),
) -> Folder:
    """``root``'s files as a :class:`Folder`. Raises :class:`FolderTooBig` when the
    compressed archive would pass ``limit`` bytes (``limit_text``: the setting's value, for
    the message), naming the setting and the largest files."""
    patterns = (*DEFAULT_IGNORE, *ignore)
    skip = {Path(p).resolve() for p in exclude}
    sink = _Bounded(limit)
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    try:
        # mtime=0 and sorted entries: the same files give the same text.
        with (
            gzip.GzipFile(fileobj=sink, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in _walk(root, patterns, skip):
                rel = path.relative_to(root).as_posix()
                if path.suffix == ".ipynb":
                    data = _without_outputs(path.read_bytes())
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
                    sizes[rel] = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    files[rel] = hashlib.sha256(data).hexdigest()
                    continue
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    sizes[rel] = st.st_size
                    info = tarfile.TarInfo(rel)
                    info.size = st.st_size
                    info.mtime = int(st.st_mtime)
                    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                    reader = _Hashing(fh)  # streamed: a huge file stops at the limit
                    tar.addfile(info, reader)
                    files[rel] = reader.h.hexdigest()
    except OSError as exc:
        raise ArgoSettingsError(
            f"the notebook's folder {root} cannot be packed for Argo: {exc}; leave the file "
            f"out with {IGNORE_SETTING}"
        ) from None
    except _Over:
        for path in _walk(root, patterns, skip):  # the rest, to name the largest files
            rel = path.relative_to(root).as_posix()
            sizes.setdefault(rel, path.stat().st_size)
        largest = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        names = ", ".join(f"{rel} ({_human(n)})" for rel, n in largest)
        raise FolderTooBig(
            f"the notebook's folder {root} is over {limit_text} compressed, the limit of "
            f"{LIMIT_SETTING} (largest: {names}): leave files out with {IGNORE_SETTING}, "
            "or put them in the image or on an existing claim"
        ) from None
    raw = sink.getvalue()
    return Folder(base64.b64encode(raw).decode("ascii"), len(raw), files)


def for_settings(
    settings: ArgoSettings, workdir: Path | None, exclude: Sequence[Path] = ()
) -> Folder | None:
    """The notebook's folder packed as ``settings`` say (None when ``ship_folder`` is off
    or there is no folder); ``exclude``: the runs root, when it lies inside the folder."""
    if not settings.ship_folder or workdir is None or not Path(workdir).is_dir():
        return None
    return pack(
        Path(workdir),
        limit=settings.folder_limit_bytes,
        limit_text=settings.folder_limit,
        ignore=settings.folder_ignore,
        exclude=exclude,
    )


# -- the pod side -------------------------------------------------------------------------------


def unpack(archive: Path, dest: Path) -> int:
    """Unpack ``archive`` (base64 text of a gzipped tar of files) into ``dest``, replacing
    files of the same name and keeping any others (a resumed run's volume keeps what its
    steps wrote). Refuses anything but plain files at relative paths inside ``dest``.
    Returns the number of files."""
    raw = base64.b64decode(archive.read_bytes())
    dest.mkdir(parents=True, exist_ok=True)
    top = dest.resolve()
    count = 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar:
            target = (top / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(top) or target == top:
                raise ValueError(f"refusing {member.name!r}: not a file inside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            tmp = target.with_name(f".{target.name}.cellpipe-tmp")
            with open(tmp, "wb") as out:
                out.write(source.read())
            os.chmod(tmp, member.mode & 0o777)
            os.utime(tmp, (member.mtime, member.mtime))
            os.replace(tmp, target)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m cellpipe.backends.argo.folder ARCHIVE DEST", file=sys.stderr)
        return 2
    archive, dest = Path(args[0]), Path(args[1])
    try:
        count = unpack(archive, dest)
    except (OSError, ValueError, tarfile.TarError) as exc:
        print(f"cellpipe: the notebook's folder could not be unpacked: {exc}", file=sys.stderr)
        return 1
    print(f"cellpipe: the notebook's folder: {count} files into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
