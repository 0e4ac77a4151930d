"""Where a master file lives, by its verdict (pure: paths only, no I/O).

With ``X`` = ``<camera>_<night>_<NN>_<label>.fits``, an accepted master is
``<masters_dir>/<camera>/<night>/bias_X`` and a rejected one is
``<masters_dir>/<camera>/rejected/<night>/rejected_X``.
Both the folder and the name differ (issue 15, item 2): ``ccdproc.ImageFileCollection``
on a night folder sees only usable masters, and no glob of the accepted pattern, even
recursive (``**/bias_*.fits``), matches a rejected one. Night labels are dates
(rules/nights.py), so no night folder is ever called ``rejected``.

:func:`master_location` makes a new master's path; :func:`path_for_state` moves a
recorded path (whatever its masters_dir) to the place a verdict asks for. Every
module that names a master file uses one of the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

State = Literal["accepted", "rejected"]

ACCEPTED_PREFIX = "bias_"
REJECTED_PREFIX = "rejected_"
REJECTED_FOLDER = "rejected"


def master_location(
    masters_dir: Path, camera: str, night: str, sequence: int, geometry: str, state: str
) -> Path:
    """A master's path: its night folder when accepted, the rejected folder otherwise."""
    stem = f"{camera}_{night}_{sequence:02d}_{geometry}.fits"
    accepted = masters_dir / camera / night / f"{ACCEPTED_PREFIX}{stem}"
    return path_for_state(accepted, state)


def place_of(path: Path) -> State:
    """Which verdict's place ``path`` is in: ``rejected`` only in a rejected folder, by name."""
    in_folder = path.parent.parent.name == REJECTED_FOLDER
    return "rejected" if in_folder and path.name.startswith(REJECTED_PREFIX) else "accepted"


def path_for_state(path: Path, state: str) -> Path:
    """The same master's path in ``state``'s place (``path`` itself when it is there already).

    ``<camera>/<night>/bias_X`` and ``<camera>/rejected/<night>/rejected_X`` are the
    two places of one master. A name of an older layout that does not start with
    ``bias_`` keeps its whole name after the ``rejected_`` prefix.
    """
    if place_of(path) == state:
        return path
    if state == "rejected":
        name = path.name.removeprefix(ACCEPTED_PREFIX)
        return path.parent.parent / REJECTED_FOLDER / path.parent.name / f"{REJECTED_PREFIX}{name}"
    if state != "accepted":
        raise ValueError(f"no place for a master in state {state!r}")
    name = path.name.removeprefix(REJECTED_PREFIX)
    return path.parent.parent.parent / path.parent.name / f"{ACCEPTED_PREFIX}{name}"


def other_state(state: str) -> State:
    """The verdict a master would have to be moved from or to."""
    return "accepted" if state == "rejected" else "rejected"
