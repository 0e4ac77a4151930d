"""Data never stops the service (issue 11, findings 1, 8, 10), through the real service.

A frame dated 9999, a stored set of night 9999-12-31, header cards astropy
cannot parse, FITS structure values out of range, junk files by the hundred
and a header of 10,001 cards: each is recorded once with its reason, the
service stays up (and starts again), and the ordinary frames still make their
master. Raw files are never touched.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from astropy.io import fits

from biaswatch.fitsbytes import MAX_HEADER_CARDS
from biaswatch.rules.nights import night_label
from biaswatch.testing.fits import fits_bytes, write_in_pieces
from biaswatch.testing.helpers import CRYO_GEOMETRY, run_cli, wait_until, write_config, write_frames
from biaswatch.testing.odd_bytes import with_cards, with_value
from biaswatch.testing.service import ServiceProcess, catalog_rows, running_service

# Dated in a night that has not ended whenever the suite runs (as test_hostile.py):
# 02:00 UTC is 20:00 in Chicago, the evening of 2030-01-14.
EVENING = dt.datetime(2030, 1, 15, 2, 0, tzinfo=dt.UTC)
NIGHT = "2030-01-14"
CHICAGO_NOON = dt.time(12, 0)


def evening() -> dt.datetime:
    """A time in EVENING's hour that moves with the real clock, so file names differ."""
    return EVENING + dt.timedelta(seconds=time.time() % 3600)


def raw(seed: int, date_obs: str | None = None) -> bytes:
    """A raw cryo bias's bytes; dated this evening unless ``date_obs`` says otherwise."""
    when = date_obs or evening().replace(tzinfo=None).isoformat(timespec="milliseconds")
    return fits_bytes(shape=CRYO_GEOMETRY.shape, seed=seed, date_obs=when)


def put(path: Path, content: bytes) -> Path:
    """Write ``content`` in three pieces, as a camera streams a readout."""
    write_in_pieces(path, content, pieces=3, delay=0.05)
    return path


def frame_rows(config: Path) -> dict[str, sqlite3.Row]:
    """The frames table keyed by file name."""
    return {Path(r["path"]).name: r for r in catalog_rows(config, "SELECT * FROM frames")}


def judged(config: Path, count: int, timeout: float = 60) -> None:
    """Wait until ``count`` frames have a verdict (anything but 'seen')."""
    sql = "SELECT * FROM frames WHERE status != 'seen'"
    wait_until(lambda: len(catalog_rows(config, sql)) >= count, timeout, f"{count} frames judged")


def status_exit(config: Path) -> int:
    """``biaswatch status`` on the config: its exit status, once its first line says why.

    Its Nagios code: 2 (CRITICAL) where the tests call it, the service being stopped; a
    crash would exit 1 with a traceback and no status line.
    """
    result = run_cli("status", "--config", config, timeout=60)
    assert result.stdout.startswith("BIASWATCH CRITICAL - service not running"), result.stderr
    return result.returncode


# --- finding 1 ------------------------------------------------------------------------


def test_frame_dated_9999_is_filed_under_its_mtime_night_and_the_service_stays_up(
    tmp_path: Path,
) -> None:
    """Frames dated 9999-12-31 and 0001-01-01 take their mtime's night with a note; 5 combine."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    # 19:00 UTC is 13:00 in Chicago, after the 12:00 rollover: night 9999-12-31, whose
    # night_end (10:00 the next day) overflowed datetime and stopped the service.
    odd = {"far_future.fits": "9999-12-31T19:00:00", "year_one.fits": "0001-01-01T00:00:00"}
    with running_service(config) as service:
        for seed, (name, date_obs) in enumerate(odd.items(), start=40):
            put(incoming / name, raw(seed, date_obs))
        good = write_frames(config, "cryo", 5, now=evening)
        service.wait_event("master.published")
        judged(config, len(odd) + len(good))
        fallbacks = {e["file"]: e["note"] for e in service.events("frame.date_fallback")}
        alive = service.proc.poll() is None
        status = service.stop()[0]
    assert (alive, status) == (True, 0)
    rows = frame_rows(config)
    for name, date_obs in odd.items():
        row = rows[name]
        mtime = dt.datetime.fromtimestamp(row["mtime_ns"] / 1e9, dt.UTC)
        night = night_label(mtime, ZoneInfo("America/Chicago"), CHICAGO_NOON).isoformat()
        assert (row["status"], row["night"]) == ("valid", night)
        assert row["note"].startswith(f"DATE-OBS {date_obs!r} outside date_range")
        assert fallbacks[str(incoming / name)] == row["note"]
    assert {rows[p.name]["status"] for p in good} == {"combined"}
    assert {rows[p.name]["night"] for p in good} == {NIGHT}


def test_stored_night_9999_is_set_aside_and_every_start_reaches_ready(tmp_path: Path) -> None:
    """An open set of night 9999-12-31 (and one of an unreadable night) in the catalog is set
    aside with its reason; the service starts 3 times, each reaching READY; status answers."""
    config = write_config(tmp_path, expected_frames=5)
    with running_service(config) as service:  # makes the catalog
        assert service.stop()[0] == 0
    stamp = "2026-12-04T12:00:00.000+00:00"
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    with db:
        db.execute(
            "INSERT INTO sets (camera, night, geometry, state, created, updated)"
            " VALUES ('cryo', '9999-12-31', '56x40-1x1', 'open', ?, ?)",
            (stamp, stamp),
        )
    assert status_exit(config) == 2  # an open set of night 9999 is shown, not a crash
    with db:
        db.execute(
            "INSERT INTO sets (camera, night, geometry, state, created, updated)"
            " VALUES ('cryo', 'the 14th', '56x40-1x1', 'open', ?, ?)",
            (stamp, stamp),
        )
    db.close()
    assert status_exit(config) == 2  # nor one whose night is not a date at all
    for start in range(3):
        service = ServiceProcess(config)
        try:
            service.wait_ready()
            if start == 0:
                aside = service.wait_event("set.set_aside")
                failed = service.wait_event("set.evaluate_failed")
            alive = service.proc.poll() is None
            assert (alive, service.stop()[0]) == (True, 0)
        finally:
            service.close()
    assert [(e["night"], e["set"]) for e in aside] == [("9999-12-31", 1)]
    assert [(e["night"], e["set"]) for e in failed] == [("the 14th", 2)]
    sets = catalog_rows(config, "SELECT night, state, reason FROM sets ORDER BY id")
    assert [(r["night"], r["state"]) for r in sets] == [
        ("9999-12-31", "insufficient"),
        ("the 14th", "insufficient"),
    ]
    assert sets[0]["reason"] == (
        "set aside: night 9999-12-31 is outside date_range [1980-01-01, 2100-01-01]"
    )
    assert sets[1]["reason"].startswith("set aside: could not be judged: ValueError:")
    assert status_exit(config) == 2


# --- finding 8 ------------------------------------------------------------------------


def test_unparsable_cards_and_bad_structure_values_are_rejected_once(tmp_path: Path) -> None:
    """Control characters in IMAGETYP, negative NAXISn and BITPIX 12: one rejection each, no
    retries, and the 5 good frames still combine."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    odd = {
        "ctrl_imagetyp.fits": (
            with_value(raw(50), "IMAGETYP", b"'BI\x01AS'"),
            """IMAGETYP card is unreadable: "IMAGETYP= 'BI\\x01AS'\"""",
        ),
        "negative_naxis1.fits": (
            with_value(raw(51), "NAXIS1", b"-56"),
            "not a FITS file: malformed FITS structure keyword: NAXIS1 = -56 is negative",
        ),
        "bitpix_12.fits": (
            with_value(raw(52), "BITPIX", b"12"),
            "not a FITS file: malformed FITS structure keyword: "
            "BITPIX = 12 is not one of 8, 16, 32, 64, -32, -64",
        ),
    }
    with running_service(config) as service:
        for name, (content, _) in odd.items():
            put(incoming / name, content)
        good = write_frames(config, "cryo", 5, now=evening)
        service.wait_event("master.published")
        judged(config, len(odd) + len(good))
        time.sleep(5)  # a retry loop (settle 0.3 s, doubling) would look 3 more times in 5 s
        events = service.events()
        assert service.stop()[0] == 0
    rows = frame_rows(config)
    for name, (_, reason) in odd.items():
        path = str(incoming / name)
        assert (rows[name]["status"], rows[name]["reason"]) == ("rejected", reason)
        about = [e["event"] for e in events if e.get("file") == path]
        assert about == ["frame.rejected"], about
    assert {rows[p.name]["status"] for p in good} == {"combined"}


# --- finding 10 -----------------------------------------------------------------------


def test_junk_and_a_huge_header_are_rejected_and_a_later_frame_still_combines(
    tmp_path: Path,
) -> None:
    """300 junk files and a 10,001-card header are all rejected; frames written after them
    make their master."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    junk = 300
    with running_service(config) as service:
        for i in range(junk):
            (incoming / f"junk_{i:03d}.fits").write_bytes(bytes([i % 251]) * 3000)
        many = put(incoming / "many_cards.fits", with_cards(raw(60), MAX_HEADER_CARDS))
        good = write_frames(config, "cryo", 5, now=evening)
        (published,) = service.wait_event("master.published")
        judged(config, junk + 1 + len(good))
        assert service.stop()[0] == 0
    rows = frame_rows(config)
    rejected = [r for name, r in rows.items() if name.startswith("junk_")]
    assert len(rejected) == junk
    assert {(r["status"], r["reason"]) for r in rejected} == {
        ("rejected", "not a FITS file: does not start with a FITS 'SIMPLE' card")
    }
    cards = rows["many_cards.fits"]
    blocks = len(fits.getheader(many).tostring()) // 2880  # FITS 4.0 sect. 3.1
    assert (cards["status"], cards["reason"]) == (
        "rejected",
        f"not a FITS file: header of {blocks} blocks holds more than {MAX_HEADER_CARDS} cards",
    )
    assert {rows[p.name]["status"] for p in good} == {"combined"}
    assert published["night"] == NIGHT
