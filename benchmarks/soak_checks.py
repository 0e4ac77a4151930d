"""The soak's checks of a run's catalog and files against its ledger (soak.py, burst.py).

Every written file one frames row with what it must become (soak_odd.EXPECTATIONS for
the odd kinds); every set done with one master whose NCOMBINE, BWDIGEST and checksums
agree; no frame combined twice; nothing stray under the masters directory; raw files
untouched; camera.stalled only where a mount hung. Each finding goes to the report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from astropy.io import fits
from soak_chaos import TmpfsDisk, read_events
from soak_feeds import STALL_GRACE_SECONDS, Episode
from soak_odd import EXPECTATIONS, fingerprint, night_of_mtime

from biaswatch.config import SiteConfig
from biaswatch.rules.sets import input_digest

if TYPE_CHECKING:
    from soak import Report, Written

# How the reason of a rejected bad file of soak.py's feeders starts.
EXPECTED_REASON = {"random": "not a FITS file", "truncated": "truncated"}

# --- the catalog --------------------------------------------------------------


def query(catalog: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Rows from the catalog, opened read-only; none if it does not exist yet."""
    if not catalog.exists():
        return []
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# --- checks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogState:
    """The catalog's three tables, read once at the end."""

    frames: dict[str, sqlite3.Row]
    sets: dict[int, sqlite3.Row]
    masters: list[sqlite3.Row]
    site: SiteConfig = field(default_factory=SiteConfig)  # for the nights of odd files

    @classmethod
    def read(cls, catalog: Path, site: SiteConfig | None = None) -> CatalogState:
        """Read every row."""
        return cls(
            {path_key(r["path"]): r for r in query(catalog, "SELECT * FROM frames")},
            {r["id"]: r for r in query(catalog, "SELECT * FROM sets")},
            query(catalog, "SELECT * FROM masters ORDER BY id"),
            site or SiteConfig(),
        )

    def set_frames(self, set_id: int, status: str) -> list[sqlite3.Row]:
        """A set's frames of one status."""
        return [f for f in self.frames.values() if f["set_id"] == set_id and f["status"] == status]


def path_key(stored: object) -> str:
    """A frames row's path as the ledger writes it.

    A name that is not UTF-8 may be stored as a BLOB of its bytes (issue 11, finding
    5); os.fsdecode gives the same str (PEP 383 surrogates) the ledger holds.
    """
    return os.fsdecode(stored) if isinstance(stored, bytes) else str(stored)


def needs_row(written: Written) -> bool:
    """Whether the file must end with a frames row (a symlink out may have none)."""
    expect = EXPECTATIONS.get(written.kind)
    return expect is None or not expect.row_optional


def describe_set(state: CatalogState, set_id: int | None) -> str:
    """'set 7 (failed: reason)' for messages."""
    if set_id is None or set_id not in state.sets:
        return "no set"
    row = state.sets[set_id]
    return f"set {set_id} ({row['state']}: {row['reason'] or 'no reason'})"


def check_file(written: Written, state: CatalogState, report: Report) -> bool:
    """One written file against its frames row; True if it is as expected."""
    name = written.path.name
    row = state.frames.get(str(written.path))
    if written.kind in EXPECTATIONS:
        return check_odd(written, row, state, report)
    if row is None:
        report.discrepancy(f"{name} ({written.kind}): no frames row")
        return False
    found = [f"status {row['status']}"]
    ok = bool(row["status"] == written.expected and row["camera"] == written.camera)
    if row["camera"] != written.camera:
        found.append(f"camera {row['camera']}")
    if written.kind == "bias":
        found.append(describe_set(state, row["set_id"]))
        if row["sha256"] != written.sha256:
            ok = False
            found.append(f"sha256 {row['sha256']} is not the written file's {written.sha256}")
    elif written.kind in EXPECTED_REASON and not str(row["reason"] or "").startswith(
        EXPECTED_REASON[written.kind]
    ):
        ok = False
        found.append(f"reason {row['reason']!r}, expected {EXPECTED_REASON[written.kind]}: ...")
    if not ok:
        report.discrepancy(
            f"{name} ({written.kind}): expected {written.expected}; " + ", ".join(found)
        )
    return ok


def check_odd(
    written: Written, row: sqlite3.Row | None, state: CatalogState, report: Report
) -> bool:
    """An odd file against soak_odd.EXPECTATIONS; True if it is as expected."""
    expect = EXPECTATIONS[written.kind]
    label = f"{written.path.name} ({written.kind})"
    if row is None:
        if not expect.row_optional:
            report.discrepancy(f"{label}: no frames row; expected {written.expected}")
        return expect.row_optional
    problems = []
    if row["status"] not in expect.statuses:
        problems.append(f"status {row['status']}, {describe_set(state, row['set_id'])}")
    if row["camera"] != written.camera:
        problems.append(f"camera {row['camera']}")
    if expect.reason and row["status"] != "combined" and not row["reason"]:
        problems.append("no reason recorded")
    if expect.same_sha and row["sha256"] != written.sha256:
        problems.append(f"sha256 {row['sha256']} is not the written file's")
    if expect.night_from_mtime:
        site = state.site
        night = night_of_mtime(written.source or written.path, site.zone, site.night_rollover)
        if row["night"] != night:
            problems.append(f"night {row['night']}, the night of its mtime is {night}")
    if problems:
        reason = f" (reason {row['reason']!r})" if row["reason"] else ""
        report.discrepancy(f"{label}: expected {written.expected}; " + ", ".join(problems) + reason)
    return not problems


def check_files(written: list[Written], state: CatalogState, report: Report) -> int:
    """Every written file against the catalog; returns how many are as expected."""
    good = sum(check_file(w, state, report) for w in written)
    known = {str(w.path) for w in written}
    for path, row in state.frames.items():
        if path not in known:
            report.discrepancy(
                f"frames row {row['id']} for a file not written by the feeders: {path}"
            )
    return good


def check_sets(state: CatalogState, report: Report) -> None:
    """Every set must be done."""
    for set_id, row in state.sets.items():
        if row["state"] != "done":
            valid = len(state.set_frames(set_id, "valid"))
            report.discrepancy(
                f"set {set_id} ({row['camera']} {row['night']} {row['geometry']}) is "
                f"{row['state']} with {valid} valid frames: {row['reason'] or 'no reason'}"
            )


def master_header(path: Path) -> tuple[fits.Header | None, str]:
    """A master's primary header, or None and why it could not be read."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, checksum=True) as hdul:
                header = hdul[0].header.copy()
                _ = hdul[0].data
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    problems = [str(w.message) for w in caught if "checksum" in str(w.message).lower()]
    return header, "; ".join(problems)


def check_master(
    master: sqlite3.Row, state: CatalogState, digests: dict[str, str], report: Report
) -> fits.Header | None:
    """One masters row against its set, its file and the written frames; its header."""
    label = f"master {master['path']} (set {master['set_id']})"
    set_row = state.sets.get(master["set_id"])
    if set_row is None or set_row["state"] != "done":
        report.discrepancy(f"{label}: its set is {set_row['state'] if set_row else 'missing'}")
    combined = state.set_frames(master["set_id"], "combined")
    shas = [digests.get(path_key(f["path"]), f["sha256"] or "") for f in combined]
    expected_digest = input_digest(shas)
    facts = {
        "catalog ncombine": master["ncombine"],
        "combined frames": len(combined),
        "input_digest": master["input_digest"],
        "digest of the written frames": expected_digest,
    }
    if master["ncombine"] != len(combined):
        report.discrepancy(
            f"{label}: ncombine {master['ncombine']} but {len(combined)} combined frames"
        )
    if master["input_digest"] != expected_digest:
        report.discrepancy(f"{label}: input_digest is not the digest of its frames: {facts}")
    header, problem = master_header(Path(master["path"]))
    if header is None:
        report.discrepancy(f"{label}: cannot be opened: {problem}")
        return None
    if problem:
        report.discrepancy(f"{label}: {problem}")
    if header.get("NCOMBINE") != master["ncombine"] or header.get("NCOMBINE") != len(combined):
        report.discrepancy(f"{label}: NCOMBINE {header.get('NCOMBINE')}; {facts}")
    if header.get("BWDIGEST") != master["input_digest"]:
        report.discrepancy(f"{label}: BWDIGEST {header.get('BWDIGEST')}; {facts}")
    return header


def imcmb_names(header: fits.Header | None) -> list[str]:
    """The input file names a master's IMCMBnnn cards list."""
    if header is None:
        return []
    return [str(v) for k, v in header.items() if k.startswith("IMCMB")]


def check_masters(state: CatalogState, written: list[Written], report: Report) -> None:
    """Each done set has one master; masters are whole and distinct."""
    digests = {str(w.path): w.sha256 for w in written}
    by_set = Counter(m["set_id"] for m in state.masters)
    for set_id, row in state.sets.items():
        if row["state"] == "done" and by_set[set_id] != 1:
            report.discrepancy(f"set {set_id} is done with {by_set[set_id]} masters rows")
    inputs: dict[tuple[str, str], list[str]] = {}
    for master in state.masters:
        header = check_master(master, state, digests, report)
        for name in imcmb_names(header):
            inputs.setdefault((master["camera"], name), []).append(Path(master["path"]).name)
    for (camera, name), masters in sorted(inputs.items()):
        if len(masters) > 1:  # the soak never changes a raw file: no new set versions
            report.discrepancy(f"{camera} frame {name} is an input of masters {masters}")
    for digest, count in Counter(m["input_digest"] for m in state.masters).items():
        if count > 1:
            paths = [m["path"] for m in state.masters if m["input_digest"] == digest]
            report.discrepancy(f"{count} masters share input_digest {digest}: {paths}")


def check_masters_dir(
    masters_dir: Path, state: CatalogState, cameras: list[str], report: Report
) -> tuple[int, int]:
    """No temporary or unknown file under the masters directory; latest.fits links are good.

    Returns how many orphans (files the catalog does not list) and temporaries were found.
    """
    recorded = {m["path"] for m in state.masters}
    orphans = partials = 0
    for path in sorted(p for p in masters_dir.rglob("*") if not p.is_dir()):
        if ".partial" in path.name:
            partials += 1
            report.discrepancy(f"temporary master left behind: {path}")
        elif path.name == "latest.fits" and path.parent.parent == masters_dir:
            continue
        elif path.name.startswith("latest-") and path.is_symlink():
            continue  # a configuration's current master (publish/master.py latest_link)
        elif path.name == "index.json" and path.parent.parent == masters_dir:
            continue  # a camera's index of its masters (publish/index.py)
        elif path.suffix == ".png" and str(path.with_suffix(".fits")) in recorded:
            continue  # a recorded master's preview
        elif path.parent == masters_dir and path.name == TmpfsDisk.BALLAST:
            report.discrepancy(f"the full-disk ballast was left behind: {path}")
        elif str(path) not in recorded:
            orphans += 1
            report.discrepancy(
                f"orphan: file under the masters directory not in the catalog: {path}"
            )
    for camera in cameras:
        check_latest(masters_dir / camera / "latest.fits", camera, state, report)
    return orphans, partials


def check_combined_once(state: CatalogState, report: Report) -> None:
    """No frame (by content) combined twice: one frames row per file, in one set."""
    combined = Counter(r["sha256"] for r in state.frames.values() if r["status"] == "combined")
    for sha, count in combined.items():
        if count > 1:
            paths = [path_key(r["path"]) for r in state.frames.values() if r["sha256"] == sha]
            report.discrepancy(f"frame {sha[:12]} combined {count} times: {paths}")


def check_stalls(
    log: Path, stall_camera: str | None, episodes: list[Episode], report: Report
) -> None:
    """camera.stalled only for the hung-mount camera, only while its mount hung."""
    windows = [
        (e.began, e.ended + dt.timedelta(seconds=STALL_GRACE_SECONDS))
        for e in episodes
        if e.name.startswith("hung mount") and e.began and e.ended
    ]
    for event in read_events(log):
        if event.get("event") != "camera.stalled":
            continue
        stamp = dt.datetime.fromisoformat(str(event["timestamp"])).astimezone(dt.UTC)
        inside = any(began <= stamp <= ended for began, ended in windows)
        if event.get("camera") != stall_camera or not inside:
            report.discrepancy(
                f"camera.stalled for {event.get('camera')} at {event['timestamp']} outside the "
                f"hung-mount episode: {event.get('hint') or event.get('action') or ''}"
            )


def check_latest(link: Path, camera: str, state: CatalogState, report: Report) -> None:
    """latest.fits resolves to one of the camera's masters (ideally its newest)."""
    own = [m for m in state.masters if m["camera"] == camera]
    if not link.is_symlink():
        if own:
            report.discrepancy(f"{camera}: {len(own)} masters but no latest.fits link")
        return
    target = link.resolve()
    mine = {str(Path(m["path"]).resolve()): m for m in own}
    if str(target) not in mine:
        report.discrepancy(f"{camera}: latest.fits -> {target}, not one of its masters")
        return
    if mine[str(target)]["state"] != "accepted":
        report.discrepancy(f"{camera}: latest.fits -> {target.name}, a rejected master")
        return
    accepted = [m for m in own if m["state"] == "accepted"]
    newest = max(accepted, key=lambda m: (m["night"], m["sequence"]))
    if mine[str(target)]["path"] != newest["path"]:
        report.note(
            f"{camera}: latest.fits -> {target.name}, the newest is {Path(newest['path']).name}"
        )


def check_raw_files(written: list[Written], report: Report) -> None:
    """No raw file was modified (or removed) since it was written."""
    for w in written:
        try:
            now = fingerprint(w.source or w.path, w.kind)
        except OSError as exc:
            report.discrepancy(f"{w.path.name}: cannot be read any more: {exc}")
            continue
        if now != w.sha256:
            report.discrepancy(f"{w.path.name}: modified since it was written ({now})")


def log_errors(log_path: Path) -> Counter[str]:
    """Events logged at error level or above, by name."""
    found: Counter[str] = Counter()
    if not log_path.exists():
        return found
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("level") in {"error", "critical", "exception"}:
            found[str(event.get("event"))] += 1
    return found
