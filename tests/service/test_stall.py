"""A camera directory on a mount that hangs (a dead NFS server), on the real service.

The mount is a FUSE mirror (stallfs.py) whose calls block in the kernel while a
control file exists: the service's threads sit in D state exactly as on a hard
NFS mount. The other camera must go on, systemd's watchdog must keep being fed,
SIGTERM must still stop the service, and no frame may be lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from biaswatch.testing.helpers import write_config, write_frames
from biaswatch.testing.service import ServiceProcess, catalog_rows, running_service

STALLFS = Path(__file__).parents[1] / "stallfs.py"


class HangingMount:
    """A running stallfs mount and its switch."""

    def __init__(self, control: Path) -> None:
        self._control = control

    def hang(self) -> None:
        """From now on every call on the mount blocks."""
        self._control.touch()

    def resume(self) -> None:
        """Let the blocked calls complete, and all later ones run."""
        self._control.unlink(missing_ok=True)


@contextmanager
def hanging_mount(backing: Path, mountpoint: Path) -> Iterator[HangingMount]:
    """Mount ``backing`` at ``mountpoint`` through stallfs; skip where FUSE is unavailable."""
    try:
        import mfusepy  # noqa: F401  (needs libfuse3, from Debian's fuse3)
    except (ImportError, OSError) as exc:
        pytest.skip(f"mfusepy/libfuse not available: {exc}")
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse on this machine")
    control = backing.parent / "stall-control"
    log = (backing.parent / "stallfs.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(STALLFS), str(backing), str(mountpoint), str(control)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    mount = HangingMount(control)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip("FUSE mount refused here (needs CAP_SYS_ADMIN or fusermount3)")
            time.sleep(0.05)
        yield mount
    finally:
        mount.resume()
        unmount = shutil.which("fusermount3")
        command = (
            [unmount, "-u", "-z", str(mountpoint)] if unmount else ["umount", "-l", str(mountpoint)]
        )
        subprocess.run(command, capture_output=True, check=False)
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _stalled_config(tmp_path: Path) -> tuple[Path, Path]:
    # Polling for both cameras: files reach the mirror's backing directory from
    # outside, as from a camera computer, which inotify would never see (W4).
    config = write_config(
        tmp_path,
        service={"stall_seconds": 2},
        expected_frames=3,
        polling=True,
        poll_interval_seconds=0.5,
    )
    backing = tmp_path / "backing" / "cryo"
    backing.mkdir(parents=True)
    return config, backing


def test_hung_mount_stalls_only_its_camera_and_loses_nothing(tmp_path: Path) -> None:
    """While cryo's mount hangs, te still publishes and systemd is fed; cryo resumes after."""
    config, backing = _stalled_config(tmp_path)
    with (
        hanging_mount(backing, tmp_path / "incoming" / "cryo") as mount,
        running_service(config, watchdog_usec=2_000_000) as service,
    ):
        mount.hang()
        (stalled,) = service.wait_event("camera.stalled", timeout=30)
        pings_before = service.messages.count("WATCHDOG=1")
        write_frames(config, "cryo", 3, interval=0.0, out_dir=backing)
        write_frames(config, "te", 3, interval=0.0)
        (te_master,) = service.wait_event("master.published", timeout=120)
        pings_during = service.messages.count("WATCHDOG=1") - pings_before
        degraded = [m for m in service.messages if m.startswith("STATUS=degraded")]
        mount.resume()
        service.wait_event("camera.recovered", timeout=30)
        published = service.wait_event("master.published", count=2, timeout=120)
        assert service.stop()[0] == 0
    assert stalled["camera"] == "cryo"
    assert te_master["camera"] == "te"
    assert pings_during >= 2, "the main loop stopped feeding systemd's watchdog"
    assert degraded and "cryo" in degraded[-1]
    assert sorted(e["camera"] for e in published) == ["cryo", "te"]
    statuses = catalog_rows(config, "SELECT status FROM frames")
    assert [r["status"] for r in statuses] == ["combined"] * 6


def test_sigterm_during_a_hung_mount_stops_and_the_next_start_finds_the_frames(
    tmp_path: Path,
) -> None:
    """SIGTERM while a mount hangs stops the service; its frames are combined at the next start."""
    config, backing = _stalled_config(tmp_path)
    with hanging_mount(backing, tmp_path / "incoming" / "cryo") as mount:
        with running_service(config) as service:
            mount.hang()
            service.wait_event("camera.stalled", timeout=30)
            write_frames(config, "cryo", 3, interval=0.0, out_dir=backing)
            start = time.monotonic()
            service.proc.send_signal(signal.SIGTERM)
            service.wait_event("service.stopped", timeout=30)
            seconds = time.monotonic() - start
            stuck = service.events("camera.stuck_at_stop")
            # A FUSE call already handed to its daemon cannot be abandoned, not even
            # by SIGKILL (kernel fuse.rst, "Interrupting filesystem operations"), so
            # the process ends once the mount answers. A hard NFS mount is killable
            # (TASK_KILLABLE since Linux 2.6.25), so there it ends at once.
            mount.resume()
            assert service.proc.wait(timeout=30) == 0
        restarted = ServiceProcess(config)
        try:
            restarted.wait_ready()
            (published,) = restarted.wait_event("master.published", timeout=120)
            assert restarted.stop()[0] == 0
        finally:
            restarted.close()
    # The watcher gives up on its stuck emitter after 5 s (watch/observers.py); a lane
    # already known stalled is not waited for at all (frames/lanes.py).
    assert seconds < 15
    assert [e["camera"] for e in stuck] == ["cryo"]
    assert published["camera"] == "cryo"
