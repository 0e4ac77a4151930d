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
import json
import os
import sys
from pathlib import Path

import structlog

from biaswatch.catalog.store import Catalog
from biaswatch.cli.common import EX_NOTFOUND, command_config, fail
from biaswatch.config import Config
from biaswatch.publish.index import index_settings, write_index
from biaswatch.publish.master import repair_latest
from biaswatch.publish.placement import judge_and_move, reconcile
from biaswatch.rules.places import other_state, path_for_state, place_of


def record_verdict(args: argparse.Namespace) -> int:
    """Record the operator's verdict, move the file, its links and the camera's index."""
    config = command_config(args.config)
    # What moved is logged on stderr: stdout keeps the one-line answer scripts read.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    database = config.service.state_dir / "catalog.sqlite"
    if not database.exists():
        return fail(args, EX_NOTFOUND, f"no catalog yet at {database}")
    # Catalog() itself refuses a catalog newer than this code (catalog/store.py).
    catalog = Catalog(database)
    try:
        return _judge_recorded(args, config, catalog)
    finally:
        catalog.close()


def _judge_recorded(args: argparse.Namespace, config: Config, catalog: Catalog) -> int:
    """Judge the master ``args`` names; print the answer (a line, or one JSON object)."""
    masters_dir = config.service.masters_dir
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    reconcile(catalog)  # a move an earlier verdict left unfinished, first
    path = recorded_path({m.path for m in catalog.masters()}, args.master)
    try:
        master = judge_and_move(catalog, path, args.state, who, args.why)
    except KeyError:
        return fail(args, EX_NOTFOUND, f"{args.master} is not a master in the catalog")
    except FileExistsError as exc:
        return fail(args, EX_NOTFOUND, f"{exc.filename} exists; nothing was changed")
    missing = not Path(master.path).is_file()
    if missing:  # recorded all the same: the verdict is the catalog's
        print(f"biaswatch: {master.path} is missing; the verdict is recorded", file=sys.stderr)
    repair_latest(catalog, masters_dir, set(), expected=True)
    newest = catalog.newest_masters().get(master.camera)
    write_index(catalog, masters_dir, master.camera, index_settings(config, master.camera))
    latest = newest.path if newest else None
    if args.json:
        answer = {"master": master.path, "camera": master.camera, "state": args.state}
        answer |= {"by": who, "why": args.why, "latest": latest, "file_missing": missing}
        print(json.dumps(answer))
    else:
        print(
            f"{master.path}: {args.state} by {who} ({args.why}); latest.fits -> "
            f"{latest or 'nothing accepted'}"
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
