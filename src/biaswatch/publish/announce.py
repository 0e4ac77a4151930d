"""``latest.moved`` notices: a link now points at another master, or was removed.

A link moves after the catalog's commit (publish/master.py), so the notice cannot share
that transaction. Instead the catalog remembers what the last notice said each link
points at (its ``announced`` table), and after any link may have moved (a publication,
repair_latest at start-up and on its timer, ``biaswatch accept``/``reject``) the links
whose target differs from the announced one are announced, in one transaction with the
new memory. A crash before the link moved is mended by the start-up repair_latest, which
moves it and then announces it; a crash after the link moved but before the notice was
queued is announced by the same repair: nothing is lost and nothing announced twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from biaswatch.catalog.notices import LatestMove
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog

# (camera, configuration) -> the link's path; configuration '' is the camera's latest.fits.
LinkOf = Callable[[str, str], Path]


def announce_links(catalog: Catalog, link_of: LinkOf) -> list[int]:
    """Queue ``latest.moved`` for each link whose target is not the one last announced.

    A link is announced once it points at its newest accepted master on disk (a link
    left as it is because the file is missing is not news); one whose camera or
    configuration has no accepted master left is announced as removed. Returns the ids.
    """
    wanted = {(camera, ""): path for camera, path in catalog.latest_paths().items()}
    for (camera, geometry), path in catalog.latest_by_configuration().items():
        wanted[(camera, geometry)] = path
    announced = catalog.announced_links()
    changed = [
        key
        for key, path in wanted.items()
        if announced.get(key) != path and _points_at(link_of(*key), Path(path))
    ]
    removed = [key for key in announced if key not in wanted]
    if not changed and not removed:
        return []
    moves = [
        _move(key, wanted[key], announced.get(key), link_of(*key), _row(catalog, wanted[key]))
        for key in changed
    ]
    moves += [_move(key, None, announced[key], link_of(*key), None) for key in removed]
    return catalog.queue_latest_moves(moves)


def _row(catalog: Catalog, path: str) -> MasterRow | None:
    rows = catalog.masters(path=path)
    return rows[0] if rows else None


def _points_at(link: Path, target: Path) -> bool:
    try:
        return link.is_symlink() and link.resolve() == target.resolve()
    except OSError:
        return False


def _move(
    key: tuple[str, str], path: str | None, previous: str | None, link: Path, row: MasterRow | None
) -> LatestMove:
    camera, configuration = key
    payload: dict[str, Any] = {
        "link": str(link),
        "configuration": configuration or None,
        "path": path,
        "previous": previous,
        "night": None if row is None else row.night,
        "sequence": None if row is None else row.sequence,
        "state": None if row is None else row.state,
    }
    return LatestMove(camera, configuration, path, payload)
