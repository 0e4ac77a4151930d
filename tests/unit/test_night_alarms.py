"""The night checks on a real catalog: a silent camera told from a night without a master."""

from __future__ import annotations

from pathlib import Path

from biaswatch.catalog.rows import FrameRecord, MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.service.alarms import night_alarm


def test_night_checks_tell_a_silent_camera_from_a_night_without_a_master(tmp_path: Path) -> None:
    """No frames: camera_silent; frames but nothing accepted: no_master; a master: nothing."""
    catalog = Catalog(tmp_path / "catalog.sqlite")
    night = "2026-11-24"
    assert night_alarm(catalog, "cryo", night) == (
        "camera_silent",
        "no frame from camera cryo in night 2026-11-24",
    )
    frame = FrameRecord(
        "/in/a.fits",
        "cryo",
        1,
        1,
        "valid",
        sha256="a",
        night=night,
        geometry="g",
        date_obs="2026-11-25T02:00:00",
    )
    set_id = catalog.add_to_set(frame)
    assert night_alarm(catalog, "cryo", night) == (
        "no_master",
        "1 frame(s) but no accepted master for night 2026-11-24",
    )
    master = MasterRow("cryo", night, 1, "g", "/m/1.fits", 1, "d", "now", None, "rejected")
    catalog.record_master(set_id, master)
    assert night_alarm(catalog, "cryo", night) is not None  # a rejected master is no master
    catalog._db.execute("UPDATE masters SET state = 'accepted'")
    assert night_alarm(catalog, "cryo", night) is None
