"""Masters for other people's reduction code: find, list and read them from Python.

::

    from biaswatch.calibrations import master_for, read_master

    path = master_for("cryo", like="science_0042.fits")  # its time from DATE-OBS
    bias = read_master(path)  # CCDData with its MASK and UNCERT
    science = ccdproc.subtract_bias(CCDData.read("science_0042.fits", unit="adu"), bias)

Everything here only reads: the catalog is opened read-only (catalog/open.py), nothing is
created, and it works while the service runs and for a user who may read the state and
masters directories but not write them. The configuration is found as the commands find
it (biaswatch.discovery): ``config=``, else ``$BIASWATCH_CONFIG``, else
/etc/biaswatch/config.toml, else ./config.toml.

A master is chosen as ``biaswatch masters --for`` chooses one (rules/matching.py): only
accepted masters, of the frame's configuration when ``like`` is given, within the camera's
``max_age_days`` of the frame's time, the nearest night first. :func:`explain` returns every
candidate's decision; :class:`NoMasterFound` carries them when nothing fits.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from biaswatch.catalog.open import open_reading
from biaswatch.catalog.rows import MasterRow
from biaswatch.config import Config, load_config
from biaswatch.discovery import existing_config
from biaswatch.rules.matching import (
    MatchCandidate,
    MatchDecision,
    MatchRequest,
    chosen_of,
    explain_match,
    nearest_too_old,
)
from biaswatch.rules.nights import night_label, night_start
from biaswatch.rules.qc import MasterQC
from biaswatch.system.overlaps import compared_as_written

if TYPE_CHECKING:
    from astropy.io import fits
    from astropy.nddata import CCDData

__all__ = [
    "MasterRecord",
    "Match",
    "NoMasterFound",
    "explain",
    "master_for",
    "masters",
    "read_master",
]

PathLike = str | os.PathLike[str]


class _HasDatetime(Protocol):
    """An astropy ``Time`` as far as it is used here (no import of astropy.time)."""

    def to_datetime(self, timezone: dt.tzinfo | None = ...) -> dt.datetime: ...


When = dt.datetime | str | _HasDatetime


@dataclass(frozen=True)
class MasterRecord:
    """One published master as the catalog records it."""

    camera: str
    night: dt.date
    sequence: int
    path: Path
    state: str  # "accepted" or "rejected"
    configuration: str  # the geometry label (binning, segments, group_by values)
    ncombine: int
    created: dt.datetime
    judged_by: str | None  # "biaswatch" or the person who accepted or rejected it
    judgement: str | None  # why (rules/acceptance.py, or the person's words)
    qc: MasterQC | None
    segments: tuple[tuple[str, MasterQC], ...]  # each segment's QC; () for one image


class NoMasterFound(LookupError):
    """No master fits the request; ``match`` holds every candidate's decision."""

    def __init__(self, message: str, match: Match | None = None) -> None:
        super().__init__(message)
        self.match = match


@dataclass(frozen=True)
class Match:
    """The outcome of a request: the chosen master (or None) and every candidate's decision."""

    request: MatchRequest
    decisions: tuple[MatchDecision, ...]
    camera: str

    @property
    def chosen(self) -> Path | None:
        """The chosen master's path, or None when no candidate fits."""
        decision = chosen_of(self.decisions)
        return None if decision is None else Path(decision.candidate.path)

    def lines(self) -> list[str]:
        """The explanation as text: a heading, then one line per candidate."""
        request = self.request
        like = "" if request.configuration is None else f", configuration {request.configuration}"
        lines = [
            f"candidates for camera {self.camera} at {request.when.isoformat()} (night "
            f"{request.night}{like}, max_age_days = {request.max_age_days:g}):"
        ]
        if not self.decisions:
            lines.append("  (no masters)")
        for d in self.decisions:
            c = d.candidate
            lines.append(f"  {d.outcome:<19} {c.path}  (night {c.night} #{c.sequence}): {d.reason}")
        return lines

    def why_none(self, when_text: str | None = None, like_name: str | None = None) -> str:
        """Why no master fits, in one line: the nearest one refused only for its age, if any."""
        old = nearest_too_old(self.decisions)
        when_text = when_text or self.request.when.isoformat()
        if old is not None:
            side = "older" if old.age_days > 0 else "newer"
            return (
                f"no master: the nearest accepted one, {old.candidate.path}, is "
                f"{abs(old.age_days):.1f} days {side} than {when_text} "
                f"(max_age_days = {self.request.max_age_days:g})"
            )
        like = "" if like_name is None else f" of {like_name}'s configuration"
        return f"no accepted master for camera {self.camera}{like}"

    def as_json(self) -> dict[str, object]:
        """The request, the chosen path (or null) and every decision, as plain JSON types."""
        request, chosen = self.request, self.chosen
        return {
            "for": request.when.isoformat(),
            "night": request.night.isoformat(),
            "configuration": request.configuration,
            "max_age_days": request.max_age_days,
            "chosen": None if chosen is None else str(chosen),
            "candidates": [_decision_json(d) for d in self.decisions],
        }


def masters(
    camera: str | None = None,
    night: str | dt.date | None = None,
    state: str | None = None,
    *,
    config: PathLike | None = None,
) -> list[MasterRecord]:
    """Published masters, oldest first: all, or one camera's, one night's, one state's.

    Raises:
        ConfigError: no config file, or one that is not valid, or a catalog this
            version cannot read (newer or older; the message names both versions).
    """
    settings = _config(config)
    if camera is not None:
        settings.camera(camera)  # an unknown camera is an error, not an empty list
    night_text = night.isoformat() if isinstance(night, dt.date) else night
    return [
        _record(r) for r in _rows(settings, camera, night_text) if state is None or r.state == state
    ]


def explain(
    camera: str,
    when: When | None = None,
    like: PathLike | fits.Header | None = None,
    max_age: float | dt.timedelta | None = None,
    *,
    config: PathLike | None = None,
) -> Match:
    """Every candidate master for a frame of ``camera`` and what became of it.

    ``when`` is the frame's time (aware, or naive UTC; ISO text; an astropy Time); left
    out, it is read from ``like``'s header (DATE-OBS or the camera's date keywords).
    ``like`` (a frame's path, or a single image's header) restricts the masters to that
    frame's configuration. ``max_age`` (days, or a timedelta) overrides the camera's
    ``max_age_days``.

    Raises:
        ValueError: no ``when`` and none in ``like``'s header, or ``like`` cannot be read.
        ConfigError: as :func:`masters`.
    """
    settings = _config(config)
    camera_config = settings.camera(camera)
    configuration, frame_time = _like(settings, camera, like)
    instant = _instant(when) if when is not None else frame_time
    if instant is None:
        raise ValueError(f"no time given and none in {like!s:.80}'s header: pass when=")
    limit = camera_config.max_age_days if max_age is None else _days(max_age)
    rows = _rows(settings, camera, None)
    return match_rows(settings, camera, rows, instant, configuration, limit)


def master_for(
    camera: str,
    when: When | None = None,
    like: PathLike | fits.Header | None = None,
    max_age: float | dt.timedelta | None = None,
    *,
    config: PathLike | None = None,
) -> Path:
    """The master to subtract from a frame of ``camera`` taken at ``when``.

    The arguments are :func:`explain`'s. A rejected master is never returned.

    Raises:
        NoMasterFound: none fits; its message says why, its ``match`` lists every candidate.
    """
    match = explain(camera, when, like, max_age, config=config)
    if match.chosen is None:
        raise NoMasterFound(match.why_none(), match)
    return match.chosen


def read_master(master: PathLike | MasterRecord, segment: str | None = None) -> CCDData:
    """A master as a CCDData in ADU, with its mask and uncertainty when it has them.

    A master of several segments (one image extension per CCD or amplifier) is read one
    segment at a time: ``segment`` names it (its EXTNAME). A master of one image,
    amplifiers included (they are sections of that image), needs no ``segment``.

    Raises:
        ValueError: a master of several segments without ``segment``, or an unknown one;
            the message lists the segments.
    """
    from astropy.io import fits  # here: listing and matching need no astropy
    from astropy.nddata import CCDData
    from astropy.wcs import FITSFixedWarning

    path = master.path if isinstance(master, MasterRecord) else Path(master)
    with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
        images = _image_extensions(hdus)
    if images and segment not in images:
        wanted = "name one with segment=" if segment is None else f"it has no {segment!r}"
        raise ValueError(f"{path} has segments {', '.join(images)}: {wanted}")
    if not images and segment is not None:
        raise ValueError(f"{path} is a master of one image: it has no segment {segment!r}")
    hdu = segment or 0
    planes = (f"{segment}_MASK", f"{segment}_UNCERT") if segment else ("MASK", "UNCERT")
    with warnings.catch_warnings():
        # CCDData.read parses a WCS from the header and warns that it set MJD-OBS from the
        # DATE-OBS the master keeps of its first input: noise in a reduction script's output.
        warnings.simplefilter("ignore", FITSFixedWarning)
        return CCDData.read(path, hdu=hdu, hdu_mask=planes[0], hdu_uncertainty=planes[1])


def match_rows(
    config: Config,
    camera: str,
    rows: Sequence[MasterRow],
    when: dt.datetime,
    configuration: str | None,
    max_age_days: float,
) -> Match:
    """The matcher's decisions over catalog rows: shared by the API and ``masters --for``."""
    site = config.site
    request = MatchRequest(
        when, night_label(when, site.zone, site.night_rollover), configuration, max_age_days
    )
    candidates = [
        MatchCandidate(
            r.path,
            dt.date.fromisoformat(r.night),
            r.sequence,
            r.state,
            r.geometry,
            night_start(dt.date.fromisoformat(r.night), site.zone, site.night_rollover),
        )
        for r in rows
        if r.camera == camera
    ]
    return Match(request, explain_match(candidates, request), camera)


def _config(config: PathLike | None) -> Config:
    # Watch paths compared as written: the API never touches a camera's mount (compared_as_written).
    return load_config(existing_config(config), compared_as_written)


def _rows(config: Config, camera: str | None, night: str | None) -> list[MasterRow]:
    catalog = open_reading(config.service.state_dir / "catalog.sqlite")
    if catalog is None:  # the service has not run yet: no master
        return []
    try:
        return catalog.masters(camera, night)
    finally:
        catalog.close()


def _like(
    config: Config, camera: str, like: PathLike | fits.Header | None
) -> tuple[str | None, dt.datetime | None]:
    """``like``'s configuration label and time (None, None without ``like``)."""
    if like is None:
        return None, None
    # Imported here: astropy and the frame readers only for a request that names a frame.
    from biaswatch.errors import FrameRejected
    from biaswatch.frames.science import frame_facts

    try:
        facts = frame_facts(like, config.camera(camera))
    except (OSError, FrameRejected) as exc:
        raise ValueError(f"like={like!s:.80}: {exc}") from None
    return facts.configuration, facts.when


def _instant(when: When) -> dt.datetime:
    """An aware UTC datetime from a datetime (naive means UTC), ISO text or astropy Time."""
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    elif not isinstance(when, dt.datetime):
        when = when.to_datetime(timezone=dt.UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _days(max_age: float | dt.timedelta) -> float:
    if isinstance(max_age, dt.timedelta):
        return max_age.total_seconds() / 86400.0
    return float(max_age)


def _record(row: MasterRow) -> MasterRecord:
    return MasterRecord(
        row.camera,
        dt.date.fromisoformat(row.night),
        row.sequence,
        Path(row.path),
        row.state,
        row.geometry,
        row.ncombine,
        dt.datetime.fromisoformat(row.created),
        row.judged_by,
        row.judgement,
        row.qc,
        row.segments,
    )


def _image_extensions(hdus: Any) -> list[str]:
    """The image extensions of a master of several segments ([] for one image)."""
    names = [str(h.name) for h in hdus[1:] if getattr(h, "is_image", False)]
    planes = {"MASK", "UNCERT"}
    return [n for n in names if n not in planes and not n.endswith(("_MASK", "_UNCERT"))]


def _decision_json(d: MatchDecision) -> dict[str, object]:
    return {
        "path": d.candidate.path,
        "night": d.candidate.night.isoformat(),
        "sequence": d.candidate.sequence,
        "state": d.candidate.state,
        "configuration": d.candidate.configuration,
        "outcome": d.outcome,
        "reason": d.reason,
        "age_days": round(d.age_days, 3),
    }
