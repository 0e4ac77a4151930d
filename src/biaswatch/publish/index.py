"""Each camera's ``index.json``: its masters, verdicts and validity, readable without biaswatch.

``<masters_dir>/<camera>/index.json`` is rewritten from the catalog (the one source
of truth) after every change to that camera's masters: a publication (accepted or
rejected), an adoption after a crash, a verdict (``biaswatch accept`` / ``reject``),
a reconcile that moved a file, and once at each service start. It is written
atomically: a temporary in the same folder, fsynced, ``os.replace``d over the old
one, the folder fsynced; a reader sees the old index or the new, never a part.
A failed write is logged (``index.write_failed``) and the service carries on: the
master is published, the index is a convenience.

Fields (format version 1; a reader should check both ``format`` and ``version``):

- ``format``: always ``"biaswatch-masters-index"``.
- ``version``: ``1``; a change that would mislead a reader of version 1 raises it.
- ``camera``: the camera's name, as in the config and the folder's name.
- ``updated``: when this index was written, UTC, ISO 8601 with offset.
- ``max_age_days``: the camera's ``max_age_days`` when the index was written.
- ``masters``: one object per master, sorted by night then sequence:

  - ``file``: its path relative to the camera folder (``<night>/bias_...fits``, or
    ``rejected/<night>/rejected_...fits``).
  - ``path``: its absolute path, as the catalog records it.
  - ``night``: the observing night (the local date of its evening), ``YYYY-MM-DD``.
  - ``sequence``: its number within the night (1, 2, ...).
  - ``configuration``: the geometry label (segments, binning, ``group_by`` values), as
    ``biaswatch masters --like`` computes it and ``latest-<label>.fits`` is named.
  - ``segments``: the names of its segments (image HDUs or amplifiers) with their own
    QC; ``[]`` for a master of one image.
  - ``state``: ``"accepted"`` (usable) or ``"rejected"`` (never to be used).
  - ``judged_by``: ``"biaswatch"`` for the service's verdict, or the person's login.
  - ``judgement``: the reason given with the verdict, or null.
  - ``ncombine``: how many frames were combined.
  - ``created``: when the master was recorded, ISO 8601 with offset.
  - ``night_start``: when its night began (the site's ``night_rollover``, rules/nights.py
    night_start), UTC ISO 8601: a master's age is counted from there.
  - ``valid_from``, ``valid_until``: ``night_start`` minus and plus ``max_age_days``, UTC
    ISO 8601: the frames ``masters --for`` and ``master_for`` may give it to (a frame
    taken before the master's night may use it too, as the matcher counts age both ways).
  - ``qc``: ``{"level", "read_noise", "noise"}`` in ADU (the master's median, the read
    noise from pairs of inputs, the master's own robust noise), or null when unknown.
  - ``latest``: true for the master ``latest.fits`` points at (the camera's newest
    accepted one), false for every other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.config import Config
from biaswatch.publish.placement import fsync_folder
from biaswatch.rules.nights import night_start

log = structlog.get_logger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "biaswatch-masters-index"
INDEX_VERSION = 1
# Used for a camera no longer in the config whose masters a verdict changes: the
# default of [defaults] max_age_days (config.py CameraSettings).
_FALLBACK_MAX_AGE_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """What an index needs beyond the catalog: the site's night and the camera's age limit."""

    zone: ZoneInfo
    rollover: dt.time
    max_age_days: float


def index_settings(config: Config, camera: str) -> IndexSettings:
    """The index settings of ``camera`` (the default age limit if it is no longer configured)."""
    ages = {c.name: c.max_age_days for c in config.cameras}
    max_age = ages.get(camera, _FALLBACK_MAX_AGE_DAYS)
    return IndexSettings(config.site.zone, config.site.night_rollover, max_age)


def index_path(masters_dir: Path, camera: str) -> Path:
    """Where a camera's index lives: ``<masters_dir>/<camera>/index.json``."""
    return masters_dir / camera / INDEX_NAME


def index_content(
    camera: str,
    rows: list[MasterRow],
    latest: str | None,
    settings: IndexSettings,
    folder: Path,
    now: dt.datetime,
) -> dict[str, object]:
    """The index of ``camera`` (the fields above): ``rows`` its masters, ``latest`` the link's."""
    ordered = sorted(rows, key=lambda r: (r.night, r.sequence))
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "camera": camera,
        "updated": now.astimezone(dt.UTC).isoformat(),
        "max_age_days": settings.max_age_days,
        "masters": [_entry(r, r.path == latest, settings, folder) for r in ordered],
    }


def _entry(
    row: MasterRow, latest: bool, settings: IndexSettings, folder: Path
) -> dict[str, object]:
    start = night_start(dt.date.fromisoformat(row.night), settings.zone, settings.rollover)
    reach = dt.timedelta(days=settings.max_age_days)
    qc = row.qc
    return {
        "file": os.path.relpath(row.path, folder),
        "path": row.path,
        "night": row.night,
        "sequence": row.sequence,
        "configuration": row.geometry,
        "segments": [name for name, _ in row.segments],
        "state": row.state,
        "judged_by": row.judged_by,
        "judgement": row.judgement,
        "ncombine": row.ncombine,
        "created": row.created,
        "night_start": start.isoformat(),
        "valid_from": (start - reach).isoformat(),
        "valid_until": (start + reach).isoformat(),
        "qc": None
        if qc is None
        else {"level": qc.level, "read_noise": qc.read_noise, "noise": qc.noise},
        "latest": latest,
    }


def write_index(
    catalog: Catalog,
    masters_dir: Path,
    camera: str,
    settings: IndexSettings,
    now: dt.datetime | None = None,
) -> Path | None:
    """Rewrite ``camera``'s index from the catalog; its path, or None if it could not be.

    One camera's index is one unit: whatever fails is logged (``index.write_failed``)
    and the caller carries on.
    """
    path = index_path(masters_dir, camera)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(path.parent):
            _remove_leftovers(path)
            rows = catalog.masters(camera)
            latest = catalog.latest_paths().get(camera)
            when = dt.datetime.now(dt.UTC) if now is None else now
            content = index_content(camera, rows, latest, settings, path.parent, when)
            write_json_atomically(path, content)
    except Exception as exc:  # one index's boundary: the masters are published all the same
        log.error(
            "index.write_failed",
            camera=camera,
            file=str(path),
            error=f"{type(exc).__name__}: {exc}",
            action="the masters are published; the index is rewritten at the next change",
        )
        return None
    return path


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s flock while its index is read from the catalog and written.

    The service and a verdict command may rewrite one index at once; each reads the
    catalog inside the lock, so the last to write has read the newest catalog. A file
    system without flock (ENOLCK, some network mounts) is written unlocked.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.info("index.unlocked", folder=str(folder), error=str(exc))
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_leftovers(path: Path) -> None:
    """Temporaries of this index a killed writer left (under the lock: none is in use)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it (Linux /proc; 022 if unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_json_atomically(path: Path, content: object) -> None:
    """Replace ``path`` by ``content`` as JSON: whole or not at all, durable once returned.

    The temporary is made in ``path``'s own folder (os.replace is atomic within one
    file system only) and removed if anything fails before the replace.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes it 0600; the index is for whoever may read the masters, as
        # the FITS files are: the mode open() would give (0666 less the umask).
        temporary.chmod(0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
