"""The real service as a process: frames in, masters out, bad input recorded, clean stops."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.system.faults import PAUSE_AT, PAUSE_SECONDS
from biaswatch.testing.fits import fits_bytes, seed_combine, truncated_copy
from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, master_data, running_service


def seed_recipe(raws: list[Path], overscan: str | None, trim: str | None) -> np.ndarray:
    """The astropy CCD guide's recipe, done with ccdproc directly (the reference)."""
    calibrated = []
    for raw in raws:
        ccd = CCDData.read(raw, unit="adu")
        section = overscan or ccd.header.get("BIASSEC")
        if section:
            ccd = ccdproc.subtract_overscan(ccd, fits_section=section, overscan_axis=1, median=True)
        ccd = ccdproc.trim_image(ccd, fits_section=trim or ccd.header["TRIMSEC"])
        calibrated.append(ccd)
    return seed_combine(calibrated)


def digests(paths: list[Path]) -> dict[Path, tuple[str, int]]:
    """Content hash and mtime of each file, to prove raw data untouched."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def masters_json(config: Path, *args: str) -> list[dict[str, object]]:
    """What `biaswatch masters --json` prints, parsed."""
    result = run_cli("masters", "--config", config, "--json", *args, timeout=60, check=True)
    listed: list[dict[str, object]] = json.loads(result.stdout)
    return listed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy ma in ccdproc's reference path
def test_two_cameras_end_to_end(tmp_path: Path) -> None:
    """Frames written slowly for two cameras become one master each, equal to the ccdproc recipe."""
    config = write_config(tmp_path)
    with running_service(config, watchdog_usec=1_000_000) as service:
        written: dict[str, list[Path]] = {}
        threads = [
            threading.Thread(
                target=lambda n=name: written.__setitem__(n, write_frames(config, n, 5))
            )
            for name in ("cryo", "te")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        before = digests(written["cryo"] + written["te"])
        published = service.wait_event("master.published", count=2)
        status, seconds = service.stop()
        messages = list(service.messages)
    assert (status, seconds < 10) == (0, True)
    assert {"READY=1", "WATCHDOG=1", "STOPPING=1"} <= set(messages)
    by_camera = {event["camera"]: Path(event["path"]) for event in published}
    references = {
        "cryo": seed_recipe(written["cryo"], None, None),
        "te": seed_recipe(written["te"], "", "[1:32,1:32]"),
    }
    for event in published:  # where the time went, for "why was it late?"
        timings = [event[k] for k in ("startup_seconds", "combine_seconds", "publish_seconds")]
        assert all(0 <= t < 60 for t in timings), event
    for name, path in by_camera.items():
        header = fits.getheader(path)
        assert header["COMBINED"] is True
        assert header["NCOMBINE"] == 5
        assert sorted(header[f"IMCMB00{i}"] for i in range(1, 6)) == sorted(
            p.name for p in written[name]
        )
        assert np.max(np.abs(master_data(path) - references[name])) <= 1e-3
        assert (tmp_path / "masters" / name / "latest.fits").resolve() == path.resolve()
    assert digests(written["cryo"] + written["te"]) == before  # raw data untouched
    listed = masters_json(config)
    assert {(m["camera"], m["sequence"], m["ncombine"]) for m in listed} == {
        ("cryo", 1, 5),
        ("te", 1, 5),
    }
    assert all(
        {"camera", "night", "sequence", "path", "ncombine", "created"} <= set(m) for m in listed
    )


def bad_inputs(directory: Path) -> dict[str, str]:
    """Write each kind of bad input; return file name -> expected reason fragment."""
    rng = np.random.default_rng(7)
    (directory / "random.fits").write_bytes(rng.bytes(9000))
    (directory / "text.fits").write_text("SIMPLE? no, this is a shopping list\n" * 100)
    good = fits_bytes(shape=(40, 56))
    (directory / "noend.fits").write_bytes(good[: good.find(b"END" + b" " * 77)])
    complete = directory / "complete.tmp"
    complete.write_bytes(good)
    truncated_copy(complete, directory / "truncated.fits", len(good) - 3000)
    complete.unlink()
    header_bytes = 2880 * (good.find(b"END" + b" " * 77) // 2880 + 1)
    data_kept = len(good) - 3000 - header_bytes
    scrambled = bytearray(fits_bytes(shape=(40, 56), layout="compressed"))
    scrambled[-1500:-200] = rng.bytes(1300)
    (directory / "scrambled.fits.fz").write_bytes(bytes(scrambled))
    (directory / "noimagetyp.fits").write_bytes(fits_bytes(shape=(40, 56), imagetyp=None))
    (directory / "bigtrim.fits").write_bytes(
        fits_bytes(shape=(40, 56), header={"TRIMSEC": "[1:2048,1:2048]"})
    )
    (directory / "flat.fits").write_bytes(fits_bytes(shape=(40, 56), imagetyp="FLAT"))
    (directory / "notes.txt").write_text("not matched by any pattern")
    return {
        "random.fits": "not a FITS file: does not start with a FITS 'SIMPLE' card",
        "text.fits": "not a FITS file",
        "noend.fits": "truncated: header has no END card after waiting 0.05 min",
        "truncated.fits": f"truncated: primary HDU data: {data_kept} of {40 * 56 * 2} bytes after "
        "waiting 0.05 min",
        "scrambled.fits.fz": "corrupt FITS",
        "noimagetyp.fits": "missing IMAGETYP keyword",
        "bigtrim.fits": "trim = header:TRIMSEC: [1:2048,1:2048] does not fit an image of 56 x 40",
        "flat.fits": "IMAGETYP = 'FLAT' is not a bias",
    }


def test_bad_inputs_are_recorded_with_reasons(tmp_path: Path) -> None:
    """Each kind of bad input gets a catalog reason and a log event, and good sets still combine."""
    config = write_config(tmp_path, max_incomplete_minutes=0.05)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        expected = bad_inputs(incoming)
        nodate = incoming / "nodate.fits"
        nodate.write_bytes(fits_bytes(shape=(40, 56), date_obs=None))
        write_frames(config, "cryo", 5)
        service.wait_event("master.published")
        wait_until(
            lambda: len(catalog_rows(config, "SELECT * FROM frames WHERE status != 'seen'")) >= 14,
            30,
            "every frame judged",
        )
        rejected = {e["file"] for e in service.events("frame.rejected")}
        fallback = service.events("frame.date_fallback")
        assert service.stop()[0] == 0
    rows = {Path(r["path"]).name: r for r in catalog_rows(config, "SELECT * FROM frames")}
    for name, reason in expected.items():
        assert reason in (rows[name]["reason"] or ""), (name, rows[name]["reason"])
        assert rows[name]["status"] == ("ignored" if name == "flat.fits" else "rejected")
        if name != "flat.fits":
            assert str(incoming / name) in rejected
    # Dated by its mtime, the frame joins tonight's set like the simulated ones.
    tonight = {r["night"] for name, r in rows.items() if name.startswith("cryo_")}
    assert rows["nodate.fits"]["status"] in {"valid", "combined"}
    assert {rows["nodate.fits"]["night"]} == tonight
    assert rows["nodate.fits"]["note"].startswith("DATE-OBS missing: night taken from file mtime")
    assert [e["file"] for e in fallback] == [str(nodate)]
    assert "notes.txt" not in rows
    assert sorted(p.name for p in incoming.iterdir()) == sorted(
        [*expected, "nodate.fits", "notes.txt", *(r for r in rows if r.startswith("cryo_"))]
    )  # nothing moved, renamed or deleted


@pytest.mark.skipif(os.geteuid() != 0 and os.name == "posix", reason="needs setpriv as root")
def test_unreadable_directory_is_reported_and_others_carry_on(tmp_path: Path) -> None:
    """An unreadable watch directory is logged with what to do; the other camera still works."""
    config = write_config(tmp_path)
    (tmp_path / "incoming" / "te").chmod(0)
    # As root, drop the capabilities that bypass permission bits, so the
    # directory is as unreadable to the service as to an unprivileged user.
    no_bypass = (
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    )
    try:
        with running_service(config, prefix=no_bypass) as service:
            events = service.wait_event("watch.directory_unreadable")
            write_frames(config, "cryo", 5)
            service.wait_event("master.published")
            assert service.stop()[0] == 0
    finally:
        (tmp_path / "incoming" / "te").chmod(0o755)
    assert events[0]["camera"] == "te"
    assert events[0]["action"] == "give the service's user read access to it"


def test_sigterm_during_a_combine_leaves_no_partial_file_then_resumes(tmp_path: Path) -> None:
    """SIGTERM mid-combine exits 0 within 10 s with no partial master; a restart publishes it."""
    config = write_config(tmp_path, expected_frames=8)
    with running_service(config) as service:
        write_frames(config, "cryo", 1, interval=0.0)
        (calibrated,) = service.wait_event("frame.calibrated")
        # The combine would take a fraction of a second; it must be caught midway. A
        # FIFO in place of the first calibrated frame blocks the child's read of it, as
        # a hung disk would, until the stop kills it.
        work_file = Path(calibrated["calibrated"])
        work_file.rename(work_file.with_name("kept"))
        os.mkfifo(work_file)
        write_frames(config, "cryo", 7, interval=0.0, out_dir=tmp_path / "incoming/cryo/more")
        service.wait_event("combine.started", timeout=120)
        time.sleep(0.5)  # let the child reach the FIFO
        status, seconds = service.stop()
        abandoned = service.events("combine.abandoned")
        messages = list(service.messages)
    assert status == 0
    assert seconds < 10
    assert "STOPPING=1" in messages
    assert abandoned, "the stop should have interrupted the combine"
    assert not [p for p in (tmp_path / "masters").rglob("*") if ".partial-" in p.name]
    assert not list((tmp_path / "masters").rglob("*.fits"))
    assert [r["state"] for r in catalog_rows(config, "SELECT state FROM sets")] == ["closed"]
    work_file.unlink()
    work_file.with_name("kept").rename(work_file)
    with running_service(config) as service:
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert fits.getheader(published["path"])["NCOMBINE"] == 8


def test_first_start_stays_responsive_while_the_fork_server_preloads(tmp_path: Path) -> None:
    """While the fork server preloads, a set waits for it and SIGTERM still stops at once."""
    config = write_config(tmp_path, expected_frames=3)
    # A fork server that takes 30 s to preload, as a cold numba cache did before issue 14.
    slow = {PAUSE_AT: "preload", PAUSE_SECONDS: "30"}
    with running_service(config, env=slow) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("set.completed", timeout=60)
        preloading = not service.events("combine.server_ready")
        status, seconds = service.stop()
        started = service.events("combine.started")
    assert preloading, "the server was ready before the set completed: nothing was tested"
    assert (status, started) == (0, [])
    assert seconds < 5
    with running_service(config, env={PAUSE_AT: "preload", PAUSE_SECONDS: "2"}) as service:
        (published,) = service.wait_event("master.published", timeout=120)
        (ready,) = service.events("combine.server_ready")
        assert service.stop()[0] == 0
    assert ready["timestamp"] <= published["timestamp"]


def test_quiet_period_then_late_frames_make_a_second_master(tmp_path: Path) -> None:
    """A quiet set combines with what it has; later frames of the night make master 2."""
    config = write_config(tmp_path, expected_frames=10, quiet_minutes=0.05)
    with running_service(config) as service:
        write_frames(config, "cryo", 3, seed=1)
        (first,) = service.wait_event("master.published")
        write_frames(config, "cryo", 4, seed=2)
        second = service.wait_event("master.published", count=2)[1]
        assert service.stop()[0] == 0
    assert (first["sequence"], second["sequence"]) == (1, 2)
    assert (
        fits.getheader(first["path"])["NCOMBINE"],
        fits.getheader(second["path"])["NCOMBINE"],
    ) == (3, 4)
    assert (tmp_path / "masters/cryo/latest.fits").resolve() == Path(second["path"]).resolve()
    assert Path(first["path"]).exists()
    assert [m["sequence"] for m in masters_json(config, "--camera", "cryo")] == [1, 2]


def test_backlog_at_start_and_ended_nights(tmp_path: Path) -> None:
    """Frames that landed while the service was down are found; ended nights combine or wait."""
    config = write_config(tmp_path, min_frames=3)
    old = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.UTC)  # night 2026-10-01, long over
    older = dt.datetime(2026, 9, 2, 2, 0, tzinfo=dt.UTC)  # night 2026-09-01
    write_frames(config, "cryo", 3, interval=0.0, now=lambda: old)
    write_frames(config, "te", 2, interval=0.0, now=lambda: older)
    with running_service(config) as service:
        (published,) = service.wait_event("master.published")
        (insufficient,) = service.wait_event("set.insufficient")
        assert service.stop()[0] == 0
    assert (published["camera"], published["night"]) == ("cryo", "2026-10-01")
    assert fits.getheader(published["path"])["NCOMBINE"] == 3
    assert (insufficient["camera"], insufficient["night"]) == ("te", "2026-09-01")
    assert insufficient["reason"] == "night ended with 2 frame(s), fewer than min_frames=3"
    frames = catalog_rows(config, "SELECT status FROM frames WHERE camera = 'te'")
    assert [r["status"] for r in frames] == ["valid", "valid"]  # kept, not combined


def test_simulate_command_writes_frames_the_service_accepts(tmp_path: Path) -> None:
    """`biaswatch simulate` writes frames into the camera's directory that make a master."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "biaswatch",
                "simulate",
                "--config",
                str(config),
                "--camera",
                "te",
                "--frames",
                "3",
                "--interval",
                "0.2",
                # A fixed seed: with a random one, about one run in a thousand draws a
                # frame whose level drift is past the outlier limit, and 2 frames are
                # fewer than min_frames = 3, so the set would (rightly) wait for night end.
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert "done: 3 frames" in result.stdout
    assert published["camera"] == "te"
    assert fits.getdata(published["path"]).shape == (32, 32)  # te's trim [1:32,1:32]


def test_polling_cameras_find_new_frames(tmp_path: Path) -> None:
    """With polling = true (network mounts), frames written after start are found by polling."""
    # Every camera polls, so no inotify watch exists: only the PollingObserver can see them.
    config = write_config(tmp_path, polling=True, poll_interval_seconds=0.5)
    with running_service(config) as service:
        # The start scan runs on the camera's lane thread, after READY=1 (a hung mount
        # must not hold the start): wait for it, as the other scan tests do.
        assert service.wait_event("watch.scanned")[0]["new"] == 0
        write_frames(config, "cryo", 5)
        (published,) = service.wait_event("master.published")
        assert service.stop()[0] == 0
    assert fits.getheader(published["path"])["NCOMBINE"] == 5


def test_frames_in_a_new_night_subdirectory_are_found(tmp_path: Path) -> None:
    """Watches are recursive: a per-night directory made after start is watched too."""
    config = write_config(tmp_path)
    with running_service(config) as service:
        night_dir = tmp_path / "incoming" / "cryo" / "2026" / "20261124"
        night_dir.mkdir(parents=True)
        written = write_frames(config, "cryo", 5, out_dir=night_dir)
        (published,) = service.wait_event("master.published")
        assert service.stop()[0] == 0
    header = fits.getheader(published["path"])
    assert sorted(header[f"IMCMB00{i}"] for i in range(1, 6)) == sorted(p.name for p in written)
