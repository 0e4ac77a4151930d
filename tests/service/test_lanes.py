"""Camera lanes: each camera's file work on its own thread, reported back to the main loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog, KnownReader
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.intake import Intake
from biaswatch.frames.lanes import Lane, Lanes
from biaswatch.testing.fits import make_bias_fits
from biaswatch.testing.helpers import wait_until
from biaswatch.watch.handler import PathEvent
from biaswatch.watch.scan import probe_directory


@pytest.fixture(name="catalog_path")
def _catalog_path(tmp_path: Path, catalog: Catalog) -> Path:
    # A real catalog (conftest's): the lanes open read-only connections to it.
    return tmp_path / "state" / "catalog.sqlite"


def camera_in(tmp_path: Path, name: str) -> CameraConfig:
    """A camera watching tmp_path/<name>, settling quickly."""
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    return CameraConfig(name=name, watch=(directory,), settle_seconds=0.1)


def lane_for(
    camera: CameraConfig, tmp_path: Path, catalog_path: Path, probe: Callable[[Path], str]
) -> Lane:
    """A lane with a real Intake whose root probe is ``probe``."""

    def make(known: KnownReader, nudge: Callable[[], None]) -> Intake:
        return Intake(
            {camera.name: camera},
            SiteConfig(),
            tmp_path / "work",
            excluded=(),
            known=known,
            wake=nudge,
        )

    return Lane(camera, make, catalog=catalog_path, wake=lambda: None, probe=probe)


def collect(take: Callable[[], list[FrameRecord]], count: int) -> list[FrameRecord]:
    """Take finished records until ``count`` have come; fail after 30 s."""
    records: list[FrameRecord] = []
    deadline = time.monotonic() + 30
    while len(records) < count:
        assert time.monotonic() < deadline, f"only {len(records)} of {count} records came"
        records += take()
        time.sleep(0.02)
    return records


def test_a_lane_stuck_in_a_call_says_so_and_another_goes_on(
    tmp_path: Path, catalog_path: Path
) -> None:
    """A lane blocked in a root probe reports how long and where; another lane keeps working."""
    release = threading.Event()

    def hanging(directory: Path) -> str:
        release.wait()
        return probe_directory(directory)

    stuck = lane_for(camera_in(tmp_path, "cryo"), tmp_path, catalog_path, hanging)
    free_camera = camera_in(tmp_path, "te")
    free = lane_for(free_camera, tmp_path, catalog_path, probe_directory)
    stuck.start()
    free.start()
    try:
        wait_until(lambda: stuck.stuck_for(time.monotonic()) > 0.3)
        assert stuck.doing == f"probing {tmp_path / 'cryo'}"
        assert stuck.present(tmp_path / "cryo") is None  # no answer yet
        path = make_bias_fits(tmp_path / "te" / "a.fits")
        free.note(PathEvent("te", path))
        collect(lambda: free.take().finished, 1)
        assert free.stuck_for(time.monotonic()) < 1.0
        release.set()
        wait_until(lambda: stuck.stuck_for(time.monotonic()) == 0.0)
        assert stuck.present(tmp_path / "cryo") == "ok"
    finally:
        release.set()
        stuck.stop(5)
        free.stop(5)


def test_records_not_yet_taken_keep_their_camera_busy(tmp_path: Path, catalog_path: Path) -> None:
    """A finished record the main loop has not taken still counts as work in flight."""
    camera = camera_in(tmp_path, "cryo")
    lane = lane_for(camera, tmp_path, catalog_path, probe_directory)
    lane.start()
    try:
        lane.note(PathEvent("cryo", make_bias_fits(tmp_path / "cryo" / "a.fits")))
        assert lane.busy  # asked, not yet looked at
        wait_until(lambda: _has_output(lane))
        assert lane.busy, "a set could be judged without this frame"
        (record,) = lane.take().finished
        wait_until(lambda: not lane.busy)
        assert record.status == "valid"
    finally:
        lane.stop(5)


def _has_output(lane: Lane) -> bool:
    # Peek without taking: the lane's output is what take() would return.
    with lane._lock:
        return bool(lane._out.finished)


def test_lanes_scan_finds_what_no_event_announced(tmp_path: Path, catalog_path: Path) -> None:
    """A scan request lists the directory; its files come back as records, each once."""
    camera = camera_in(tmp_path, "cryo")
    for name in ("a.fits", "b.fits"):
        make_bias_fits(tmp_path / "cryo" / name)
    lanes = Lanes(
        [camera],
        SiteConfig(),
        tmp_path / "work",
        excluded=(),
        catalog=catalog_path,
        wake=lambda: None,
    )
    lanes.start(probe_timeout=5)
    try:
        assert lanes.present("cryo", tmp_path / "cryo") == "ok"
        lanes.scan("cryo", tmp_path / "cryo", "rescan")
        finished = collect(lambda: lanes.take().finished, 2)
        assert sorted(Path(r.path).name for r in finished) == ["a.fits", "b.fits"]
        assert lanes.busy_cameras() == set()
    finally:
        lanes.stop(5)
