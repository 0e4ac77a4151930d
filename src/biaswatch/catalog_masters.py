"""The catalog's masters: recording them, judging them, and the queries about them.

A mixin of :class:`biaswatch.catalog.Catalog`, apart so that each file stays
readable; it uses the catalog's connection and transactions.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import asdict

from biaswatch.qc import MasterQC
from biaswatch.records import MasterRow


class MasterQueries:
    """Masters and their verdicts, in the catalog's database."""

    _db: sqlite3.Connection

    def _now(self) -> str:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def next_sequence(self, camera: str, night: str) -> int:
        """The next master sequence number of a camera's night (1, 2, ...)."""
        row = self._db.execute(
            "SELECT MAX(sequence) FROM masters WHERE camera = ? AND night = ?", (camera, night)
        ).fetchone()
        return int(row[0] or 0) + 1

    def record_master(self, set_id: int, master: MasterRow) -> None:
        """One transaction: the master row, the set done, its frames combined."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO masters (set_id, camera, night, sequence, geometry, path, ncombine,"
                " input_digest, created, qc, state, judged_by, judgement)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ),
            )
            db.execute(
                "UPDATE sets SET state = 'done', reason = NULL, updated = ? WHERE id = ?",
                (self._now(), set_id),
            )
            db.execute(
                "UPDATE frames SET status = 'combined' WHERE set_id = ? AND status = 'valid'",
                (set_id,),
            )

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

    def accepted_qc(self, camera: str, geometry: str, limit: int) -> list[MasterQC]:
        """QC of the camera's newest accepted masters of this geometry, newest first."""
        rows = self._db.execute(
            "SELECT qc FROM masters WHERE camera = ? AND geometry = ? AND state = 'accepted'"
            " AND qc IS NOT NULL ORDER BY night DESC, sequence DESC LIMIT ?",
            (camera, geometry, limit),
        ).fetchall()
        return [MasterQC(**json.loads(r["qc"])) for r in rows]

    def judge_master(self, path: str, state: str, by: str, why: str) -> MasterRow:
        """Record a person's verdict on a master; returns it. Raises KeyError if unknown."""
        with self._transaction() as db:
            done = db.execute(
                "UPDATE masters SET state = ?, judged_by = ?, judgement = ? WHERE path = ?",
                (state, by, why, path),
            )
        if done.rowcount == 0:
            raise KeyError(path)
        (master,) = [m for m in self.masters() if m.path == path]
        return master

    def masters(self, camera: str | None = None, night: str | None = None) -> list[MasterRow]:
        """Published masters, oldest first, optionally filtered."""
        clauses, args = [], []
        for column, value in (("camera", camera), ("night", night)):
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
            )
            for r in rows
        ]
