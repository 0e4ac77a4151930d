"""Opening the catalog safely: never on a network filesystem, never a corrupt file.

SQLite's WAL mode needs shared memory between the processes that open the file,
which a network filesystem cannot give ("WAL does not work over a network
filesystem", sqlite.org/wal.html), so a state_dir there is a config error. A file
that fails ``PRAGMA integrity_check`` is moved aside and a new catalog started:
the start scan records every frame again and masters on disk are adopted
(reliability.md scenario 22).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from biaswatch.catalog.store import Catalog
from biaswatch.errors import ConfigError
from biaswatch.system.mounts import Mount, check_state_dir

log = structlog.get_logger(__name__)


def open_catalog(
    path: Path, now: Callable[[], dt.datetime], mounts: Sequence[Mount] | None = None
) -> Catalog:
    """The catalog, set aside first if SQLite finds it corrupt (reliability.md 22).

    Raises:
        ConfigError: it would live on a network filesystem, where WAL cannot work.
    """
    problem = check_state_dir(path.parent, mounts) or check_writable(path)
    if problem is not None:
        raise ConfigError([f"[service] state_dir: {problem}"])
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    aside = set_aside_if_corrupt(path, stamp)
    if aside is not None:
        action = "rebuilding from a full scan; masters already on disk are adopted"
        log.error("catalog.corrupt", moved_to=str(aside), action=action)
    return Catalog(path, now=now)


# SQLite's primary result codes that mean "not allowed to write here" (sqlite.org/rescode.html):
# SQLITE_PERM 3, SQLITE_READONLY 8, SQLITE_CANTOPEN 14; extended codes keep them in the low byte.
_NOT_WRITABLE = {3, 8, 14}


def check_writable(path: Path) -> str | None:
    """Why the catalog cannot be written (permissions, a read-only file system), or None.

    SQLite opens a file it may not write read-only without a word, and the first write
    fails much later, in the middle of start-up: ask for a write lock now instead.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path.parent} ({exc.strerror}): create it for the service's user"
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            # In WAL mode a read-only file still grants the write lock: write, then undo.
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE write_probe (x INTEGER)")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _NOT_WRITABLE:
            return None  # not a permission problem: corrupt (set aside below), busy
        return (
            f"the catalog {path} cannot be written ({exc}): give the service's user write "
            f"access to it and to {path.parent} (SQLite writes {path.name}-wal and -shm there)"
        )
    return None


def set_aside_if_corrupt(path: Path, stamp: str) -> Path | None:
    """Move a catalog that fails SQLite's integrity check aside; returns where, if moved.

    The service then starts a new catalog: its start scan records every frame again,
    and every master already on disk for the same inputs is adopted, not remade.
    """
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            healthy = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.DatabaseError:  # "file is not a database", "malformed"
        healthy = False
    if healthy:
        return None
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # belong to the corrupt file, not to the new one
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return aside
