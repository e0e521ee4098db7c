"""Run history: a SQLite index over the run directories.

The run directories are the truth; this is an index for fast, paginated listing. It is
refreshed from them (a row is re-derived when its run's files changed or its run has not
ended), and a schema change means drop and re-index, never a migration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cellpipe.core.model import State
from cellpipe.rundir import layout
from cellpipe.rundir.runs import RunDir, iter_run_dirs

from .paths import relative

_SCHEMA_VERSION = 2
_ENDED = tuple(s.value for s in State if s.terminal)
_SCHEMA = """
CREATE TABLE runs (
    run_id     TEXT PRIMARY KEY,
    path       TEXT,
    backend    TEXT,
    parameters TEXT,
    state      TEXT,
    message    TEXT,
    started_at REAL,
    ended_at   REAL,
    metrics    TEXT,
    step_counts TEXT,
    stamp      TEXT
);
CREATE INDEX runs_by_path ON runs (path, started_at DESC);
CREATE INDEX runs_by_start ON runs (started_at DESC);
"""


def _corrupt(exc: BaseException) -> bool:
    """Whether a database error says the file itself is broken (not busy, not full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


class History:
    """The index. It is derived data, so a corrupt file is never fatal: on any sign of
    corruption (when opening it, or later) the file is moved aside as
    ``.history.sqlite.corrupt-<time>``, logged, and the index rebuilt from the run folders.
    Other database errors (busy, disk full) are logged and the operation skipped: the next
    sync repairs what was missed."""

    def __init__(
        self, db: Path, runs_root: Path, server_root: Path, log: logging.Logger | None = None
    ):
        self.db, self.runs_root, self.server_root = Path(db), Path(runs_root), Path(server_root)
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self.db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            self._move_aside(exc)
            self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, check_same_thread=False, timeout=10)
        conn.row_factory = sqlite3.Row
        try:  # callers hold self._lock or are the constructor
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == _SCHEMA_VERSION:
                # Reads every page: found now, not in the middle of a request.
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            else:
                conn.executescript("DROP TABLE IF EXISTS runs;" + _SCHEMA)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, exc: BaseException) -> None:
        aside = self.db.with_name(f"{self.db.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        self.log.warning(
            "cellpipe: the run history index %s is corrupt (%s); moved it to %s and "
            "rebuilding it from the run folders",
            self.db,
            exc,
            aside.name,
        )
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.db}{suffix}", f"{aside}{suffix}")

    def _recover(self, exc: BaseException) -> bool:
        """After a database error mid-use: True when the index was rebuilt (retry)."""
        if not _corrupt(exc):
            self.log.warning("cellpipe: the run history index failed: %s", exc)
            return False
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._move_aside(exc)
            self._conn = self._connect()
        self._sync()
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def sync(self) -> None:
        """Bring the index up to date with the run directories."""
        try:
            self._sync()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)

    def _sync(self) -> None:
        if not self.runs_root.is_dir():
            return
        with self._lock:
            known = {
                r["run_id"]: (r["stamp"], r["state"])
                for r in self._conn.execute("SELECT run_id, stamp, state FROM runs")
            }
        seen = set()
        for rd in iter_run_dirs(self.runs_root):
            seen.add(rd.run_id)
            stamp = rd.stamp()
            row = known.get(rd.run_id)
            if row is not None and row[1] not in _ENDED:
                # A run not ended can change state with no file changing (its driver died
                # while no server watched): what is known of its driver counts too.
                stamp += f"|driver:{rd.driver().value}"
            if row is not None and row[0] == stamp:
                continue  # unchanged files, unchanged status (the manager watches live runs)
            self.update(rd, stamp)
        gone = set(known) - seen
        if gone:
            with self._lock:
                self._conn.executemany("DELETE FROM runs WHERE run_id = ?", [(g,) for g in gone])
                self._conn.commit()

    def update(self, rd: RunDir, stamp: str | None = None) -> None:
        if not rd.exists():
            return  # deleted, or not a run (RunDir.create writes run.json last)
        try:
            status = rd.status()
            metrics = rd.metrics()
            if not isinstance(metrics, dict):
                raise ValueError("its metrics are not a JSON object")
        except Exception as exc:  # one broken run folder must not hide the others
            self._write(_broken_row(rd, exc))
            return
        row = (
            rd.run_id,
            relative(self.server_root, status.notebook),
            status.backend,
            json.dumps(status.parameters, default=repr),
            status.state.value,
            status.message,
            status.started_at,
            status.ended_at,
            json.dumps(metrics, default=repr),
            json.dumps(Counter(s.state.value for s in status.steps.values())),
            stamp or rd.stamp(),
        )
        self._write(row)

    def _write(self, row: tuple[Any, ...]) -> None:
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)", row
                )
                self._conn.commit()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)

    def list(self, path: str | None, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        try:
            return self._list(path, offset, limit)
        except sqlite3.DatabaseError as exc:
            if not self._recover(exc):
                raise
            return self._list(path, offset, limit)

    def _list(self, path: str | None, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE path = ?", [path]) if path else ("", [])
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM runs {where}", args).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT * FROM runs {where} ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [
            {
                "run_id": r["run_id"],
                "path": r["path"],
                "backend": r["backend"],
                "state": r["state"],
                "message": r["message"] or "",
                "parameters": json.loads(r["parameters"] or "{}"),
                "started_at": r["started_at"],
                "ended_at": r["ended_at"],
                "duration_s": (r["ended_at"] - r["started_at"])
                if r["ended_at"] and r["started_at"]
                else None,
                "metrics": json.loads(r["metrics"] or "{}"),
                "step_counts": json.loads(r["step_counts"] or "{}"),
            }
            for r in rows
        ], total


def _broken_row(rd: RunDir, exc: Exception) -> tuple[Any, ...]:
    """The row of a run whose folder cannot be read: listed as failed, saying why; its
    stamp never matches, so it is read again on every sync (it may be mid-repair)."""
    message = f"this run's folder is broken: {type(exc).__name__}: {exc}"
    try:
        created: float | None = layout.info_file(rd.path).stat().st_mtime
    except OSError:
        created = None
    return (rd.run_id, None, "", "{}", "failed", message, created, created, "{}", "{}", "broken")
