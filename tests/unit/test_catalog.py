"""The SQLite catalog: grouping into sets, states, masters and sequences."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from biaswatch.catalog.open import set_aside_if_corrupt
from biaswatch.catalog.rows import FrameRecord, MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.testing.fits import FakeClock
from biaswatch.testing.helpers import valid_frame as valid


def master(path: str, sequence: int = 1) -> MasterRow:
    """A master row for the catalog."""
    return MasterRow(
        "cryo", "2026-11-24", sequence, "48x40-1x1", path, 2, "d" * 64, "2026-11-25T03:00:00"
    )


def test_frames_of_one_night_and_geometry_share_a_set(catalog: Catalog) -> None:
    """Valid frames with the same camera, night and geometry join one open set."""
    first = catalog.add_to_set(valid("a"))
    assert catalog.add_to_set(valid("b")) == first
    assert catalog.get_set(first).frames == 2


@pytest.mark.parametrize(
    "other",
    [valid("b", night="2026-11-25"), valid("b", geometry="48x40-2x2"), valid("b", camera="te")],
)
def test_different_night_geometry_or_camera_never_share(
    catalog: Catalog, other: FrameRecord
) -> None:
    """A frame of another night, geometry or camera starts its own set."""
    assert catalog.add_to_set(valid("a")) != catalog.add_to_set(other)


def test_frames_after_a_combine_start_a_new_set(catalog: Catalog) -> None:
    """Once a set is combining or done, a late frame of the same night opens a new set."""
    first = catalog.add_to_set(valid("a"))
    catalog.set_state(first, "combining", "complete")
    second = catalog.add_to_set(valid("b"))
    assert second != first
    assert catalog.get_set(second).state == "open"


def test_insufficient_set_reopens_for_a_late_frame(catalog: Catalog) -> None:
    """A set left insufficient at night end is reopened when another frame of it arrives."""
    first = catalog.add_to_set(valid("a"))
    catalog.set_state(first, "insufficient", "too few")
    assert catalog.add_to_set(valid("b")) == first
    assert catalog.get_set(first).state == "open"


def test_record_master_marks_set_and_frames(catalog: Catalog) -> None:
    """Publishing records the master, marks the set done and its frames combined, in one go."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.add_to_set(valid("b"))
    catalog.record_master(set_id, master("/m/1.fits"))
    assert catalog.get_set(set_id).state == "done"
    assert {r["status"] for r in catalog.set_inputs(set_id)} == {"combined"}
    assert [m.path for m in catalog.masters()] == ["/m/1.fits"]
    assert catalog.next_sequence("cryo", "2026-11-24") == 2


def test_a_set_gets_one_master_only(catalog: Catalog) -> None:
    """The catalog refuses a second master for the same set, and changes nothing."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.record_master(set_id, master("/m/1.fits"))
    with pytest.raises(sqlite3.IntegrityError):
        catalog.record_master(set_id, master("/m/2.fits", sequence=2))
    assert len(catalog.masters()) == 1


def test_interrupted_and_failed_sets_are_closed_again(catalog: Catalog) -> None:
    """At start, sets left combining or failed are closed (queued) again; done sets stay."""
    combining = catalog.add_to_set(valid("a"))
    catalog.set_state(combining, "combining", "complete")
    failed = catalog.add_to_set(valid("b", night="2026-11-25"))
    for _ in range(3):
        catalog.failed_try(failed, "disk full", max_tries=3)
    done = catalog.add_to_set(valid("c", night="2026-11-26"))
    catalog.record_master(done, master("/m/1.fits"))
    assert catalog.requeue_interrupted() == [combining, failed]
    assert [catalog.get_set(s).state for s in (combining, failed, done)] == [
        "closed",
        "closed",
        "done",
    ]


def test_failed_tries_are_bounded(catalog: Catalog) -> None:
    """Each failed try closes the set again, until the last one fails it for good."""
    set_id = catalog.add_to_set(valid("a"))
    states = [catalog.failed_try(set_id, f"try {k}", max_tries=3) for k in (1, 2, 3)]
    assert states == [("closed", 1), ("closed", 2), ("failed", 3)]
    assert catalog.get_set(set_id).reason == "try 3"


def test_changed_frame_of_a_done_set_makes_a_new_set_with_all_frames(catalog: Catalog) -> None:
    """A changed frame of a combined set opens a new set holding the whole set again."""
    first = catalog.add_to_set(valid("a"))
    catalog.add_to_set(valid("b"))
    catalog.record_master(first, master("/m/1.fits"))
    changed = replace(valid("a"), sha256="f" * 64)
    second, left = catalog.replace_frame(changed)
    assert (left, second != first) == (first, True)
    assert sorted(f["path"] for f in catalog.set_inputs(second)) == ["a", "b"]
    assert {f["status"] for f in catalog.set_inputs(second)} == {"valid"}
    assert len(catalog.masters()) == 1  # the old master is kept


def test_same_content_finds_a_twin_under_another_name(catalog: Catalog) -> None:
    """Two paths with one content hash are twins; a path is not its own twin."""
    catalog.add_to_set(valid("a"))
    sha = str(valid("a").sha256)
    assert catalog.same_content("cryo", sha, "copy") == "a"
    assert catalog.same_content("cryo", sha, "a") is None


def test_known_frames(catalog: Catalog) -> None:
    """A path is known only with the size and mtime it was recorded with."""
    catalog.record_frame(FrameRecord("/x.fits", "cryo", 10, 5, status="rejected", reason="bad"))
    assert catalog.is_known(Path("/x.fits"), 10, 5)
    assert not catalog.is_known(Path("/x.fits"), 11, 5)
    assert catalog.frame(Path("/x.fits"))["reason"] == "bad"  # type: ignore[index]


def test_last_arrival_uses_the_clock(tmp_path: Path) -> None:
    """A set's last arrival is the injected clock's time of its newest frame."""
    clock = FakeClock(dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC))
    catalog = Catalog(tmp_path / "c.sqlite", now=clock.now)
    set_id = catalog.add_to_set(valid("a"))
    clock.advance(600)
    catalog.add_to_set(valid("b"))
    assert catalog.get_set(set_id).last_arrival == dt.datetime(2026, 11, 25, 2, 10, tzinfo=dt.UTC)


def test_a_set_time_no_version_wrote_counts_as_now(tmp_path: Path) -> None:
    """A set whose stored times are not times is listed with the clock's now, not an error."""
    clock = FakeClock(dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC))
    path = tmp_path / "c.sqlite"
    catalog = Catalog(path, now=clock.now)
    set_id = catalog.add_to_set(valid("a"))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE frames SET recorded = 'yesterday'")
    db.close()
    clock.advance(60)
    assert catalog.sets_in("open")[0].last_arrival == clock.now()
    assert catalog.get_set(set_id).id == set_id


def test_masters_filter(catalog: Catalog) -> None:
    """masters() filters by camera and night."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.record_master(set_id, master("/m/1.fits"))
    assert len(catalog.masters(camera="cryo", night="2026-11-24")) == 1
    assert catalog.masters(camera="te") == []
    assert catalog.masters(night="2026-11-23") == []


def test_seen_rows_are_not_known_and_give_way_to_the_judgement(catalog: Catalog) -> None:
    """A noticed file is 'seen' but not known; its record replaces it; a vanished one goes."""
    seen = [
        FrameRecord("a", "cryo", 100, 1, "seen"),
        FrameRecord("gone", "cryo", 5, 1, "seen"),
    ]
    catalog.note_seen(seen, [])
    assert catalog.frame(Path("a"))["status"] == "seen"
    assert not catalog.is_known(Path("a"), 100, 1)
    catalog.add_to_set(valid("a"))
    catalog.note_seen([FrameRecord("a", "cryo", 100, 1, "seen")], [Path("gone")])
    assert catalog.frame(Path("a"))["status"] == "valid"  # a later notice keeps the record
    assert catalog.is_known(Path("a"), 100, 1)
    assert catalog.frame(Path("gone")) is None


def test_a_healthy_catalog_is_not_set_aside_and_a_corrupt_one_is(tmp_path: Path) -> None:
    """SQLite's integrity check keeps a good catalog in place and moves a garbled one."""
    path = tmp_path / "catalog.sqlite"
    good = Catalog(path)
    good.add_to_set(valid("a"))
    good.close()
    assert set_aside_if_corrupt(path, "T1") is None
    assert Catalog(path).frame(Path("a")) is not None
    path.write_bytes(b"\0garbage" * 512)
    aside = set_aside_if_corrupt(path, "T2")
    assert aside == tmp_path / "catalog.sqlite.corrupt-T2"
    assert not path.exists() and aside.exists()


def test_changed_frame_of_a_queued_set_stays_in_it(catalog: Catalog) -> None:
    """A frame that changes while its set waits for a combine is updated in that set."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.add_to_set(valid("b"))
    catalog.set_state(set_id, "closed", "complete")
    changed = replace(valid("a"), sha256="f" * 64)
    assert catalog.replace_frame(changed) == (set_id, None)
    inputs = {f["path"]: f["sha256"] for f in catalog.set_inputs(set_id)}
    assert inputs == {"a": "f" * 64, "b": "bb"}
    assert catalog.get_set(set_id).state == "closed"
