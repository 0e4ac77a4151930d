"""Directories that must not overlap, compared after resolving ``..`` and symlinks.

A masters, state or work directory inside a watched tree (or holding one) turns the
service's own outputs into raw frames: masters ingested as biases, master 2 made from
master 1. Two cameras on one tree each record a share of its frames and neither gets
a set. Written paths hide both (``in/zz/../m/masters``, a symlink), so the comparison
uses ``os.path.realpath``; the configured paths themselves are left as written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import structlog

from biaswatch.system.children import answers_within

log = structlog.get_logger(__name__)

# realpath stats every component, and on a hard NFS mount whose server is gone a stat
# never returns (nfs(5) "hard"). A local or healthy network lookup answers in
# milliseconds; after 5 s (the patience watch/observers.py gives a stuck emitter) the path is
# compared as written, so a hung mount cannot hold the start past systemd's
# TimeoutStartSec (90 s by default, systemd-system.conf(5)).
RESOLVE_SECONDS = 5.0

# (what it is, the path): e.g. ("[service] masters_dir", /srv/masters).
Named = tuple[str, Path]
# Each path to its real path: resolve_all or resolve_in_children.
Resolver = Callable[[Sequence[Path]], dict[Path, Path]]


def overlap_problems(
    outputs: Sequence[Named],
    watches: Sequence[tuple[str, Path]],
    resolve: Resolver | None = None,
) -> list[str]:
    """Every overlap of an output directory with a watched tree, and of two cameras' trees.

    ``watches`` holds (camera name, watched directory) pairs; ``resolve`` is
    resolve_all (threads) unless the caller chooses resolve_in_children.
    """
    real = (resolve or resolve_all)([p for _, p in outputs] + [p for _, p in watches])
    problems = []
    for what, output in outputs:
        for camera, watch in watches:
            relation = _relation(real[output], real[watch])
            if relation:
                problems.append(
                    f"{what}: {_shown(output, real)} {relation} camera {camera}'s watched "
                    f"directory {_shown(watch, real)}: the service would read its own "
                    "outputs as raw frames; put it outside every watched directory"
                )
    for i, (camera, watch) in enumerate(watches):
        for other, other_watch in watches[:i]:
            relation = _relation(real[watch], real[other_watch])
            if other != camera and relation:
                problems.append(
                    f"[cameras.{camera}] watch: {_shown(watch, real)} {relation} camera "
                    f"{other}'s watched directory {_shown(other_watch, real)}: each frame "
                    "would go to only one of them; give each camera its own directory"
                )
    return problems


def compared_as_written(paths: Sequence[Path]) -> dict[Path, Path]:
    """Each path normalized, not resolved: no stat at all, so no mount can hang it.

    For the reading API (biaswatch.calibrations), which runs inside someone else's
    reduction process: it reads the catalog, never the watch directories, so a hung
    camera mount must not hold it; and forking children there (resolve_in_children)
    would be unsafe among the caller's threads.
    """
    return {path: Path(os.path.normpath(path)) for path in paths}


def resolve_all(paths: Sequence[Path], seconds: float = RESOLVE_SECONDS) -> dict[Path, Path]:
    """Each path resolved by ``os.path.realpath``; a path that hangs is only normalized."""
    found: dict[Path, Path] = {}
    threads = []
    for path in dict.fromkeys(paths):
        # A daemon thread each: one that never returns (a hung mount) is left behind
        # and does not keep the process from exiting.
        thread = threading.Thread(
            target=_resolve_into, args=(path, found), name="resolve", daemon=True
        )
        thread.start()
        threads.append((path, thread))
    deadline = time.monotonic() + seconds
    resolved = {}
    for path, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if path in found:
            resolved[path] = found[path]
        else:
            log.warning("config.path_unresolved", path=str(path), seconds=seconds)
            resolved[path] = Path(os.path.normpath(path))
    return resolved


def resolve_in_children(
    paths: Sequence[Path], seconds: float = RESOLVE_SECONDS, silent: set[Path] | None = None
) -> dict[Path, Path]:
    """resolve_all's answer, each path resolved in a forked child (system/children.py).

    For a command of one thread (``status``): a daemon thread stuck in a hung mount
    keeps the process from ever exiting (a FUSE call handed to its daemon survives
    SIGKILL), a stuck child is only left behind. Not for the running service: fork
    is unsafe once threads run. It logs nothing (a command's stdout is its output):
    the paths that did not answer are added to ``silent``, for the caller to report.
    """
    unique = list(dict.fromkeys(paths))
    answers = answers_within({path: partial(_realpath, path) for path in unique}, seconds)
    if silent is not None:
        silent.update(path for path, answer in answers.items() if answer is None)
    return {
        path: Path(os.path.normpath(path)) if answer is None else Path(answer)
        for path, answer in answers.items()
    }


def _resolve_into(path: Path, found: dict[Path, Path]) -> None:
    found[path] = Path(_realpath(path))


def _realpath(path: Path) -> str:
    """``os.path.realpath``, the call that may hang: one name for both ways of asking it."""
    return os.path.realpath(path)


def _relation(a: Path, b: Path) -> str:
    """How ``a`` stands to ``b``: "is", "is inside", "contains", or "" when apart."""
    if a == b:
        return "is"
    if a.is_relative_to(b):
        return "is inside"
    if b.is_relative_to(a):
        return "contains"
    return ""


def _shown(path: Path, real: dict[Path, Path]) -> str:
    """The path as written, and as resolved when that differs."""
    if real[path] == path:
        return f'"{path}"'
    return f'"{path}" (resolved: "{real[path]}")'
