"""Publishing a master: header, atomic write, ``latest`` link.

The write follows the sequence in reliability.md 2.4 (Pillai et al., OSDI
'14): write a temporary file in the target directory, flush and fsync it,
give it its final name, fsync the directory. The final name is made with
``os.link``, which fails if the name exists, so an existing master is never
overwritten, even by a second service pointed at the same directory.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from astropy.io import fits

from biaswatch import __version__
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.names import shown
from biaswatch.rules.acceptance import BASELINE, Verdict, judge
from biaswatch.rules.qc import MasterQC, master_qc_from_header
from biaswatch.settings import CombineSettings
from biaswatch.system.faults import crash_point

log = structlog.get_logger("biaswatch.publish")

# Per-frame keywords of the first input that would mislead on a master.
_PER_FRAME = ("CHECKSUM", "DATASUM", "FRAMENO", "FILENAME")


@dataclass(frozen=True, slots=True)
class MasterInfo:
    """Everything that goes into a master's header besides the pixels."""

    camera: str
    night: str
    sequence: int
    geometry: str
    raw_names: tuple[str, ...]
    settings: CombineSettings
    mem_limit: int
    input_digest: str
    master_sigma: float = 5.0  # [*.qc] master_sigma: how far from the baseline is too far


def fingerprint(info: MasterInfo) -> str:
    """16 hex digits naming what made a master: its inputs, settings and biaswatch version.

    Two masters with the same fingerprint were made the same way from the same frames.
    """
    made_of = f"{info.input_digest}|{info.settings.model_dump_json()}|{info.mem_limit}"
    return hashlib.sha256(f"{made_of}|{__version__}".encode()).hexdigest()[:16]


def master_path(masters_dir: Path, info: MasterInfo) -> Path:
    """``masters_dir/<camera>/<night>/bias_<camera>_<night>_<NN>_<geometry>.fits``."""
    name = f"bias_{info.camera}_{info.night}_{info.sequence:02d}_{info.geometry}.fits"
    return masters_dir / info.camera / info.night / name


def master_header(first_input: fits.Header, info: MasterInfo) -> fits.Header:
    """The first input's header (as ccdproc keeps it) plus the provenance of the combine."""
    header = first_input.copy()
    for key in _PER_FRAME:
        header.remove(key, ignore_missing=True, remove_all=True)
    for key in [k for k in header if k.startswith("IMCMB")]:
        header.remove(key, remove_all=True)
    settings = info.settings
    cards: list[tuple[str, object, str]] = [
        ("IMAGETYP", "BIAS", "master bias"),
        ("COMBINED", True, "combined bias (astropy CCD guide convention)"),
        ("NCOMBINE", len(info.raw_names), "number of frames combined"),
        ("BUNIT", "adu", "pixel unit"),
        ("BWCAMERA", info.camera, "biaswatch camera name"),
        ("BWNIGHT", info.night, "observing night (local evening date)"),
        ("BWSEQ", info.sequence, "master sequence number within the night"),
        ("BWGEOM", info.geometry, "raw geometry: cols x rows - xbin x ybin"),
        ("BWMETHOD", settings.method, "combine method"),
        ("BWSCLIP", settings.sigma_clip, "sigma clipping applied"),
        ("BWSLOW", settings.sigma_low, "sigma clip low threshold"),
        ("BWSHIGH", settings.sigma_high, "sigma clip high threshold"),
        ("BWCENTER", settings.center, "sigma clip centre function"),
        ("BWDEV", settings.deviation, "sigma clip deviation function"),
        ("BWITERS", settings.maxiters, "sigma clip iterations"),
        ("BWMEMLIM", info.mem_limit, "[byte] combine memory limit"),
        # 64 hex digits leave no room on the 80-column card for a comment.
        ("BWDIGEST", info.input_digest, ""),
        ("BWVERS", __version__, "biaswatch version"),
        ("BWFPRINT", fingerprint(info), "inputs + combine settings + version"),
        ("DATE", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC file creation"),
    ]
    for key, value, comment in cards:
        header[key] = (value, comment)
    for index, name in enumerate(info.raw_names[:999], start=1):
        # IRAF's imcombine convention: IMCMBnnn names each input, three digits.
        header[f"IMCMB{index:03d}"] = name
    return header


def write_temporary(
    data: np.ndarray, header: fits.Header, final: Path, owner: int | None = None
) -> Path:
    """Write the master next to its final name, flushed and fsynced; returns the temp path.

    ``owner`` (a set id) goes into the temporary's name, so that clean-up after a
    set's combine matches its own temporaries only (:func:`temporaries_of`).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final, owner)
    hdu = fits.PrimaryHDU(data=np.asarray(data, dtype=np.float32), header=header)
    try:
        with open(tmp, "wb") as f:
            hdu.writeto(f, checksum=True)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind
        raise _with_errno(exc, final.parent) from exc
    return tmp


def _with_errno(exc: OSError, directory: Path) -> OSError:
    """The error with its errno: astropy and numpy report a full disk without one.

    (astropy's _free_space_check raises "Not enough space on disk: ..." around
    numpy's "N requested and M written"; neither sets errno, which the retry's
    advice to the operator is chosen by.)
    """
    if exc.errno is not None:
        return exc
    try:
        full = shutil.disk_usage(directory).free == 0 or "space" in str(exc)
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, f"No space left on device ({exc})", str(directory))
    return exc


def temporary_name(final: Path, owner: int | None = None) -> Path:
    """The temporary name a master is written under (hidden, marked partial)."""
    # Host and pid: on a cluster a rerun task may write beside a lost one on another machine.
    tag = "" if owner is None else f"set{owner}-"
    return final.with_name(f".{final.name}.partial-{tag}{socket.gethostname()}-{os.getpid()}")


def temporaries_of(final: Path, owner: int) -> list[Path]:
    """The temporaries a set's combines (this try or lost ones) left beside ``final``."""
    return sorted(final.parent.glob(f".{final.name}.partial-set{owner}-*"))


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover temporary master."""
    return path.name.startswith(".") and ".partial-" in path.name


def give_final_name(tmp: Path, final: Path) -> None:
    """Atomically make ``tmp`` appear as ``final``; FileExistsError if it exists."""
    os.link(tmp, final)
    os.unlink(tmp)
    _fsync_dir(final.parent)


def point_latest(link: Path, target: Path) -> None:
    """Atomically point ``link`` (a symlink) at ``target``, relative when possible."""
    relative = os.path.relpath(target, link.parent)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_master(
    catalog: Catalog,
    masters_dir: Path,
    set_id: int,
    info: MasterInfo,
    temporary: Path,
    final: Path,
    now: dt.datetime,
    combine_seconds: float = 0.0,
    startup_seconds: float = 0.0,
    alarm: Callable[..., None] | None = None,
) -> Path:
    """Final name, catalog record, ``latest`` link, ``master.published``; returns the path.

    The order matters: once the master has its final name it is never
    removed, then the catalog records it in one transaction, and only then
    does ``latest.fits`` move, so the link never points at an unrecorded file.
    The event carries where the time went: the combine child's start-up, its
    combine and write, and this publication (fsyncs and the catalog).
    """
    start = time.perf_counter()
    give_final_name(temporary, final)
    crash_point("after_rename")
    ncombine = len(info.raw_names)
    quality = master_qc_from_header(fits.getheader(final))
    verdict = verdict_for(catalog, info.camera, info.geometry, quality, info.master_sigma)
    catalog.record_master(
        set_id,
        MasterRow(
            info.camera,
            info.night,
            info.sequence,
            info.geometry,
            str(final),
            ncombine,
            info.input_digest,
            now.isoformat(),
            quality,
            verdict.state,
            "biaswatch",
            verdict.reason,
        ),
    )
    crash_point("after_commit")
    if verdict.state == "accepted":
        point_latest(masters_dir / info.camera / "latest.fits", final)
    else:
        details = {"camera": info.camera, "night": info.night, "set": set_id}
        details |= {"path": str(final), "reason": verdict.reason}
        action = "kept on disk; latest.fits stays on the last accepted master; "
        log.warning("master.rejected", **details, action=action + "'biaswatch accept' overrules")
        if alarm is not None:
            alarm("master_rejected", **details)
    log.info(
        "master.published",
        camera=info.camera,
        night=info.night,
        set=set_id,
        path=str(final),
        ncombine=ncombine,
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


def verdict_for(
    catalog: Catalog, camera: str, geometry: str, quality: MasterQC | None, sigma: float
) -> Verdict:
    """A new master judged against the camera's accepted masters of its geometry."""
    return judge(quality, catalog.accepted_qc(camera, geometry, BASELINE), sigma)


def find_published(
    masters_dir: Path, camera: str, night: str, digest: str
) -> list[tuple[Path, int]]:
    """Masters already on disk for exactly these inputs (BWDIGEST), with their sequences.

    A crash between giving a master its final name and recording it in the catalog
    leaves such a file: it is adopted, not written again. A file whose header cannot
    be read or has no usable BWSEQ is logged and passed over (never removed).
    """
    found = []
    for path in sorted((masters_dir / camera / night).glob(f"bias_{camera}_{night}_*.fits")):
        try:
            header = fits.getheader(path)
            if header.get("BWDIGEST") == digest and header.get("BWCAMERA") == camera:
                found.append((path, int(header["BWSEQ"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("master.unreadable", file=str(path), error=str(exc))
    return found


def master_files(masters_dir: Path) -> list[Path]:
    """Every master file under ``masters_dir`` (``<camera>/<night>/bias_*.fits``), no link."""
    files = masters_dir.glob("*/*/bias_*.fits")
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def report_orphans(catalog: Catalog, masters_dir: Path) -> None:
    """Log each master file the catalog does not list; never touch it: it may be someone's."""
    recorded = catalog.master_paths()
    for path in master_files(masters_dir):
        if str(path) not in recorded:
            log.warning("master.orphan", file=str(path), action=_ORPHAN)


def repair_latest(catalog: Catalog, masters_dir: Path, missing: set[str]) -> None:
    """Point each camera's ``latest.fits`` at its newest accepted master when it is not.

    A newest master whose file is gone is logged once (``missing`` remembers it) and
    its link left as it is: pointing at it would make a dangling link.
    """
    for camera, newest in catalog.latest_paths().items():
        link, target = masters_dir / camera / "latest.fits", Path(newest)
        try:
            if link.exists() and link.resolve() == target.resolve():
                continue
            if not target.is_file():
                if newest not in missing:
                    missing.add(newest)
                    log.error("master.missing", camera=camera, file=newest, action=_MISSING)
                continue
            point_latest(link, target)
        except OSError as exc:
            log.error("master.latest_unrepaired", camera=camera, link=str(link), error=str(exc))
            continue
        log.warning("master.latest_repaired", camera=camera, path=newest)


_ORPHAN = (
    "left alone: a master file the catalog does not list and no set claims (a second "
    "service, or a copy put there by hand); move or delete it yourself if it is not needed"
)
_MISSING = "the newest master's file is gone: latest.fits is left as it is; restore the file"


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
