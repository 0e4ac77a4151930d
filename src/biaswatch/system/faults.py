"""Crash points: where the fault-injection tests kill the service with SIGKILL.

The tests (tests/service/test_faults.py) must show that a power cut at the worst moments of
publishing a master loses nothing and duplicates nothing. ``crash_point(name)``
does nothing unless the environment names that point in ``BIASWATCH_CRASH_AT``;
then it sends SIGKILL to the service's main process (``BIASWATCH_SERVICE_PID``, set
at start and inherited by the combine children) and to the calling process. The
service clears neither variable: the test restarts it without them.

The points, in the order a master is published:

* ``after_temporary``: the combine child has written and fsynced the temporary master;
* ``after_rename``: the master has its final name, the catalog does not know it yet;
* ``after_commit``: the catalog records it, ``latest.fits`` does not point at it yet;
* ``after_verdict_commit``: ``biaswatch accept``/``reject`` has recorded a verdict and
  its file's new path, the file is not moved yet (publish/placement.py).

``pause_point`` holds a combine still instead, so a test can kill its local child or
its Dask worker.
"""

from __future__ import annotations

import os
import signal
import time

CRASH_AT = "BIASWATCH_CRASH_AT"
PAUSE_AT = "BIASWATCH_PAUSE_AT"
PAUSE_SECONDS = "BIASWATCH_PAUSE_SECONDS"
SERVICE_PID = "BIASWATCH_SERVICE_PID"
# The service's publishing points (tests/service/test_faults.py kills it at each).
POINTS = ("after_temporary", "after_rename", "after_commit")
# The verdict command's (tests/commands/test_verdict_files.py).
VERDICT_POINTS = ("after_verdict_commit",)


def mark_service() -> None:
    """Record this process as the service, for crash points in its children."""
    os.environ[SERVICE_PID] = str(os.getpid())


def crash_point(name: str) -> None:
    """SIGKILL the service (and this process) if BIASWATCH_CRASH_AT names this point."""
    assert name in POINTS or name in VERDICT_POINTS, name
    if os.environ.get(CRASH_AT) != name:
        return
    service = int(os.environ.get(SERVICE_PID, os.getpid()))
    os.kill(service, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    """Sleep BIASWATCH_PAUSE_SECONDS if BIASWATCH_PAUSE_AT names this point.

    ``mid_combine`` (a combine child or a cluster task has combined the pixels and not
    yet written the master) holds it still long enough for a test to kill it or its
    worker at a known moment instead of racing a combine of a few milliseconds.
    ``preload`` holds the combine fork server in its preload (combine/preload.py), as
    a slow first start would (a cold disk; the numba kernel compiled there for ~10 s
    before issue 14), so that tests can see the service wait for it or kill it there.
    """
    if os.environ.get(PAUSE_AT) == name:
        time.sleep(float(os.environ.get(PAUSE_SECONDS, "5")))
