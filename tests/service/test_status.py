"""``biaswatch status`` as an operator runs it, beside and after the real service."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from biaswatch.cli.status import last_finished_night
from biaswatch.config import load_config
from biaswatch.system import pidfile
from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, running_service
from biaswatch.watch.scan import NOT_ANSWERING

# A hard bound on a status run: a status that hangs fails its test, not the suite.
RUN_SECONDS = 60


def status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch status``, whatever its exit status (the Nagios code)."""
    return run_cli("status", "--config", config, *args, timeout=RUN_SECONDS)


def status_json(config: Path) -> dict[str, Any]:
    """``biaswatch status --json``, parsed."""
    return dict(json.loads(status(config, "--json").stdout))


def test_status_shows_the_service_open_sets_masters_and_rejections(tmp_path: Path) -> None:
    """While running: pid, an open set and what completes it, a rejection; after: the master."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        (incoming / "junk.fits").write_bytes(b"not a FITS file" * 300)
        write_frames(config, "cryo", 2, interval=0.0)
        wait_until(
            lambda: len(catalog_rows(config, "SELECT * FROM frames WHERE status != 'seen'")) >= 3,
            60,
            "three frames judged",
        )
        during_run = status(config, "--json")
        during = json.loads(during_run.stdout)
        # Its own subdirectory (watched recursively): names carry the second they were
        # written in, and a fast status can leave both batches in one second.
        write_frames(config, "cryo", 3, interval=0.0, seed=2, out_dir=incoming / "later")
        service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    # No camera has a frame in a night before the last finished one (the catalog is new):
    # those nights were not watched, so nothing is missing: OK while the service runs.
    loaded = load_config(config)
    nights = {
        c.name: last_finished_night(loaded, c, dt.datetime.now(dt.UTC)) for c in loaded.cameras
    }
    first = catalog_rows(config, "SELECT MIN(night) AS night FROM frames")[0]["night"]
    assert all(first > night for night in nights.values())
    silent: list[str] = []
    assert during_run.returncode == 0
    assert during["assessment"] == {"status": "OK", "code": 0, "reasons": silent}
    assert (during["service"]["running"], during["service"]["pid"]) == (True, service.proc.pid)
    assert during["service"]["since"]
    cryo = next(c for c in during["cameras"] if c["camera"] == "cryo")
    assert cryo["directories"] == {str(incoming): "ok"}
    (open_set,) = cryo["open_sets"]
    assert (open_set["frames"], open_set["expected"]) == (2, 5)
    assert open_set["waiting"] and open_set["next_look"]
    (rejected,) = cryo["rejected_last_24h"]
    assert rejected["file"] == str(incoming / "junk.fits")
    assert rejected["reason"].startswith("not a FITS file")
    after = status_json(config)
    assert after["assessment"]["reasons"] == ["service not running", *silent]
    assert after["service"] == {"running": False}
    cryo = next(c for c in after["cameras"] if c["camera"] == "cryo")
    assert cryo["open_sets"] == []
    master = cryo["last_master"]
    assert (master["state"], master["ncombine"]) == ("accepted", 5)
    assert master["qc"]["read_noise"] > 0
    stopped = status(config)
    text = stopped.stdout
    assert stopped.returncode == 2
    assert text.startswith(
        f"BIASWATCH CRITICAL - {'; '.join(after['assessment']['reasons'])}\n"
        "service: not running\ncamera cryo\n"
    )
    assert f"  last master: {master['path']} (" in text
    assert "    junk.fits: not a FITS file" in text


def run_beside(mount: Any, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` while ``mount`` hangs; one still running after RUN_SECONDS fails the test.

    A process stuck in the hung mount cannot even be killed (a FUSE call handed to its
    daemon survives SIGKILL): the mount is resumed first, so a regression fails here
    instead of hanging the suite.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        mount.resume()
        process.kill()
        process.communicate()
        raise AssertionError(f"{command} still ran after {RUN_SECONDS} s") from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _processes_running(command_part: str) -> list[int]:
    """Pids whose command line holds ``command_part`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if entry.name.isdigit() and command_part.encode() in words:
            found.append(int(entry.name))
    return found


def test_status_answers_within_its_timeout_while_a_watch_mount_hangs(tmp_path: Path) -> None:
    """With cryo's mount hung, status exits 1 within --timeout plus a margin, naming the mount."""
    from test_stall import _stalled_config, hanging_mount

    config, backing = _stalled_config(tmp_path)
    incoming = tmp_path / "incoming" / "cryo"
    lock = pidfile.take(tmp_path / "state", dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC))
    command = [sys.executable, "-m", "biaswatch", "status", "--config", str(config)]
    try:
        with hanging_mount(backing, incoming) as mount:
            mount.hang()
            start = time.monotonic()
            result = run_beside(mount, [*command, "--timeout", "2", "--json"])
            seconds = time.monotonic() - start
            text = run_beside(mount, [*command, "--timeout", "1"])
            mount.resume()
            # The probe children, killed and left in the hung call, end once it answers.
            wait_until(lambda: not _processes_running(str(config)), 30, "the probes to end")
    finally:
        lock.release()
    report = json.loads(result.stdout)
    cryo = next(c for c in report["cameras"] if c["camera"] == "cryo")
    te = next(c for c in report["cameras"] if c["camera"] == "te")
    reason = f"cryo: {incoming} {NOT_ANSWERING}"
    assert result.returncode == 1, result.stderr
    # 2 s for the hung directory (in the overlap check's resolve; not asked again by the
    # probe), plus Python's start and imports: well under the 10 s check_nrpe allows.
    assert seconds < 2 + 3
    assert cryo["directories"] == {str(incoming): NOT_ANSWERING}
    assert te["directories"] == {str(tmp_path / "incoming" / "te"): "ok"}
    assert report["assessment"] == {"status": "WARNING", "code": 1, "reasons": [reason]}
    assert text.returncode == 1
    assert text.stdout.splitlines()[0] == f"BIASWATCH WARNING - {reason}"


def test_reading_commands_end_while_a_watch_mount_hangs(tmp_path: Path) -> None:
    """With cryo's mount hung, masters, check-config, combine and the API answer, not hang."""
    from test_stall import _stalled_config, hanging_mount

    config, backing = _stalled_config(tmp_path)
    incoming = tmp_path / "incoming" / "cryo"
    base = [sys.executable, "-m", "biaswatch"]
    frames = [str(p) for p in write_frames(config, "te", 3, interval=0.0)]
    combine = [*base, "combine", "--config", str(config), "--camera", "te", "--json"]
    with hanging_mount(backing, incoming) as mount:
        mount.hang()
        combined = run_beside(mount, [*combine, "-o", str(tmp_path / "m.fits"), *frames])
        masters = run_beside(mount, [*base, "masters", "--config", str(config), "--json"])
        checked = run_beside(mount, [*base, "check-config", "--config", str(config), "--json"])
        api = "from biaswatch.calibrations import masters; import sys; "
        api += "print(len(masters(config=sys.argv[1])))"
        listed = run_beside(mount, [sys.executable, "-c", api, str(config)])
        mount.resume()
        wait_until(lambda: not _processes_running(str(config)), 30, "the probes to end")
    assert masters.returncode == 0 and json.loads(masters.stdout) == [], masters.stderr
    settings = json.loads(checked.stdout)
    cryo = next(c for c in settings["cameras"] if c["name"] == "cryo")
    assert cryo["directories"] == {str(incoming): NOT_ANSWERING}
    assert (listed.returncode, listed.stdout) == (0, "0\n"), listed.stderr
    assert json.loads(combined.stdout)["frames"] == 3, combined.stderr
