"""A frame record meets the catalog: new, touched, a duplicate, or changed.

A frame is its path plus its content (sha256). The same content again under
the same name is a touch; under another name it is a duplicate, recorded as
ignored so it is never combined twice; new content under a known name updates
the frame in its set, or, when that set is being combined or done, makes a new
set whose master is the next version (the old master is kept).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog

log = structlog.get_logger(__name__)


def record_frames(catalog: Catalog, records: list[FrameRecord]) -> list[int]:
    """Write a batch of records; returns the sets they joined.

    Records that join no set (rejected, ignored) go in one transaction: a burst
    of junk files must not cost one fsync each. Valid ones go one by one, as
    each may join, update or re-version a set.
    """
    joined: list[int] = []
    pending: list[FrameRecord] = []  # runs of set-less records, kept in order
    for record in records:
        if record.status != "valid":
            pending.append(record)
            continue
        catalog.record_frames(pending)
        pending = []
        set_id = record_frame(catalog, record)
        if set_id is not None:
            joined.append(set_id)
    catalog.record_frames(pending)
    return joined


def record_frame(catalog: Catalog, record: FrameRecord) -> int | None:
    """Write a frame record; returns the set it joined, if any."""
    if record.status != "valid":
        catalog.record_frame(record)
        return None
    before = catalog.frame(Path(record.path))
    if before is not None and before["status"] == "seen":
        before = None  # noticed, never judged: this is its first record
    if before is not None and before["sha256"] == record.sha256:
        catalog.touch_frame(record.path, record.size, record.mtime_ns)
        return None  # touched, not changed: it is in its set already
    twin = catalog.same_content(record.camera, str(record.sha256), record.path)
    if twin is not None:
        reason = f"duplicate of {twin} (same content): not combined twice"
        log.warning("frame.duplicate", camera=record.camera, file=record.path, twin=twin)
        catalog.record_frame(replace(record, status="ignored", reason=reason))
        return None
    if before is None:
        return catalog.add_to_set(record)
    set_id, left = catalog.replace_frame(record)
    action = (
        "updated in its set, not combined yet"
        if left is None
        else "its set is combined again as a new master version; the old one is kept"
    )
    log.warning(
        "frame.changed",
        camera=record.camera,
        file=record.path,
        set=set_id,
        previous_set=left,
        action=action,
    )
    return set_id
