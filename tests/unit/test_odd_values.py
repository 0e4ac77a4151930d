"""Odd values a frame, a header or a stored row may hold (issue 11, findings 1, 8, 10): units.

The real-service side of the same findings is in test_odd_data.py.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import example, given
from hypothesis import strategies as st

from biaswatch.catalog.record import record_frames
from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.errors import ConfigError, FrameRejected
from biaswatch.fitsbytes import MAX_HEADER_CARDS, fits_status
from biaswatch.frames.calibrate import calibrated_header
from biaswatch.frames.intake import Intake
from biaswatch.frames.read import examine
from biaswatch.frames.readiness import classify, observation_time, read_frame
from biaswatch.rules.nights import night_end, night_label, night_start
from biaswatch.settings import parse_date_range
from biaswatch.testing.fits import fits_bytes
from biaswatch.testing.odd_bytes import with_cards, with_value

ZONES = [ZoneInfo(z) for z in ("UTC", "America/Chicago", "Pacific/Kiritimati", "Etc/GMT+12")]
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


# --- finding 1: dates ------------------------------------------------------------


@example(night=dt.date.max, zone=ZONES[1], rollover=dt.time(12), end=dt.time(11, 59))
@example(night=dt.date.max, zone=ZONES[2], rollover=dt.time(0), end=dt.time(23))
@example(night=dt.date.min, zone=ZONES[3], rollover=dt.time(12), end=dt.time(11))
@given(
    night=st.dates(),
    zone=st.sampled_from(ZONES),
    rollover=st.times(),
    end=st.times(),
)
def test_night_functions_are_total(
    night: dt.date, zone: ZoneInfo, rollover: dt.time, end: dt.time
) -> None:
    """night_start and night_end answer an aware instant for every date, 0001 to 9999."""
    assert night_start(night, zone, rollover).tzinfo is not None
    assert night_end(night, zone, rollover, end).tzinfo is not None


@example(when=dt.datetime.max.replace(tzinfo=dt.UTC), zone=ZONES[2])
@example(when=dt.datetime.min.replace(tzinfo=dt.UTC), zone=ZONES[3])
@example(when=dt.datetime.min.replace(tzinfo=dt.UTC), zone=ZONES[0])
@given(when=st.datetimes(timezones=st.just(dt.UTC)), zone=st.sampled_from(ZONES))
def test_night_label_is_total(when: dt.datetime, zone: ZoneInfo) -> None:
    """night_label answers a date for every aware instant, the extremes included."""
    assert isinstance(night_label(when, zone, dt.time(12, 0)), dt.date)


def test_night_9999_ends_at_the_last_instant() -> None:
    """The stored night 9999-12-31 of finding 1 ends at datetime.max, not in OverflowError."""
    end = night_end(dt.date(9999, 12, 31), ZoneInfo("UTC"), dt.time(12, 0), dt.time(11, 59))
    assert end == dt.datetime.max.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "inside", "outside"),
    [
        (["1980-01-01", "+1d"], NOW + dt.timedelta(hours=23), NOW + dt.timedelta(hours=25)),
        (
            [dt.date(2000, 1, 1), "2026-12-04"],
            dt.datetime(2026, 12, 4, 23, tzinfo=dt.UTC),
            NOW.replace(year=1999),
        ),
        (["-30d", "+0d"], NOW - dt.timedelta(days=29), NOW - dt.timedelta(days=31)),
    ],
)
def test_date_range_forms(value: list[object], inside: dt.datetime, outside: dt.datetime) -> None:
    """date_range takes ISO dates, TOML dates and days from now; a fixed end includes its day."""
    date_range = parse_date_range(value)
    assert date_range.contains(inside, NOW)
    assert not date_range.contains(outside, NOW)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["1980-01-01"]', "expected two bounds"),
        ('["yesterday", "+1d"]', "'yesterday' is neither a date"),
        ('["2020-01-01", "1990-01-01"]', "the earliest date 2020-01-01 is after the latest"),
    ],
)
def test_bad_date_range_is_a_config_error(tmp_path: Path, value: str, message: str) -> None:
    """A date_range that cannot be used is a ConfigError naming the key and why."""
    from biaswatch.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(f'[defaults]\ndate_range = {value}\n[cameras.a]\nwatch = ["in"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("[defaults] date_range" in p and message in p for p in caught.value.problems)


def test_date_range_is_set_per_camera(tmp_path: Path) -> None:
    """A camera's own date_range overrides [defaults]; the default is [1980-01-01, +1d]."""
    from biaswatch.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(
        '[cameras.a]\nwatch = ["in"]\n'
        '[cameras.b]\nwatch = ["in2"]\ndate_range = ["2020-01-01", "+2d"]\n'
    )
    config = load_config(path)
    assert config.camera("a").date_range.describe() == "[1980-01-01, +1d]"
    assert config.camera("b").date_range.describe() == "[2020-01-01, +2d]"


@pytest.mark.parametrize(
    "date_obs", ["9999-12-31T13:00:00", "0001-01-01T00:00:00", "1979-12-31T23:59:59"]
)
def test_implausible_date_obs_falls_back_to_mtime(
    tmp_path: Path, camera: CameraConfig, date_obs: str
) -> None:
    """A DATE-OBS outside date_range is not believed: the mtime is used and the note says why."""
    path = tmp_path / "a.fits"
    path.write_bytes(fits_bytes(date_obs=date_obs))
    os.utime(path, (1_790_000_000, 1_790_000_000))
    when, note = observation_time(read_frame(path, camera), camera.date_range)
    assert when == dt.datetime.fromtimestamp(1_790_000_000, dt.UTC)
    assert note == (
        f"DATE-OBS {date_obs!r} outside date_range [1980-01-01, +1d]: "
        "night taken from file mtime 2026-09-21T14:13:20Z"
    )


def test_frame_dated_9999_is_calibrated_into_its_mtime_night(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """examine() files a frame dated 9999 under the night of its mtime, with the note."""
    path = tmp_path / "a.fits"
    path.write_bytes(fits_bytes(date_obs="9999-12-31T13:00:00"))
    os.utime(path, (1_790_000_000, 1_790_000_000))  # 2026-09-21 14:13 UTC: 09:13 CDT
    record = examine(read_frame(path, camera), camera, SiteConfig(), tmp_path / "work")
    assert (record.status, record.night) == ("valid", "2026-09-20")
    assert record.note is not None and "outside date_range" in record.note


# --- finding 8: headers that break the reject path, structure values out of range ---


def test_control_character_in_imagetyp_is_rejected_once_with_the_card(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """An unparsable IMAGETYP is a rejection naming the card; the reject path itself holds."""
    path = tmp_path / "a.fits"
    path.write_bytes(with_value(fits_bytes(), "IMAGETYP", b"'BI\x01AS'"))
    frame = read_frame(path, camera)
    with pytest.raises(FrameRejected, match="IMAGETYP card is unreadable"):
        classify(frame.header, camera)
    record = examine(frame, camera, SiteConfig(), tmp_path / "work")
    assert (record.status, record.imagetyp) == ("rejected", None)
    assert record.reason is not None
    assert record.reason == "IMAGETYP card is unreadable: \"IMAGETYP= 'BI\\x01AS'\""


def test_control_character_in_another_card_is_left_out_of_the_calibrated_copy(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """A bias whose OBSERVER card holds a control character is calibrated without that card."""
    path = tmp_path / "a.fits"
    path.write_bytes(with_value(fits_bytes(header={"OBSERVER": "x"}), "OBSERVER", b"'A\x07B'"))
    record = examine(read_frame(path, camera), camera, SiteConfig(), tmp_path / "work")
    assert record.status == "valid"
    assert record.calibrated is not None
    written = fits.getheader(record.calibrated)
    assert "OBSERVER" not in written
    assert written["IMAGETYP"] == "BIAS"


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("NAXIS1", b"-56", "NAXIS1 = -56 is negative"),
        ("NAXIS2", b"-1", "NAXIS2 = -1 is negative"),
        ("BITPIX", b"12", "BITPIX = 12 is not one of 8, 16, 32, 64, -32, -64"),
        ("NAXIS", b"1000", "NAXIS = 1000 is not between 0 and 999"),
    ],
)
def test_structure_values_out_of_range_are_not_fits(
    tmp_path: Path, keyword: str, value: bytes, reason: str
) -> None:
    """Negative NAXISn, an unknown BITPIX or NAXIS over 999 make a file 'not FITS', with why."""
    path = tmp_path / "a.fits"
    path.write_bytes(with_value(fits_bytes(shape=(40, 56)), keyword, value))
    status = fits_status(path)
    assert (status.state, status.detail) == (
        "not_fits",
        f"malformed FITS structure keyword: {reason}",
    )


# --- finding 10: header size, and junk in bulk ---------------------------------------


def test_header_over_the_card_limit_is_rejected_with_the_count(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """A header of more than MAX_HEADER_CARDS cards is rejected, the count in the reason."""
    path = tmp_path / "a.fits"
    path.write_bytes(with_cards(fits_bytes(), MAX_HEADER_CARDS))
    frame = read_frame(path, camera)
    record = examine(frame, camera, SiteConfig(), tmp_path / "work")
    assert (record.status, record.reason) == (
        "rejected",
        f"header holds {len(frame.header)} cards, more than {MAX_HEADER_CARDS}",
    )
    assert len(frame.header) > MAX_HEADER_CARDS == 10_000


def test_calibrated_header_keeps_every_ordinary_card_in_order() -> None:
    """calibrated_header keeps all non-layout cards, duplicates and order included."""
    raw = fits.Header(
        [("BIASSEC", "[1:2,1:2]"), ("A", 1), ("HISTORY", "h1"), ("B", 2), ("HISTORY", "h2")]
    )
    kept = calibrated_header(raw)
    assert [(c.keyword, c.value) for c in kept.cards] == [
        ("A", 1),
        ("HISTORY", "h1"),
        ("B", 2),
        ("HISTORY", "h2"),
    ]


def test_junk_files_are_all_rejected_in_one_poll(tmp_path: Path, camera: CameraConfig) -> None:
    """Settled junk needs no worker: one poll rejects all of it, not two files per turn."""
    for i in range(40):
        (tmp_path / f"junk_{i}.fits").write_bytes(os.urandom(3000))
    intake = Intake(
        {camera.name: camera},
        SiteConfig(),
        tmp_path / "work",
        excluded=(),
        known=lambda *_: False,
        wake=lambda: None,
    )
    assert intake.scan(camera, tmp_path, now=0.0) == 40
    assert intake.poll(now=0.0) == []  # first look: sizes recorded
    finished = intake.poll(now=10.0)
    intake.close()
    assert len(finished) == 40
    assert {r.status for r in finished} == {"rejected"}


def test_set_less_records_share_one_transaction_in_order(tmp_path: Path) -> None:
    """record_frames writes a run of rejected records in one commit and keeps their order."""
    catalog = Catalog(tmp_path / "catalog.sqlite")
    commits: list[str] = []
    catalog._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    path = str(tmp_path / "a.fits")
    records = [
        FrameRecord(str(tmp_path / f"j{i}.fits"), "cryo", 1, 1, "rejected", reason="junk")
        for i in range(50)
    ]
    records += [
        FrameRecord(path, "cryo", 1, 1, "rejected", reason="first"),
        FrameRecord(path, "cryo", 1, 2, "ignored", reason="last"),
    ]
    assert record_frames(catalog, records) == []
    assert len(commits) == 1
    row = catalog.frame(Path(path))
    catalog.close()
    assert row is not None
    assert (row["status"], row["reason"]) == ("ignored", "last")
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 51
    db.close()


def test_unparsable_section_card_is_rejected_naming_the_card(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """A BIASSEC card astropy cannot parse rejects the frame with the card, not a traceback."""
    path = tmp_path / "a.fits"
    path.write_bytes(with_value(fits_bytes(), "BIASSEC", b"'[49:\x1b56,1:40]'"))
    record = examine(read_frame(path, camera), camera, SiteConfig(), tmp_path / "work")
    assert record.status == "rejected"
    assert record.reason is not None
    assert record.reason.startswith("BIASSEC card is unreadable: ")


def test_unparsable_ccd_temp_is_recorded_as_unknown(tmp_path: Path, camera: CameraConfig) -> None:
    """A CCD-TEMP card astropy cannot parse leaves the temperature unknown; the bias is kept."""
    path = tmp_path / "a.fits"
    content = with_value(fits_bytes(header={"CCD-TEMP": -100.0}), "CCD-TEMP", b"'-1\x0200'")
    path.write_bytes(content)
    record = examine(read_frame(path, camera), camera, SiteConfig(), tmp_path / "work")
    assert record.status == "valid"
    assert record.qc is not None
    assert record.qc.ccd_temp is None


def test_header_of_too_many_blocks_is_refused_before_astropy_reads_it(tmp_path: Path) -> None:
    """fits_status refuses a header whose blocks must hold more than MAX_HEADER_CARDS cards.

    20,014 cards and END fill 556 blocks of 36 (FITS 4.0 sect. 3.1).
    """
    path = tmp_path / "a.fits"
    path.write_bytes(with_cards(fits_bytes(), 20_000))
    status = fits_status(path)
    assert (status.state, status.detail) == (
        "not_fits",
        f"header of 556 blocks holds more than {MAX_HEADER_CARDS} cards",
    )


def test_primary_keywords_join_the_image_header_once(tmp_path: Path, camera: CameraConfig) -> None:
    """An extension frame's header gets each primary keyword it lacks, the first card of each."""
    primary = fits.PrimaryHDU()
    primary.header["OBSERVER"] = "first"
    primary.header.extend(
        [(f"K{i:05d}", i) for i in range(3)] + [("HISTORY", "a"), ("HISTORY", "b")]
    )
    image = fits.ImageHDU(np.zeros((4, 4), np.uint16), name="SCI")
    image.header["OBSERVER"] = "image"
    path = tmp_path / "a.fits"
    fits.HDUList([primary, image]).writeto(path)
    header = read_frame(path, camera).header
    assert header["OBSERVER"] == "image"
    assert [header["K00000"], header["K00002"]] == [0, 2]
    assert list(header["HISTORY"]) == ["a"]
