"""The intake: which paths are watched, when they become records, when they are given up."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from structlog.testing import capture_logs

from biaswatch.catalog.rows import FrameRecord
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.intake import Intake
from biaswatch.testing.fits import fits_bytes, make_bias_fits
from biaswatch.testing.helpers import cryo_camera


@pytest.fixture(name="camera")
def _slow_settling_camera(tmp_path: Path) -> CameraConfig:
    return cryo_camera(tmp_path / "in", settle_seconds=1.0, max_incomplete_minutes=1.0)


def intake_for(camera: CameraConfig, tmp_path: Path, known: set[Path] | None = None) -> Intake:
    """An Intake for one camera whose catalog knows only ``known``."""
    return Intake(
        {camera.name: camera},
        SiteConfig(),
        tmp_path / "work",
        excluded=(tmp_path / "masters",),
        known=lambda path, _size, _mtime: path in (known or set()),
        wake=lambda: None,
    )


def settle(intake: Intake, now: float) -> list[FrameRecord]:
    """Poll until the calibration thread has finished (real threads, fake settle time)."""
    records = intake.poll(now)
    deadline = time.monotonic() + 30
    while not records and intake.busy_cameras() and time.monotonic() < deadline:
        time.sleep(0.05)
        records = intake.poll(now)
    return records


def test_complete_frame_becomes_a_valid_record(tmp_path: Path, camera: CameraConfig) -> None:
    """A whole bias file, once settled, comes back as a valid calibrated record."""
    path = make_bias_fits(tmp_path / "a.fits")
    intake = intake_for(camera, tmp_path)
    assert intake.note("cryo", path, now=0.0)
    assert intake.poll(0.5) == []  # not settled yet
    (record,) = settle(intake, 2.0)
    assert record.status == "valid"
    assert Path(record.calibrated).exists()
    assert intake.busy_cameras() == set()


def test_incomplete_file_is_waited_for_then_rejected(tmp_path: Path, camera: CameraConfig) -> None:
    """A file that stays incomplete is kept waiting until max_incomplete_minutes, then rejected."""
    path = tmp_path / "a.fits"
    path.write_bytes(fits_bytes()[:3000])
    intake = intake_for(camera, tmp_path)
    intake.note("cryo", path, now=0.0)
    for now in (0.0, 1.0, 30.0, 59.0):
        assert intake.poll(now) == []
        assert intake.busy_cameras() == {"cryo"}
    (record,) = intake.poll(61.0)
    assert record.status == "rejected"
    assert record.reason == "truncated: primary HDU data: 120 of 3840 bytes after waiting 1 min"
    assert intake.busy_cameras() == set()


def test_file_completed_in_time_is_accepted(tmp_path: Path, camera: CameraConfig) -> None:
    """A slow writer that finishes before the limit gets its frame ingested, not rejected."""
    path = tmp_path / "a.fits"
    content = fits_bytes()
    path.write_bytes(content[:3000])
    intake = intake_for(camera, tmp_path)
    intake.note("cryo", path, now=0.0)
    assert intake.poll(0.0) == []
    assert intake.poll(50.0) == []
    path.write_bytes(content)
    assert intake.poll(55.0) == []  # changed: settle again
    (record,) = settle(intake, 57.0)
    assert record.status == "valid"


def test_not_fits_is_rejected_once_settled(tmp_path: Path, camera: CameraConfig) -> None:
    """Bytes that cannot be FITS are rejected after settling, without waiting for the limit."""
    path = tmp_path / "a.fits"
    path.write_text("this is a shopping list, not an image")
    intake = intake_for(camera, tmp_path)
    intake.note("cryo", path, now=0.0)
    assert intake.poll(0.0) == []
    (record,) = intake.poll(1.0)
    assert record.status == "rejected"
    assert record.reason == "not a FITS file: does not start with a FITS 'SIMPLE' card"


def test_known_and_excluded_paths_are_not_noted(tmp_path: Path, camera: CameraConfig) -> None:
    """Files already recorded, and files under the masters directory, are never noted."""
    known = make_bias_fits(tmp_path / "known.fits")
    (tmp_path / "masters").mkdir()
    master = make_bias_fits(tmp_path / "masters" / "m.fits")
    intake = intake_for(camera, tmp_path, known={known})
    assert not intake.note("cryo", known, now=0.0)
    assert not intake.note("cryo", master, now=0.0)
    assert not intake.note("cryo", tmp_path / "missing.fits", now=0.0)
    assert intake.busy_cameras() == set()


def test_events_for_a_settling_file_do_not_query_the_catalog(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """Further events for a file already settling skip the catalog; a close still counts."""
    path = make_bias_fits(tmp_path / "a.fits")
    lookups: list[Path] = []
    intake = Intake(
        {camera.name: camera},
        SiteConfig(),
        tmp_path / "work",
        excluded=(),
        known=lambda p, _size, _mtime: lookups.append(p) is not None,
        wake=lambda: None,
    )
    assert intake.note("cryo", path, now=0.0)
    for _ in range(20):  # a camera writing in pieces fires many 'modified' events
        assert not intake.note("cryo", path, now=0.1)
    assert not intake.note("cryo", path, now=0.2, closed=True)
    assert lookups == [path]
    (record,) = settle(intake, 0.3)  # closed: ready before its settle time (1 s)
    assert record.status == "valid"


def test_unreadable_file_is_logged_once_then_looked_at_less_often(
    tmp_path: Path, camera: CameraConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that cannot be opened warns once, then only counts, with a growing wait."""
    (tmp_path / "in").mkdir()
    path = make_bias_fits(tmp_path / "in" / "looks_like_a_frame.fits")

    def refuse(_path: Path, _camera: CameraConfig) -> None:
        # What open() says to a file without read permission (tests may run as root,
        # whom permissions do not stop).
        raise PermissionError(13, "Permission denied", str(_path))

    monkeypatch.setattr("biaswatch.frames.intake.open_frame", refuse)
    intake = intake_for(camera, tmp_path)
    assert intake.note("cryo", path, now=0.0)
    looks = []
    with capture_logs() as logs:
        for second in range(0, 120):
            intake.poll(float(second))
            looks = [e for e in logs if e["event"] == "frame.unreadable"]
    assert [e["log_level"] for e in looks][:1] == ["warning"]
    assert {e["log_level"] for e in looks[1:]} == {"debug"}
    # settle 1 s, then waits of 2, 4, 8, 16, 32, 64 s: 6 looks in 120 s, not 120.
    assert len(looks) == 6
    assert looks[-1]["repeats"] == 6


def test_noticed_and_vanished_paths_are_handed_over_once(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """Each new path is reported once as seen; one deleted before it settles as vanished."""
    (tmp_path / "in").mkdir()
    keep = make_bias_fits(tmp_path / "in" / "keep.fits")
    gone = make_bias_fits(tmp_path / "in" / "gone.fits")
    intake = intake_for(camera, tmp_path)
    intake.note("cryo", keep, now=0.0)
    intake.note("cryo", gone, now=0.0)
    intake.note("cryo", keep, now=0.1)  # a second event for the same file
    seen, vanished = intake.take_seen()
    assert ([r.path for r in seen], [r.status for r in seen], vanished) == (
        [str(keep), str(gone)],
        ["seen", "seen"],
        [],
    )
    gone.unlink()
    intake.poll(0.5)  # not settled yet; the missing file is dropped
    assert intake.take_seen() == ([], [gone])


class FlakyCluster(Executor):
    """Loses the first ``lose`` calibrations (as a vanished scheduler cancels them), then runs."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """A cancelled future while losing, else the call's result."""
        self.calls += 1
        future: Future[Any] = Future()
        if self.calls <= self.lose:
            future.cancel()
            future.set_running_or_notify_cancel()
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_a_calibration_lost_on_the_cluster_is_done_again(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """A calibration that got no answer is neither dropped nor rejected: it is tried again."""
    path = make_bias_fits(tmp_path / "a.fits")
    cluster = FlakyCluster(lose=1)
    intake = Intake(
        {camera.name: camera},
        SiteConfig(),
        tmp_path / "work",
        excluded=(),
        known=lambda *_: False,
        wake=lambda: None,
        calibrator=cluster,
    )
    intake.note("cryo", path, now=0.0)
    with capture_logs() as logs:
        assert intake.poll(2.0) == []  # first look: size and mtime noted
        assert intake.poll(3.0) == []  # settled, read, submitted, lost
    (lost,) = [e for e in logs if e["event"] == "frame.calibration_lost"]
    assert lost["file"] == str(path) and lost["error"] == "cancelled"
    assert intake.busy_cameras() == {"cryo"}  # still in hand, waiting its back-off
    assert intake.poll(4.0) == []  # back-off: settle_seconds * 2 after the loss
    (record,) = intake.poll(6.0)
    assert record.status == "valid" and cluster.calls == 2


def test_a_burst_of_closed_frames_is_recorded_once_each(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """Twelve closed frames noted at once, a dark among them, come back once each.

    The lane reads, the two workers parse, hash and calibrate in parallel: every frame is
    one record, each bias valid with a work file of its own that holds its own pixels.
    """
    (tmp_path / "in").mkdir()
    paths = [make_bias_fits(tmp_path / "in" / f"f{i:02d}.fits", seed=i) for i in range(12)]
    dark = make_bias_fits(tmp_path / "in" / "dark.fits", imagetyp="DARK")
    intake = intake_for(camera, tmp_path)
    for path in [*paths, dark]:
        assert intake.note("cryo", path, now=0.0, closed=True)
    records: list[FrameRecord] = []
    deadline = time.monotonic() + 60
    while (len(records) < 13 or intake.busy_cameras()) and time.monotonic() < deadline:
        records += intake.poll(0.0)
        time.sleep(0.02)
    assert sorted(r.path for r in records) == sorted(str(p) for p in [*paths, dark])
    valid = [r for r in records if r.status == "valid"]
    assert len(valid) == 12
    assert len({r.sha256 for r in valid}) == 12 == len({r.calibrated for r in valid})
    for record in valid:
        raw = fits.getdata(record.path).astype(np.float32)
        expected = raw[:, :40] - np.median(raw[:, 40:], axis=1)[:, np.newaxis]
        np.testing.assert_array_equal(fits.getdata(record.calibrated), expected)
    assert [r.status for r in records if r.path == str(dark)] == ["ignored"]
