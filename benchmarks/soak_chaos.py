"""The soak's instruments and episodes: READY=1, memory, a full disk, a hung mount, a second run.

- ``NotifySocket``: the service's ``NOTIFY_SOCKET``, bound as systemd does, so each
  start is seen reaching READY=1 (or not).
- ``memory_of``, ``RssWatch``: VmHWM of the service process, over all its restarts.
- ``MemoryCgroup``: the service in a memory cgroup (v1 or v2), as in issue 11's
  finding 3 ("a 1.2 GB memory cgroup"); its peak usage is reported.
- ``TmpfsDisk``: masters_dir on a small tmpfs that an episode fills with a ballast
  file, then frees.
- ``StallMount``: a second watch directory of one camera on tests/stallfs.py, a FUSE
  mirror that hangs like a dead NFS server while a control file exists.
- ``second_run``: a second ``biaswatch run`` on the same config, which must exit at once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STALLFS = Path(__file__).resolve().parent.parent / "tests" / "stallfs.py"
RSS_SAMPLE_SECONDS = 0.5


# --- READY=1 ----------------------------------------------------------------------


class NotifySocket:
    """A Unix datagram socket the service sends sd_notify messages to."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="bw-soak-")  # AF_UNIX paths must be short
        self.path = str(Path(self._dir) / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._reading = True
        self._reader = threading.Thread(target=self._read, name="notify", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._reading:
            try:
                message = self._sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(message)

    def mark(self) -> int:
        """How many messages came so far: READY=1 after this mark belongs to a new start."""
        with self._lock:
            return len(self._messages)

    def ready_since(self, mark: int) -> bool:
        """Whether READY=1 came after ``mark``."""
        with self._lock:
            return any("READY=1" in m.split("\n") for m in self._messages[mark:])

    def close(self) -> None:
        """Stop reading and remove the socket."""
        self._reading = False
        self._reader.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def read_events(log_path: Path) -> list[dict[str, Any]]:
    """Every whole JSON event of the service's log."""
    if not log_path.exists():
        return []
    events = []
    for line in log_path.read_bytes().splitlines():
        try:
            events.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line still being written
    return events


# --- memory -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """A process's VmRSS and VmHWM, in KiB."""

    rss: int
    hwm: int


def memory_of(pid: int) -> Memory | None:
    """VmRSS and VmHWM from /proc; None if the process is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    if len(values) < 2:  # a zombie has no memory lines
        return None
    return Memory(values["VmRSS"], values["VmHWM"])


class RssWatch(threading.Thread):
    """The largest VmHWM of the service process, whichever process that is now."""

    def __init__(self, current_pid: Callable[[], int | None]) -> None:
        super().__init__(name="rss-watch", daemon=True)
        self._current_pid = current_pid
        self.peak_kib = 0
        self.peak_pid = 0
        self.stop = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stop.wait(RSS_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        """Read the current service's VmHWM once."""
        pid = self._current_pid()
        memory = None if pid is None else memory_of(pid)
        if pid is not None and memory is not None and memory.hwm > self.peak_kib:
            self.peak_kib, self.peak_pid = memory.hwm, pid


class MemoryCgroup:
    """A memory cgroup with a limit, under the soak's own (v1 or v2); None-safe if refused."""

    def __init__(self, limit_bytes: int) -> None:
        self.path = _own_memory_cgroup() / f"biaswatch-soak-{os.getpid()}"
        self.version = 2 if (self.path.parent / "cgroup.controllers").exists() else 1
        self.path.mkdir()
        limit_file = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        (self.path / limit_file).write_text(str(limit_bytes))
        self.limit = limit_bytes

    def add(self, pid: int) -> None:
        """Move a process (and so its future children) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak_bytes(self) -> int | None:
        """The group's peak memory use, where the kernel reports it."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in the group."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def close(self) -> None:
        """Remove the group once it is empty."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _own_memory_cgroup() -> Path:
    """The directory of this process's memory cgroup (v1 memory controller, or v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, relative = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / relative.lstrip("/")
        if number == "0" and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / relative.lstrip("/")
    raise OSError("no memory cgroup found in /proc/self/cgroup")


def make_cgroup(limit_bytes: int) -> tuple[MemoryCgroup | None, str]:
    """A memory cgroup, or None and why not (not root, no controller...)."""
    if limit_bytes <= 0:
        return None, "no memory cgroup (--cgroup-limit 0)"
    try:
        group = MemoryCgroup(limit_bytes)
    except OSError as exc:
        return None, f"no memory cgroup: {exc}"
    return group, f"memory cgroup v{group.version} {group.path}, limit {limit_bytes} bytes"


# --- a full disk ------------------------------------------------------------------


class TmpfsDisk:
    """A small tmpfs mounted on a directory (masters_dir), and a ballast to fill it."""

    BALLAST = ".soak-ballast"

    def __init__(self, mountpoint: Path, size: str) -> None:
        self.mountpoint = mountpoint
        self.ballast = mountpoint / self.BALLAST
        mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
            check=True,
            capture_output=True,
        )

    def fill(self) -> int:
        """Write the ballast until the disk is full; the bytes written."""
        written = 0
        block = b"\0" * (1 << 20)
        with open(self.ballast, "wb") as stream:
            try:
                while True:
                    written += stream.write(block)
                    stream.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        return written

    def free(self) -> None:
        """Remove the ballast: space is back."""
        self.ballast.unlink(missing_ok=True)

    def close(self) -> None:
        """Copy what is on the tmpfs to the directory below it, then unmount.

        The masters stay where the catalog says they are, for the checks and for
        --keep; the tmpfs is gone once the soak ends.
        """
        self.free()
        keep = Path(tempfile.mkdtemp(prefix="bw-soak-masters-"))
        shutil.copytree(self.mountpoint, keep, symlinks=True, dirs_exist_ok=True)
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, check=False)
        shutil.copytree(keep, self.mountpoint, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(keep, ignore_errors=True)


# --- a hung mount -----------------------------------------------------------------


class StallMount:
    """tests/stallfs.py mirroring ``backing`` at ``mountpoint``; hangs while told to."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path) -> None:
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.backing = backing
        self.mountpoint = mountpoint
        self.control = backing.parent / "stall-control"
        self._log = open(log, "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, str(STALLFS), str(backing), str(mountpoint), str(self.control)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise OSError(f"stallfs did not mount {mountpoint} (see {log})")
            time.sleep(0.05)

    def hang(self) -> None:
        """From now on every call on the mount blocks."""
        self.control.touch()

    def resume(self) -> None:
        """Let the blocked calls complete."""
        self.control.unlink(missing_ok=True)

    def close(self) -> None:
        """Resume, unmount, stop the FUSE process."""
        self.resume()
        unmount = shutil.which("fusermount3")
        command = (
            [unmount, "-u", "-z", str(self.mountpoint)]
            if unmount
            else ["umount", "-l", str(self.mountpoint)]
        )
        subprocess.run(command, capture_output=True, check=False)
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


# --- a second run ---------------------------------------------------------------


@dataclass
class SecondRun:
    """What a second ``biaswatch run`` did."""

    status: int | None  # None: it was still running after the timeout (and was killed)
    seconds: float
    output: str
    problems: list[str] = field(default_factory=list)


def second_run(config: Path, env: dict[str, str], timeout: float) -> SecondRun:
    """Start ``biaswatch run`` on ``config`` in its own session; wait for it to end."""
    begun = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "biaswatch", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = None
    text = output.decode(errors="replace")
    return SecondRun(status, time.monotonic() - begun, text)
