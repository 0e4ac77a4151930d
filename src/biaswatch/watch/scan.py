"""Listing watched directories for candidate frames: the scans that make events optional.

Events can be lost (an inotify overflow, reliability.md W1, is only logged by
watchdog 7.1; watch/overflow.py), so the service lists every watched directory at start,
every ``rescan_minutes``, after an overflow and after a watcher fault, and compares
with the catalog. The same name rules apply to events (watch/handler.py).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from functools import partial
from pathlib import Path

import structlog

from biaswatch.system.children import answers_within

log = structlog.get_logger(__name__)

# Names that writers use while a file is incomplete (rsync's ".name.XXXX",
# browsers' ".part", editors' "~"): never frames under these names.
_TEMPORARY = ("*.tmp", "*.part", "*.partial", "*~", "*.swp")
NOT_A_DIRECTORY = "not a directory"


def is_candidate(path: Path, patterns: Sequence[str]) -> bool:
    """Whether a file name matches the camera's patterns and is not a temporary name."""
    name = path.name
    if name.startswith(".") or any(fnmatch.fnmatch(name, t) for t in _TEMPORARY):
        return False
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def scan_dir(
    root: Path,
    patterns: Sequence[str],
    exclude: Sequence[Path] = (),
    progress: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Every candidate file below ``root``, skipping ``exclude`` trees; errors are logged.

    ``progress`` is called after each directory is listed.
    """

    def report(error: OSError) -> None:
        log.warning("watch.scan_error", directory=str(root), error=str(error))

    for dirpath, dirnames, filenames in os.walk(root, onerror=report):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _excluded(here / d, exclude)]
        for name in filenames:
            path = here / name
            if is_candidate(path, patterns):
                yield path
        if progress is not None:
            progress()


def _excluded(path: Path, exclude: Sequence[Path]) -> bool:
    return any(path == e or e in path.parents for e in exclude)


# What a command shows for a watch directory that did not answer within its timeout.
NOT_ANSWERING = "not answering (hung mount?)"


def probe_directories(
    directories: Iterable[Path], timeout: float, silent: Set[Path] = frozenset()
) -> dict[Path, str]:
    """Each directory's probe_directory, asked in a forked child; NOT_ANSWERING past ``timeout``.

    For the commands (one thread each: ``status``, ``check-config``): a stat stuck in a
    hung mount is left behind in its child, never waited for (system/children.py). A
    directory in ``silent`` (it did not answer already) is not asked again.
    """
    wanted = dict.fromkeys(directories)
    asked = [d for d in wanted if d not in silent]
    answers = answers_within({d: partial(probe_directory, d) for d in asked}, timeout)
    return {d: answers.get(d) or NOT_ANSWERING for d in wanted}


def probe_directory(path: Path) -> str:
    """ "ok", "missing", "not a directory" or "unreadable": what a watch root looks like now.

    One stat and one access check; on a hung mount this blocks, so the service
    calls it on the camera's own thread (frames/lanes.py), never on its main loop.
    """
    try:
        st = path.stat()
    except OSError:  # ENOENT, and also ESTALE/EIO/ENOTCONN from a mount that went away
        return "missing"
    if not stat.S_ISDIR(st.st_mode):  # a file where the directory should be
        return NOT_A_DIRECTORY
    return "ok" if os.access(path, os.R_OK | os.X_OK) else "unreadable"
