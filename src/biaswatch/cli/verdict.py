"""``biaswatch accept`` and ``biaswatch reject``: the operator's verdict on a master.

The verdict overrules biaswatch's own, is kept in the catalog with who gave it
and why, and moves the master file to its verdict's place (rules/places.py: a
rejected master has its own folder and name, out of every ``bias_*.fits`` glob),
then the camera's links to its newest accepted master, then rewrites the camera's
index.json. No running service is needed: SQLite's WAL mode lets it write beside
the service.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

import structlog

from biaswatch.catalog.store import Catalog
from biaswatch.config import load_config
from biaswatch.publish.index import index_settings, write_index
from biaswatch.publish.master import repair_latest
from biaswatch.publish.placement import judge_and_move, reconcile
from biaswatch.rules.places import other_state, path_for_state, place_of


def record_verdict(args: argparse.Namespace) -> int:
    """Record the operator's verdict, move the file, its links and the camera's index."""
    config = load_config(args.config)
    # What moved is logged on stderr: stdout keeps the one-line answer scripts read.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    database = config.service.state_dir / "catalog.sqlite"
    if not database.exists():
        raise SystemExit("biaswatch: no catalog yet")
    # Catalog() itself refuses a catalog newer than this code (catalog/store.py).
    catalog = Catalog(database)
    masters_dir = config.service.masters_dir
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    reconcile(catalog)  # a move an earlier verdict left unfinished, first
    path = recorded_path({m.path for m in catalog.masters()}, args.master)
    try:
        master = judge_and_move(catalog, path, args.state, who, args.why)
    except KeyError:
        raise SystemExit(f"biaswatch: {args.master} is not a master in the catalog") from None
    except FileExistsError as exc:
        raise SystemExit(f"biaswatch: {exc.filename} exists; nothing was changed") from None
    if not Path(master.path).is_file():  # recorded all the same: the verdict is the catalog's
        print(f"biaswatch: {master.path} is missing; the verdict is recorded", file=sys.stderr)
    repair_latest(catalog, masters_dir, set(), expected=True)
    newest = catalog.newest_masters().get(master.camera)
    write_index(catalog, masters_dir, master.camera, index_settings(config, master.camera))
    catalog.close()
    print(
        f"{master.path}: {args.state} by {who} ({args.why}); latest.fits -> "
        f"{newest.path if newest else 'nothing accepted'}"
    )
    return 0


def recorded_path(known: set[str], given: Path) -> str:
    """The recorded master ``given`` names: as given, what a link points at, or moved.

    ``latest.fits`` names the current master; a path printed before a verdict moved
    the file (its other place, rules/places.py) still names the same master.
    """
    for candidate in (given.absolute(), given.resolve()):
        moved = path_for_state(candidate, other_state(place_of(candidate)))
        for path in (str(candidate), str(moved)):
            if path in known:
                return path
    return str(given.absolute())  # unknown: judge_and_move says so
