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

from biaswatch.catalog.rows import SCHEMA, WRITER_TABLES, migrate
from biaswatch.catalog.store import SCHEMA_VERSION, Catalog, newer_schema
from biaswatch.errors import ConfigError
from biaswatch.names import DETECT_TYPES
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
    return Catalog(path, now=now)  # refuses a catalog of a newer biaswatch itself


def open_reading(path: Path) -> Catalog | None:
    """The catalog read-only, for the reading commands; None when there is none yet.

    It creates no file or directory, sets no pragma and migrates nothing, so a user who
    may read the state directory but not write it can run ``masters``, ``status``,
    ``report`` and ``attempts``; the catalog of a newer biaswatch, or of an older one
    that lacks a column read here, is refused with both versions named.

    Raises:
        ConfigError: the catalog cannot be read by this version, or not read safely.
    """
    if not path.exists():
        return None
    db = _connect_reading(path)
    try:
        problem = schema_problem(path, db)
    except BaseException:
        db.close()
        raise
    if problem is not None:
        db.close()
        raise ConfigError([problem])
    return Catalog.reading(db)


def _connect_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection: ``mode=ro``, else, with no writer about, ``immutable=1``.

    A WAL database opened read-only needs its -shm file; "a read-only WAL-mode database
    file can be opened if the -shm and -wal files already exist or those files can be
    created or the database is immutable" (sqlite.org/wal.html, "Read-Only Databases",
    SQLite >= 3.22). While the service runs they exist and ``mode=ro`` reads its latest
    commits. When it has stopped, its last connection checkpointed the WAL into the
    main file and deleted both (sqlite.org/wal.html, "Checkpointing"), so the main
    file holds everything and ``immutable=1`` (sqlite.org/uri.html) reads it without
    the -shm. A -wal left without a -shm (a crash) may hold commits the main file lacks:
    refused, rather than shown stale. Were the service to start between the two tries, it
    writes only its -wal until its first checkpoint (1000 pages by default,
    sqlite.org/wal.html "Automatic Checkpoint"), so the main file read stays whole.
    """
    try:
        return _probed(f"file:{path}?mode=ro")
    except sqlite3.OperationalError:
        # SQLITE_READONLY_DIRECTORY with no -wal, SQLITE_CANTOPEN with one (SQLite 3.40):
        # with a -shm there, the failure is something else and is reported below.
        if Path(f"{path}-shm").exists():
            return _probed(f"file:{path}?mode=ro", path)
    except sqlite3.Error as exc:  # "file is not a database": no other open would help
        raise ConfigError([f"{path}: cannot be read ({exc})"]) from None
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise ConfigError(
            [
                f"{path}: its write-ahead log {wal.name} has no -shm beside it and this user"
                " may not create one: start the service once (as its user) to checkpoint it"
            ]
        )
    return _probed(f"file:{path}?immutable=1", path)


def _probed(uri: str, path: Path | None = None) -> sqlite3.Connection:
    """A connection to ``uri`` that has read the header; with ``path``, a failure is one line.

    SQLite opens lazily: only the first read finds out whether the file can be read.
    """
    db = sqlite3.connect(uri, uri=True, timeout=30, detect_types=DETECT_TYPES)
    try:
        db.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        db.close()
        if path is None:
            raise
        raise ConfigError([f"{path}: cannot be read ({exc})"]) from None
    return db


def schema_problem(path: Path, db: sqlite3.Connection) -> str | None:
    """Why this code cannot read the catalog: newer, or older and missing columns; else None.

    An older catalog that already has every column this version reads is read as it is
    (a reading command never migrates); one that lacks some needs the service to run once.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    too_new = newer_schema(path, version)
    if too_new is not None or version == SCHEMA_VERSION:
        return too_new
    have = _columns(db)
    missing = sorted(
        f"{table}.{column}"
        for table, columns in expected_columns().items()
        if table not in WRITER_TABLES
        for column in columns - have.get(table, set())
    )
    if not missing:
        return None
    return (
        f"{path}: catalog schema {version} is older than this biaswatch ({SCHEMA_VERSION})"
        f" and lacks {', '.join(missing)}: run the service once to migrate it"
    )


def expected_columns() -> dict[str, set[str]]:
    """Each table's columns in a catalog this version makes (SCHEMA and migrate, in memory)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        migrate(db)
        return _columns(db)
    finally:
        db.close()


def _columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {row[1] for row in db.execute(f"PRAGMA table_info({t})")} for t in tables}


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
