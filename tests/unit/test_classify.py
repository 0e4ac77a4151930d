"""Which frames are biases (bias_when), when they were taken, and their configuration.

Issue 13, parts 4-6: real headers label biases in ways one keyword cannot express,
write the time in several keywords, and bin or read out in modes that must not
share a master. Every test reads a real small FITS file written here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.catalog.rows import FrameRecord
from biaswatch.config import CameraConfig, SiteConfig, load_config
from biaswatch.errors import ConfigError, FrameRejected
from biaswatch.frames.read import examine
from biaswatch.frames.readiness import classify, geometry, observation_time, read_frame
from biaswatch.sections import Section
from biaswatch.settings import DateRange, parse_date_range
from biaswatch.testing.camera import Geometry, camera_header, frame_bytes
from biaswatch.testing.fits import make_bias_fits
from biaswatch.testing.layouts import extensions_layout, write_layout_frame

Write = Callable[..., Path]
WIDE = parse_date_range(["1980-01-01", "2100-01-01"])
MTIME = 1_790_000_000  # 2026-09-21T14:13:20Z


def camera_from(write_config: Write, tmp_path: Path, settings: str) -> CameraConfig:
    """Camera c from a config file whose [cameras.c] table holds ``settings``."""
    (tmp_path / "raw").mkdir(exist_ok=True)
    path = write_config(
        f"""
        [service]
        state_dir = "state"
        masters_dir = "masters"
        [cameras.c]
        watch = ["raw"]
        {settings}
        """
    )
    return load_config(path).camera("c")


def frame(tmp_path: Path, name: str = "a.fits", **header: object) -> Path:
    """A one-image frame with no IMAGETYP, DATE-OBS or binning unless given in ``header``."""
    path = make_bias_fits(tmp_path / name, imagetyp=None, date_obs=None, header=header)
    os.utime(path, (MTIME, MTIME))
    return path


def kind_of(path: Path, camera: CameraConfig) -> tuple[bool, str]:
    """(is a bias, why not) for the frame at ``path``."""
    kind = classify(read_frame(path, camera).header, camera)
    return kind.is_bias, kind.reason


# --- bias_when ---------------------------------------------------------------


@pytest.mark.parametrize("exptime", [0, 0.0, "0", " 0.000 "])
def test_bias_when_numbers_compare_numerically(
    tmp_path: Path, write_config: Write, exptime: object
) -> None:
    """EXPTIME = 0 in bias_when matches 0, 0.0 and '0' in the header; strings ignore case."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "dark", EXPTIME = 0 }')
    path = frame(tmp_path, OBSTYPE=" DARK ", EXPTIME=exptime)
    assert kind_of(path, camera) == (True, "")


def test_bias_when_every_rule_must_hold(tmp_path: Path, write_config: Write) -> None:
    """A dark of 300 s shares OBSTYPE with the biases but fails EXPTIME: ignored, value named."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "dark", EXPTIME = 0 }')
    path = frame(tmp_path, OBSTYPE="DARK", EXPTIME=300.0)
    assert kind_of(path, camera) == (False, "EXPTIME = 300.0 is not a bias (bias_when wants 0)")


def test_bias_when_missing_keyword_names_it(tmp_path: Path, write_config: Write) -> None:
    """A frame without a rule's keyword (ELAPTIME) is not a bias and the reason names it."""
    settings = 'bias_when = { OBJECT = "bias", ELAPTIME = 0 }'
    camera = camera_from(write_config, tmp_path, settings)
    path = frame(tmp_path, OBJECT="bias", OBSTYPE="dark")
    assert kind_of(path, camera) == (False, "missing ELAPTIME keyword, which bias_when needs")


def test_bias_when_list_means_any_of(tmp_path: Path, write_config: Write) -> None:
    """A list of values matches any of them; other values are named in the reason."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { IMAGETYP = ["zero", "bias"] }')
    assert kind_of(frame(tmp_path, "z.fits", IMAGETYP="Zero"), camera) == (True, "")
    assert kind_of(frame(tmp_path, "f.fits", IMAGETYP="flat"), camera) == (
        False,
        'IMAGETYP = \'flat\' is not a bias (bias_when wants ["zero", "bias"])',
    )


def test_bias_when_replaces_imagetyp_rule(tmp_path: Path, write_config: Write) -> None:
    """With bias_when, a frame lacking IMAGETYP is judged by the rules, not rejected."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "Bias" }')
    assert kind_of(frame(tmp_path, OBSTYPE="BIAS"), camera) == (True, "")


def test_keywords_are_found_in_the_primary(tmp_path: Path, write_config: Write) -> None:
    """A rule's keyword in the primary header of an extension frame is found (merged header)."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "bias" }')
    path = tmp_path / "e.fits"
    primary = fits.PrimaryHDU()
    primary.header["OBSTYPE"] = "bias"
    image = fits.ImageHDU(np.full((8, 8), 1000, np.uint16), name="SCI")
    fits.HDUList([primary, image]).writeto(path)
    assert kind_of(path, camera) == (True, "")


def test_without_bias_when_imagetyp_rule_is_unchanged(tmp_path: Path, camera: CameraConfig) -> None:
    """Without bias_when, a frame lacking IMAGETYP is still rejected as before."""
    with pytest.raises(FrameRejected, match="missing IMAGETYP keyword"):
        kind_of(frame(tmp_path, OBSTYPE="bias"), camera)


def test_camera_bias_when_replaces_the_default(tmp_path: Path, write_config: Write) -> None:
    """A camera's bias_when replaces [defaults]' whole: the rules are not merged."""
    (tmp_path / "raw").mkdir()
    path = write_config(
        """
        [defaults]
        bias_when = { IMAGETYP = "zero" }
        [cameras.c]
        watch = ["raw"]
        bias_when = { OBSTYPE = "bias" }
        [cameras.d]
        watch = ["raw2"]
        """
    )
    (tmp_path / "raw2").mkdir()
    config = load_config(path)
    assert [r.keyword for r in config.camera("c").bias_when or ()] == ["OBSTYPE"]
    assert [r.keyword for r in config.camera("d").bias_when or ()] == ["IMAGETYP"]


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("bias_when = {}", "expected a table of rules"),
        ("bias_when = { OBSTYPE = [] }", "OBSTYPE: an empty list matches no frame"),
        ('bias_when = { "OBS TYPE!" = "bias" }', "is not a FITS keyword"),
        ("bias_when = { EXPTIME = { a = 1 } }", "is not a string, number or true/false"),
        ('group_by = ["CCDGAIN", "ccdgain"]', "CCDGAIN listed more than once"),
        ("date_keywords = []", "needs at least one keyword"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, write_config: Write, setting: str, problem: str
) -> None:
    """A bias_when, group_by or date_keywords that cannot work is a config error naming the key."""
    with pytest.raises(ConfigError) as caught:
        camera_from(write_config, tmp_path, setting)
    key = setting.split(" ", 1)[0]
    assert any(f"[cameras.c] {key}:" in p and problem in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_hierarch_keyword_rule(tmp_path: Path, write_config: Write) -> None:
    """An ESO HIERARCH keyword ('ESO DPR TYPE') can be a rule, with or without HIERARCH."""
    settings = 'bias_when = { "HIERARCH ESO DPR TYPE" = "BIAS" }'
    camera = camera_from(write_config, tmp_path, settings)
    assert kind_of(frame(tmp_path, **{"HIERARCH ESO DPR TYPE": "BIAS"}), camera) == (True, "")


# --- the time of observation ---------------------------------------------------


def when(path: Path, camera: CameraConfig, date_range: DateRange = WIDE) -> tuple[str, str | None]:
    """(ISO UTC instant, note) that the frame at ``path`` is dated with."""
    raw = read_frame(path, camera)
    instant, note = observation_time(raw, date_range, None, camera.date_keywords)
    return instant.isoformat(), note


@pytest.mark.parametrize("keyword", ["TIME-OBS", "UTC", "UT"])
def test_date_only_takes_the_time_of_day(
    tmp_path: Path, camera: CameraConfig, keyword: str
) -> None:
    """DATE-OBS with a date only takes its time from TIME-OBS, UTC or UT."""
    path = frame(tmp_path, **{"DATE-OBS": "2013-05-07", keyword: "03:04:05.5"})
    assert when(path, camera) == ("2013-05-07T03:04:05.500000+00:00", None)


def test_timesys_tai_is_converted_to_utc(tmp_path: Path, camera: CameraConfig) -> None:
    """A DATE-OBS in TAI (TIMESYS) is 37 s ahead of UTC in 2026 (IERS Bulletin C)."""
    path = frame(tmp_path, **{"DATE-OBS": "2026-11-25T02:00:00", "TIMESYS": "TAI"})
    assert when(path, camera) == ("2026-11-25T01:59:23+00:00", None)


@pytest.mark.parametrize(
    ("timesys", "utc"),
    [("TT", "01:58:50.816000"), ("GPS", "01:59:42"), ("UTC", "02:00:00"), ("UT1", "02:00:00")],
)
def test_other_time_scales_are_converted(
    tmp_path: Path, camera: CameraConfig, timesys: str, utc: str
) -> None:
    """TT is TAI + 32.184 s, GPS is TAI - 19 s: 02:00 in each is this UTC in 2026 (TAI-UTC 37 s)."""
    path = frame(tmp_path, **{"DATE-OBS": "2026-11-25T02:00:00", "TIMESYS": timesys})
    assert when(path, camera) == (f"2026-11-25T{utc}+00:00", None)


def test_date_beg_and_mjd_obs_are_understood(tmp_path: Path, camera: CameraConfig) -> None:
    """Without DATE-OBS, DATE-BEG dates the frame; without both, MJD-OBS (56419.5 = noon)."""
    beg = frame(tmp_path, "b.fits", **{"DATE-BEG": "2013-05-07T01:00:00", "MJD-OBS": 1.0})
    mjd = frame(tmp_path, "m.fits", **{"MJD-OBS": 56419.5})
    assert when(beg, camera) == ("2013-05-07T01:00:00+00:00", None)
    assert when(mjd, camera) == ("2013-05-07T12:00:00+00:00", None)


def test_unparsable_date_obs_is_said_so(tmp_path: Path, camera: CameraConfig) -> None:
    """An unparsable DATE-OBS falls back to the mtime, the note saying 'unparsable'."""
    path = frame(tmp_path, **{"DATE-OBS": "2026-13-45T00:00:00"})
    assert when(path, camera) == (
        "2026-09-21T14:13:20+00:00",
        "DATE-OBS unparsable ('2026-13-45T00:00:00'): night taken from file mtime "
        "2026-09-21T14:13:20Z",
    )


def test_unparsable_date_obs_gives_way_to_mjd_obs(tmp_path: Path, camera: CameraConfig) -> None:
    """A later keyword that parses dates the frame when an earlier one cannot."""
    path = frame(tmp_path, **{"DATE-OBS": "soon", "MJD-OBS": 56419.5})
    assert when(path, camera) == ("2013-05-07T12:00:00+00:00", None)


def test_unknown_timesys_names_it(tmp_path: Path, camera: CameraConfig) -> None:
    """A time scale astropy cannot convert is the fallback's reason, with its value."""
    path = frame(tmp_path, **{"DATE-OBS": "2026-11-25T02:00:00", "TIMESYS": "MARS"})
    note = when(path, camera)[1]
    assert note is not None
    assert note.startswith("DATE-OBS in TIMESYS = 'MARS', a time scale astropy does not convert")


def test_date_keywords_order_is_configurable(tmp_path: Path, write_config: Write) -> None:
    """date_keywords = ["MJD-OBS", "DATE-OBS"] prefers MJD-OBS when both are there."""
    camera = camera_from(write_config, tmp_path, 'date_keywords = ["MJD-OBS", "DATE-OBS"]')
    path = frame(tmp_path, **{"DATE-OBS": "2013-05-07T01:00:00", "MJD-OBS": 56419.5})
    assert when(path, camera) == ("2013-05-07T12:00:00+00:00", None)


# --- binning and group_by --------------------------------------------------------


def label(path: Path, camera: CameraConfig) -> str:
    """The geometry label of a one-segment frame."""
    raw = read_frame(path, camera)
    rows, cols = raw.image.shape
    return geometry(raw.header, [("", (rows, cols))], camera).label()


@pytest.mark.parametrize(
    ("cards", "binning"),
    [
        ({"CCDSUM": "1 2"}, "1x2"),
        ({"CCDSUM": "2 1", "XBINNING": 1}, "2x1"),  # CCDSUM first
        ({"XBINNING": 2}, "2x1"),
        ({"BINNING": "2x2"}, "2x2"),
        ({"BINNING": "3"}, "3x3"),
        ({"BINNING": 4}, "4x4"),
        ({}, "1x1"),
    ],
)
def test_binning_is_read_from_whichever_keyword(
    tmp_path: Path, camera: CameraConfig, cards: Mapping[str, object], binning: str
) -> None:
    """Binning comes from CCDSUM ('x y'), XBINNING/YBINNING or BINNING, in that order."""
    assert label(frame(tmp_path, **cards), camera) == f"48x40-{binning}"


@pytest.mark.parametrize(
    ("cards", "problem"),
    [({"CCDSUM": "1"}, "CCDSUM = '1' is not binning"), ({"BINNING": "2x0"}, "BINNING = 0")],
)
def test_bad_binning_is_the_frames_error(
    tmp_path: Path, camera: CameraConfig, cards: Mapping[str, object], problem: str
) -> None:
    """A binning keyword that is not binning rejects the frame, naming it."""
    with pytest.raises(FrameRejected, match=problem):
        label(frame(tmp_path, **cards), camera)


def test_group_by_values_split_labels(tmp_path: Path, write_config: Write) -> None:
    """Two readout speeds give two labels, each naming its value; a missing one is marked."""
    camera = camera_from(write_config, tmp_path, 'group_by = ["CCDSPEED", "CCDGAIN"]')
    fast = frame(tmp_path, "f.fits", CCDSPEED="FAST", CCDGAIN=2)
    slow = frame(tmp_path, "s.fits", CCDSPEED="SLOW", CCDGAIN=2.0)
    bare = frame(tmp_path, "b.fits", CCDSPEED="SLOW")
    assert label(fast, camera) == "48x40-1x1-CCDSPEED_FAST-CCDGAIN_2"
    assert label(slow, camera) == "48x40-1x1-CCDSPEED_SLOW-CCDGAIN_2"
    assert label(bare, camera) == "48x40-1x1-CCDSPEED_SLOW-noCCDGAIN"


def test_group_by_unsafe_values_stay_distinct(tmp_path: Path, write_config: Write) -> None:
    """Values that differ only in characters a file name cannot hold still give two labels."""
    camera = camera_from(write_config, tmp_path, 'group_by = ["READ-SPD"]')
    one = label(frame(tmp_path, "a.fits", **{"READ-SPD": "1 MHz"}), camera)
    two = label(frame(tmp_path, "b.fits", **{"READ-SPD": "1/MHz"}), camera)
    assert one != two
    assert one.startswith("48x40-1x1-READ-SPD_1_MHz-")
    assert all(c.isalnum() or c in "._-" for c in one + two)


# --- segments in the label ---------------------------------------------------------


def segments_of(path: Path, camera: CameraConfig) -> list[tuple[str, tuple[int, int]]]:
    """Each image HDU's segment name and raw (rows, cols), as the reader gives them."""
    return [(part.name, part.image.shape) for part in read_frame(path, camera).images()]


def mef(path: Path, names: list[str], shape: tuple[int, int] = (16, 12)) -> Path:
    """A raw frame of one image HDU per name (testing.layouts), each ``shape`` (rows, cols)."""
    rows, cols = shape
    layout = extensions_layout(
        len(names), rows=rows, data_cols=cols - 4, overscan_cols=4, names=names
    )
    return write_layout_frame(path, layout)


def test_segments_make_readable_distinct_labels(tmp_path: Path, camera: CameraConfig) -> None:
    """Three CCDs give a label naming them; other names, counts or shapes give other labels."""

    def mef_label(name: str, names: list[str], shape: tuple[int, int] = (16, 12)) -> str:
        path = mef(tmp_path / name, names, shape)
        raw = read_frame(path, camera)
        return geometry(raw.header, segments_of(path, camera), camera).label()

    three = mef_label("a.fits", ["CCD1", "CCD2", "CCD3"])
    assert three == "3x12x16-1x1-CCD1.CCD2.CCD3"
    others = {
        mef_label("b.fits", ["CCD1", "CCD2"]),
        mef_label("c.fits", ["CCD1", "CCD2", "CCD4"]),
        mef_label("d.fits", ["CCD1", "CCD2", "CCD3"], (16, 10)),
    }
    assert three not in others and len(others) == 3


# --- through examine(): the frame's record ------------------------------------------


def record_of(path: Path, camera: CameraConfig, tmp_path: Path) -> FrameRecord:
    """The catalog record examine() makes of the frame at ``path``."""
    return examine(read_frame(path, camera), camera, SiteConfig(), tmp_path / "work")


def test_a_dark_of_300_s_is_ignored_with_its_value(tmp_path: Path, write_config: Write) -> None:
    """A frame failing bias_when is recorded ignored (not rejected), its type and reason kept."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "dark", EXPTIME = 0 }')
    record = record_of(frame(tmp_path, OBSTYPE="DARK", EXPTIME=300), camera, tmp_path)
    assert (record.status, record.imagetyp) == ("ignored", "DARK")
    assert record.reason == "EXPTIME = 300 is not a bias (bias_when wants 0)"


def test_a_frame_lacking_a_rule_keyword_is_ignored(tmp_path: Path, write_config: Write) -> None:
    """A frame called 'bias' but without ELAPTIME is ignored, the reason naming ELAPTIME."""
    settings = 'bias_when = { OBJECT = "bias", ELAPTIME = 0 }'
    camera = camera_from(write_config, tmp_path, settings)
    record = record_of(frame(tmp_path, OBJECT="bias", OBSTYPE="dark"), camera, tmp_path)
    assert (record.status, record.imagetyp) == ("ignored", "bias")
    assert record.reason == "missing ELAPTIME keyword, which bias_when needs"


def test_binned_zero_with_date_in_ut_is_calibrated_in_its_night(
    tmp_path: Path, write_config: Write
) -> None:
    """IMAGETYP 'zero', CCDSUM '2 1' and DATE-OBS date + UT: valid, labelled 2x1, night from UT."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { IMAGETYP = "zero" }')
    cards = {"IMAGETYP": "zero", "CCDSUM": "2 1", "DATE-OBS": "2013-05-07", "UT": "03:00:00"}
    record = record_of(frame(tmp_path, **cards), camera, tmp_path)
    assert (record.status, record.note) == ("valid", None)
    assert record.geometry == "48x40-2x1"
    # 03:00 UTC is 22:00 CDT on the 6th: the night of 2013-05-06 (America/Chicago).
    assert (record.date_obs, record.night) == ("2013-05-07T03:00:00+00:00", "2013-05-06")


def test_a_rejected_frame_keeps_the_bias_when_type(tmp_path: Path, write_config: Write) -> None:
    """A bias whose TRIMSEC has a step is rejected, its record keeping OBSTYPE as its type."""
    camera = camera_from(write_config, tmp_path, 'bias_when = { OBSTYPE = "bias" }')
    path = frame(tmp_path, OBSTYPE="Bias", TRIMSEC="[1:40:2,*]")
    record = record_of(path, camera, tmp_path)
    assert (record.status, record.imagetyp) == ("rejected", "Bias")
    assert record.reason is not None and "has a step" in record.reason


def test_simulated_frames_satisfy_bias_when(tmp_path: Path, write_config: Write) -> None:
    """simulate writes each bias_when rule's first value, so its frames are biases there."""
    settings = 'bias_when = { OBSTYPE = ["dark", "zero"], EXPTIME = 0, "ESO DPR TYPE" = "bias" }'
    camera = camera_from(write_config, tmp_path, settings)
    geometry = Geometry(rows=8, cols=10, biassec=Section(9, 10, 1, 8), trimsec=Section(1, 8, 1, 8))
    header = camera_header(camera, geometry, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), 0)
    path = tmp_path / "sim.fits"
    path.write_bytes(frame_bytes(np.zeros((8, 10), np.uint16), header))
    assert kind_of(path, camera) == (True, "")
