"""The settings tables a camera inherits: ``[*.calibrate]``, ``[*.combine]``, ``[*.qc]``.

With the value parsers they share (sizes, clock times, sections), so that config.py
holds only the file's structure: service, site, defaults and cameras.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from biaswatch.sections import SectionSource

# Decimal units first, as the seed writes mem_limit=350e6 for "350 MB".
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_CLOCK = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def parse_size(value: object) -> int:
    """Bytes from ``350MB``, ``2GiB``, ``350e6`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '350MB' or a number of bytes")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"{value!r} is not a size such as '350MB', '2GB' or bytes")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r}; use B, kB, MB, GB, KiB, MiB or GiB")
    size = int(number * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def parse_clock(value: object) -> dt.time:
    """A local wall-clock time from ``HH:MM``."""
    if isinstance(value, dt.time):
        return value
    if not isinstance(value, str) or not (match := _CLOCK.match(value.strip())):
        raise ValueError(f"{value!r} is not a local time written HH:MM (24-hour)")
    return dt.time(int(match.group(1)), int(match.group(2)))


_RELATIVE = re.compile(r"^\s*([+-][0-9]{1,5})\s*d\s*$")


@dataclass(frozen=True, slots=True)
class DateBound:
    """One end of ``date_range``: a fixed date, or a number of days from now."""

    day: dt.date | None = None
    days_from_now: int = 0

    def instant(self, now: dt.datetime, *, end: bool) -> dt.datetime:
        """The bound as an aware UTC instant; a fixed end date includes its whole day."""
        if self.day is None:
            return now + dt.timedelta(days=self.days_from_now)
        start = dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC)
        if not end:
            return start
        return start + _DAY if self.day < dt.date.max else dt.datetime.max.replace(tzinfo=dt.UTC)

    def describe(self) -> str:
        """The bound as written in the config."""
        return self.day.isoformat() if self.day is not None else f"{self.days_from_now:+d}d"


_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DateRange:
    """``date_range``: the DATE-OBS values believed; others fall back to the file's mtime."""

    earliest: DateBound
    latest: DateBound

    def contains(self, when: dt.datetime, now: dt.datetime) -> bool:
        """Whether an aware instant lies within the range (both ends included)."""
        return self.earliest.instant(now, end=False) <= when < self.latest.instant(now, end=True)

    def contains_night(self, night: dt.date, now: dt.datetime) -> bool:
        """Whether a night label could come from a date in range.

        A label is the local evening's date: a day either side of a UTC date
        (UTC-12 to UTC+14, the extreme offsets in the IANA database).
        """
        start = dt.datetime.combine(night, dt.time(), tzinfo=dt.UTC)
        low = self.earliest.instant(now, end=False) - 2 * _DAY
        high = self.latest.instant(now, end=True)
        return low <= start and (high - start) > -_DAY

    def describe(self) -> str:
        """The range as written in the config."""
        return f"[{self.earliest.describe()}, {self.latest.describe()}]"


def _parse_bound(value: object) -> DateBound:
    if isinstance(value, dt.datetime):
        return DateBound(day=value.date())
    if isinstance(value, dt.date):
        return DateBound(day=value)
    if isinstance(value, str):
        relative = _RELATIVE.match(value)
        if relative:
            return DateBound(days_from_now=int(relative.group(1)))
        try:
            return DateBound(day=dt.date.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError(f"{value!r} is neither a date (YYYY-MM-DD) nor days from now ('+1d', '-30d')")


def parse_date_range(value: object) -> DateRange:
    """``["1980-01-01", "+1d"]``: earliest and latest DATE-OBS believed."""
    if isinstance(value, DateRange):
        return value
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError('expected two bounds, e.g. ["1980-01-01", "+1d"]')
    earliest, latest = _parse_bound(value[0]), _parse_bound(value[1])
    if earliest.day is not None and latest.day is not None and earliest.day > latest.day:
        raise ValueError(f"the earliest date {earliest.describe()} is after the latest")
    if (
        earliest.day is None
        and latest.day is None
        and earliest.days_from_now > latest.days_from_now
    ):
        raise ValueError(f"{earliest.describe()} is after {latest.describe()}")
    return DateRange(earliest, latest)


# Digital CCD cameras' FITS headers begin in the late 1970s (FITS itself dates from
# 1979, Wells et al. 1981); a day ahead of now allows a camera clock a little fast.
DEFAULT_DATE_RANGE = DateRange(DateBound(day=dt.date(1980, 1, 1)), DateBound(days_from_now=1))


# --- which frames are biases, when, in which configuration (issue 13) -------

# A FITS keyword: 1-8 of A-Z 0-9 _ - (FITS 4.0, sect. 4.1.2.1), or an ESO HIERARCH
# keyword's words ("HIERARCH ESO DPR TYPE", written with or without HIERARCH).
_KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$|^[A-Z0-9_-]+( [A-Z0-9_-]+)+$")


def parse_keyword(value: object) -> str:
    """A header keyword, upper case, ``HIERARCH`` dropped (astropy looks it up without)."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a header keyword")
    text = " ".join(value.split()).upper().removeprefix("HIERARCH ")
    if len(text) > 67 or not _KEYWORD.match(text):
        raise ValueError(f"{value!r} is not a FITS keyword (1-8 of A-Z 0-9 _ -, or HIERARCH)")
    return text


RuleValue = str | float | bool


def _finite_number(value: object) -> float | None:
    """A header or rule value as a finite number, or None (never for a logical)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number == number and abs(number) != float("inf") else None
    return None


@dataclass(frozen=True, slots=True)
class BiasRule:
    """One ``bias_when`` rule: the keyword's value must be one of ``values``."""

    keyword: str
    values: tuple[RuleValue, ...]  # strings lower case and stripped, numbers as float

    def matches(self, seen: object) -> bool:
        """Whether a header value satisfies the rule (any of its values)."""
        return any(_value_matches(allowed, seen) for allowed in self.values)

    def describe(self) -> str:
        """The rule's values as TOML: one value, or a list of them."""
        shown = [_toml_value(v) for v in self.values]
        return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def _value_matches(allowed: RuleValue, seen: object) -> bool:
    if isinstance(allowed, bool):  # a FITS logical, T or F
        return isinstance(seen, bool) and seen is allowed
    if isinstance(allowed, float):  # EXPTIME = 0 matches 0, 0.0 and '0'
        return _finite_number(seen) == allowed
    if isinstance(seen, bool) or seen is None:
        return False
    if str(seen).strip().lower() == allowed:
        return True
    # A string rule that is a number ("0") still matches 0.0: what a person means.
    number = _finite_number(allowed)
    return number is not None and _finite_number(seen) == number


def _toml_value(value: RuleValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value)  # a TOML basic string: the same escapes as JSON


def _rule_value(keyword: str, value: object) -> RuleValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        number = _finite_number(value)
        if number is None:
            raise ValueError(f"{keyword}: {value!r} is not a finite number")
        return number
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    raise ValueError(f"{keyword}: {value!r} is not a string, number or true/false")


def parse_bias_when(value: object) -> tuple[BiasRule, ...]:
    """``{ OBSTYPE = "bias", EXPTIME = 0 }``: every rule must hold; a list is any of."""
    if isinstance(value, tuple) and all(isinstance(v, BiasRule) for v in value):
        return value
    if not isinstance(value, dict) or not value:
        raise ValueError('expected a table of rules, e.g. { OBSTYPE = "bias", EXPTIME = 0 }')
    rules = []
    for key, wanted in value.items():
        keyword = parse_keyword(key)
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values:
            raise ValueError(f"{keyword}: an empty list matches no frame")
        rules.append(BiasRule(keyword, tuple(_rule_value(keyword, v) for v in values)))
    return tuple(rules)


def parse_keywords(value: object) -> tuple[str, ...]:
    """A list of distinct header keywords (``date_keywords``, ``group_by``)."""
    if not isinstance(value, list | tuple):
        raise ValueError('expected a list of header keywords, e.g. ["CCDSPEED", "CCDGAIN"]')
    keywords = tuple(parse_keyword(v) for v in value)
    repeated = sorted({k for k in keywords if keywords.count(k) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once")
    return keywords


def _some_keywords(value: object) -> tuple[str, ...]:
    keywords = parse_keywords(value)
    if not keywords:
        raise ValueError("needs at least one keyword (the mtime is only a fallback)")
    return keywords


# The order of date_keywords by default: DATE-OBS is the FITS standard's start of the
# observation (FITS 4.0, sect. 9.1.1; a date-only value takes its time from TIME-OBS,
# UTC or UT, as old NOAO and ESO headers write it); DATE-BEG is its FITS 4.0 twin;
# MJD-OBS the same instant as a Modified Julian Date.
DEFAULT_DATE_KEYWORDS = ("DATE-OBS", "DATE-BEG", "MJD-OBS")

# Where a date-only DATE-OBS finds its time of day, first found first (NOAO's and
# ESO's older headers write TIME-OBS; KPNO and CTIO cameras UTC or UT).
TIME_OF_DAY_KEYWORDS = ("TIME-OBS", "UTC", "UT")

BiasWhen = Annotated[tuple[BiasRule, ...], BeforeValidator(parse_bias_when)]
Keywords = Annotated[tuple[str, ...], BeforeValidator(parse_keywords)]
DateKeywords = Annotated[tuple[str, ...], BeforeValidator(_some_keywords)]


def _parse_section_source(value: object) -> SectionSource:
    if isinstance(value, SectionSource):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string: 'none', 'header:KEYWORD' or '[x1:x2,y1:y2]'")
    return SectionSource.parse(value)


def _parse_overscan_source(value: object) -> SectionSource:
    """The camera's overscan: as any section setting, or "auto" (frames/calibrate.py)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return SectionSource("auto")
    return _parse_section_source(value)


def _parse_amplifier_section(value: object) -> SectionSource:
    """An amplifier's data or overscan: a section or "header:KEYWORD", never none or auto."""
    source = _parse_section_source(value)
    if source.kind == "none":
        raise ValueError("an amplifier needs a section '[x1:x2,y1:y2]' or 'header:KEYWORD'")
    return source


def _parse_overscan_model(value: object) -> str:
    text = str(value).strip().lower()
    if text == "median" or re.fullmatch(r"poly:[0-9]", text):
        return text
    raise ValueError(f"{value!r}: use 'median' or 'poly:N' with N from 0 to 9")


Bytes = Annotated[int, BeforeValidator(parse_size)]
Clock = Annotated[dt.time, BeforeValidator(parse_clock)]
DateRangeSetting = Annotated[DateRange, BeforeValidator(parse_date_range)]
Sections = Annotated[SectionSource, BeforeValidator(_parse_section_source)]
OverscanSections = Annotated[SectionSource, BeforeValidator(_parse_overscan_source)]
AmplifierSections = Annotated[SectionSource, BeforeValidator(_parse_amplifier_section)]
OverscanModel = Annotated[str, BeforeValidator(_parse_overscan_model)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class AmplifierSettings(_Frozen):
    """``[[*.calibrate.amplifiers]]``: one amplifier's region of an image and its own overscan."""

    # A FITS-name- and file-name-safe name: it becomes BWAN<i>, a QC card and part of labels.
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")
    data: AmplifierSections
    overscan: AmplifierSections
    # Unset: the camera's overscan_axis / overscan_model.
    overscan_axis: Literal[0, 1] | None = None
    overscan_model: OverscanModel | None = None


class CalibrateSettings(_Frozen):
    """``[*.calibrate]``: overscan subtraction and trimming (ccdproc)."""

    # "auto": BIASSEC when the HDU has it, else every column after DATASEC.
    overscan: OverscanSections = SectionSource("header", keyword="BIASSEC")
    overscan_axis: Literal[0, 1] = 1
    overscan_model: OverscanModel = "median"
    trim: Sections = SectionSource("header", keyword="TRIMSEC")
    # Several amplifiers in one image: each corrected with its own overscan, the
    # image trimmed to their data sections' bounding box (overscan and trim unused).
    amplifiers: tuple[AmplifierSettings, ...] = ()

    @model_validator(mode="after")
    def _distinct_amplifiers(self) -> CalibrateSettings:
        names = [amp.name for amp in self.amplifiers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"amplifier names must differ: {', '.join(twice)} given twice")
        return self


class CombineSettings(_Frozen):
    """``[*.combine]``: the statistics of the combine, as in ccdproc.combine."""

    method: Literal["average", "median"] = "average"
    sigma_clip: bool = True
    sigma_low: float = Field(default=5.0, gt=0)
    sigma_high: float = Field(default=5.0, gt=0)
    center: Literal["median", "mean"] = "median"
    deviation: Literal["mad_std", "std"] = "mad_std"
    maxiters: int = Field(default=1, ge=1, le=100)
    # The master's MASK and UNCERT extensions, as the seed recipe's CCDData.write
    # stores ccdproc.combine's result (issue 13); false writes the image only.
    uncertainty: bool = True


class QcSettings(_Frozen):
    """``[*.qc]``: which frames are left out of a set before its combine (rules/qc.py)."""

    # 5 robust sigma, as DESI's nightly bias screening: far beyond the scatter of
    # good frames, well inside a light leak's or a flat's offset (desispec #2737).
    outlier_sigma: float = Field(default=5.0, gt=0)
    # A bias has no saturated and no zero pixels; 1% of either is a broken frame.
    max_bad_fraction: float = Field(default=0.01, ge=0, le=1)
    # ADU at which a raw pixel counts as saturated; unset: the raw type's maximum.
    saturation: float | None = None
    ccd_temp_keyword: str = "CCD-TEMP"
    # Unset: temperatures are recorded but not judged.
    ccd_temp_setpoint: float | None = None
    ccd_temp_tolerance: float = Field(default=2.0, gt=0)
    # A master further than this from the camera's last accepted masters, in
    # robust sigmas of their level, read noise or structure, is rejected.
    master_sigma: float = Field(default=5.0, gt=0)
