"""The catalog's attempt history: every time a combine task ran, where, and how it ended.

A mixin of :class:`biaswatch.catalog.Catalog`, apart so that each file stays
readable. A set's combine is one task on the local executor, and on a Dask
cluster one task or several (bands, then their assembly); each run of a task on
a worker is an attempt. An attempt that never answered (its worker died, or the
scheduler went away) ends ``lost``, which is how "what happened last night?"
shows a worker killed mid-combine and the rerun that made the master.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager


class AttemptQueries:
    """Attempts of the combine tasks, in the catalog's database."""

    _db: sqlite3.Connection

    def _now(self) -> str:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def attempt_started(self, set_id: int, task: str, executor: str, worker: str) -> None:
        """A task began on ``worker``; an earlier run of it still 'running' was lost."""
        with self._transaction() as db:
            db.execute(
                "UPDATE attempts SET outcome = 'lost', ended = ?, reason = ? "
                "WHERE set_id = ? AND task = ? AND outcome = 'running'",
                (self._now(), f"no answer; the task ran again on {worker}", set_id, task),
            )
            db.execute(
                "INSERT INTO attempts (set_id, task, executor, worker, started) "
                "VALUES (?, ?, ?, ?, ?)",
                (set_id, task, executor, worker, self._now()),
            )

    def attempt_ended(
        self, set_id: int, task: str, worker: str, outcome: str, reason: str | None = None
    ) -> None:
        """The run of ``task`` on ``worker`` answered: 'done' or 'failed' with the reason."""
        with self._transaction() as db:
            db.execute(
                "UPDATE attempts SET outcome = ?, ended = ?, reason = ? WHERE id = ("
                "SELECT MAX(id) FROM attempts WHERE set_id = ? AND task = ? AND worker = ? "
                "AND outcome = 'running')",
                (outcome, self._now(), reason, set_id, task, worker),
            )

    def attempt_answered(
        self, set_id: int, task: str, executor: str, worker: str, outcome: str, reason: str | None
    ) -> None:
        """A task's own answer: ends its running attempt, or records one whose start was
        never announced (announcements travel apart from answers and can be lost).

        The worker's own 'ended' announcement usually arrives first and has already
        closed the attempt; the answer is then the same run told twice, not a new one.
        """
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE attempts SET outcome = ?, ended = ?, reason = ? WHERE id = ("
                "SELECT MAX(id) FROM attempts WHERE set_id = ? AND task = ? AND worker = ? "
                "AND outcome = 'running')",
                (outcome, self._now(), reason, set_id, task, worker),
            )
            latest = db.execute(
                "SELECT worker, outcome FROM attempts WHERE set_id = ? AND task = ? "
                "ORDER BY id DESC LIMIT 1",
                (set_id, task),
            ).fetchone()
            told_already = latest is not None and tuple(latest) == (worker, outcome)
            if cursor.rowcount == 0 and not told_already:
                db.execute(
                    "INSERT INTO attempts (set_id, task, executor, worker, started, ended, "
                    "outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (set_id, task, executor, worker, self._now(), self._now(), outcome, reason),
                )

    def attempts_lost(self, set_id: int, reason: str) -> int:
        """Every attempt of the set still 'running' gave no answer: 'lost'; returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE attempts SET outcome = 'lost', ended = ?, reason = ? "
                "WHERE set_id = ? AND outcome = 'running'",
                (self._now(), reason, set_id),
            )
            return cursor.rowcount

    def attempts(self, set_id: int | None = None, night: str | None = None) -> list[sqlite3.Row]:
        """Attempts with their set's camera and night, oldest first; optionally filtered."""
        sql = (
            "SELECT a.*, s.camera, s.night FROM attempts a JOIN sets s ON s.id = a.set_id "
            "WHERE (? IS NULL OR a.set_id = ?) AND (? IS NULL OR s.night = ?) ORDER BY a.id"
        )
        return list(self._db.execute(sql, (set_id, set_id, night, night)))
