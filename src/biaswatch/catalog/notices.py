"""Notices to downstream, queued in the catalog: ``master.published``, ``master.rejected``,
``master.verdict`` and ``latest.moved``.

A notice is written in the same transaction as the change it announces (record_master,
judge_master, :meth:`NoticeQueries.queue_latest_moves`), so a SIGKILL can never keep one
without the other. The service's sender (service/notices.py) then delivers each to each
target (the ``[notify]`` command and url) strictly in id order, retrying with back-off;
each target's state, tries, next try and last error live in the row, so a restart keeps
the queue and its schedule. Delivery is at-least-once: a SIGKILL after the receiver got a
notice and before its row says ``sent`` sends it again; the ``notice`` id in the payload
(never reused: AUTOINCREMENT) lets a receiver drop the duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biaswatch.names import DETECT_TYPES

# The targets a notice goes to, each with its own columns in the notices table.
TARGETS = ("command", "url")


@dataclass(frozen=True, slots=True)
class Notice:
    """One queued notice, as one target sees it."""

    id: int
    event: str
    camera: str
    body: dict[str, Any]  # the payload, with the notice id
    tries: int
    next_try: str | None  # ISO UTC; None: at once


@dataclass(frozen=True, slots=True)
class LatestMove:
    """A link (``configuration`` '' for latest.fits) that now points elsewhere, or nowhere."""

    camera: str
    configuration: str
    path: str | None  # None: removed, no accepted master left
    payload: dict[str, Any]


def queue_notice(
    db: sqlite3.Connection, now: str, event: str, camera: str, payload: dict[str, Any]
) -> int:
    """Queue a notice inside the caller's open transaction; returns its id."""
    body = {"event": event, "camera": camera, "time": now, **payload}
    cur = db.execute(
        "INSERT INTO notices (created, event, camera, payload) VALUES (?, ?, ?, ?)",
        (now, event, camera, json.dumps(body, default=str)),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def seed_announced(db: sqlite3.Connection) -> None:
    """On migrating to schema 2: the links as they stand count as announced already.

    Otherwise the first start after the upgrade would announce every camera's links as
    moved. The same choice of newest accepted master as MasterQueries.latest_paths.
    """
    newest = "MAX(night || '#' || printf('%09d', sequence))"
    db.execute(
        "INSERT OR IGNORE INTO announced (camera, configuration, path) SELECT camera, '', path"
        f" FROM (SELECT camera, path, {newest} FROM masters WHERE state = 'accepted'"
        " GROUP BY camera)"
    )
    db.execute(
        "INSERT OR IGNORE INTO announced (camera, configuration, path)"
        f" SELECT camera, geometry, path FROM (SELECT camera, geometry, path, {newest}"
        " FROM masters WHERE state = 'accepted' GROUP BY camera, geometry)"
    )


class NoticeQueries:
    """The catalog's side of notices: what the links were last announced as, and moves."""

    _db: sqlite3.Connection

    def _now(self) -> str:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def announced_links(self) -> dict[tuple[str, str], str]:
        """(camera, configuration) -> the master path the last latest.moved named."""
        rows = self._db.execute("SELECT camera, configuration, path FROM announced")
        return {(str(r[0]), str(r[1])): str(r[2]) for r in rows}

    def queue_latest_moves(self, moves: list[LatestMove]) -> list[int]:
        """One transaction: a latest.moved notice per move, and the moves remembered."""
        if not moves:
            return []
        ids = []
        with self._transaction() as db:
            now = self._now()
            for move in moves:
                ids.append(queue_notice(db, now, "latest.moved", move.camera, move.payload))
                if move.path is None:
                    db.execute(
                        "DELETE FROM announced WHERE camera = ? AND configuration = ?",
                        (move.camera, move.configuration),
                    )
                else:
                    db.execute(
                        "INSERT INTO announced (camera, configuration, path) VALUES (?, ?, ?)"
                        " ON CONFLICT (camera, configuration) DO UPDATE SET path = excluded.path",
                        (move.camera, move.configuration, move.path),
                    )
        return ids

    def notice_events(self) -> list[tuple[int, str, str]]:
        """Every notice queued, (id, event, camera), in id order: for tests and status."""
        rows = self._db.execute("SELECT id, event, camera FROM notices ORDER BY id")
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


class NoticeQueue:
    """The sender thread's own connection to the notices (sqlite3 connections are per thread).

    Make it on the thread that uses it, and close it before the service's catalog: the
    last connection to close checkpoints the WAL away (catalog/store.py KnownReader).
    """

    def __init__(self, path: Path) -> None:
        # isolation_level=None: each UPDATE is its own transaction, as the writer's are.
        self._db = sqlite3.connect(
            path, isolation_level=None, timeout=30, detect_types=DETECT_TYPES
        )
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def head(self, target: str) -> Notice | None:
        """The oldest notice still pending for ``target``: the next to send, in id order."""
        column = _column(target)
        row = self._db.execute(
            f"SELECT id, event, camera, payload, {column}_tries AS tries, {column}_next AS next"
            f" FROM notices WHERE {column}_state = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        body = {"notice": int(row["id"]), **json.loads(row["payload"])}
        return Notice(
            int(row["id"]), str(row["event"]), str(row["camera"]), body, row["tries"], row["next"]
        )

    def settle(
        self, target: str, notice_id: int, state: str, tries: int, error: str | None
    ) -> None:
        """The notice is sent, failed for good, or has no target: off the target's queue."""
        column = _column(target)
        self._db.execute(
            f"UPDATE notices SET {column}_state = ?, {column}_tries = ?, {column}_next = NULL,"
            f" {column}_error = ? WHERE id = ?",
            (state, tries, error, notice_id),
        )

    def schedule_retry(
        self, target: str, notice_id: int, tries: int, when: dt.datetime, error: str
    ) -> None:
        """A failed try: counted, its error kept, the next try's time stored."""
        column = _column(target)
        self._db.execute(
            f"UPDATE notices SET {column}_tries = ?, {column}_next = ?, {column}_error = ?"
            " WHERE id = ?",
            (tries, when.isoformat(timespec="milliseconds"), error, notice_id),
        )

    def target_states(self, target: str) -> list[tuple[int, str, int]]:
        """(id, state, tries) of every notice for ``target``, in id order."""
        column = _column(target)
        rows = self._db.execute(
            f"SELECT id, {column}_state, {column}_tries FROM notices ORDER BY id"
        )
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def _column(target: str) -> str:
    """The column prefix of a target; only the known names reach the SQL text."""
    if target not in TARGETS:
        raise ValueError(f"unknown notice target {target!r}")
    return target
