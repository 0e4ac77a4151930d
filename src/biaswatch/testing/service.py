"""Run the real service as a child process, as systemd would, and watch it.

The harness binds its own ``NOTIFY_SOCKET`` (a Unix datagram socket, as
systemd does) so tests see READY=1, WATCHDOG=1 and STOPPING=1 exactly as
they are sent, and reads the JSON log the service writes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from biaswatch.config import CameraConfig, load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry, simulate

# One numba cache for every service a test session starts: each service would
# otherwise compile the combine kernel afresh in its own state directory (~10 s).
NUMBA_CACHE = tempfile.mkdtemp(prefix="bw-numba-")

# Small but realistic frames: 48 x 40 image with an 8-column overscan strip.
CRYO_GEOMETRY = Geometry(
    rows=40, cols=56, biassec=Section(49, 56, 1, 40), trimsec=Section(1, 48, 1, 40)
)
TE_GEOMETRY = Geometry(rows=36, cols=36, biassec=None, trimsec=Section(1, 32, 1, 32))


def write_config(
    tmp_path: Path, extra: str = "", service: dict[str, object] | None = None, **defaults: object
) -> Path:
    """A config with cameras cryo (header sections) and te (no overscan, fixed trim)."""
    # Tests date frames in 2030 so that their night never ends while a suite runs:
    # the date_range believed must reach it (the default ends a day from now).
    settings = {
        "settle_seconds": 0.3,
        "expected_frames": 5,
        "date_range": ["1980-01-01", "2100-01-01"],
        # Frames dated now must fall in a night that has not ended, whatever the hour:
        # at the default 10:00, a run between 10:00 and the 12:00 rollover (Chicago;
        # 16:00-18:00 UTC) saw sets combined at min_frames by the night-end rule.
        "night_end": "11:59",
        **defaults,
    }
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    service_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (service or {}).items())
    text = (
        textwrap.dedent(
            """
        [service]
        state_dir = "state"
        masters_dir = "masters"
        log_file = "log/biaswatch.jsonl"
        poll_seconds = 0.1
        {service_lines}
        [site]
        timezone = "America/Chicago"
        [defaults]
        {lines}
        [cameras.cryo]
        watch = ["incoming/cryo"]
        [cameras.te]
        watch = ["incoming/te"]
        [cameras.te.calibrate]
        overscan = "none"
        trim = "[1:32,1:32]"
        """
        )
        .replace("{lines}", lines)
        .replace("{service_lines}", service_lines)
    )
    path = tmp_path / "config.toml"
    path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
    for camera in ("cryo", "te"):
        (tmp_path / "incoming" / camera).mkdir(parents=True, exist_ok=True)
    return path


def camera(config_path: Path, name: str) -> CameraConfig:
    """The camera's validated settings from the config file."""
    return load_config(config_path).camera(name)


def write_frames(
    config_path: Path,
    name: str,
    frames: int,
    *,
    interval: float = 0.2,
    seed: int = 1,
    now: Callable[[], dt.datetime] | None = None,
    geometry: Geometry | None = None,
    out_dir: Path | None = None,
) -> list[Path]:
    """Write realistic raw biases for a camera, each in pieces, as a camera does."""
    geometry = geometry or (CRYO_GEOMETRY if name == "cryo" else TE_GEOMETRY)
    return simulate(
        camera(config_path, name),
        frames=frames,
        interval=interval,
        seed=seed,
        geometry=geometry,
        pieces=3,
        piece_delay=0.1,
        out_dir=out_dir,
        now=now or (lambda: dt.datetime.now(dt.UTC)),
    )


class ServiceProcess:
    """``biaswatch run`` in a child process with a notify socket and log reader."""

    def __init__(
        self,
        config: Path,
        *,
        watchdog_usec: int | None = None,
        prefix: tuple[str, ...] = (),
        numba_cache: str = NUMBA_CACHE,
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
            "NUMBA_CACHE_DIR": numba_cache,
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
        wait_for(lambda: "READY=1" in self.messages, timeout, lambda: f"READY=1 ({self.tail()})")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log's events so far, optionally only those called ``name``."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if name is None or e["event"] == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until the log holds ``count`` events called ``name``; return them."""
        wait_for(
            lambda: len(self.events(name)) >= count,
            timeout,
            lambda: f"{count} x {name} ({self.tail()})",
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


def wait_for(condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout`` s.

    ``what`` may be a function, called only on failure, so that a message holding the
    service's log shows the log as it was when the wait gave up, not when it began.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    message = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


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
