"""Rejected masters have their own folder and name; a verdict moves the file atomically."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from ccdproc import ImageFileCollection
from structlog.testing import capture_logs

from biaswatch.catalog.store import Catalog
from biaswatch.combine.master_file import MasterInfo, master_header, master_path, write_temporary
from biaswatch.publish.master import (
    NewMaster,
    find_published,
    latest_link,
    master_files,
    publish_master,
    repair_latest,
    report_orphans,
)
from biaswatch.publish.placement import judge_and_move, reconcile
from biaswatch.rules.places import master_location, path_for_state, place_of
from biaswatch.rules.qc import MasterQC
from biaswatch.settings import CombineSettings
from biaswatch.testing.helpers import valid_frame

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
INFO = MasterInfo(
    camera="cryo",
    night="2026-11-24",
    sequence=1,
    geometry="48x40-1x1",
    raw_names=("a.fits", "b.fits", "c.fits"),
    settings=CombineSettings(),
    mem_limit=350_000_000,
    input_digest="ab" * 32,
)
GOOD = MasterQC(1000.0, 2.0, 5.0, 2.9, 0)


def qc_of(level: float) -> MasterQC:
    """A master's QC at this level, the rest as GOOD's (levels spread by a few tenths)."""
    return replace(GOOD, level=level)


def published(catalog: Catalog, masters: Path, night: str, quality: MasterQC) -> Path:
    """A master of ``night`` written, judged and published as the service does; its path."""
    set_id = catalog.add_to_set(valid_frame(f"{night}.fits", night=night))
    info = replace(INFO, night=night, input_digest=night * 6)
    accepted_place = master_path(masters, info)
    temporary = write_temporary(np.ones((4, 6)), master_header(fits.Header(), info), accepted_place)
    master = NewMaster(set_id, info, accepted_place, quality)
    return publish_master(catalog, masters, master, temporary, NOW)


def with_baseline(catalog: Catalog, masters: Path) -> list[Path]:
    """Three accepted masters of nights 2026-11-21 to -23: the baseline a fourth is judged by."""
    levels = (1000.0, 1000.3, 999.8)
    return [
        published(catalog, masters, f"2026-11-2{day}", qc_of(level))
        for day, level in zip((1, 2, 3), levels, strict=True)
    ]


def test_the_path_function_gives_each_verdict_its_place(tmp_path: Path) -> None:
    """Accepted: the night folder, bias_*; rejected: rejected/<night>/, rejected_*; both ways."""
    accepted = master_location(tmp_path, "cryo", "2026-11-24", 2, "48x40-1x1", "accepted")
    rejected = master_location(tmp_path, "cryo", "2026-11-24", 2, "48x40-1x1", "rejected")
    assert accepted == tmp_path / "cryo/2026-11-24/bias_cryo_2026-11-24_02_48x40-1x1.fits"
    assert rejected == (
        tmp_path / "cryo/rejected/2026-11-24/rejected_cryo_2026-11-24_02_48x40-1x1.fits"
    )
    assert (place_of(accepted), place_of(rejected)) == ("accepted", "rejected")
    assert path_for_state(accepted, "rejected") == rejected
    assert path_for_state(rejected, "accepted") == accepted
    assert path_for_state(accepted, "accepted") == accepted
    with pytest.raises(ValueError, match="unknown"):
        path_for_state(rejected, "unknown")


def test_a_master_judged_rejected_is_published_in_the_rejected_place(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A master 300 ADU off its baseline gets its rejected name directly; nothing in the night."""
    masters = tmp_path / "masters"
    baseline = with_baseline(catalog, masters)
    final = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    assert final == master_path(masters, replace(INFO, night="2026-11-24"), "rejected")
    assert final.is_file() and fits.getheader(final)["BWNIGHT"] == "2026-11-24"
    assert list((masters / "cryo" / "2026-11-24").iterdir()) == []  # no temporary left either
    (row,) = catalog.masters(night="2026-11-24")
    assert (row.state, row.path) == ("rejected", str(final))
    assert latest_link(masters, "cryo").resolve() == baseline[-1].resolve()


def test_accept_then_reject_then_accept_moves_the_file_each_time(
    catalog: Catalog, tmp_path: Path
) -> None:
    """Each verdict moves the file to its place, and the catalog's path and state follow."""
    masters = tmp_path / "masters"
    with_baseline(catalog, masters)
    rejected = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    accepted = path_for_state(rejected, "accepted")
    content = rejected.read_bytes()
    rejected.with_suffix(".png").write_bytes(b"its preview")
    for state, there, gone in (
        ("accepted", accepted, rejected),
        ("rejected", rejected, accepted),
        ("accepted", accepted, rejected),
    ):
        row = judge_and_move(catalog, str(gone), state, "someone", f"now {state}")
        assert (row.state, row.path, row.judged_by) == (state, str(there), "someone")
        assert there.read_bytes() == content and not gone.exists()
        assert there.with_suffix(".png").read_bytes() == b"its preview"  # it follows
        (stored,) = catalog.masters(night="2026-11-24")
        assert (stored.state, stored.path, stored.judgement) == (state, str(there), f"now {state}")


def test_reconcile_finishes_a_verdict_whose_rename_was_cut_short(
    catalog: Catalog, tmp_path: Path
) -> None:
    """Catalog committed, file not renamed (a crash): reconcile moves it where the row says."""
    masters = tmp_path / "masters"
    with_baseline(catalog, masters)
    rejected = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    accepted = path_for_state(rejected, "accepted")
    catalog.judge_master(str(rejected), "accepted", "someone", "fine", new_path=str(accepted))
    assert rejected.is_file() and not accepted.exists()  # the crash: no rename
    with capture_logs() as logs:
        assert reconcile(catalog) == {"cryo"}
    assert accepted.is_file() and not rejected.exists()
    (event,) = [e for e in logs if e["event"] == "master.relocated"]
    assert (event["source"], event["path"]) == (str(rejected), str(accepted))
    assert reconcile(catalog) == set()  # nothing left to do


def test_reconcile_moves_a_master_rejected_before_the_layout(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A rejected row whose file is still bias_* in its night folder is moved and re-recorded."""
    masters = tmp_path / "masters"
    (kept,) = with_baseline(catalog, masters)[:1]
    catalog.judge_master(str(kept), "rejected", "someone", "old verdict")  # the old way: no move
    assert kept.is_file()
    assert reconcile(catalog) == {"cryo"}
    moved = path_for_state(kept, "rejected")
    assert moved.is_file() and not kept.exists()
    (row,) = catalog.masters(night="2026-11-21")
    assert (row.state, row.path) == ("rejected", str(moved))


def test_a_move_never_overwrites_an_existing_file(catalog: Catalog, tmp_path: Path) -> None:
    """A file already at the new name: the verdict is refused, nothing changes, nothing lost."""
    masters = tmp_path / "masters"
    with_baseline(catalog, masters)
    rejected = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    stranger = path_for_state(rejected, "accepted")
    stranger.write_bytes(b"someone's file")
    with pytest.raises(FileExistsError):
        judge_and_move(catalog, str(rejected), "accepted", "someone", "fine")
    assert stranger.read_bytes() == b"someone's file" and rejected.is_file()
    (row,) = catalog.masters(night="2026-11-24")
    assert (row.state, row.path) == ("rejected", str(rejected))


def test_no_glob_or_image_collection_ever_lists_a_rejected_master(
    catalog: Catalog, tmp_path: Path
) -> None:
    """``**/bias_*.fits`` and ImageFileCollection of the night list the accepted master only."""
    masters = tmp_path / "masters"
    with_baseline(catalog, masters)
    rejected = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    info = replace(INFO, night="2026-11-24", sequence=2, input_digest="cd" * 32)
    set_id = catalog.add_to_set(valid_frame("second.fits", night="2026-11-24"))
    final = master_path(masters, info)
    temporary = write_temporary(np.ones((4, 6)), master_header(fits.Header(), info), final)
    accepted = publish_master(
        catalog, masters, NewMaster(set_id, info, final, qc_of(1000.1)), temporary, NOW
    )
    assert accepted == final and rejected.is_file()
    found = set(masters.glob("**/bias_*.fits"))
    assert rejected not in found and accepted in found
    assert all(p.name.startswith("bias_") for p in found)
    collection = ImageFileCollection(str(accepted.parent))
    assert list(collection.files) == [accepted.name]


def test_rejected_masters_are_found_for_adoption_and_are_no_orphans(
    catalog: Catalog, tmp_path: Path
) -> None:
    """find_published and master_files see the rejected place; report_orphans says nothing."""
    masters = tmp_path / "masters"
    with_baseline(catalog, masters)
    rejected = published(catalog, masters, "2026-11-24", qc_of(1300.0))
    digest = fits.getheader(rejected)["BWDIGEST"]
    assert find_published(masters, "cryo", "2026-11-24", digest) == [(rejected, 1)]
    assert rejected in master_files(masters)
    with capture_logs() as logs:
        report_orphans(catalog, masters)
    assert [e for e in logs if e["event"] == "master.orphan"] == []


def test_a_verdict_repair_removes_latest_when_nothing_is_accepted(
    catalog: Catalog, tmp_path: Path
) -> None:
    """With every master rejected, latest.fits goes; an expected move logs no repair warning."""
    masters = tmp_path / "masters"
    baseline = with_baseline(catalog, masters)
    judge_and_move(catalog, str(baseline[2]), "rejected", "someone", "bad")
    with capture_logs() as logs:
        repair_latest(catalog, masters, set(), expected=True)
    assert latest_link(masters, "cryo").resolve() == baseline[1].resolve()
    assert [e["event"] for e in logs] == ["master.latest_moved", "master.latest_moved"]
    assert {e["log_level"] for e in logs} == {"info"}
    for path in baseline[:2]:
        judge_and_move(catalog, str(path), "rejected", "someone", "bad")
    repair_latest(catalog, masters, set(), expected=True)
    assert not latest_link(masters, "cryo").is_symlink()
    assert all(path_for_state(p, "rejected").is_file() for p in baseline)
