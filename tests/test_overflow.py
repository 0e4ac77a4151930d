"""A real kernel inotify queue overflow in the running service costs latency, never a frame.

Past ``fs.inotify.max_queued_events`` the kernel drops events and queues one
IN_Q_OVERFLOW instead (inotify(7)). watchdog 7.1 logs that and re-arms its
watches (gorakhargosh/watchdog#654), earlier versions skip it without a word;
either way no handler learns which files were lost, so biaswatch's periodic
rescan is what finds them (scan.py).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from service_process import ServiceProcess, catalog_rows, wait_for, write_config

from biaswatch.testing import fits_bytes

pytestmark = pytest.mark.slow

MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")

# Each frame written costs its inotify watch four events (IN_CREATE, IN_OPEN,
# IN_MODIFY, IN_CLOSE_WRITE: 400 for 100 files, measured), so 16 queued events
# hold four frames. A burst of 300 overflowed it 12 to 18 times in twelve runs, and
# the events of 276 to 297 of the frames were lost (measured on 2 busy cores).
QUEUE_LIMIT = 16
FRAMES = 300
# 0.05 min = 3 s between rescans: the lost frames are found within seconds.
RESCAN_MINUTES = 0.05
# watchdog logs IN_Q_OVERFLOW from 7.1 on (its changelog, #654); 6.x drops it unlogged.
WATCHDOG_REPORTS_OVERFLOW = tuple(int(n) for n in version("watchdog").split(".")[:2]) >= (7, 1)


@pytest.fixture(name="low_inotify_queue")
def _low_inotify_queue() -> Iterator[Callable[[], None]]:
    """Lower the kernel's inotify queue limit; yields a function that restores it early.

    The limit is read once, when an inotify instance is created (inotify_init;
    fs/notify/inotify/inotify_user.c copies it into the group's max_events), so an
    instance created while it is low keeps the low limit after it is restored.
    Checked on Linux 6.18 with two instances on one directory, one created at 16 and
    one after restoring 16384, then 100 files written: the first read back 16 events
    and one IN_Q_OVERFLOW, the second all 400 events. The limit is global (not per
    namespace), so it is restored as soon as the service has its instance, about 2 s
    after it starts: a process elsewhere that creates an instance in that window
    keeps 16 for the instance's life.
    """
    if not os.access(MAX_QUEUED_EVENTS, os.W_OK):
        pytest.skip(f"{MAX_QUEUED_EVENTS} is not writable: needs root and a writable /proc/sys")
    original = MAX_QUEUED_EVENTS.read_text(encoding="ascii")

    def restore() -> None:
        MAX_QUEUED_EVENTS.write_text(original, encoding="ascii")

    try:
        MAX_QUEUED_EVENTS.write_text(f"{QUEUE_LIMIT}\n", encoding="ascii")
    except OSError as error:  # a user namespace's root may see it writable yet be refused
        pytest.skip(f"cannot lower {MAX_QUEUED_EVENTS}: {error}")
    try:
        yield restore
    finally:
        restore()


def inotify_instances(pid: int) -> int:
    """How many inotify instances process ``pid`` holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += str(fd.readlink()) == "anon_inode:inotify"
        except OSError:  # closed between listing and reading
            continue
    return count


def distinct_frames(count: int) -> list[bytes]:
    """``count`` small raw biases of tonight, each with its own pixels.

    Distinct content matters: the service records a second copy of the same
    bytes as a duplicate and leaves it out of the combine.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000")
    return [fits_bytes(seed=seed, date_obs=now, header={"DATE": None}) for seed in range(count)]


def next_scan(service: ServiceProcess, camera: str, timeout: float = 30) -> dict[str, Any]:
    """Wait for the camera's next directory scan to be logged; return its event."""

    def scans() -> list[dict[str, Any]]:
        return [e for e in service.events("watch.scanned") if e["camera"] == camera]

    before = len(scans())
    wait_for(lambda: len(scans()) > before, timeout, f"a rescan of {camera}")
    return scans()[-1]


def test_inotify_queue_overflow_loses_no_frame(
    tmp_path: Path, low_inotify_queue: Callable[[], None]
) -> None:
    """A burst that overflows the kernel's inotify queue: the rescan finds the rest, one master."""
    config = write_config(
        tmp_path, service={"rescan_minutes": RESCAN_MINUTES}, expected_frames=FRAMES
    )
    incoming = tmp_path / "incoming" / "cryo"
    frames = distinct_frames(FRAMES)  # made first, so the burst below is only writes
    service = ServiceProcess(config)
    try:
        wait_for(
            lambda: service.proc.poll() is not None or inotify_instances(service.proc.pid) > 0,
            60,
            "the service's inotify instance",
        )
        assert service.proc.poll() is None, service.tail()
        low_inotify_queue()
        service.wait_ready()
        # Just after a rescan, so the next is 3 s away: any file it finds was missed
        # by the events, not merely not yet reached by them.
        next_scan(service, "cryo")
        written = []
        for number, data in enumerate(frames):
            path = incoming / f"bias_{number:04d}.fits"
            path.write_bytes(data)
            written.append(path)
        (published,) = service.wait_event("master.published", timeout=120)
        after = next_scan(service, "cryo")
        alive = service.proc.poll() is None
        events = service.events()
        status, _ = service.stop()
    finally:
        service.close()

    assert alive and status == 0
    assert [e for e in events if e["level"] in ("error", "critical")] == []
    if WATCHDOG_REPORTS_OVERFLOW:
        # The kernel overflowed the service's own queue: watchdog saw IN_Q_OVERFLOW.
        overflowed = [e for e in events if e["event"].startswith("Inotify queue overflowed")]
        assert overflowed, "watchdog never saw IN_Q_OVERFLOW: the burst did not overflow"
    # ...and the rescan found what the lost events never announced.
    reconciled = [e for e in events if e["event"] == "scan.reconciled" and e["missing"] > 0]
    assert reconciled and all(e["level"] == "warning" for e in reconciled)
    assert sum(e["missing"] for e in reconciled) <= FRAMES
    assert after["new"] == 0, "a rescan after the master still found new files"
    # Every frame written is in the catalog, combined, in the one master.
    rows = catalog_rows(config, "SELECT path, status FROM frames")
    assert {r["path"]: r["status"] for r in rows} == {str(p): "combined" for p in written}
    (master,) = catalog_rows(config, "SELECT * FROM masters")
    assert master["path"] == published["path"]
    assert published["ncombine"] == FRAMES
    assert fits.getheader(published["path"])["NCOMBINE"] == FRAMES
    assert [r["state"] for r in catalog_rows(config, "SELECT state FROM sets")] == ["done"]
    masters = [p for p in (tmp_path / "masters").rglob("*") if p.is_file()]
    assert [p for p in masters if not p.is_symlink()] == [Path(published["path"])]
    partial = [p for p in tmp_path.rglob("*") if ".partial-" in p.name]
    assert partial == [], "a write left its temporary file"
