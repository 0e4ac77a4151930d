"""Screening a set before its combine, on a real catalog; and old catalogs gaining QC columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog, stored_frame_qc
from biaswatch.config import CameraConfig
from biaswatch.rules.qc import FrameQC
from biaswatch.service.screening import screen
from biaswatch.settings import QcSettings


def record(path: str, level: float, noise: float = 3.0, temp: float | None = None) -> FrameRecord:
    """A valid frame of tonight's set with this QC."""
    return FrameRecord(
        path,
        "cryo",
        100,
        1,
        "valid",
        sha256=path,
        night="2026-11-24",
        geometry="40x48-1x1",
        date_obs="2026-11-25T02:00:00",
        calibrated=f"/work/{path}",
        qc=FrameQC(level, noise, 0.0, 0.0, temp),
    )


def test_outliers_are_rejected_with_reasons_and_the_rest_stay(catalog: Catalog) -> None:
    """A light leak among good frames is rejected in the catalog; the others stay valid."""
    levels = {"a": 0.1, "b": -0.2, "c": 0.0, "d": 0.3, "leak": 45.0}
    set_id = 0
    for path, level in levels.items():
        set_id = catalog.add_to_set(record(path, level))
    camera = CameraConfig(name="cryo", watch=(Path("/x"),))
    assert screen(catalog, set_id, camera) == 4
    rows = {r["path"]: r for r in catalog.set_inputs(set_id)}
    assert sorted(rows) == ["a", "b", "c", "d"]
    leak = catalog.frame(Path("leak"))
    assert leak is not None and leak["status"] == "rejected"
    assert "level 45.00 ADU" in leak["reason"]
    assert catalog.get_set(set_id).frames == 4


def test_a_set_away_from_its_ccd_setpoint_is_flagged(catalog: Catalog) -> None:
    """Frames 4 K warm of the set-point flag the set; none of them is rejected for it."""
    set_id = 0
    for path in ("a", "b", "c"):
        set_id = catalog.add_to_set(record(path, 0.0, temp=-96.0))
    qc = QcSettings(ccd_temp_setpoint=-100.0, ccd_temp_tolerance=2.0)
    camera = CameraConfig(name="cryo", watch=(Path("/x"),), qc=qc)
    assert screen(catalog, set_id, camera) == 3
    (flag,) = catalog._db.execute("SELECT flag FROM sets").fetchone()
    assert flag == "CCD temperature -96.0 is +4.0 from the set-point -100 (tolerance 2)"


def test_frame_qc_round_trips_through_the_catalog(catalog: Catalog) -> None:
    """The QC recorded with a frame is read back equal."""
    catalog.add_to_set(record("a", 1.5, 4.25, -99.5))
    row = catalog.frame(Path("a"))
    assert row is not None and stored_frame_qc(row) == FrameQC(1.5, 4.25, 0.0, 0.0, -99.5)


def test_a_catalog_from_before_qc_gains_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    """Opening a catalog without the qc and flag columns adds them; its frames are kept."""
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE frames DROP COLUMN qc")
    db.execute("ALTER TABLE sets DROP COLUMN flag")
    db.execute(
        "INSERT INTO frames (path, camera, size, mtime_ns, status, recorded)"
        " VALUES ('old.fits', 'cryo', 1, 1, 'rejected', 'then')"
    )
    db.commit()
    db.close()
    catalog = Catalog(path)
    row = catalog.frame(Path("old.fits"))
    assert row is not None and row["status"] == "rejected" and stored_frame_qc(row) is None
    columns = {r[1] for r in catalog._db.execute("PRAGMA table_info(sets)")}
    assert "flag" in columns
