"""Nothing twice, through the real service: bursts on two combine slots, and recovery.

Issue 11: finding 4 (two combines given one sequence number), "recovery never exits"
(finding 2's aftermath: catalogs and files in states a crash, a second service or a
person leaves, built here by hand with sqlite3 and file copies) and finding 12's
deleted ``latest.fits``. tests/unit/test_sequences.py has the fast tests of the reservation.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import zlib
from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.sections import Section
from biaswatch.system.faults import PAUSE_AT, PAUSE_SECONDS
from biaswatch.testing.camera import Geometry
from biaswatch.testing.helpers import CRYO_GEOMETRY, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, most_combines_at_once, running_service

pytestmark = pytest.mark.timeout(900)

# Two combines at once: max_combine_memory // mem_limit (config.combine_slots), as test_load.
TWO_SLOTS = {"mem_limit": "64MB", "max_combine_memory": "128MB"}


def master_files(base: Path) -> list[Path]:
    """Every master file under the masters directory (no link, temporary or preview)."""
    return sorted(p for p in (base / "masters").glob("*/*/bias_*.fits") if not p.is_symlink())


def geometry(rows: int) -> Geometry:
    """CRYO_GEOMETRY with ``rows`` rows: another readout window of the same camera."""
    return Geometry(
        rows=rows, cols=56, biassec=Section(49, 56, 1, rows), trimsec=Section(1, 48, 1, rows)
    )


def drop_at_once(config: Path, batches: list[tuple[str, Geometry, int]]) -> list[Path]:
    """Write each (prefix, geometry, count) batch aside, then move every frame in at once."""
    staged: list[Path] = []
    for prefix, shape, count in batches:
        out = config.parent / "stage" / prefix
        seed = zlib.crc32(prefix.encode())  # each batch its own noise
        for path in write_frames(
            config, "cryo", count, interval=0.0, seed=seed, geometry=shape, out_dir=out
        ):
            staged.append(path.rename(path.with_name(f"{prefix}_{path.name}")))
    incoming = config.parent / "incoming" / "cryo"
    return [path.rename(incoming / path.name) for path in staged]


def sets_settled(config: Path) -> bool:
    """Whether every set is done or failed (the service is idle)."""
    states = {r["state"] for r in catalog_rows(config, "SELECT state FROM sets")}
    return bool(states) and states <= {"done", "failed"}


def assert_one_master_per_set(config: Path) -> int:
    """Every set done with one master, numbers unique, files on disk == catalog rows."""
    sets = len(catalog_rows(config, "SELECT id FROM sets"))
    rows = catalog_rows(config, "SELECT * FROM masters")
    assert len(rows) == sets
    assert {r["state"] for r in catalog_rows(config, "SELECT state FROM sets")} == {"done"}
    numbers = [(r["camera"], r["night"], r["sequence"]) for r in rows]
    assert len(set(numbers)) == sets, numbers
    on_disk = master_files(config.parent)
    assert sorted(str(p) for p in on_disk) == sorted(r["path"] for r in rows)
    assert not [p for p in (config.parent / "masters").rglob("*") if ".partial-" in p.name]
    return sets


def burst(tmp_path: Path, waves: list[list[tuple[str, Geometry, int]]]) -> None:
    """Drop each wave at once on a 2-slot service, the next as soon as the last made its sets.

    Every set must get one master of its own, two combines in flight at once.
    """
    config = write_config(tmp_path, service=TWO_SLOTS, expected_frames=5)
    # Each combine holds 2 s mid-way (faults.pause_point), so that the sets of successive
    # waves are in flight together however fast this machine combines small frames.
    with running_service(config, env={PAUSE_AT: "mid_combine", PAUSE_SECONDS: "2"}) as service:
        service.wait_event("combine.server_ready", timeout=120)
        for wave in waves:
            # Frames recorded in one batch join one set: a wave of one geometry makes one.
            made = len(service.events("set.completed")) + len({g for _p, g, _n in wave})
            drop_at_once(config, wave)
            service.wait_event("set.completed", count=made, timeout=120)
        wait_until(
            lambda: sets_settled(config),
            300,
            lambda: f"every set settled ({service.tail()})",
        )
        failed = service.events("set.publish_failed") + service.events("combine.retrying")
        overlap = most_combines_at_once(service.events())
        assert service.stop()[0] == 0
    assert not failed, failed
    assert overlap == 2
    assert assert_one_master_per_set(config) == len(service.events("set.completed"))


def test_fifteen_frames_at_once_give_each_set_its_own_master(tmp_path: Path) -> None:
    """15 frames of one geometry in 3 quick waves, 2 slots: 3 sets, 2 at once, one master each."""
    burst(tmp_path, [[(wave, CRYO_GEOMETRY, 5)] for wave in "abc"])


def test_a_burst_across_geometries_gives_each_set_its_number(tmp_path: Path) -> None:
    """Frames of four geometries at once with 2 slots: one master per set, no two share a number."""
    burst(tmp_path, [[(f"g{rows}", geometry(rows), 5) for rows in (40, 44, 48, 52)]])


# --- recovery ----------------------------------------------------------------------


def edit_catalog(config: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run SQL statements on the (stopped) service's catalog, as a person would."""
    db = sqlite3.connect(config.parent / "state" / "catalog.sqlite")
    try:
        for sql, args in statements:
            db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def make_inconsistent(config: Path, first: Path, second: Path) -> Path:
    """Leave the states of issue 11 behind two published masters; returns the orphan.

    - set 1 done with master 1 recorded, but its state 'closed' (a second service's
      failed try closed it again after the first had published: finding 2);
    - a copy of master 1 under number 2, which no catalog row lists (the orphan);
    - set 2 'combining', its master row gone and its file moved away, holding the number
      of master 1 (a catalog from before reservations, hand-edited), so its own number
      is taken and the next free one's name is the orphan's;
    - a closed set of a camera since removed from the config, with timestamps that are
      not times ('x'): listed all the same, and left closed for that camera's return.
    """
    aside = config.parent / "aside"
    aside.mkdir()
    second.rename(aside / second.name)
    orphan = first.with_name(first.name.replace("_01_", "_02_"))  # second's name, now free
    shutil.copyfile(first, orphan)
    with fits.open(orphan, mode="update") as hdul:
        hdul[0].header["BWSEQ"] = 2
    edit_catalog(
        config,
        ("UPDATE sets SET state = 'closed' WHERE id = 1", ()),
        ("DELETE FROM masters WHERE set_id = 2", ()),
        ("UPDATE sets SET state = 'combining' WHERE id = 2", ()),
        (
            "INSERT INTO sets (camera, night, geometry, state, created, updated)"
            " VALUES ('gone', '2026-11-24', 'g', 'closed', 'x', 'x')",
            (),
        ),
    )
    if "sequence" in {r["name"] for r in catalog_rows(config, "PRAGMA table_info(sets)")}:
        edit_catalog(
            config,
            ("UPDATE sets SET sequence = NULL WHERE id = 1", ()),
            ("UPDATE sets SET sequence = 1 WHERE id = 2", ()),
        )
    return orphan


def test_recovery_meets_inconsistent_states_and_every_start_reaches_ready(
    tmp_path: Path,
) -> None:
    """Closed-but-done set, orphan master, taken number: 3 starts reach READY, log them, go on."""
    config = write_config(tmp_path, expected_frames=5)
    with running_service(config) as service:
        write_frames(config, "cryo", 5, interval=0.0, seed=1)
        service.wait_event("master.published", timeout=120)
        write_frames(config, "cryo", 5, interval=0.0, seed=2)
        first, second = service.wait_event("master.published", count=2, timeout=120)
        assert service.stop()[0] == 0
    orphan = make_inconsistent(config, Path(first["path"]), Path(second["path"]))
    orphan_digest = hashlib.sha256(orphan.read_bytes()).hexdigest()
    log = tmp_path / "log" / "biaswatch.jsonl"
    for start in range(3):
        log.rename(log.with_name(f"before-start-{start}.jsonl"))  # each start's own events
        with running_service(config) as service:  # READY=1, or the test fails here
            service.wait_event("master.orphan", timeout=60)
            if start == 0:
                (published,) = service.wait_event("master.published", timeout=120)
                assert published["sequence"] == 3  # 1 taken by master 1, 2 by the orphan
                assert service.events("set.repaired")[0]["set"] == 1
                assert service.events("combine.sequence_taken")[0]["file"] == str(orphan)
            if start == 2:  # new frames still give masters
                write_frames(config, "cryo", 5, interval=0.0, seed=3)
                (published,) = service.wait_event("master.published", timeout=120)
                assert published["sequence"] == 4
            orphans = [e["file"] for e in service.events("master.orphan")]
            removed = [e["set"] for e in service.events("set.camera_removed")]
            assert service.stop()[0] == 0
        assert orphans == [str(orphan)]
        assert removed == [3]  # at each start, and never counted as a failed try
    rows = catalog_rows(config, "SELECT path, sequence FROM masters ORDER BY sequence")
    assert [r["sequence"] for r in rows] == [1, 3, 4]
    on_disk = {str(p) for p in master_files(tmp_path)}
    assert on_disk == {r["path"] for r in rows} | {str(orphan)}
    assert hashlib.sha256(orphan.read_bytes()).hexdigest() == orphan_digest  # left alone
    states = catalog_rows(config, "SELECT camera, state FROM sets ORDER BY id")
    assert [r["state"] for r in states if r["camera"] == "cryo"] == ["done"] * 3
    assert [r["state"] for r in states if r["camera"] == "gone"] == ["closed"]


def test_a_deleted_latest_link_is_repaired_while_running(tmp_path: Path) -> None:
    """latest.fits deleted while the service runs is put back, pointing at the newest master."""
    config = write_config(tmp_path, expected_frames=3)
    link = tmp_path / "masters" / "cryo" / "latest.fits"
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        (published,) = service.wait_event("master.published", timeout=120)
        wait_until(link.exists, 10, "latest.fits after the publication")
        link.unlink()
        (repaired,) = service.wait_event("master.latest_repaired", timeout=60)
        assert service.stop()[0] == 0
    assert repaired["camera"] == "cryo"
    assert link.resolve() == Path(published["path"]).resolve()
