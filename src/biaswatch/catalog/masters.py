"""The catalog's masters: recording them, judging them, and the queries about them.

A mixin of :class:`biaswatch.catalog.Catalog`, apart so that each file stays
readable; it uses the catalog's connection and transactions.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import asdict, replace

from biaswatch.catalog.notices import queue_notice
from biaswatch.catalog.rows import MasterRow, master_segments, segments_json
from biaswatch.rules.qc import MasterQC


class MasterQueries:
    """Masters and their verdicts, in the catalog's database."""

    _db: sqlite3.Connection

    def _now(self) -> str:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def next_sequence(self, camera: str, night: str) -> int:
        """The number a set of this camera's night would reserve now (1, 2, ...)."""
        return _highest(self._db, camera, night) + 1

    def reserve_sequence(self, set_id: int, above: int = 0) -> int:
        """The set's master sequence number, reserved in the catalog; returns it.

        One transaction: a set that holds a number keeps it (across retries and
        restarts), unless a master of another set has it or it is not above
        ``above`` (the highest number seen on disk when its name was found taken).
        Otherwise it gets MAX over the night's masters and reserved sets, plus one:
        two sets combining at once never share a name (issue 11, finding 4).
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT camera, night, sequence FROM sets WHERE id = ?", (set_id,)
            ).fetchone()
            camera, night, held = row["camera"], row["night"], row["sequence"]
            if held is not None and held > above and not _taken(db, camera, night, held, set_id):
                return int(held)
            sequence = max(_highest(db, camera, night), above) + 1
            db.execute("UPDATE sets SET sequence = ? WHERE id = ?", (sequence, set_id))
        return sequence

    def sequence_free(self, set_id: int, camera: str, night: str, sequence: int) -> bool:
        """Whether ``sequence`` is neither a master of another set nor reserved by one."""
        reserved = self._db.execute(
            "SELECT 1 FROM sets WHERE camera = ? AND night = ? AND sequence = ? AND id != ?",
            (camera, night, sequence, set_id),
        ).fetchone()
        return reserved is None and not _taken(self._db, camera, night, sequence, set_id)

    def has_master(self, set_id: int) -> bool:
        """Whether a master is recorded for this set."""
        row = self._db.execute("SELECT 1 FROM masters WHERE set_id = ?", (set_id,)).fetchone()
        return row is not None

    def master_recorded(self, path: str) -> bool:
        """Whether a master is recorded at ``path``."""
        row = self._db.execute("SELECT 1 FROM masters WHERE path = ?", (path,)).fetchone()
        return row is not None

    def master_paths(self) -> set[str]:
        """The paths of every recorded master."""
        return {str(r[0]) for r in self._db.execute("SELECT path FROM masters")}

    def latest_paths(self) -> dict[str, str]:
        """Each camera's newest accepted master's path (latest night, highest sequence).

        The same choice as :meth:`newest_masters`, in one indexed query: it runs on a
        timer to notice a deleted ``latest.fits``. SQLite takes a bare column from the
        row holding the MAX (sqlite.org/lang_select.html, "bare columns").
        """
        rows = self._db.execute(
            "SELECT camera, path, MAX(night || '#' || printf('%09d', sequence)) FROM masters"
            " WHERE state = 'accepted' GROUP BY camera"
        ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def latest_by_configuration(self) -> dict[tuple[str, str], str]:
        """Each (camera, geometry label)'s newest accepted master's path: ``latest-<label>``."""
        rows = self._db.execute(
            "SELECT camera, geometry, path, MAX(night || '#' || printf('%09d', sequence))"
            " FROM masters WHERE state = 'accepted' GROUP BY camera, geometry"
        ).fetchall()
        return {(str(r[0]), str(r[1])): str(r[2]) for r in rows}

    def record_master(self, set_id: int, master: MasterRow) -> None:
        """One transaction: the master row, the set done, its frames combined."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO masters (set_id, camera, night, sequence, geometry, path, ncombine,"
                " input_digest, created, qc, state, judged_by, judgement, segments)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    set_id,
                    master.camera,
                    master.night,
                    master.sequence,
                    master.geometry,
                    master.path,
                    master.ncombine,
                    master.input_digest,
                    master.created,
                    None if master.qc is None else json.dumps(asdict(master.qc)),
                    master.state,
                    master.judged_by,
                    master.judgement,
                    segments_json(master.segments),
                ),
            )
            # The set holds its master's number (an adopted master's may differ from the
            # one reserved): reservations and masters never disagree.
            db.execute(
                "UPDATE sets SET state = 'done', reason = NULL, updated = ?, sequence = ?"
                " WHERE id = ?",
                (self._now(), master.sequence, set_id),
            )
            db.execute(
                "UPDATE frames SET status = 'combined' WHERE set_id = ? AND status = 'valid'",
                (set_id,),
            )
            # In this transaction: a SIGKILL never keeps the master without its notice.
            # A master biaswatch rejected is announced too: downstream must not wait for it.
            event = "master.published" if master.state == "accepted" else "master.rejected"
            queue_notice(db, self._now(), event, master.camera, _announced(master))

    def newest_masters(self) -> dict[str, MasterRow]:
        """Each camera's most recent accepted master (latest night, highest sequence)."""
        # masters() sorts oldest first
        return {m.camera: m for m in self.masters() if m.state == "accepted"}

    def night_summary(self, camera: str, night: str) -> tuple[int, int]:
        """How many frames were judged for a camera's night, and how many masters accepted."""
        frames = self._db.execute(
            "SELECT COUNT(*) FROM frames WHERE camera = ? AND night = ?", (camera, night)
        ).fetchone()[0]
        accepted = self._db.execute(
            "SELECT COUNT(*) FROM masters WHERE camera = ? AND night = ? AND state = 'accepted'",
            (camera, night),
        ).fetchone()[0]
        return int(frames), int(accepted)

    def first_night(self, camera: str) -> str | None:
        """The earliest night of any frame recorded for the camera; None before the first."""
        row = self._db.execute("SELECT MIN(night) FROM frames WHERE camera = ?", (camera,))
        night = row.fetchone()[0]
        return None if night is None else str(night)

    def accepted_qc(self, camera: str, geometry: str, limit: int) -> list[MasterQC]:
        """QC of the camera's newest accepted masters of this geometry, newest first."""
        rows = self._db.execute(
            "SELECT qc FROM masters WHERE camera = ? AND geometry = ? AND state = 'accepted'"
            " AND qc IS NOT NULL ORDER BY night DESC, sequence DESC LIMIT ?",
            (camera, geometry, limit),
        ).fetchall()
        return [MasterQC(**json.loads(r["qc"])) for r in rows]

    def accepted_segments(
        self, camera: str, geometry: str, limit: int
    ) -> list[dict[str, MasterQC]]:
        """Each segment's QC of the camera's newest accepted masters of this geometry.

        Newest first, one mapping per master (empty for a master of one segment): the
        baseline each segment of a new master is judged against (rules/acceptance.py).
        """
        rows = self._db.execute(
            "SELECT segments FROM masters WHERE camera = ? AND geometry = ?"
            " AND state = 'accepted' ORDER BY night DESC, sequence DESC LIMIT ?",
            (camera, geometry, limit),
        ).fetchall()
        return [dict(master_segments(r["segments"])) for r in rows]

    def judge_master(
        self, path: str, state: str, by: str, why: str, new_path: str | None = None
    ) -> MasterRow:
        """Record a person's verdict on a master; returns it. Raises KeyError if unknown.

        ``new_path``: where its file goes for this verdict (publish/placement.py moves it
        after this commit), recorded in the same transaction as the verdict.
        """
        moved_to = path if new_path is None else new_path
        with self._transaction() as db:
            before = self.masters(path=path)
            done = db.execute(
                "UPDATE masters SET state = ?, judged_by = ?, judgement = ?, path = ?"
                " WHERE path = ?",
                (state, by, why, moved_to, path),
            )
            # Only a change of state is news downstream; in this transaction, as the change.
            if before and before[0].state != state:
                after = replace(before[0], state=state, judged_by=by, judgement=why, path=moved_to)
                change = _announced(after) | {"previous_state": before[0].state}
                queue_notice(db, self._now(), "master.verdict", after.camera, change)
        if done.rowcount == 0:
            raise KeyError(path)
        (master,) = [m for m in self.masters() if m.path == moved_to]
        return master

    def relocate_master(self, path: str, new_path: str) -> None:
        """Record that a master's file is moving to ``new_path`` (its verdict unchanged)."""
        with self._transaction() as db:
            done = db.execute("UPDATE masters SET path = ? WHERE path = ?", (new_path, path))
        if done.rowcount == 0:
            raise KeyError(path)

    def master_cameras(self) -> set[str]:
        """The cameras that have at least one recorded master, whatever its verdict."""
        return {str(r[0]) for r in self._db.execute("SELECT DISTINCT camera FROM masters")}

    def masters(
        self, camera: str | None = None, night: str | None = None, path: str | None = None
    ) -> list[MasterRow]:
        """Published masters, oldest first, optionally filtered."""
        clauses, args = [], []
        for column, value in (("camera", camera), ("night", night), ("path", path)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT * FROM masters{where} ORDER BY camera, night, sequence", args
        ).fetchall()
        return [
            MasterRow(
                r["camera"],
                r["night"],
                r["sequence"],
                r["geometry"],
                r["path"],
                r["ncombine"],
                r["input_digest"],
                r["created"],
                None if r["qc"] is None else MasterQC(**json.loads(r["qc"])),
                r["state"],
                r["judged_by"],
                r["judgement"],
                master_segments(r["segments"]),
            )
            for r in rows
        ]


def _highest(db: sqlite3.Connection, camera: str, night: str) -> int:
    """The highest sequence of a camera's night, masters and reservations alike (0: none)."""
    row = db.execute(
        "SELECT MAX(s) FROM (SELECT MAX(sequence) AS s FROM masters WHERE camera = ?"
        " AND night = ? UNION ALL SELECT MAX(sequence) FROM sets WHERE camera = ? AND night = ?)",
        (camera, night, camera, night),
    ).fetchone()
    return int(row[0] or 0)


def _taken(db: sqlite3.Connection, camera: str, night: str, sequence: int, set_id: int) -> bool:
    """Whether a master of another set has this camera's night's ``sequence``."""
    row = db.execute(
        "SELECT 1 FROM masters WHERE camera = ? AND night = ? AND sequence = ? AND set_id != ?",
        (camera, night, sequence, set_id),
    ).fetchone()
    return row is not None


def _announced(master: MasterRow) -> dict[str, object]:
    """A master's part of a notice's payload (catalog/notices.py)."""
    return {
        "night": master.night,
        "sequence": master.sequence,
        "path": master.path,
        "state": master.state,
        "configuration": master.geometry,
        "judged_by": master.judged_by,
        "reason": master.judgement,
        "ncombine": master.ncombine,
    }
