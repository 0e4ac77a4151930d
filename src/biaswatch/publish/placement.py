"""Moving a master file to its verdict's place, and mending a move a crash interrupted.

Where each verdict's masters live is decided in rules/places.py. A verdict given
later (``biaswatch accept`` / ``reject``) changes the catalog row's state and path
in one transaction, then renames the file (:func:`judge_and_move`). A crash between
the two leaves the recorded path missing and the file in its other place:
:func:`reconcile` (run by the verdict command before it starts and by the service
at start-up) renames it to the recorded path and logs ``master.relocated``. It also
moves a master rejected before this layout existed (still named ``bias_*`` in its
night folder) to the rejected place, so an existing install becomes glob-safe.

A master is never deleted and never overwritten: a destination that exists is
refused (``FileExistsError``) and logged, and both files are left as they are.
``os.rename`` within the masters directory is atomic (POSIX rename(2)); the check
for an existing destination just before it leaves a window of microseconds in
which only a second writer of the very same sequenced name could slip in.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import structlog

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.rules.places import other_state, path_for_state, place_of
from biaswatch.system.faults import crash_point

log = structlog.get_logger(__name__)

_LEGACY = "rejected before rejected masters had their own folder and name: moved there"
_TAKEN = "a file of the master's new name exists: both are left as they are"
_GONE = "its file is missing: the verdict is recorded, there is nothing to move"
_INTERRUPTED = "a verdict's move was interrupted after the catalog changed: finished now"


def fsync_folder(directory: Path) -> None:
    """Make ``directory``'s entries (a new name, a removed one) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each new entry fsynced in its parent."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile (another publication): as good
            continue
        fsync_folder(folder.parent)


def move_master_file(source: Path, destination: Path) -> None:
    """Rename a master (and its preview) to ``destination``; FileExistsError if that exists."""
    if destination.exists() or destination.is_symlink():
        raise FileExistsError(
            errno.EEXIST, "a file of the master's new name exists", str(destination)
        )
    make_folder(destination.parent)
    source.rename(destination)
    fsync_folder(destination.parent)
    fsync_folder(source.parent)
    _move_preview(source, destination)


def _move_preview(source: Path, destination: Path) -> None:
    """The preview (publish/figure.py: the master's name, ``.png``) follows its master."""
    preview, wanted = source.with_suffix(".png"), destination.with_suffix(".png")
    if not preview.is_file() or wanted.exists():
        return
    try:
        preview.rename(wanted)
    except OSError as exc:  # only a picture: the master has moved, say so and go on
        log.warning("master.preview_not_moved", file=str(preview), error=str(exc))


def either_place_taken(accepted: Path) -> bool:
    """Whether a file holds this accepted master name or its rejected counterpart."""
    return accepted.exists() or path_for_state(accepted, "rejected").exists()


def judge_and_move(catalog: Catalog, path: str, state: str, by: str, why: str) -> MasterRow:
    """A person's verdict: catalog state and path in one transaction, then the file moves.

    Refused before any change (FileExistsError) when a file already holds the new
    name. KeyError if ``path`` is not a recorded master. A file already gone is
    logged (``master.not_moved``); the verdict is recorded all the same.
    """
    current = Path(path)
    wanted = path_for_state(current, state)
    if wanted != current and (wanted.exists() or wanted.is_symlink()):
        raise FileExistsError(errno.EEXIST, _TAKEN, str(wanted))
    master = catalog.judge_master(path, state, by, why, new_path=str(wanted))
    crash_point("after_verdict_commit")
    if wanted != current and not current.is_file():
        log.warning("master.not_moved", camera=master.camera, path=path, reason=_GONE)
    elif wanted != current:
        move_master_file(current, wanted)
        log.info("master.moved", camera=master.camera, source=path, path=str(wanted), state=state)
    return master


def reconcile(catalog: Catalog) -> set[str]:
    """Put every recorded master's file where the catalog says; the cameras whose files moved.

    Each master is its own unit: one that cannot be moved is logged
    (``master.relocate_failed``) and the next one looked at.
    """
    moved = set()
    for row in catalog.masters():
        try:
            if _reconcile_one(catalog, row):
                moved.add(row.camera)
        except Exception as exc:  # one master's boundary: log it, carry on
            log.error(
                "master.relocate_failed",
                camera=row.camera,
                night=row.night,
                path=row.path,
                error=f"{type(exc).__name__}: {exc}",
                action="left where it is; move it by hand or free the destination",
            )
    return moved


def _reconcile_one(catalog: Catalog, row: MasterRow) -> bool:
    """Whether this master's file was moved to where its row says it belongs."""
    recorded = Path(row.path)
    bound = log.bind(camera=row.camera, night=row.night, state=row.state)
    if not recorded.exists():
        other = path_for_state(recorded, other_state(place_of(recorded)))
        if not other.is_file():
            return False  # gone altogether: repair_latest names a missing newest master
        move_master_file(other, recorded)
        bound.warning("master.relocated", source=str(other), path=row.path, reason=_INTERRUPTED)
        return True
    if place_of(recorded) == row.state:
        return False
    wanted = path_for_state(recorded, row.state)
    if wanted.exists() or wanted.is_symlink():
        raise FileExistsError(errno.EEXIST, _TAKEN, str(wanted))
    catalog.relocate_master(row.path, str(wanted))
    move_master_file(recorded, wanted)
    bound.warning("master.relocated", source=row.path, path=str(wanted), reason=_LEGACY)
    return True
