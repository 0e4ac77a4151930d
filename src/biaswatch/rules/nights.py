"""Observing-night labels (pure, no I/O).

A night is labelled by the local date of its evening. The label changes at
``night_rollover`` local time, so an afternoon bias (15:00) and the next
morning's bias (08:00) share one label. All inputs and outputs are
timezone-aware; DATE-OBS is UTC by the FITS standard (FITS 4.0, sect. 9.1).

The functions are total over every date Python holds (0001-01-01 to
9999-12-31): a catalog may already store a night from a header dated 9999, and
a night function raising OverflowError in the main loop would stop the service
at every start. Out-of-range results clamp to the first or last instant.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

_FIRST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LAST = dt.datetime.max.replace(tzinfo=dt.UTC)


def night_label(when: dt.datetime, zone: ZoneInfo, rollover: dt.time) -> dt.date:
    """The night an aware instant belongs to: local date, minus a day before rollover."""
    try:
        local = when.astimezone(zone)
    except OverflowError:  # within a day of datetime.min or max: no local date exists
        return when.date()
    if local.time() < rollover:
        return local.date() - dt.timedelta(days=1) if local.date() > dt.date.min else dt.date.min
    return local.date()


def night_start(night: dt.date, zone: ZoneInfo, rollover: dt.time) -> dt.datetime:
    """The aware UTC instant at which ``night`` begins (its rollover)."""
    return _local_instant(night, rollover, zone)


def night_end(night: dt.date, zone: ZoneInfo, rollover: dt.time, end: dt.time) -> dt.datetime:
    """The aware UTC instant of ``end`` local time within ``night``.

    A night spans [rollover on its date, rollover the next day), so an end time
    earlier than the rollover falls on the next calendar day (10:00 the next
    morning for the defaults), a later one on the night's own date.
    """
    if end >= rollover:
        return _local_instant(night, end, zone)
    if night == dt.date.max:
        return _LAST
    return _local_instant(night + dt.timedelta(days=1), end, zone)


def _local_instant(day: dt.date, clock: dt.time, zone: ZoneInfo) -> dt.datetime:
    # A wall time inside a daylight-saving gap or overlap resolves with fold=0
    # (PEP 495): the earlier of the two instants, or the pre-transition offset.
    local = dt.datetime.combine(day, clock, tzinfo=zone)
    try:
        return local.astimezone(dt.UTC)
    except OverflowError:  # the zone's offset crosses year 1 or year 9999
        return _FIRST if day.year == dt.MINYEAR else _LAST


def parse_date_obs(value: object, time_obs: object = None) -> dt.datetime | None:
    """An aware UTC datetime from DATE-OBS (plus TIME-OBS for old date-only headers).

    Returns None when the value is missing or not an ISO-8601 date/time.
    """
    if not isinstance(value, str):
        return None
    try:
        return header_instant(value, mjd=False, time_of_day=time_obs)
    except TimeUnparsable:
        return None


# TIMESYS values astropy converts (FITS 4.0, table 30, less those it cannot): UT1 is
# taken as UTC, which it follows within 0.9 s by definition (IERS Conventions 2010,
# ch. 5), so that no IERS table has to be fetched; GPS time runs 19 s behind TAI
# (FITS 4.0, table 30), so a GPS reading is the TAI reading 19 s later.
_SCALES = {"UTC": "utc", "UT": "utc", "UT1": "utc", "TAI": "tai", "TT": "tt", "TDT": "tt"}
_SCALES |= {"ET": "tt", "TDB": "tdb", "TCG": "tcg", "TCB": "tcb", "GPS": "tai"}
_SCALES |= {"IAT": "tai", "GMT": "utc"}  # the standard's deprecated names for TAI and UTC
_TAI_MINUS_GPS = dt.timedelta(seconds=19)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class TimeUnparsable(ValueError):
    """A header time that is there but cannot be read; the message says why."""


def header_instant(
    value: object, *, mjd: bool, time_of_day: object = None, timesys: object = None
) -> dt.datetime:
    """An aware UTC instant from a header time: ISO date(time), or an MJD when ``mjd``.

    A date without a time takes it from ``time_of_day`` (TIME-OBS, UTC or UT);
    ``timesys`` (TIMESYS) names the time scale, UTC when absent (FITS 4.0, sect. 9.2.1).

    Raises:
        TimeUnparsable: the value, its time of day or the time scale cannot be read.
    """
    scale = _scale(timesys)
    text = str(value).strip().removesuffix("Z")
    if isinstance(value, bool) or not text:
        raise TimeUnparsable(f"unparsable ({value!r})")
    if not mjd and _ISO_DATE.match(text) and isinstance(time_of_day, str) and time_of_day.strip():
        text = f"{text}T{time_of_day.strip()}"
    when = _astropy_instant(text, mjd=mjd, scale=scale)
    if when is None:
        raise TimeUnparsable(f"unparsable ({text!r})")
    return when + (_TAI_MINUS_GPS if str(timesys).strip().upper() == "GPS" else dt.timedelta())


def _scale(timesys: object) -> str:
    if timesys is None or not str(timesys).strip():
        return "utc"
    scale = _SCALES.get(str(timesys).strip().upper())
    if scale is None:
        raise TimeUnparsable(f"in TIMESYS = {timesys!r}, a time scale astropy does not convert")
    return scale


def _astropy_instant(text: str, *, mjd: bool, scale: str) -> dt.datetime | None:
    # astropy.time is imported here: the combine child imports rules/ and never dates.
    import warnings

    from astropy.time import Time

    with warnings.catch_warnings():
        # ERFA warns of a "dubious year" outside 1960-now: date_range judges those.
        warnings.simplefilter("ignore")
        for fmt in ("mjd",) if mjd else ("isot", "iso", "fits"):
            try:
                value: str | float = float(text) if mjd else text
                utc = Time(value, format=fmt, scale=scale).utc
                return utc.to_datetime(timezone=dt.UTC)  # type: ignore[no-any-return]
            except (ValueError, TypeError, OverflowError):
                continue
    return None
