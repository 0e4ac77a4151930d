"""Quality per segment (image HDU or amplifier): stored, screened, judged, read back (issue 13)."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.catalog.rows import FrameRecord, MasterRow
from biaswatch.catalog.store import Catalog, stored_segments_qc
from biaswatch.combine.master_file import MasterInfo, master_path
from biaswatch.config import CameraConfig
from biaswatch.publish.master import NewMaster, adopt_master, record_published, segments_on_disk
from biaswatch.rules.acceptance import judge
from biaswatch.rules.qc import FrameQC, MasterQC, master_cards, segment_outliers
from biaswatch.rules.segment_cards import amplifier_qc_cards
from biaswatch.service.screening import screen
from biaswatch.settings import CombineSettings
from biaswatch.testing.helpers import valid_frame

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
AMPS = ("A", "B", "C", "D")


def frame_qc(level: float, noise: float = 3.0) -> FrameQC:
    """A frame's (or segment's) QC with this level and noise and no bad pixels."""
    return FrameQC(level, noise, 0.0, 0.0, None)


def amp_master(level: float = 0.0, read_noise: float = 5.0) -> MasterQC:
    """An amplifier's QC in a flat master of ten frames (to the 4 decimals a header card keeps)."""
    flat = round(read_noise / math.sqrt(10), 4)
    return MasterQC(level, flat, read_noise, flat, 0)


def four_amps(bad: str | None = None, read_noise: float = 9.0) -> tuple[tuple[str, MasterQC], ...]:
    """Four amplifiers at their own levels; ``bad`` (if any) has ``read_noise``."""
    return tuple(
        (name, amp_master(900.0 + 20 * i, read_noise if name == bad else 5.0 + 0.02 * i))
        for i, name in enumerate(AMPS)
    )


def test_segment_qc_round_trips_through_frames_and_masters(catalog: Catalog) -> None:
    """A frame's and a master's per-segment QC are read back equal, in order."""
    segments = (("CCD2", frame_qc(944.0, 2.5)), ("CCD1", frame_qc(966.0, 3.1)))
    set_id = catalog.add_to_set(replace(valid_frame("a.fits"), segments_qc=segments))
    row = catalog.frame(Path("a.fits"))
    assert row is not None and stored_segments_qc(row) == segments
    master = MasterRow("cryo", "2026-11-24", 1, "48x40-1x1", "/m/1.fits", 1, "d", "t")
    catalog.record_master(set_id, replace(master, qc=amp_master(), segments=four_amps()))
    assert catalog.masters()[0].segments == four_amps()
    assert catalog.accepted_segments("cryo", "48x40-1x1", 10) == [dict(four_amps())]


def test_a_catalog_from_before_segments_gains_the_columns(tmp_path: Path) -> None:
    """Opening a catalog without the segment columns adds them; old rows read as one segment."""
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE frames DROP COLUMN segments_qc")
    db.execute("ALTER TABLE masters DROP COLUMN segments")
    db.execute(
        "INSERT INTO frames (path, camera, size, mtime_ns, status, recorded)"
        " VALUES ('old.fits', 'cryo', 1, 1, 'rejected', 'then')"
    )
    db.commit()
    db.close()
    catalog = Catalog(path)
    row = catalog.frame(Path("old.fits"))
    assert row is not None and stored_segments_qc(row) == ()
    catalog.close()


def test_a_frame_with_one_odd_amplifier_is_screened_out_naming_it(catalog: Catalog) -> None:
    """Whole-frame QC alike, one frame's amplifier B 40 ADU high: rejected, the reason names B."""
    set_id = 0
    for path in ("a", "b", "c", "d", "odd"):
        shift = 40.0 if path == "odd" else 0.0
        segments = (("A", frame_qc(944.0)), ("B", frame_qc(966.0 + shift)))
        record = replace(valid_frame(path), qc=frame_qc(955.0), segments_qc=segments)
        set_id = catalog.add_to_set(record)
    assert screen(catalog, set_id, CameraConfig(name="cryo", watch=(Path("/x"),))) == 4
    odd = catalog.frame(Path("odd"))
    assert odd is not None and odd["status"] == "rejected"
    assert odd["reason"].startswith("segment B: level 1006.00 ADU is +")


def test_segment_outliers_report_each_frame_once() -> None:
    """A frame bad in two segments is left out once, for the first segment in raw order."""
    good = (("A", frame_qc(0.0)), ("B", frame_qc(0.0)))
    frames: list[tuple[str, tuple[tuple[str, FrameQC], ...]]] = [(p, good) for p in ("a", "b", "c")]
    frames.append(("bad", (("A", frame_qc(0.0, 9.0)), ("B", frame_qc(50.0)))))
    (out,) = segment_outliers(frames, sigma=5)
    assert out.path == "bad" and out.reason.startswith("segment A: noise 9.00 ADU")


def test_a_master_with_one_bad_amplifier_is_rejected_naming_it() -> None:
    """Aggregate within its baseline, amplifier C's read noise 9 ADU: rejected, reason names C."""
    baseline = [amp_master(930.0, 5.05)] * 4
    segment_baseline = [dict(four_amps())] * 4
    verdict = judge(amp_master(930.0, 5.05), baseline, 5, four_amps("C"), segment_baseline)
    assert verdict.state == "rejected"
    assert verdict.reason.startswith("segment C: read noise 9.00 ADU is +")
    fine = judge(amp_master(930.0, 5.05), baseline, 5, four_amps(), segment_baseline)
    assert fine.state == "accepted"


def write_mef_master(path: Path, segments: tuple[tuple[str, MasterQC], ...]) -> None:
    """A master as the combine writes one of several image HDUs: QC per HDU, mask, uncertainty."""
    primary = fits.PrimaryHDU()
    for key, value, comment in master_cards(segments[0][1]):
        primary.header[key] = (value, comment)
    images = [fits.ImageHDU(np.zeros((4, 6), np.float32), name=name) for name, _ in segments]
    for image, (_, quality) in zip(images, segments, strict=True):
        for key, value, comment in master_cards(quality):
            image.header[key] = (value, comment)
    masks = [fits.ImageHDU(np.zeros((4, 6), np.uint8), name=f"{n}_MASK") for n, _ in segments]
    uncert = [fits.ImageHDU(np.ones((4, 6), np.float32), name=f"{n}_UNCERT") for n, _ in segments]
    fits.HDUList([primary, *images, *masks, *uncert]).writeto(path)


def test_segments_are_read_back_from_an_mef_masters_headers(tmp_path: Path) -> None:
    """Each segment HDU's QC cards give its QC; the MASK and UNCERT HDUs are passed over."""
    segments = tuple((f"CCD{i}", amp_master(900.0 + i, 4.0 + i)) for i in (1, 2, 3))
    write_mef_master(tmp_path / "mef.fits", segments)
    assert segments_on_disk(tmp_path / "mef.fits") == segments


def test_amplifiers_are_read_back_from_one_images_cards(tmp_path: Path) -> None:
    """QCA<i>* cards of a one-image master give each amplifier's QC, named as QCA<i>NAM."""
    amps = four_amps("D")
    header = fits.Header()
    for index, (name, quality) in enumerate(amps, start=1):
        for key, value, comment in amplifier_qc_cards(index, name, quality):
            header[key] = (value, comment)
    fits.PrimaryHDU(np.zeros((4, 6), np.float32), header).writeto(tmp_path / "amps.fits")
    assert segments_on_disk(tmp_path / "amps.fits") == amps


INFO = MasterInfo(
    camera="cryo",
    night="2026-11-24",
    sequence=1,
    geometry="48x40-1x1",
    raw_names=("a.fits",),
    settings=CombineSettings(),
    mem_limit=350_000_000,
    input_digest="ab" * 32,
)


def test_an_adopted_master_is_judged_and_recorded_per_segment(
    catalog: Catalog, tmp_path: Path
) -> None:
    """After three good masters, one found on disk with a bad CCD2 is rejected naming CCD2."""
    good = tuple((f"CCD{i}", amp_master(900.0, 5.0 + 0.02 * i)) for i in (1, 2, 3))
    for sequence in (1, 2, 3):
        set_id = catalog.add_to_set(valid_frame(f"f{sequence}.fits", night=f"2026-11-2{sequence}"))
        info = replace(INFO, night=f"2026-11-2{sequence}", sequence=sequence)
        master = NewMaster(set_id, info, tmp_path / f"{sequence}.fits", amp_master(900.0), good)
        assert record_published(catalog, master, NOW).state == "accepted"
    bad = (good[0], ("CCD2", amp_master(900.0, 9.0)), good[2])
    found = master_path(tmp_path, replace(INFO, sequence=4))
    found.parent.mkdir(parents=True)
    write_mef_master(found, ((bad[0][0], amp_master(900.0)), *bad[1:]))
    primary = fits.getheader(found)
    assert primary["QC_RON"] == 5.0  # the aggregate alone would pass
    set_id = catalog.add_to_set(valid_frame("f4.fits", night="2026-11-24"))
    verdict = adopt_master(catalog, set_id, replace(INFO, sequence=4), found, NOW)
    assert verdict.state == "rejected" and verdict.reason.startswith("segment CCD2: read noise")
    (adopted,) = catalog.masters(night="2026-11-24")
    assert adopted.segments[1][0] == "CCD2"
    # Recorded, and moved, where a rejected master lives (rules/places.py).
    assert adopted.path == str(master_path(tmp_path, replace(INFO, sequence=4), "rejected"))
    assert Path(adopted.path).is_file() and not found.exists()


def stub_record(path: str) -> FrameRecord:
    """A valid frame with whole-frame QC only (a frame of one segment)."""
    return replace(valid_frame(path), qc=frame_qc(0.0))


def test_frames_of_one_segment_are_screened_as_before(catalog: Catalog) -> None:
    """Frames without segments store none, and screening keeps them all."""
    set_id = 0
    for path in ("a", "b", "c"):
        set_id = catalog.add_to_set(stub_record(path))
    assert screen(catalog, set_id, CameraConfig(name="cryo", watch=(Path("/x"),))) == 3
    row = catalog.frame(Path("a"))
    assert row is not None and row["segments_qc"] is None


def test_amplifiers_of_an_mef_segment_are_named_extname_dot_amp(tmp_path: Path) -> None:
    """QCA cards in an MEF image HDU name its amplifiers EXTNAME.AMP; _MASK HDUs are skipped."""
    images = []
    for extname in ("CCD1", "CCD2"):
        image = fits.ImageHDU(np.zeros((4, 6), np.float32), name=extname)
        for key, value, comment in master_cards(amp_master(900.0)):
            image.header[key] = (value, comment)
        for index, name in enumerate(("L", "R"), start=1):
            for key, value, comment in amplifier_qc_cards(index, name, amp_master(900.0 + index)):
                image.header[key] = (value, comment)
        images.append(image)
    mask = fits.ImageHDU(np.zeros((4, 6), np.uint8), name="CCD1_MASK")
    fits.HDUList([fits.PrimaryHDU(), *images, mask]).writeto(tmp_path / "both.fits")
    read = segments_on_disk(tmp_path / "both.fits")
    assert [name for name, _ in read] == ["CCD1.L", "CCD1.R", "CCD2.L", "CCD2.R"]
    assert read[3][1] == amp_master(902.0)
