"""The inotify instance limit, reached for real under the running service: it polls instead.

inotify counts instances per user (``fs.inotify.max_user_instances``, inotify(7)),
whatever the process and whatever its capabilities. The limit is reached without
touching the sysctl, which every user of the machine shares: a holder process running
as a uid of its own (no user, no other process) opens instances until the kernel says
EMFILE and keeps them, and the service is started as the same uid. Its watchers must
then fall back to polling, log ``watch.inotify_limit`` with the sysctl that lifts the
limit, tell systemd ``STATUS=degraded: ...``, and still find and combine new frames.
``tests/service/test_watch.py`` checks the same fallback one level down, with a fake observer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from biaswatch.testing.helpers import wait_until, write_config, write_frames
from biaswatch.testing.service import (
    as_uid,
    catalog_rows,
    inotify_instances,
    running_service,
)

MAX_USER_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
# A uid no account has: the holder and the service are alone in it, so the instances
# they take are nobody else's (both checked before the test runs).
UID = 47123
# The holder keeps one open instance per file descriptor: past this many the sysctl was
# raised on purpose and filling it would take the holder's whole fd limit.
LARGEST_LIMIT = 16384
POLL_SECONDS = 0.5

# As UID, keeping only CAP_DAC_READ_SEARCH (read and search any file, write none): the
# interpreter may live where only root can read (pyenv under /root on this machine).
# inotify counts the instances by uid whatever the capabilities.
AS_UID = as_uid(UID)
# The service must send to the harness's notify socket, in a directory only root may
# enter: the prefix (still root) hands both to UID, then becomes UID and the service.
SERVICE_PREFIX = ("sh", "-c", f'chown -R {UID} "${{NOTIFY_SOCKET%/*}}" && exec "$@"', "sh")

# Opens inotify instances until the kernel refuses, says how many and why, and holds them
# until killed, or until pytest dies (PR_SET_PDEATHSIG, 1): a holder left behind would
# keep UID at its limit.
HOLDER = """
import ctypes, errno, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGKILL)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = 0
while libc.inotify_init1(os.O_CLOEXEC) >= 0:
    held += 1
print(held, errno.errorcode.get(ctypes.get_errno(), "?"), hard, flush=True)
signal.pause()
"""


def uid_in_use(uid: int) -> bool:
    """Whether a live process (not a zombie) runs with ``uid`` as its real or effective user."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text(errors="replace").splitlines()
            )
        except (OSError, ValueError):
            continue  # gone meanwhile
        zombie = fields.get("State", "").strip().startswith("Z")
        if not zombie and str(uid) in fields.get("Uid", "").split()[:2]:
            return True
    return False


def instance_limit() -> int:
    """The machine's max_user_instances; skips where this test cannot run."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a holder and the service as another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    try:
        limit = int(MAX_USER_INSTANCES.read_text(encoding="ascii"))
    except OSError as error:
        pytest.skip(f"cannot read {MAX_USER_INSTANCES} (not Linux?): {error}")
    if limit > LARGEST_LIMIT:
        pytest.skip(f"max_user_instances is {limit}: too many to hold")
    with contextlib.suppress(KeyError):
        pytest.skip(f"uid {UID} is {pwd.getpwuid(UID).pw_name}'s: its instances are not ours")
    if uid_in_use(UID):
        pytest.skip(f"uid {UID} is in use: its inotify instances are not ours to take")
    return limit


@pytest.fixture(name="holder")
def _holder() -> Iterator[int]:
    """A process of UID holding every inotify instance the kernel lets UID have.

    Yields how many it holds; killed afterwards, which gives them back.
    """
    limit = instance_limit()
    with subprocess.Popen(
        [*AS_UID, sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "the holder said nothing within 60 s"
            held, why, fd_limit = process.stdout.readline().split()
            if why == "EMFILE" and int(held) < limit and int(held) >= int(fd_limit) - 8:
                pytest.skip(f"the holder's fd limit ({fd_limit}) is below max_user_instances")
            assert (int(held), why) == (limit, "EMFILE"), f"{held} instances held, then {why}"
            yield int(held)
        finally:
            process.kill()
            process.wait()


@pytest.fixture(name="work")
def _work() -> Iterator[Path]:
    """A fresh directory of UID's own, removed afterwards.

    Not pytest's tmp_path: its parents are root's alone, and the service checks its
    watch directories with access(2), which leaves capabilities aside for a non-root uid.
    """
    work = Path(tempfile.mkdtemp(prefix="bw-limits-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def chown_tree(root: Path, uid: int) -> None:
    """Give ``root`` and everything below it to ``uid`` (user and group)."""
    os.chown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(Path(parent) / name, uid, uid)


def uid_of(pid: int) -> int:
    """The effective uid of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise AssertionError(f"no Uid line for process {pid}")


def test_inotify_instance_limit_degrades_to_polling_and_frames_still_combine(
    holder: int, work: Path
) -> None:
    """At the inotify instance limit every camera polls, says so, and new frames combine."""
    config = write_config(work, expected_frames=3, poll_interval_seconds=POLL_SECONDS)
    chown_tree(work, UID)
    with running_service(
        config,
        prefix=(*SERVICE_PREFIX, *AS_UID),
        env={"HOME": str(work)},
    ) as service:
        pid = service.proc.pid
        limits = service.wait_event("watch.inotify_limit", count=2)
        degraded = (
            "STATUS=degraded: "
            f"cryo: polling every {POLL_SECONDS:g} s, inotify instance limit reached; "
            f"te: polling every {POLL_SECONDS:g} s, inotify instance limit reached"
        )
        wait_until(lambda: degraded in service.messages, 60, f"{degraded} ({service.messages})")
        service_uid, instances = uid_of(pid), inotify_instances(pid)
        write_frames(config, "cryo", 3, interval=0.0)
        (published,) = service.wait_event("master.published", timeout=120)
        # The master joins the STATUS= line; the cameras are still polling, and say so.
        still = f"{degraded}; last master: {Path(published['path']).name}"
        wait_until(lambda: still in service.messages, 30, lambda: f"{still} ({service.messages})")
        reconciled = [e for e in service.events("scan.reconciled") if e["missing"] > 0]
        assert service.stop()[0] == 0
    assert service_uid == UID, "the service must share the holder's uid to share its limit"
    assert instances == 0, "at the limit the service cannot hold an inotify instance"
    assert sorted(e["camera"] for e in limits) == ["cryo", "te"]
    for event in limits:
        assert event["level"] == "error"
        assert event["errno"] == errno.errorcode[errno.EMFILE]
        assert event["directory"] == str(work / "incoming" / event["camera"])
        assert "sysctl -w fs.inotify.max_user_instances=1024" in event["action"]
        assert f"polling every {POLL_SECONDS:g} s meanwhile" in event["action"]
    # Found by the polling observers: a rescan (every 10 min) would have said "missing".
    assert reconciled == []
    assert published["camera"] == "cryo" and published["ncombine"] == 3
    statuses = catalog_rows(config, "SELECT status FROM frames")
    assert [r["status"] for r in statuses] == ["combined"] * 3
    assert len(catalog_rows(config, "SELECT * FROM masters")) == 1
