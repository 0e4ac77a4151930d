"""The SQLite catalog: every frame seen, every set, every master.

It is the one source of truth for state: the service keeps nothing in memory
that it could not rebuild from here. Each state change is one transaction.
WAL mode lets ``biaswatch masters`` read while the service writes (the SQLite
docs: readers do not block the writer); the file lives in ``state_dir`` on a
local disk because WAL does not work over a network filesystem.

Frame statuses: seen (noticed, still being written or checked), valid
(calibrated, waiting in a set), combined, ignored (not a bias, or a duplicate),
rejected (with a reason). A 'seen' file is not "known": after a crash the start
scan examines it again; one that vanishes before being judged is forgotten.

Set states: open (collecting frames) -> closed (judged complete, waiting for a
combine) -> combining -> done | failed (after MAX_TRIES) | insufficient. A
failed try sends a set back to closed with ``tries`` + 1.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from biaswatch.catalog.attempts import AttemptQueries
from biaswatch.catalog.masters import MasterQueries
from biaswatch.catalog.notices import NoticeQueries, seed_announced
from biaswatch.catalog.rows import (
    SCHEMA,
    FrameRecord,
    SetRow,
    frame_segments,
    migrate,
    segments_json,
)
from biaswatch.catalog.tallies import TallyQueries
from biaswatch.errors import ConfigError
from biaswatch.names import DETECT_TYPES, bound
from biaswatch.rules.qc import FrameQC

# The catalog's schema version, kept in SQLite's PRAGMA user_version (sqlite.org/pragma.html
# #pragma_user_version: an integer at offset 60 of the header, free for the application).
# Catalogs made before it was kept read 0. Raise it whenever SCHEMA or migrate changes, so
# a reading command of an older biaswatch refuses a catalog it cannot read (catalog/open.py).
# 2: the notices and announced tables (catalog/notices.py; issue 15, item 7).
SCHEMA_VERSION = 2


def utc_now() -> dt.datetime:
    """The real time, aware UTC (the default clock)."""
    return dt.datetime.now(dt.UTC)


class KnownReader:
    """``Catalog.is_known`` for another thread, on a read-only connection of its own.

    WAL lets readers run beside the one writer (sqlite.org/wal.html), so a camera's
    lane can ask what is recorded without going through the main loop. Make it on
    the thread that uses it (sqlite3 connections belong to their thread), and close
    it before the writer: the last connection to close checkpoints the WAL away.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, detect_types=DETECT_TYPES
        )
        self._db.row_factory = sqlite3.Row

    def __call__(self, path: Path, size: int, mtime_ns: int) -> bool:
        """Whether this path was already judged with this size and mtime."""
        return _is_known(self._db, path, size, mtime_ns)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def _is_known(db: sqlite3.Connection, path: Path, size: int, mtime_ns: int) -> bool:
    row = db.execute(
        "SELECT size, mtime_ns FROM frames WHERE path = ? AND status != 'seen'", (bound(path),)
    ).fetchone()
    return row is not None and (row["size"], row["mtime_ns"]) == (size, mtime_ns)


def newer_schema(path: Path, version: int) -> str | None:
    """The refusal of a catalog made by a newer biaswatch, or None."""
    if version <= SCHEMA_VERSION:
        return None
    return (
        f"{path}: catalog schema {version} is newer than this biaswatch ({SCHEMA_VERSION}):"
        " upgrade biaswatch"
    )


class Catalog(MasterQueries, AttemptQueries, NoticeQueries, TallyQueries):
    """The catalog database; one instance per process, used from one thread."""

    def __init__(self, path: Path, now: Callable[[], dt.datetime] = utc_now) -> None:
        self._clock = now
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE).
        # File names are bound with names.bound and read back through its TEXT decoder.
        self._db = sqlite3.connect(
            path, isolation_level=None, timeout=30, detect_types=DETECT_TYPES
        )
        self._db.row_factory = sqlite3.Row
        # Every writer (the service, backfill, accept/reject) refuses a newer catalog
        # before touching it: migrating it "down" could lose what the newer one keeps.
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        too_new = newer_schema(path, version)
        if too_new is not None:
            self._db.close()
            raise ConfigError([too_new])
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        migrate(self._db)
        # Only ever raised: a newer catalog was refused above.
        if version < SCHEMA_VERSION:
            with self._transaction() as db:
                seed_announced(db)  # 1 -> 2: today's links are no news
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def reading(cls, db: sqlite3.Connection, now: Callable[[], dt.datetime] = utc_now) -> Catalog:
        """The catalog over a connection catalog/open.py opened read-only: no pragma, no migration.

        Only the queries work on it; a write fails with SQLite's "readonly database".
        """
        catalog = cls.__new__(cls)
        catalog._clock = now
        db.row_factory = sqlite3.Row
        catalog._db = db
        return catalog

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _now(self) -> str:
        return self._clock().isoformat(timespec="milliseconds")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- frames ---------------------------------------------------------

    def is_known(self, path: Path, size: int, mtime_ns: int) -> bool:
        """Whether this path was already judged with this size and mtime."""
        return _is_known(self._db, path, size, mtime_ns)

    def note_seen(self, seen: list[FrameRecord], vanished: list[Path]) -> None:
        """One transaction: files noticed (a row unless the path has one), files gone unjudged."""
        with self._transaction() as db:
            now = self._now()
            for frame in seen:
                db.execute(
                    "INSERT OR IGNORE INTO frames (path, camera, size, mtime_ns, status, recorded)"
                    " VALUES (?, ?, ?, ?, 'seen', ?)",
                    (bound(frame.path), frame.camera, frame.size, frame.mtime_ns, now),
                )
            for path in vanished:
                db.execute("DELETE FROM frames WHERE path = ? AND status = 'seen'", (bound(path),))

    def record_frame(self, frame: FrameRecord) -> None:
        """Record a frame that joins no set (ignored or rejected)."""
        with self._transaction() as db:
            _insert_frame(db, frame, None, self._now())

    def add_to_set(self, frame: FrameRecord) -> int:
        """Record a valid frame in its camera/night/geometry's open set; returns the set id."""
        with self._transaction() as db:
            now = self._now()
            set_id = _open_set(db, frame.camera, str(frame.night), str(frame.geometry), now)
            _insert_frame(db, frame, set_id, now)
        return set_id

    def frame(self, path: Path) -> sqlite3.Row | None:
        """The row recorded for ``path``."""
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM frames WHERE path = ?", (bound(path),)
        ).fetchone()
        return row

    def rejected_since(self, camera: str, since: str) -> list[tuple[str, str]]:
        """(path, reason) of the camera's frames rejected since ``since`` (ISO time)."""
        return self._rejected("recorded >= ?", (camera, since), order="recorded")

    def rejected_in_night(self, camera: str, night: str) -> list[tuple[str, str]]:
        """(path, reason) of the camera's frames of ``night`` that were rejected."""
        return self._rejected("night = ?", (camera, night), order="path")

    def _rejected(self, where: str, args: tuple[str, str], order: str) -> list[tuple[str, str]]:
        rows = self._db.execute(
            f"SELECT path, reason FROM frames WHERE camera = ? AND status = 'rejected'"
            f" AND {where} ORDER BY {order}",
            args,
        ).fetchall()
        return [(r["path"], r["reason"] or "") for r in rows]

    def set_inputs(self, set_id: int) -> list[sqlite3.Row]:
        """The valid frames of a set, oldest first."""
        return self._db.execute(
            "SELECT * FROM frames WHERE set_id = ? AND status IN ('valid', 'combined') "
            "ORDER BY date_obs, path",
            (set_id,),
        ).fetchall()

    # --- sets -----------------------------------------------------------

    def get_set(self, set_id: int) -> SetRow:
        """One set with its frame count."""
        rows = self._sets("s.id = ?", (set_id,))
        if not rows:
            raise KeyError(set_id)
        return rows[0]

    def sets_in(self, *states: str) -> list[SetRow]:
        """Sets in any of ``states``."""
        marks = ",".join("?" * len(states))
        return self._sets(f"s.state IN ({marks})", states)

    def _sets(self, where: str, args: tuple[object, ...]) -> list[SetRow]:
        rows = self._db.execute(
            "SELECT s.*, COUNT(f.id) AS n, MAX(f.recorded) AS last FROM sets s "
            "LEFT JOIN frames f ON f.set_id = s.id AND f.status IN ('valid', 'combined') "
            f"WHERE {where} GROUP BY s.id ORDER BY s.id",
            args,
        ).fetchall()
        return [
            SetRow(
                r["id"],
                r["camera"],
                r["night"],
                r["geometry"],
                r["state"],
                r["reason"],
                r["n"],
                self._arrival(r["last"] or r["created"]),
            )
            for r in rows
        ]

    def _arrival(self, text: object) -> dt.datetime:
        # A row no version of biaswatch wrote (edited by hand, a damaged copy) must not
        # stop whoever lists sets (the main loop, status): unreadable counts as now.
        try:
            return dt.datetime.fromisoformat(str(text))
        except ValueError:
            return self._clock()

    def set_state(self, set_id: int, state: str, reason: str | None = None) -> None:
        """Move a set to ``state`` with a reason."""
        with self._transaction() as db:
            db.execute(
                "UPDATE sets SET state = ?, reason = ?, updated = ? WHERE id = ?",
                (state, reason, self._now(), set_id),
            )

    def leave_out(self, path: str, reason: str) -> None:
        """A valid frame screened out of its set: rejected with the reason, set kept for reports."""
        with self._transaction() as db:
            db.execute(
                "UPDATE frames SET status = 'rejected', reason = ?, recorded = ? "
                "WHERE path = ? AND status = 'valid'",
                (reason, self._now(), bound(path)),
            )

    def flag_set(self, set_id: int, flag: str) -> None:
        """Note something about a set that does not stop its combine (its CCD temperature)."""
        with self._transaction() as db:
            db.execute("UPDATE sets SET flag = ? WHERE id = ?", (flag, set_id))

    def requeue_interrupted(self) -> list[int]:
        """At start: sets left combining, or failed, are closed again; returns all closed.

        A failed set gets MAX_TRIES new tries at each start: restarting the service is
        how an operator says "the cause is mended".
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE sets SET state = 'closed', reason = 'combine interrupted; retrying', "
                "updated = ? WHERE state = 'combining'",
                (self._now(),),
            )
            db.execute(
                "UPDATE sets SET state = 'closed', tries = 0, updated = ? WHERE state = 'failed'",
                (self._now(),),
            )
        rows = self._db.execute("SELECT id FROM sets WHERE state = 'closed' ORDER BY id")
        return [int(r["id"]) for r in rows]

    def failed_try(self, set_id: int, reason: str, max_tries: int) -> tuple[str, int]:
        """Count a failed combine: back to 'closed', or 'failed' after max_tries; (state, tries)."""
        with self._transaction() as db:
            row = db.execute("SELECT tries FROM sets WHERE id = ?", (set_id,)).fetchone()
            tries = int(row["tries"]) + 1
            state = "failed" if tries >= max_tries else "closed"
            db.execute(
                "UPDATE sets SET state = ?, reason = ?, tries = ?, updated = ? WHERE id = ?",
                (state, reason, tries, self._now(), set_id),
            )
        return state, tries

    def same_content(self, camera: str, sha256: str, path: str) -> str | None:
        """Another path of this camera whose frame has this content and is in a set."""
        row = self._db.execute(
            "SELECT path FROM frames WHERE camera = ? AND sha256 = ? AND path != ?"
            " AND status IN ('valid', 'combined') ORDER BY id LIMIT 1",
            (camera, sha256, bound(path)),
        ).fetchone()
        return None if row is None else str(row["path"])

    def touch_frame(self, path: str, size: int, mtime_ns: int) -> None:
        """A recorded file got a new mtime but the same content: remember the new stat."""
        with self._transaction() as db:
            db.execute(
                "UPDATE frames SET size = ?, mtime_ns = ? WHERE path = ?",
                (size, mtime_ns, bound(path)),
            )

    def replace_frame(self, frame: FrameRecord) -> tuple[int, int | None]:
        """A recorded frame's content changed: (its set now, the combined set it left, if any).

        A set being combined or done is not touched: its frames and the changed one
        make a new open set, whose master is a new version; the earlier master is kept.
        In a set not combined yet (open, closed and queued, failed) the frame is
        updated in place, so the set's one combine uses the new content.
        """
        with self._transaction() as db:
            now = self._now()
            old = db.execute(
                "SELECT f.set_id, s.state, s.night, s.geometry FROM frames f"
                " LEFT JOIN sets s ON s.id = f.set_id WHERE f.path = ?",
                (bound(frame.path),),
            ).fetchone()
            state = None if old is None else old["state"]
            if state in ("combining", "done"):
                return self._new_version(db, frame, int(old["set_id"]), now), int(old["set_id"])
            same_key = state is not None and (old["night"], old["geometry"]) == (
                frame.night,
                frame.geometry,
            )
            if same_key and state in ("closed", "failed"):
                set_id = int(old["set_id"])
            else:
                set_id = _open_set(db, frame.camera, str(frame.night), str(frame.geometry), now)
            _insert_frame(db, frame, set_id, now)
            return set_id, None

    @staticmethod
    def _new_version(db: sqlite3.Connection, frame: FrameRecord, old_set: int, now: str) -> int:
        set_id = _new_set(db, frame.camera, str(frame.night), str(frame.geometry), now)
        db.execute(
            "UPDATE frames SET set_id = ?, status = 'valid' WHERE set_id = ?"
            " AND status IN ('valid', 'combined') AND path != ?",
            (set_id, old_set, bound(frame.path)),
        )
        _insert_frame(db, frame, set_id, now)
        return set_id

    # --- masters --------------------------------------------------------

    # --- batches --------------------------------------------------------

    def record_frames(self, frames: list[FrameRecord]) -> None:
        """:meth:`record_frame` for many frames in one transaction.

        With synchronous=FULL each transaction waits for an fsync: a burst of junk
        files recorded one by one cost one fsync each (issue 11, finding 10).
        """
        if not frames:
            return
        with self._transaction() as db:
            now = self._now()
            for frame in frames:
                _insert_frame(db, frame, None, now)


def _insert_frame(db: sqlite3.Connection, frame: FrameRecord, set_id: int | None, now: str) -> None:
    db.execute(
        "INSERT INTO frames (path, camera, size, mtime_ns, sha256, status, reason, note,"
        " imagetyp, date_obs, night, geometry, set_id, calibrated, recorded, qc, segments_qc)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
        " sha256 = excluded.sha256, status = excluded.status, reason = excluded.reason,"
        " note = excluded.note, imagetyp = excluded.imagetyp, date_obs = excluded.date_obs,"
        " night = excluded.night, geometry = excluded.geometry, set_id = excluded.set_id,"
        " calibrated = excluded.calibrated, recorded = excluded.recorded, qc = excluded.qc,"
        " segments_qc = excluded.segments_qc",
        (
            bound(frame.path),
            frame.camera,
            frame.size,
            frame.mtime_ns,
            frame.sha256,
            frame.status,
            frame.reason,
            frame.note,
            frame.imagetyp,
            frame.date_obs,
            frame.night,
            frame.geometry,
            set_id,
            frame.calibrated,
            now,
            None if frame.qc is None else json.dumps(asdict(frame.qc)),
            segments_json(frame.segments_qc),
        ),
    )


def stored_frame_qc(row: sqlite3.Row) -> FrameQC | None:
    """The QC stored with a frame row, if it has any."""
    text = row["qc"]
    return None if text is None else FrameQC(**json.loads(text))


def stored_segments_qc(row: sqlite3.Row) -> tuple[tuple[str, FrameQC], ...]:
    """Each segment's QC stored with a frame row (() for one segment, or an old row)."""
    return frame_segments(row["segments_qc"])


def _open_set(db: sqlite3.Connection, camera: str, night: str, geometry: str, now: str) -> int:
    """The set a new frame joins: the open (or insufficient, now reopened) one, else a new one."""
    row = db.execute(
        "SELECT id FROM sets WHERE camera = ? AND night = ? AND geometry = ?"
        " AND state IN ('open', 'insufficient') ORDER BY id DESC LIMIT 1",
        (camera, night, geometry),
    ).fetchone()
    if row is not None:
        db.execute("UPDATE sets SET state = 'open', updated = ? WHERE id = ?", (now, row["id"]))
        return int(row["id"])
    return _new_set(db, camera, night, geometry, now)


def _new_set(db: sqlite3.Connection, camera: str, night: str, geometry: str, now: str) -> int:
    cur = db.execute(
        "INSERT INTO sets (camera, night, geometry, state, created, updated)"
        " VALUES (?, ?, ?, 'open', ?, ?)",
        (camera, night, geometry, now, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid
