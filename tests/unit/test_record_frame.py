"""record_frame on a real SQLite catalog, no process: new, touched, duplicate and changed frames.

The service calls it for every judged frame (catalog/record.py); until issue 12 it was
tested only through the real service.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from biaswatch.catalog.record import record_frame, record_frames
from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog

NIGHT = "2026-11-24"


def frame(
    path: str, content: str, *, mtime_ns: int = 1, geometry: str = "48x40-1x1"
) -> FrameRecord:
    """A valid frame record of camera cryo whose content hashes to ``content``."""
    return FrameRecord(
        path,
        "cryo",
        3840,
        mtime_ns,
        status="valid",
        sha256=content,
        night=NIGHT,
        geometry=geometry,
        calibrated=f"/work/{Path(path).name}",
        date_obs="2026-11-25T02:00:00",
    )


def recorded(catalog: Catalog, path: str) -> dict[str, Any]:
    """The catalog's row for ``path``, as a dict."""
    row = catalog.frame(Path(path))
    assert row is not None, f"no row for {path}"
    return dict(row)


def events(logs: list[dict[str, Any]]) -> list[str]:
    """The names of the captured log events."""
    return [e["event"] for e in logs]


def test_a_new_frame_joins_the_open_set_of_its_night(catalog: Catalog) -> None:
    """A frame never seen is recorded valid in its night's open set, whose id is returned."""
    with structlog.testing.capture_logs() as logs:
        set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    row = recorded(catalog, "/in/a.fits")
    assert (row["status"], row["sha256"], row["set_id"]) == ("valid", "aa", set_id)
    assert (catalog.get_set(set_id).state, catalog.get_set(set_id).frames) == ("open", 1)
    assert events(logs) == []


def test_a_noticed_frame_is_recorded_as_new(catalog: Catalog) -> None:
    """A path only noticed (status 'seen', never judged) is a new frame when its record comes."""
    catalog.note_seen([replace(frame("/in/a.fits", "aa"), status="seen", sha256=None)], [])
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    assert recorded(catalog, "/in/a.fits")["status"] == "valid"
    assert catalog.get_set(set_id).frames == 1


def test_a_touched_frame_keeps_its_set_and_remembers_the_new_stat(catalog: Catalog) -> None:
    """The same content again at the same path (a new mtime) joins nothing and logs nothing."""
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    with structlog.testing.capture_logs() as logs:
        again = record_frame(catalog, frame("/in/a.fits", "aa", mtime_ns=2))
    assert again is None
    row = recorded(catalog, "/in/a.fits")
    assert (row["status"], row["set_id"], row["mtime_ns"]) == ("valid", set_id, 2)
    assert catalog.get_set(set_id).frames == 1
    assert events(logs) == []


def test_a_touched_frame_that_was_screened_out_stays_out(catalog: Catalog) -> None:
    """A frame left out of its set keeps that verdict when touched: it is not judged again."""
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    catalog.leave_out("/in/a.fits", "light leak")
    assert record_frame(catalog, frame("/in/a.fits", "aa", mtime_ns=2)) is None
    row = recorded(catalog, "/in/a.fits")
    assert (row["status"], row["reason"]) == ("rejected", "light leak")
    assert catalog.get_set(set_id).frames == 0


def test_a_duplicate_under_another_name_is_ignored_naming_its_twin(catalog: Catalog) -> None:
    """The same content at another path is recorded ignored, never combined twice, and logged."""
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    with structlog.testing.capture_logs() as logs:
        twin = record_frame(catalog, frame("/in/copy of a.fits", "aa"))
    assert twin is None
    row = recorded(catalog, "/in/copy of a.fits")
    assert (row["status"], row["set_id"]) == ("ignored", None)
    assert row["reason"] == "duplicate of /in/a.fits (same content): not combined twice"
    assert catalog.get_set(set_id).frames == 1
    assert [(e["event"], e["twin"]) for e in logs] == [("frame.duplicate", "/in/a.fits")]


def test_same_content_in_another_camera_is_not_a_duplicate(catalog: Catalog) -> None:
    """Two cameras may write identical bytes: each frame joins its own camera's set."""
    mine = record_frame(catalog, frame("/in/a.fits", "aa"))
    theirs = record_frame(catalog, replace(frame("/te/a.fits", "aa"), camera="te"))
    assert mine is not None and theirs is not None and mine != theirs


def test_a_changed_frame_in_a_set_not_yet_combined_is_updated_in_place(catalog: Catalog) -> None:
    """New content at a known path in an open set replaces the frame there: one frame, new hash."""
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    record_frame(catalog, frame("/in/b.fits", "bb"))
    with structlog.testing.capture_logs() as logs:
        again = record_frame(catalog, frame("/in/a.fits", "a2", mtime_ns=2))
    assert again == set_id
    row = recorded(catalog, "/in/a.fits")
    assert (row["status"], row["sha256"], row["set_id"]) == ("valid", "a2", set_id)
    assert catalog.get_set(set_id).frames == 2
    assert [(e["event"], e["set"], e["previous_set"]) for e in logs] == [
        ("frame.changed", set_id, None)
    ]
    assert logs[0]["action"] == "updated in its set, not combined yet"


def test_a_changed_frame_in_a_closed_set_stays_in_that_set(catalog: Catalog) -> None:
    """A set closed and queued but not combined takes the new content for its one combine."""
    set_id = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert set_id is not None
    catalog.set_state(set_id, "closed")
    assert record_frame(catalog, frame("/in/a.fits", "a2", mtime_ns=2)) == set_id
    assert (catalog.get_set(set_id).state, catalog.get_set(set_id).frames) == ("closed", 1)


def test_a_changed_frame_of_a_combined_set_makes_a_new_version(catalog: Catalog) -> None:
    """New content in a done set makes a new open set of all its frames; the old one is kept."""
    old = record_frame(catalog, frame("/in/a.fits", "aa"))
    assert old is not None
    record_frame(catalog, frame("/in/b.fits", "bb"))
    catalog.set_state(old, "done")
    with structlog.testing.capture_logs() as logs:
        new = record_frame(catalog, frame("/in/a.fits", "a2", mtime_ns=2))
    assert new is not None and new != old
    assert catalog.get_set(old).state == "done"
    assert (catalog.get_set(new).state, catalog.get_set(new).frames) == ("open", 2)
    assert recorded(catalog, "/in/b.fits")["set_id"] == new
    assert [(e["event"], e["set"], e["previous_set"]) for e in logs] == [
        ("frame.changed", new, old)
    ]


def test_a_rejected_record_joins_no_set(catalog: Catalog) -> None:
    """A rejected frame is recorded with its reason and joins nothing."""
    rejected = replace(frame("/in/x.fits", "xx"), status="rejected", reason="not FITS")
    assert record_frame(catalog, rejected) is None
    row = recorded(catalog, "/in/x.fits")
    assert (row["status"], row["reason"], row["set_id"]) == ("rejected", "not FITS", None)


def test_a_batch_returns_the_sets_joined_in_order_and_keeps_every_record(
    catalog: Catalog,
) -> None:
    """record_frames writes valid and set-less records alike and returns only the joins."""
    junk = [replace(frame(f"/in/junk{i}", f"j{i}"), status="rejected", reason="x") for i in (1, 2)]
    other = frame("/in/c.fits", "cc", geometry="96x80-2x2")
    joined = record_frames(catalog, [junk[0], frame("/in/a.fits", "aa"), junk[1], other])
    assert len(joined) == 2 and joined[0] != joined[1]
    assert {recorded(catalog, f"/in/junk{i}")["status"] for i in (1, 2)} == {"rejected"}
