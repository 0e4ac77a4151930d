"""What the metrics count, read from the catalog: the catalog is the truth, so a
restart keeps every gauge and histogram (service/metrics.py turns these into
Prometheus families). Read-only queries, a few milliseconds each on a year's catalog.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tallies:
    """Counts and durations per camera, as the catalog holds them now."""

    frames: tuple[tuple[str, str, int], ...]  # (camera, status, count)
    sets: tuple[tuple[str, str, int], ...]  # (camera, state, count)
    masters: tuple[tuple[str, str, int], ...]  # (camera, verdict, count)
    last_accepted: tuple[tuple[str, dt.datetime], ...]  # (camera, created)
    latencies: tuple[tuple[str, float], ...]  # (camera, last frame written -> master made, s)
    combines: tuple[tuple[str, float], ...]  # (camera, first start -> last end of done runs, s)


class TallyQueries:
    """Mixed into Catalog: the tallies behind the service's metrics."""

    _db: sqlite3.Connection

    def tallies(self) -> Tallies:
        """Every count and duration the metrics export, in one read."""
        return Tallies(
            frames=self._counts("SELECT camera, status, COUNT(*) FROM frames GROUP BY 1, 2"),
            sets=self._counts("SELECT camera, state, COUNT(*) FROM sets GROUP BY 1, 2"),
            masters=self._counts("SELECT camera, state, COUNT(*) FROM masters GROUP BY 1, 2"),
            last_accepted=tuple(
                (str(camera), when)
                for camera, created in self._db.execute(
                    "SELECT camera, MAX(created) FROM masters WHERE state = 'accepted' "
                    "GROUP BY camera"
                )
                if (when := _when(created)) is not None
            ),
            latencies=self._latencies(),
            combines=self._spans(
                "SELECT s.camera, MIN(a.started), MAX(a.ended) FROM attempts a "
                "JOIN sets s ON s.id = a.set_id WHERE a.outcome = 'done' GROUP BY a.set_id"
            ),
        )

    def _counts(self, sql: str) -> tuple[tuple[str, str, int], ...]:
        return tuple((str(a), str(b), int(n)) for a, b, n in self._db.execute(sql))

    def _latencies(self) -> tuple[tuple[str, float], ...]:
        # From the camera's last byte (the newest input's mtime, as the lane saw it) to
        # the master's record: what an observer waits, settle_seconds and reading included.
        rows = self._db.execute(
            "SELECT m.camera, MAX(f.mtime_ns), m.created FROM masters m "
            "JOIN frames f ON f.set_id = m.set_id AND f.status IN ('valid', 'combined') "
            "GROUP BY m.id"
        )
        return tuple(
            (str(camera), when.timestamp() - mtime_ns / 1e9)
            for camera, mtime_ns, created in rows
            if (when := _when(created)) is not None and isinstance(mtime_ns, int)
        )

    def _spans(self, sql: str) -> tuple[tuple[str, float], ...]:
        return tuple(
            (str(camera), (ended - began).total_seconds())
            for camera, start, end in self._db.execute(sql)
            if (began := _when(start)) is not None and (ended := _when(end)) is not None
        )


def _when(text: object) -> dt.datetime | None:
    """A catalog time (ISO 8601 with its offset; an older naive one is UTC), or None when
    unreadable: a row no biaswatch wrote (edited by hand) is left out of the tallies, not
    allowed to stop the metrics."""
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
