"""Publishing a master, the main loop's side: verdict, final name, catalog, ``latest``.

The combine (combine/master_file.py, in a child process or on a Dask worker)
writes the master under a temporary name and answers with its path and QC. Here
the main loop follows the rest of the sequence in reliability.md 2.4 (Pillai et
al., OSDI '14): judge the master (the catalog is only read), give the flushed
temporary the final name of its verdict's place (rules/places.py: a rejected
master has its own folder and name), fsync the directory, record it, move
``latest``. The final name is made with ``os.link``, which fails if the name
exists, so an existing master is never overwritten, even by a second service
pointed at the same directory.

A master found on disk after a crash (final name given, catalog row lost), in
either place, is judged and recorded by the same :func:`record_published` as a
fresh one, and filed where its verdict says; its QC comes from its header
(:func:`quality_on_disk`), the one record left of it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from astropy.io import fits

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.combine.master_file import MasterInfo
from biaswatch.names import shown
from biaswatch.publish.announce import announce_links
from biaswatch.publish.placement import fsync_folder, make_folder, move_master_file
from biaswatch.rules.acceptance import BASELINE, Verdict, judge
from biaswatch.rules.places import (
    ACCEPTED_PREFIX,
    REJECTED_FOLDER,
    REJECTED_PREFIX,
    path_for_state,
)
from biaswatch.rules.qc import MasterQC, master_qc_from_header
from biaswatch.rules.segment_cards import segments_qc_from_headers
from biaswatch.system.faults import crash_point

log = structlog.get_logger(__name__)


def give_final_name(tmp: Path, final: Path) -> None:
    """Atomically make ``tmp`` appear as ``final``; FileExistsError if it exists.

    ``final``'s folder is made if missing: a rejected master's is not the night
    folder its temporary was written in (rules/places.py).
    """
    make_folder(final.parent)
    os.link(tmp, final)
    os.unlink(tmp)
    fsync_folder(final.parent)


def point_latest(link: Path, target: Path) -> None:
    """Atomically point ``link`` (a symlink) at ``target``, relative when possible."""
    relative = os.path.relpath(target, link.parent)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    fsync_folder(link.parent)


@dataclass(frozen=True, slots=True)
class NewMaster:
    """A master with its final name, to be judged and recorded: its set, facts and QC."""

    set_id: int
    info: MasterInfo
    path: Path
    quality: MasterQC | None  # from the combine's answer, or read back when adopted
    segments: tuple[tuple[str, MasterQC], ...] = ()  # each segment's QC; () for one segment


def publish_master(
    catalog: Catalog,
    masters_dir: Path,
    master: NewMaster,
    temporary: Path,
    now: dt.datetime,
    combine_seconds: float = 0.0,
    startup_seconds: float = 0.0,
    alarm: Callable[..., None] | None = None,
) -> Path:
    """Final name, catalog record, ``latest`` link, ``master.published``; returns the path.

    The order matters: the master is judged first (verdict_for only reads the
    catalog), so a rejected master gets its rejected name and folder directly
    (rules/places.py; ``master.path`` is its accepted place, beside the temporary);
    once it has its final name it is never removed, then the catalog records it in
    one transaction, and only then does ``latest.fits`` move, so the link never
    points at an unrecorded file.
    The event carries where the time went: the combine child's start-up, its
    combine and write, and this publication (fsyncs and the catalog).
    """
    start = time.perf_counter()
    info, quality = master.info, master.quality
    verdict = verdict_for(catalog, master)
    final = path_for_state(master.path, verdict.state)
    give_final_name(temporary, final)
    crash_point("after_rename")
    record_published(catalog, replace(master, path=final), now, verdict)
    crash_point("after_commit")
    if verdict.state == "accepted":
        point_latest(latest_link(masters_dir, info.camera), final)
        point_latest(latest_link(masters_dir, info.camera, info.geometry), final)
        announce_latest(catalog, masters_dir)
    else:
        details = {"camera": info.camera, "night": info.night, "set": master.set_id}
        details |= {"path": str(final), "reason": verdict.reason}
        action = "kept on disk; latest.fits stays on the last accepted master; "
        log.warning("master.rejected", **details, action=action + "'biaswatch accept' overrules")
        if alarm is not None:
            alarm("master_rejected", **details)
    log.info(
        "master.published",
        camera=info.camera,
        night=info.night,
        set=master.set_id,
        path=str(final),
        ncombine=len(info.raw_names),
        sequence=info.sequence,
        state=verdict.state,
        level=None if quality is None else round(quality.level, 3),
        read_noise=None if quality is None else round(quality.read_noise, 3),
        noise=None if quality is None else round(quality.noise, 3),
        startup_seconds=round(startup_seconds, 3),
        combine_seconds=round(combine_seconds, 3),
        publish_seconds=round(time.perf_counter() - start, 3),
    )
    return final


def record_published(
    catalog: Catalog, master: NewMaster, now: dt.datetime, verdict: Verdict | None = None
) -> Verdict:
    """Record a master that has its final name (one transaction); its verdict.

    The one place a master's catalog row is made: a fresh publication and the
    adoption of a master found on disk after a crash both come here. It is judged
    here unless its ``verdict`` was given before its final name was.
    """
    info = master.info
    verdict = verdict_for(catalog, master) if verdict is None else verdict
    catalog.record_master(
        master.set_id,
        MasterRow(
            info.camera,
            info.night,
            info.sequence,
            info.geometry,
            str(master.path),
            len(info.raw_names),
            info.input_digest,
            now.isoformat(),
            master.quality,
            verdict.state,
            "biaswatch",
            verdict.reason,
            master.segments,
        ),
    )
    return verdict


def adopt_master(
    catalog: Catalog, set_id: int, info: MasterInfo, path: Path, now: dt.datetime
) -> Verdict:
    """Record a master found on disk whose combine's answer was lost; its verdict.

    It is judged again, recorded at its verdict's place, then moved there if it is
    in the other one (a crash between the two is mended by placement.reconcile).
    Its ``latest.fits`` is left to the check that follows recovery (repair_latest).
    """
    quality, segments = quality_on_disk(path), segments_on_disk(path)
    found = NewMaster(set_id, info, path, quality, segments)
    verdict = verdict_for(catalog, found)
    wanted = path_for_state(path, verdict.state)
    if wanted != path and (wanted.exists() or wanted.is_symlink()):
        raise FileExistsError(f"{wanted} exists: {path} is left where it is")
    record_published(catalog, replace(found, path=wanted), now, verdict)
    if wanted != path:
        move_master_file(path, wanted)
    return verdict


def quality_on_disk(path: Path) -> MasterQC | None:
    """The QC a master file's header carries: read only for a master adopted after a crash.

    A fresh master's QC comes in its combine's answer; an adopted one's answer was
    lost, and its header is the only record left.
    """
    return master_qc_from_header(fits.getheader(path))


def segments_on_disk(path: Path) -> tuple[tuple[str, MasterQC], ...]:
    """Each segment's QC a master file's headers carry (() for one segment): for adoption.

    Each segment HDU's QC_* cards and each amplifier's QCA<i>* cards
    (rules/segment_cards.py); only the headers are read.
    """
    with fits.open(path, memmap=False) as hdus:
        headers = [hdu.header for hdu in hdus]
    return segments_qc_from_headers(headers)


def verdict_for(catalog: Catalog, master: NewMaster) -> Verdict:
    """A new master judged against the camera's accepted masters of its geometry, per segment."""
    info = master.info
    return judge(
        master.quality,
        catalog.accepted_qc(info.camera, info.geometry, BASELINE),
        info.master_sigma,
        master.segments,
        catalog.accepted_segments(info.camera, info.geometry, BASELINE) if master.segments else (),
    )


def find_published(
    masters_dir: Path, camera: str, night: str, digest: str
) -> list[tuple[Path, int]]:
    """Masters already on disk for exactly these inputs (BWDIGEST), with their sequences.

    A crash between giving a master its final name and recording it in the catalog
    leaves such a file, in its accepted or its rejected place: it is adopted, not
    written again. A file whose header cannot be read or has no usable BWSEQ is
    logged and passed over (never removed).
    """
    found = []
    for path in _night_masters(masters_dir, camera, night):
        try:
            header = fits.getheader(path)
            if header.get("BWDIGEST") == digest and header.get("BWCAMERA") == camera:
                found.append((path, int(header["BWSEQ"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("master.unreadable", file=str(path), error=str(exc))
    return found


def _night_masters(masters_dir: Path, camera: str, night: str) -> list[Path]:
    """A camera's night's master files in both places (rules/places.py), accepted first."""
    stem = f"{camera}_{night}_*.fits"
    accepted = (masters_dir / camera / night).glob(ACCEPTED_PREFIX + stem)
    rejected = (masters_dir / camera / REJECTED_FOLDER / night).glob(REJECTED_PREFIX + stem)
    return sorted(accepted) + sorted(rejected)


def master_files(masters_dir: Path) -> list[Path]:
    """Every master file under ``masters_dir``, accepted and rejected (rules/places.py), no link."""
    files = [*masters_dir.glob(f"*/*/{ACCEPTED_PREFIX}*.fits")]
    files += masters_dir.glob(f"*/{REJECTED_FOLDER}/*/{REJECTED_PREFIX}*.fits")
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def report_orphans(catalog: Catalog, masters_dir: Path) -> None:
    """Log each master file the catalog does not list; never touch it: it may be someone's."""
    recorded = catalog.master_paths()
    for path in master_files(masters_dir):
        if str(path) not in recorded:
            log.warning("master.orphan", file=str(path), action=_ORPHAN)


def latest_link(masters_dir: Path, camera: str, geometry: str | None = None) -> Path:
    """A camera's ``latest.fits``, or with ``geometry`` its configuration's ``latest-<label>.fits``.

    Downstream code that knows its frame's configuration (the geometry label, as
    ``biaswatch masters --like`` computes it) opens the master of that configuration
    by a name that never changes. Labels are file-name safe (rules/sets.py); any other
    character is written as ``_`` all the same, so a link never leaves its directory.
    """
    if geometry is None:
        return masters_dir / camera / "latest.fits"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", geometry)
    return masters_dir / camera / f"latest-{safe}.fits"


def repair_latest(
    catalog: Catalog, masters_dir: Path, missing: set[str], expected: bool = False
) -> None:
    """Point each camera's ``latest.fits``, and each configuration's link, at its newest master.

    Newest accepted, that is. A newest master whose file is gone is logged once
    (``missing`` remembers it) and its link left as it is: pointing at it would make a
    dangling link. A link left with no accepted master (a person rejected them all:
    a configuration's, or a camera's ``latest.fits``) is removed: a link to a rejected
    master would mislead. ``expected``: the caller has just changed a verdict, so a
    link that moves is news at info level (``master.latest_moved``), not a repair.
    """
    wanted = {
        latest_link(masters_dir, camera): (camera, newest)
        for camera, newest in catalog.latest_paths().items()
    }
    for (camera, geometry), newest in catalog.latest_by_configuration().items():
        wanted[latest_link(masters_dir, camera, geometry)] = (camera, newest)
    for link, (camera, newest) in wanted.items():
        _repair_link(link, camera, newest, missing, expected)
    judged = [latest_link(masters_dir, camera) for camera in catalog.master_cameras()]
    for stale in [*masters_dir.glob("*/latest-*.fits"), *judged]:
        if stale.is_symlink() and stale not in wanted:
            stale.unlink(missing_ok=True)
            if expected:
                log.info("master.latest_removed", link=str(stale), reason=_STALE)
            else:
                log.warning("master.latest_removed", link=str(stale), reason=_STALE)
    announce_latest(catalog, masters_dir)


def announce_latest(catalog: Catalog, masters_dir: Path) -> None:
    """Queue ``latest.moved`` for each link moved since its last notice (publish/announce.py)."""
    announce_links(catalog, lambda camera, label: latest_link(masters_dir, camera, label or None))


def _repair_link(link: Path, camera: str, newest: str, missing: set[str], expected: bool) -> None:
    target = Path(newest)
    try:
        if link.exists() and link.resolve() == target.resolve():
            return
        if not target.is_file():
            if newest not in missing:
                missing.add(newest)
                log.error("master.missing", camera=camera, file=newest, action=_MISSING)
            return
        point_latest(link, target)
    except OSError as exc:
        log.error("master.latest_unrepaired", camera=camera, link=str(link), error=str(exc))
        return
    if expected:
        log.info("master.latest_moved", camera=camera, link=link.name, path=newest)
    else:
        log.warning("master.latest_repaired", camera=camera, link=link.name, path=newest)


_STALE = "no accepted master of its camera or configuration is left"
_ORPHAN = (
    "left alone: a master file the catalog does not list and no set claims (a second "
    "service, or a copy put there by hand); move or delete it yourself if it is not needed"
)
_MISSING = "the newest master's file is gone: its link is left as it is; restore the file"


def input_names(paths: Sequence[str]) -> tuple[str, ...]:
    """The raw files' names as IMCMBnnn records them, escaped to printable ASCII.

    A FITS header holds printable ASCII only (FITS 4.0, section 4.1.2.3; astropy
    raises otherwise), and a camera may name a file ``bïas_é.fits``: the name is
    written with Python's escapes (``b\\xefas_\\xe9.fits``) rather than block the master;
    bytes that are not UTF-8 as names.shown writes them (``\\xff``).
    """
    return tuple(_printable(shown(Path(p).name)) for p in paths)


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in text)
