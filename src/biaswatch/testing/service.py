"""Run the real service as a child process, as systemd would, and watch it (the service tier).

The harness binds its own ``NOTIFY_SOCKET`` (a Unix datagram socket, as
systemd does) so tests see READY=1, WATCHDOG=1 and STOPPING=1 exactly as
they are sent, and reads the JSON log the service writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from biaswatch.testing.helpers import wait_until


class ServiceProcess:
    """``biaswatch run`` in a child process with a notify socket and log reader."""

    def __init__(
        self,
        config: Path,
        *,
        watchdog_usec: int | None = None,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.base = config.parent
        self.log_path = self.base / "log" / "biaswatch.jsonl"
        self._sockdir = tempfile.mkdtemp(prefix="bw-")  # AF_UNIX paths must be short
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(Path(self._sockdir) / "notify"))
        self._sock.settimeout(0.2)
        self.messages: list[str] = []
        self._reading = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(Path(self._sockdir) / "notify"),
            **(env or {}),
        }
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.output = open(self.base / "service-output.txt", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "biaswatch", "run", "--config", str(config)],
            stdout=self.output,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def _read(self) -> None:
        while self._reading:
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for READY=1 on the notify socket."""
        wait_until(
            lambda: "READY=1" in self.messages, timeout, lambda: f"READY=1 ({self.tail()})", 0.1
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log's events so far, optionally only those called ``name``."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if name is None or e["event"] == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until the log holds ``count`` events called ``name``; return them."""
        wait_until(
            lambda: len(self.events(name)) >= count,
            timeout,
            lambda: f"{count} x {name} ({self.tail()})",
            0.1,  # each look reads the whole log
        )
        return self.events(name)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM, then wait; returns (exit status, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=timeout)
        return status, time.monotonic() - start

    def close(self) -> None:
        """Kill the process if still running and release the socket."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reading = False
        self._reader.join(timeout=2)
        self._sock.close()
        self.output.close()

    def tail(self) -> str:
        """The service's last output and log events, for failure messages."""
        text = (self.base / "service-output.txt").read_text(errors="replace")
        lines = (
            self.log_path.read_text(errors="replace").splitlines()[-40:]
            if self.log_path.exists()
            else []
        )
        return text[-2000:] + "\nlast log events:\n" + "\n".join(line[:400] for line in lines)


@contextmanager
def running_service(config: Path, **kwargs: Any) -> Iterator[ServiceProcess]:
    """A started, ready service that is stopped (or killed) afterwards."""
    service = ServiceProcess(config, **kwargs)
    try:
        service.wait_ready()
        yield service
    finally:
        service.close()


def inotify_instances(pid: int) -> int:
    """How many inotify instances process ``pid`` holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += str(fd.readlink()) == "anon_inode:inotify"
        except OSError:  # closed between listing and reading
            continue
    return count


def catalog_rows(config: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Rows from the service's catalog (read-only connection)."""
    return rows_in(config.parent / "state", sql, *args)


def rows_in(state: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Rows from the catalog in ``state`` (read-only connection)."""
    db = sqlite3.connect(f"file:{state / 'catalog.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def masters_in(directory: Path) -> list[Path]:
    """Master files below ``directory``: the latest.fits and latest-<label>.fits links left out."""
    return sorted(p for p in directory.rglob("*.fits") if p.is_file() and not p.is_symlink())


def master_data(path: str | Path) -> np.ndarray:
    """A master's pixels as float64."""
    with fits.open(path) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64)


# The events that end a set's combine in the log, whichever way it went (as burst.py).
COMBINE_ENDS = {"master.published", "combine.retrying", "set.failed", "combine.abandoned"}


def most_combines_at_once(events: list[dict[str, Any]]) -> int:
    """The most combines running at once, from the log (which is in order)."""
    running: set[int] = set()
    most = 0
    for event in events:
        if event["event"] == "combine.started":
            running.add(int(event["set"]))
            most = max(most, len(running))
        elif event["event"] in COMBINE_ENDS:
            running.discard(int(event.get("set", -1)))
    return most


def as_uid(uid: int) -> tuple[str, ...]:
    """A ``setpriv`` prefix running a command as ``uid``, keeping only CAP_DAC_READ_SEARCH.

    It may read and search any file (the interpreter may live where only root can read:
    pyenv under /root on this machine) and write only where the permission bits allow.
    """
    return (
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    )


# The user the read-only tests run commands as: nobody (tests/commands/test_readonly.py).
READER = 65534


@contextmanager
def searchable_tree(prefix: str) -> Iterator[Path]:
    """A new folder under the system's temporary folder that every user may search.

    Not root's 0700 pytest folder: SQLite checks the -shm with access(2), which ignores
    capabilities for a non-root uid, and an operator reads a state directory they can
    reach, not one a capability alone lets them open.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)
