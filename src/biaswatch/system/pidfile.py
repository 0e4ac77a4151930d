"""One service per state directory: an exclusive ``flock`` on ``state_dir/biaswatch.lock``.

The service takes the lock first thing at start, before it touches anything
(temporaries, the catalog, the fork server), and holds it for its whole life:
the kernel releases it when the process ends, however it ends, so a crash or a
SIGKILL leaves no stale claim. The file holds the holder's pid and start time,
for messages, and on a second line its runtime directory; who runs is told by
the lock alone, never by the pid in the file (a stale pid may belong to any
process by now).

The lock is always in the state directory, under systemd too: a lock in the
unit's ``RuntimeDirectory=`` is invisible to a ``biaswatch run`` started by hand
on the same config outside the unit, which would then run beside it (the
duplicate masters of issue 11, finding 2).

A re-execution on SIGHUP hands the locked descriptor to the new program
(``BIASWATCH_LOCK_FD``), so no second service can start in between.

Versions before issue 16 locked ``state_dir/biaswatch.pid`` (the name said pidfile;
it was a lock). A start also probes that legacy lock, with a shared lock it gives
back at once, and refuses to run beside an older version still holding it (after
an upgrade while one was started by hand, say); ``running`` reports it too. The
plain pidfile now lives in the runtime directory (system/runtime.py); the lock
file also records that directory, so ``biaswatch reload`` finds the service's
runtime files from the state directory alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from biaswatch.errors import BiaswatchError, ConfigError

NAME = "biaswatch.lock"
# The lock of versions before issue 16: probed, never taken.
LEGACY_NAME = "biaswatch.pid"
# The locked descriptor's number, for the program a reload re-executes.
INHERITED = "BIASWATCH_LOCK_FD"
# ``biaswatch status`` holds a shared lock for as long as it reads the file (well
# under a millisecond); a start that meets only shared holders retries this long.
SHARED_WAIT_SECONDS = 2.0
SHARED_RETRY_SECONDS = 0.01


class AlreadyRunning(BiaswatchError):
    """Another process holds the state directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
        super().__init__(f"another biaswatch service ({holder}) holds {path}")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The service's process id, when it started, its runtime directory (None: not written)."""

    pid: int | None
    since: str
    runtime: Path | None = None


class Lock:
    """The held lock: an open descriptor on the lock file."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def record(self, now: dt.datetime, runtime: Path | None = None) -> None:
        """Write this process's pid, start time and runtime directory into the locked file."""
        text = f"{os.getpid()} {now.isoformat(timespec='seconds')}\n".encode()
        if runtime is not None:  # a line of its own: a path may hold spaces
            text += os.fsencode(runtime) + b"\n"
        # Written over the old text, then cut to length: a reader never sees it empty.
        os.pwrite(self.fd, text, 0)
        os.ftruncate(self.fd, len(text))

    def keep_across_exec(self) -> None:
        """Let the program about to be exec'd inherit the lock (a reload)."""
        os.set_inheritable(self.fd, True)
        os.environ[INHERITED] = str(self.fd)

    def release(self) -> None:
        """At a clean stop: clear the file and give the lock up.

        The file itself stays: removing it would let a new service lock a new file
        while another still holds the old one.
        """
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)


def path_for(state_dir: Path) -> Path:
    """The lock file of the service on ``state_dir``."""
    return state_dir / NAME


def take(state_dir: Path, now: dt.datetime, runtime: Path | None = None) -> Lock:
    """Lock the state directory for this process, or say who holds it.

    ``runtime`` (the runtime directory, system/runtime.py) is recorded with the pid.

    Raises:
        AlreadyRunning: another process holds the lock, or an older version the legacy one.
        ConfigError: the lock file cannot be created or opened (permissions, a
            read-only file system): a deployment problem, like any other at start.
    """
    path = path_for(state_dir)
    lock = _inherited(path) or _open(path)
    try:
        _exclusive(lock.fd, path)
    except BaseException:
        os.close(lock.fd)
        raise
    os.set_inheritable(lock.fd, False)  # combine children, alerts: never holders
    try:
        _refuse_legacy_holder(state_dir)
    except BaseException:
        lock.release()
        raise
    lock.record(now, runtime)
    return lock


def _refuse_legacy_holder(state_dir: Path) -> None:
    """Raise AlreadyRunning if a version before issue 16 holds ``biaswatch.pid``.

    Probed after our own lock is taken, so a new version starting meanwhile waits on
    ours; an older version's ``status`` probe (a shared lock) is not a holder.
    """
    legacy = state_dir / LEGACY_NAME
    holder = _held(legacy)
    if holder is not None:
        raise AlreadyRunning(legacy, holder.pid)


def _inherited(path: Path) -> Lock | None:
    """The lock a reload handed down, if it is this state directory's."""
    value = os.environ.pop(INHERITED, None)
    if value is None:
        return None
    try:
        fd = int(value)
        held = os.fstat(fd)
    except (ValueError, OSError):
        return None  # nothing usable was handed down
    try:
        wanted = path.stat()
    except OSError:
        wanted = None
    if wanted is not None and (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
        return Lock(fd, path)
    os.close(fd)  # the new config names another state directory: free the old one
    return None


def _open(path: Path) -> Lock:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        problem = f"[service] state_dir: cannot open the lock file {path}: {exc.strerror}; "
        problem += "give the service's user write access to the state directory"
        raise ConfigError([problem]) from exc
    return Lock(fd, path)


def _exclusive(fd: int, path: Path) -> None:
    """Take the exclusive lock; wait out a ``status`` probe, never another service."""
    deadline = time.monotonic() + SHARED_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not _only_shared_holders(fd) or time.monotonic() >= deadline:
            raise AlreadyRunning(path, _recorded(fd).pid)
        time.sleep(SHARED_RETRY_SECONDS)


def _only_shared_holders(fd: int) -> bool:
    """Whether the lock is held shared only (``status`` probes), not by a service."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def running(state_dir: Path) -> LockHolder | None:
    """The service holding ``state_dir``'s lock, or None if no process holds it.

    Opens the file read-only, so that an operator who may read but not write the
    state directory can ask. A shared lock granted means no service holds it,
    whatever pid the file names.

    Raises:
        OSError: the file exists but cannot be read (permissions).
    """
    return _held(path_for(state_dir)) or _held(state_dir / LEGACY_NAME)


def _held(path: Path) -> LockHolder | None:
    """Who holds the lock on ``path`` exclusively, probed with a shared lock; None: nobody."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _recorded(fd)
        return None
    finally:
        os.close(fd)  # also gives the shared lock back


def _recorded(fd: int) -> LockHolder:
    """The pid, start time and runtime directory the holder wrote; pid None if not readable."""
    try:
        # The first line (pid and time, ~40 bytes) and a runtime path (PATH_MAX 4096,
        # limits.h): 4200 bytes read the whole record.
        first, _, rest = os.pread(fd, 4200, 0).partition(b"\n")
        pid_text, since = first.decode("ascii").split()
        runtime = rest.rstrip(b"\n")
        return LockHolder(int(pid_text), since, Path(os.fsdecode(runtime)) if runtime else None)
    except (OSError, ValueError):
        return LockHolder(None, "")
