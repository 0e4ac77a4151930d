"""What the catalog stores: its tables (and how an older catalog gains them), its rows.

The service, the lanes and the commands pass the rows around as plain frozen data;
only catalog/ turns them into SQL.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import asdict, dataclass

from biaswatch.rules.qc import FrameQC, MasterQC

# frames.segments_qc and masters.segments: each segment's (image HDU's or amplifier's)
# QC, JSON [[name, {field: value}], ...] (segments_json); NULL for one segment. No SQL
# comment beside them: SQLite's DROP COLUMN rewrites the table's text around it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('seen', 'valid', 'combined', 'ignored', 'rejected')),
    reason TEXT,
    note TEXT,
    imagetyp TEXT,
    date_obs TEXT,
    night TEXT,
    geometry TEXT,
    set_id INTEGER REFERENCES sets(id),
    calibrated TEXT,
    recorded TEXT NOT NULL,
    qc TEXT,
    segments_qc TEXT
);
CREATE INDEX IF NOT EXISTS frames_set ON frames(set_id);
CREATE INDEX IF NOT EXISTS frames_content ON frames(camera, sha256);
CREATE TABLE IF NOT EXISTS sets (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    night TEXT NOT NULL,
    geometry TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('open', 'closed', 'combining', 'done', 'failed', 'insufficient')),
    reason TEXT,
    tries INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    flag TEXT,
    -- The master sequence number reserved for this set when its combine first
    -- starts, kept across retries and restarts (catalog_masters.reserve_sequence);
    -- unique per camera and night (index made in catalog/rows.py migrate).
    sequence INTEGER
);
CREATE INDEX IF NOT EXISTS sets_key ON sets(camera, night, geometry, state);
CREATE TABLE IF NOT EXISTS masters (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL UNIQUE REFERENCES sets(id),
    camera TEXT NOT NULL,
    night TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    geometry TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    ncombine INTEGER NOT NULL,
    input_digest TEXT NOT NULL,
    created TEXT NOT NULL,
    qc TEXT,
    state TEXT NOT NULL DEFAULT 'accepted' CHECK (state IN ('accepted', 'rejected')),
    judged_by TEXT,
    judgement TEXT,
    segments TEXT,
    UNIQUE (camera, night, sequence)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES sets(id),
    task TEXT NOT NULL,
    executor TEXT NOT NULL,
    worker TEXT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    outcome TEXT NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'done', 'failed', 'lost')),
    reason TEXT
);
CREATE INDEX IF NOT EXISTS attempts_set ON attempts(set_id);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    event TEXT NOT NULL,
    camera TEXT NOT NULL,
    payload TEXT NOT NULL,
    command_state TEXT NOT NULL DEFAULT 'pending'
        CHECK (command_state IN ('pending', 'sent', 'failed', 'none')),
    command_tries INTEGER NOT NULL DEFAULT 0,
    command_next TEXT,
    command_error TEXT,
    url_state TEXT NOT NULL DEFAULT 'pending'
        CHECK (url_state IN ('pending', 'sent', 'failed', 'none')),
    url_tries INTEGER NOT NULL DEFAULT 0,
    url_next TEXT,
    url_error TEXT
);
CREATE INDEX IF NOT EXISTS notices_command ON notices(command_state, id);
CREATE INDEX IF NOT EXISTS notices_url ON notices(url_state, id);
CREATE TABLE IF NOT EXISTS announced (
    camera TEXT NOT NULL,
    configuration VARCHAR NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (camera, configuration)
);
"""

# notices: what downstream is told (catalog/notices.py), queued in the transaction of the
# change it announces; AUTOINCREMENT so that an id is never used twice, even after rows
# are deleted (sqlite.org/autoinc.html): receivers drop duplicates by it. announced: what
# the last latest.moved said each link (configuration '' = latest.fits) points at; declared
# VARCHAR (TEXT affinity): names.py's converter is for TEXT columns, and sqlite3 hands a
# converted column's empty value back as None, not ''.
# Tables only the service and accept/reject use: a reading command never reads them, so a
# catalog without them (schema 1) is still read (catalog/open.py schema_problem).
WRITER_TABLES = frozenset({"notices", "announced", "sqlite_sequence"})


# Columns added since the first release: a catalog made before gets them at open,
# empty (ALTER TABLE ... ADD COLUMN keeps every row; sqlite.org/lang_altertable.html).
_ADDED_COLUMNS = (
    ("frames", "qc", "TEXT"),
    ("sets", "flag", "TEXT"),
    # Reserved master sequence numbers (finding 4 of issue 11): empty for old sets.
    ("sets", "sequence", "INTEGER"),
    ("masters", "qc", "TEXT"),
    # Masters made before acceptance existed were all used as accepted.
    ("masters", "state", "TEXT NOT NULL DEFAULT 'accepted'"),
    ("masters", "judged_by", "TEXT"),
    ("masters", "judgement", "TEXT"),
    # Per-segment QC (issue 13): NULL for old rows, read as one segment.
    ("frames", "segments_qc", "TEXT"),
    ("masters", "segments", "TEXT"),
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a catalog made by an earlier version up to SCHEMA (columns, then indexes)."""
    for table, column, kind in _ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    # After the columns: an old catalog has no sets.sequence until just above. No two
    # sets of a camera's night may hold one number (a partial index: NULL = none yet).
    db.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS sets_sequence ON sets(camera, night, sequence)"
        " WHERE sequence IS NOT NULL"
    )


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """What the service learnt about one file."""

    path: str
    camera: str
    size: int
    mtime_ns: int
    status: str
    sha256: str | None = None
    reason: str | None = None
    note: str | None = None
    imagetyp: str | None = None
    date_obs: str | None = None
    night: str | None = None
    geometry: str | None = None
    calibrated: str | None = None
    qc: FrameQC | None = None
    segments_qc: tuple[tuple[str, FrameQC], ...] = ()


@dataclass(frozen=True, slots=True)
class SetRow:
    """One set and its valid frames' count and latest arrival."""

    id: int
    camera: str
    night: str
    geometry: str
    state: str
    reason: str | None
    frames: int
    last_arrival: dt.datetime


@dataclass(frozen=True, slots=True)
class MasterRow:
    """One published master."""

    camera: str
    night: str
    sequence: int
    geometry: str
    path: str
    ncombine: int
    input_digest: str
    created: str
    qc: MasterQC | None = None
    state: str = "accepted"  # or "rejected" (rules/acceptance.py), by biaswatch or a person
    judged_by: str | None = None
    judgement: str | None = None
    segments: tuple[tuple[str, MasterQC], ...] = ()  # each segment's QC; () for one segment


def segments_json(
    segments: tuple[tuple[str, FrameQC], ...] | tuple[tuple[str, MasterQC], ...],
) -> str | None:
    """A segments column's text: JSON ``[[name, {field: value}], ...]``; NULL for none."""
    if not segments:
        return None
    return json.dumps([[name, asdict(quality)] for name, quality in segments])


def frame_segments(text: object) -> tuple[tuple[str, FrameQC], ...]:
    """A frame row's segments_qc column read back (() for NULL: one segment, or an old row)."""
    if not isinstance(text, str):
        return ()
    return tuple((str(name), FrameQC(**fields)) for name, fields in json.loads(text))


def master_segments(text: object) -> tuple[tuple[str, MasterQC], ...]:
    """A master row's segments column read back (() for NULL: one segment, or an old row)."""
    if not isinstance(text, str):
        return ()
    return tuple((str(name), MasterQC(**fields)) for name, fields in json.loads(text))
