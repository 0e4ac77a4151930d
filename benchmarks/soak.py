"""Soak test: the real service under a steady trickle of frames, killed and restarted at random.

Usage:
    .venv/bin/python benchmarks/soak.py [--minutes 10] [--cameras 4] [--seed 1]
        [--dir DIR] [--keep] [--kill-every 15 60] [--settle-timeout 300]

Not part of the test suite: it runs for minutes and loads the machine. It makes a work
directory (a new temporary one, or --dir, which must be empty or missing), writes a
config.toml for --cameras cameras (cam1, cam2, ...), each watching its own directory,
with settings that close sets quickly (5 frames a set, a 12 s quiet time, 0.5 s settle,
30 s before an incomplete file is rejected as truncated), and starts the real service
(``python -m biaswatch run``) in its own session, its output in service-output.txt and
its JSON log in log/biaswatch.jsonl. A service that knows ``combine_retry_seconds`` gets
5 s, so a retried combine does not hold up the end of the soak.

For --minutes minutes, one feeder thread per camera writes small raw bias frames
(64 x 72 uint16 with an 8-column overscan), each in pieces under its final name as a
camera does, with random gaps of 0.1-3 s. A few percent of the files are bad (random
bytes named .fits, or a FITS file cut short and never completed) and a few are flats
(IMAGETYP = 'flat'). The script keeps a ledger of every file, its sha256 and what it
must become: a bias combined, a bad file rejected with a reason, a flat ignored.

Meanwhile, every --kill-every MIN MAX seconds, the service is hit at random:
- SIGKILL of its whole process group (fork server and combine child included), then
  an immediate restart (most often);
- SIGTERM, which must end it with status 0 within 30 s, then a restart;
- SIGKILL of a running combine child only (found in /proc as a grandchild of the
  service, below the fork server); the service keeps running.
After each service kill, the old process group must be gone within 10 s.

Then feeding stops, the service is left to settle (every file recorded, every set
done, failed or insufficient; the quiet time closes the last sets) for at most
--settle-timeout seconds, it is stopped with SIGTERM, and the catalog (read-only) and
the files are checked:
- every file written has exactly one frames row, with the expected status (a bias
  combined: a bias left in a failed set is a discrepancy; a bad file rejected with a
  reason that says why; a flat ignored), and no row names a file the feeder did not
  write;
- every set is done; insufficient and failed sets are listed with their reason;
- each done set has one master: the file exists, opens with astropy with valid
  checksums, its NCOMBINE equals the catalog's ncombine and the set's combined
  frames, its BWDIGEST the catalog's input_digest and the digest of the frames as
  written; no two masters share an input_digest; no ".partial-" file and no file
  unknown to the catalog is left under the masters directory; each camera's
  latest.fits resolves to one of its masters;
- no raw file changed since it was written (sha256).

It prints a summary and every discrepancy, one line each, and exits 1 if there is any.
The work directory is removed unless --keep or --dir is given, or a discrepancy was
found; its path is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from astropy.io import fits

from biaswatch.config import CameraConfig, ServiceConfig, load_config
from biaswatch.sections import Section
from biaswatch.sets import input_digest
from biaswatch.simulate import (
    Geometry,
    camera_header,
    camera_seed,
    frame_bytes,
    make_raw_bias,
    make_structure,
    write_in_pieces,
)

# A 64 x 64 image with an 8-column overscan strip on its right: a combine takes
# milliseconds, so the soak exercises the bookkeeping, not the arithmetic.
GEOMETRY = Geometry(rows=64, cols=72, biassec=Section(65, 72, 1, 64), trimsec=Section(1, 64, 1, 64))
EXPECTED_FRAMES = 5
NUMBA_CACHE = Path(__file__).parent / "out" / "numba"

# What a feeder writes, by probability; the rest are biases.
P_RANDOM = 0.02
P_TRUNCATED = 0.02
P_FLAT = 0.04
GAP_SECONDS = (0.1, 3.0)

# The chaos loop's choice among its actions, by weight.
KILL_WEIGHTS = {"SIGKILL": 6, "SIGTERM": 2, "child-kill": 2}
TERM_TIMEOUT = 30.0
GROUP_GONE_TIMEOUT = 10.0

CONFIG = """
[service]
state_dir = "state"
masters_dir = "masters"
log_file = "log/biaswatch.jsonl"
mem_limit = "64MB"
poll_seconds = 0.2
{service_extra}[site]
timezone = "UTC"
[defaults]
expected_frames = {expected}
min_frames = 1
quiet_minutes = 0.2
settle_seconds = 0.5
max_incomplete_minutes = 0.5
"""

# What each kind of file must become, and how the reason of a rejection starts.
EXPECTED_STATUS = {"bias": "combined", "random": "rejected", "truncated": "rejected"}
EXPECTED_STATUS["flat"] = "ignored"
EXPECTED_REASON = {"random": "not a FITS file", "truncated": "truncated"}


def elapsed_stamp(start: float) -> str:
    """Seconds since ``start`` as a log prefix."""
    return f"[{time.monotonic() - start:7.1f} s]"


# --- the ledger -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """One file a feeder wrote, and what the service must make of it."""

    path: Path
    camera: str
    kind: str  # bias, random, truncated, flat
    sha256: str

    @property
    def expected(self) -> str:
        """The frame status this file must end with."""
        return EXPECTED_STATUS[self.kind]


class Ledger:
    """Every file written, shared by the feeder threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: list[Written] = []

    def add(self, written: Written) -> None:
        """Note a file once it is written (completely, or as far as it ever will be)."""
        with self._lock:
            self._files.append(written)

    def files(self) -> list[Written]:
        """A snapshot of every file written so far."""
        with self._lock:
            return list(self._files)


# --- the report -------------------------------------------------------------


@dataclass
class Report:
    """Counters and findings, printed at the end."""

    start: float = field(default_factory=time.monotonic)
    actions: Counter[str] = field(default_factory=Counter)
    discrepancies: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str) -> None:
        """A progress line."""
        print(f"{elapsed_stamp(self.start)} {text}", flush=True)

    def discrepancy(self, text: str) -> None:
        """A finding that fails the soak."""
        with self.lock:
            self.discrepancies.append(text)

    def note(self, text: str) -> None:
        """Something worth knowing that does not fail the soak."""
        with self.lock:
            self.notes.append(text)


# --- processes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    """One line of /proc: a process's parent, group, state and command."""

    pid: int
    ppid: int
    pgrp: int
    state: str


def proc_table() -> dict[int, Proc]:
    """Every process visible in /proc (psutil is not installed)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        table[pid] = Proc(pid, int(fields[1]), int(fields[2]), fields[0])
    return table


def grandchildren(pid: int) -> list[int]:
    """Live processes two or more levels below ``pid``: the combine children.

    The service's children are the fork server and the resource tracker; every
    combine child is forked by the fork server.
    """
    table = proc_table()
    children: dict[int, list[int]] = {}
    for proc in table.values():
        if proc.state != "Z":
            children.setdefault(proc.ppid, []).append(proc.pid)
    found: list[int] = []
    level = children.get(pid, [])
    while level:
        level = [c for p in level for c in children.get(p, [])]
        found += level
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    return [p.pid for p in proc_table().values() if p.pgrp == pgid and p.state != "Z"]


def command_line(pid: int) -> str:
    """A process's command line, for messages."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


class ServiceRunner:
    """``biaswatch run`` in its own session, restarted as often as the chaos asks."""

    def __init__(self, config: Path, work: Path) -> None:
        self.config = config
        self.log_path = work / "log" / "biaswatch.jsonl"
        self._output: IO[bytes] = open(work / "service-output.txt", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    def start(self) -> None:
        """Start a new service process; its log starts at the current end of the log."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "NUMBA_CACHE_DIR": str(NUMBA_CACHE)}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "biaswatch", "run", "--config", str(self.config)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: killpg reaches the combine children too
        )
        self.starts += 1

    @property
    def pid(self) -> int:
        """The running service's pid."""
        assert self.proc is not None
        return self.proc.pid

    def exit_status(self) -> int | None:
        """None while it runs, else its exit status."""
        assert self.proc is not None
        return self.proc.poll()

    def events_since_start(self) -> list[dict[str, Any]]:
        """The log's events written since the current process started."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as stream:
            stream.seek(self._log_offset)
            lines = stream.read().decode(errors="replace").splitlines()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line still being written
        return events

    def wait_event(self, name: str, timeout: float) -> bool:
        """Wait for an event of this run; False after ``timeout`` or if the service ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.exit_status() is None:
            if any(e.get("event") == name for e in self.events_since_start()):
                return True
            time.sleep(0.1)
        return False

    def kill_group(self) -> None:
        """SIGKILL the service's whole process group and reap the service."""
        assert self.proc is not None
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit status or None on timeout, seconds taken)."""
        assert self.proc is not None
        begun = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        return status, time.monotonic() - begun

    def close(self) -> None:
        """Kill whatever is left of the current process group; close the output file."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill_group()
        self._output.close()


# --- the work directory and config ----------------------------------------------


def make_work_dir(requested: Path | None) -> Path:
    """A fresh work directory: --dir (empty or missing) or a new temporary one."""
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="biaswatch-soak-")).resolve()
    if requested.exists() and any(requested.iterdir()):
        raise SystemExit(f"--dir {requested} is not empty: the soak needs a fresh catalog")
    requested.mkdir(parents=True, exist_ok=True)
    return requested.resolve()


def camera_names(count: int) -> list[str]:
    """cam1, cam2, ..."""
    return [f"cam{i}" for i in range(1, count + 1)]


def service_extra() -> str:
    """[service] keys only some versions of the service know: a short combine retry.

    A service that retries a failed combine waits combine_retry_seconds (60 s by
    default, doubling) first; 5 s keeps the soak's settling short. Older services
    reject the unknown key, so it is written only if this biaswatch has it.
    """
    known = ServiceConfig.model_fields
    return "combine_retry_seconds = 5\n" if "combine_retry_seconds" in known else ""


def write_config(work: Path, cameras: list[str]) -> Path:
    """The soak's config.toml: one incoming directory per camera."""
    text = CONFIG.replace("{expected}", str(EXPECTED_FRAMES))
    text = text.replace("{service_extra}", service_extra())
    for name in cameras:
        text += f'[cameras.{name}]\nwatch = ["incoming/{name}"]\n'
        (work / "incoming" / name).mkdir(parents=True)
    path = work / "config.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- feeders ----------------------------------------------------------------


class Feeder(threading.Thread):
    """Writes one camera's frames, with random gaps, until told to stop."""

    def __init__(
        self, camera: CameraConfig, directory: Path, seed: int, ledger: Ledger, report: Report
    ) -> None:
        super().__init__(name=f"feeder-{camera.name}", daemon=True)
        self.camera = camera
        self.directory = directory
        self.ledger = ledger
        self.report = report
        self.stop = threading.Event()
        self._rng = random.Random(seed)
        self._noise = np.random.default_rng(seed)
        self._structure = make_structure(GEOMETRY, camera_seed(camera.name))
        self._number = 0

    def run(self) -> None:
        """Write until stopped; a failure to write is a discrepancy of the soak itself."""
        try:
            while not self.stop.wait(self._rng.uniform(*GAP_SECONDS)):
                self.ledger.add(self._write_one())
        except Exception as exc:
            self.report.discrepancy(f"feeder {self.camera.name} failed: {exc!r}")

    def _write_one(self) -> Written:
        self._number += 1
        kind = self._choose_kind()
        path = self.directory / f"{self.camera.name}_{self._number:05d}_{kind}.fits"
        payload = self._payload(kind)
        pieces = 1 if kind == "random" else self._rng.randint(2, 4)
        write_in_pieces(path, payload, pieces, self._rng.uniform(0.02, 0.2))
        return Written(path, self.camera.name, kind, hashlib.sha256(payload).hexdigest())

    def _choose_kind(self) -> str:
        draw = self._rng.random()
        for kind, chance in (("random", P_RANDOM), ("truncated", P_TRUNCATED), ("flat", P_FLAT)):
            if draw < chance:
                return kind
            draw -= chance
        return "bias"

    def _payload(self, kind: str) -> bytes:
        if kind == "random":
            return self._noise.bytes(self._rng.randint(100, 20_000))
        header = camera_header(self.camera, GEOMETRY, dt.datetime.now(dt.UTC), self._number)
        if kind == "flat":
            header[self.camera.imagetyp_keyword] = ("flat", "type of image")
        data = make_raw_bias(GEOMETRY, self._noise, structure=self._structure)
        full = frame_bytes(data, header, hdu=self.camera.hdu)
        if kind == "truncated":  # cut in the header or the data, and never completed
            return full[: self._rng.randint(1, data_end(full) - 1)]
        return full


def data_end(payload: bytes) -> int:
    """Where the last data byte of a one-HDU uint16 frame of GEOMETRY ends.

    What follows is the last block's padding: a file cut there still holds the whole
    image, and the service reads it (some cameras never write that padding).
    """
    data = GEOMETRY.rows * GEOMETRY.cols * 2
    return len(payload) - (-data % 2880)


def start_feeders(
    config: Path, cameras: list[str], seed: int, ledger: Ledger, report: Report
) -> list[Feeder]:
    """One running feeder per camera."""
    settings = load_config(config)
    feeders = []
    for index, name in enumerate(cameras):
        camera = settings.camera(name)
        feeder = Feeder(camera, camera.watch[0], seed * 1000 + index, ledger, report)
        feeder.start()
        feeders.append(feeder)
    return feeders


def stop_feeders(feeders: list[Feeder]) -> None:
    """Stop every feeder after the file it is writing."""
    for feeder in feeders:
        feeder.stop.set()
    for feeder in feeders:
        feeder.join()


# --- chaos --------------------------------------------------------------------


def start_service(service: ServiceRunner, report: Report) -> None:
    """Start the service and wait until it logs service.started."""
    service.start()
    if not service.wait_event("service.started", timeout=60):
        report.discrepancy(
            f"service (pid {service.pid}) did not log service.started within 60 s; "
            f"exit status {service.exit_status()}"
        )


def check_group_gone(pgid: int, report: Report, after: str) -> None:
    """The old service's process group must be empty soon after it ended."""
    deadline = time.monotonic() + GROUP_GONE_TIMEOUT
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        report.discrepancy(
            f"process {pid} of the stopped service's group {pgid} still runs "
            f"{GROUP_GONE_TIMEOUT:g} s after {after}: {command_line(pid)}"
        )


def sigkill_service(service: ServiceRunner, report: Report) -> None:
    """SIGKILL the whole group, restart at once, check the old group went away."""
    pgid = service.pid
    service.kill_group()
    report.actions["SIGKILL"] += 1
    report.say(f"SIGKILL of process group {pgid}; restarting")
    start_service(service, report)
    check_group_gone(pgid, report, "SIGKILL")


def sigterm_service(service: ServiceRunner, report: Report) -> None:
    """SIGTERM: the service must exit 0 within 30 s. Then restart."""
    report.actions["SIGTERM"] += 1
    terminate_and_check(service, report, "SIGTERM", then="; restarting")
    start_service(service, report)


def terminate_and_check(service: ServiceRunner, report: Report, what: str, then: str) -> None:
    """SIGTERM: exit 0 within 30 s, nothing of its group left behind."""
    pgid = service.pid
    status, seconds = service.terminate(TERM_TIMEOUT)
    report.say(f"{what} of {pgid}: exit status {status} after {seconds:.1f} s{then}")
    if status is None:
        report.discrepancy(f"{what}: service {pgid} still ran after {TERM_TIMEOUT:g} s")
        service.kill_group()
    elif status != 0:
        report.discrepancy(f"{what}: service {pgid} exited with status {status}, not 0")
    check_group_gone(pgid, report, what)


def kill_combine_child(service: ServiceRunner, report: Report, deadline: float) -> None:
    """SIGKILL one combine child of the running service, if one runs before ``deadline``."""
    # The probe child of the fork server is a grandchild too; after server_ready it is gone.
    remaining = max(0.0, deadline - time.monotonic())
    if not service.wait_event("combine.server_ready", timeout=remaining):
        report.say("child-kill: the fork server was not ready; skipped")
        return
    while time.monotonic() < deadline and service.exit_status() is None:
        for pid in grandchildren(service.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it finished first
            report.actions["child-kill"] += 1
            report.say(f"child-kill: SIGKILL of combine child {pid} of service {service.pid}")
            return
        time.sleep(0.005)
    report.actions["child-kill missed"] += 1
    report.say("child-kill: no combine child ran in time; skipped")


def restart_if_dead(service: ServiceRunner, report: Report) -> None:
    """A service that ended by itself is a discrepancy; restart it."""
    status = service.exit_status()
    if status is None:
        return
    report.discrepancy(f"service {service.pid} ended by itself with exit status {status}")
    report.say(f"service {service.pid} ended by itself (status {status}); restarting")
    start_service(service, report)


def wait_watching(service: ServiceRunner, report: Report, until: float) -> None:
    """Sleep until ``until``, restarting the service if it dies meanwhile."""
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        restart_if_dead(service, report)


def chaos(
    service: ServiceRunner,
    report: Report,
    deadline: float,
    kill_every: tuple[float, float],
    seed: int,
) -> None:
    """Hit the service at random moments until ``deadline``."""
    rng = random.Random(seed)
    kinds, weights = list(KILL_WEIGHTS), list(KILL_WEIGHTS.values())
    while True:
        moment = time.monotonic() + rng.uniform(*kill_every)
        if moment >= deadline:
            wait_watching(service, report, deadline)
            return
        wait_watching(service, report, moment)
        kind = rng.choices(kinds, weights)[0]
        if kind == "SIGKILL":
            sigkill_service(service, report)
        elif kind == "SIGTERM":
            sigterm_service(service, report)
        else:
            kill_combine_child(service, report, min(deadline, time.monotonic() + 30))


# --- the catalog --------------------------------------------------------------


def query(catalog: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Rows from the catalog, opened read-only; none if it does not exist yet."""
    if not catalog.exists():
        return []
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def unsettled(catalog: Path, ledger: Ledger) -> tuple[int, list[str]]:
    """Files not yet recorded, and sets not yet done, failed or insufficient.

    Any other state (open, combining, or a state a newer service adds, such as closed
    while a combine waits for its retry) means the service still has work to do.
    """
    # A 'seen' row is a file noticed but not judged yet: still work to do.
    judged = "SELECT path FROM frames WHERE status != 'seen'"
    recorded = {r["path"] for r in query(catalog, judged)}
    missing = sum(1 for w in ledger.files() if str(w.path) not in recorded)
    busy = query(
        catalog,
        "SELECT id, camera, state FROM sets WHERE state NOT IN ('done', 'failed', 'insufficient')",
    )
    return missing, [f"{r['camera']}#{r['id']} {r['state']}" for r in busy]


def settle(
    service: ServiceRunner, catalog: Path, ledger: Ledger, report: Report, timeout: float
) -> None:
    """Wait until every file is recorded and every set is done, failed or insufficient."""
    deadline = time.monotonic() + timeout
    shown = 0.0
    while time.monotonic() < deadline:
        restart_if_dead(service, report)
        missing, busy = unsettled(catalog, ledger)
        if not missing and not busy:
            report.say("settled: every file recorded, every set done, failed or insufficient")
            return
        if time.monotonic() - shown >= 10:
            shown = time.monotonic()
            report.say(f"settling: {missing} files unrecorded, sets not finished: {busy or 'none'}")
        time.sleep(1)
    missing, busy = unsettled(catalog, ledger)
    report.discrepancy(
        f"not settled after {timeout:g} s: {missing} files unrecorded, sets busy: {busy}"
    )


# --- checks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogState:
    """The catalog's three tables, read once at the end."""

    frames: dict[str, sqlite3.Row]
    sets: dict[int, sqlite3.Row]
    masters: list[sqlite3.Row]

    @classmethod
    def read(cls, catalog: Path) -> CatalogState:
        """Read every row."""
        return cls(
            {r["path"]: r for r in query(catalog, "SELECT * FROM frames")},
            {r["id"]: r for r in query(catalog, "SELECT * FROM sets")},
            query(catalog, "SELECT * FROM masters ORDER BY id"),
        )

    def set_frames(self, set_id: int, status: str) -> list[sqlite3.Row]:
        """A set's frames of one status."""
        return [f for f in self.frames.values() if f["set_id"] == set_id and f["status"] == status]


def describe_set(state: CatalogState, set_id: int | None) -> str:
    """'set 7 (failed: reason)' for messages."""
    if set_id is None or set_id not in state.sets:
        return "no set"
    row = state.sets[set_id]
    return f"set {set_id} ({row['state']}: {row['reason'] or 'no reason'})"


def check_file(written: Written, state: CatalogState, report: Report) -> bool:
    """One written file against its frames row; True if it is as expected."""
    name = written.path.name
    row = state.frames.get(str(written.path))
    if row is None:
        report.discrepancy(f"{name} ({written.kind}): no frames row")
        return False
    found = [f"status {row['status']}"]
    ok = bool(row["status"] == written.expected and row["camera"] == written.camera)
    if row["camera"] != written.camera:
        found.append(f"camera {row['camera']}")
    if written.kind == "bias":
        found.append(describe_set(state, row["set_id"]))
        if row["sha256"] != written.sha256:
            ok = False
            found.append(f"sha256 {row['sha256']} is not the written file's {written.sha256}")
    elif written.kind in EXPECTED_REASON and not str(row["reason"] or "").startswith(
        EXPECTED_REASON[written.kind]
    ):
        ok = False
        found.append(f"reason {row['reason']!r}, expected {EXPECTED_REASON[written.kind]}: ...")
    if not ok:
        report.discrepancy(
            f"{name} ({written.kind}): expected {written.expected}; " + ", ".join(found)
        )
    return ok


def check_files(written: list[Written], state: CatalogState, report: Report) -> int:
    """Every written file against the catalog; returns how many are as expected."""
    good = sum(check_file(w, state, report) for w in written)
    known = {str(w.path) for w in written}
    for path, row in state.frames.items():
        if path not in known:
            report.discrepancy(
                f"frames row {row['id']} for a file not written by the feeders: {path}"
            )
    return good


def check_sets(state: CatalogState, report: Report) -> None:
    """Every set must be done."""
    for set_id, row in state.sets.items():
        if row["state"] != "done":
            valid = len(state.set_frames(set_id, "valid"))
            report.discrepancy(
                f"set {set_id} ({row['camera']} {row['night']} {row['geometry']}) is "
                f"{row['state']} with {valid} valid frames: {row['reason'] or 'no reason'}"
            )


def master_header(path: Path) -> tuple[fits.Header | None, str]:
    """A master's primary header, or None and why it could not be read."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, checksum=True) as hdul:
                header = hdul[0].header.copy()
                _ = hdul[0].data
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    problems = [str(w.message) for w in caught if "checksum" in str(w.message).lower()]
    return header, "; ".join(problems)


def check_master(
    master: sqlite3.Row, state: CatalogState, digests: dict[str, str], report: Report
) -> None:
    """One masters row against its set, its file and the written frames."""
    label = f"master {master['path']} (set {master['set_id']})"
    set_row = state.sets.get(master["set_id"])
    if set_row is None or set_row["state"] != "done":
        report.discrepancy(f"{label}: its set is {set_row['state'] if set_row else 'missing'}")
    combined = state.set_frames(master["set_id"], "combined")
    shas = [digests.get(f["path"], f["sha256"] or "") for f in combined]
    expected_digest = input_digest(shas)
    facts = {
        "catalog ncombine": master["ncombine"],
        "combined frames": len(combined),
        "input_digest": master["input_digest"],
        "digest of the written frames": expected_digest,
    }
    if master["ncombine"] != len(combined):
        report.discrepancy(
            f"{label}: ncombine {master['ncombine']} but {len(combined)} combined frames"
        )
    if master["input_digest"] != expected_digest:
        report.discrepancy(f"{label}: input_digest is not the digest of its frames: {facts}")
    header, problem = master_header(Path(master["path"]))
    if header is None:
        report.discrepancy(f"{label}: cannot be opened: {problem}")
        return
    if problem:
        report.discrepancy(f"{label}: {problem}")
    if header.get("NCOMBINE") != master["ncombine"] or header.get("NCOMBINE") != len(combined):
        report.discrepancy(f"{label}: NCOMBINE {header.get('NCOMBINE')}; {facts}")
    if header.get("BWDIGEST") != master["input_digest"]:
        report.discrepancy(f"{label}: BWDIGEST {header.get('BWDIGEST')}; {facts}")


def check_masters(state: CatalogState, written: list[Written], report: Report) -> None:
    """Each done set has one master; masters are whole and distinct."""
    digests = {str(w.path): w.sha256 for w in written}
    by_set = Counter(m["set_id"] for m in state.masters)
    for set_id, row in state.sets.items():
        if row["state"] == "done" and by_set[set_id] != 1:
            report.discrepancy(f"set {set_id} is done with {by_set[set_id]} masters rows")
    for master in state.masters:
        check_master(master, state, digests, report)
    for digest, count in Counter(m["input_digest"] for m in state.masters).items():
        if count > 1:
            paths = [m["path"] for m in state.masters if m["input_digest"] == digest]
            report.discrepancy(f"{count} masters share input_digest {digest}: {paths}")


def check_masters_dir(
    masters_dir: Path, state: CatalogState, cameras: list[str], report: Report
) -> None:
    """No temporary or unknown file under the masters directory; latest.fits links are good."""
    recorded = {m["path"] for m in state.masters}
    for path in sorted(p for p in masters_dir.rglob("*") if not p.is_dir()):
        if ".partial-" in path.name:
            report.discrepancy(f"temporary master left behind: {path}")
        elif path.name == "latest.fits" and path.parent.parent == masters_dir:
            continue
        elif path.suffix == ".png" and str(path.with_suffix(".fits")) in recorded:
            continue  # a recorded master's preview
        elif str(path) not in recorded:
            report.discrepancy(f"file under the masters directory not in the catalog: {path}")
    for camera in cameras:
        check_latest(masters_dir / camera / "latest.fits", camera, state, report)


def check_latest(link: Path, camera: str, state: CatalogState, report: Report) -> None:
    """latest.fits resolves to one of the camera's masters (ideally its newest)."""
    own = [m for m in state.masters if m["camera"] == camera]
    if not link.is_symlink():
        if own:
            report.discrepancy(f"{camera}: {len(own)} masters but no latest.fits link")
        return
    target = link.resolve()
    mine = {str(Path(m["path"]).resolve()): m for m in own}
    if str(target) not in mine:
        report.discrepancy(f"{camera}: latest.fits -> {target}, not one of its masters")
        return
    if mine[str(target)]["state"] != "accepted":
        report.discrepancy(f"{camera}: latest.fits -> {target.name}, a rejected master")
        return
    accepted = [m for m in own if m["state"] == "accepted"]
    newest = max(accepted, key=lambda m: (m["night"], m["sequence"]))
    if mine[str(target)]["path"] != newest["path"]:
        report.note(
            f"{camera}: latest.fits -> {target.name}, the newest is {Path(newest['path']).name}"
        )


def check_raw_files(written: list[Written], report: Report) -> None:
    """No raw file was modified (or removed) since it was written."""
    for w in written:
        try:
            now = hashlib.sha256(w.path.read_bytes()).hexdigest()
        except OSError as exc:
            report.discrepancy(f"{w.path.name}: cannot be read any more: {exc}")
            continue
        if now != w.sha256:
            report.discrepancy(f"{w.path.name}: modified since it was written (sha256 {now})")


def log_errors(log_path: Path) -> Counter[str]:
    """Events logged at error level or above, by name."""
    found: Counter[str] = Counter()
    if not log_path.exists():
        return found
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("level") in {"error", "critical", "exception"}:
            found[str(event.get("event"))] += 1
    return found


# --- the run --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    minutes: float
    cameras: int
    seed: int
    dir: Path | None
    keep: bool
    kill_every: tuple[float, float]
    settle_timeout: float


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to feed frames")
    parser.add_argument("--cameras", type=int, default=4, help="number of cameras")
    parser.add_argument("--seed", type=int, default=1, help="seeds frames, gaps and chaos")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (empty or new)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(15.0, 60.0),
        metavar=("MIN", "MAX"),
        help="seconds between two hits on the service, drawn uniformly",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the service to settle after feeding stops",
    )
    args = parser.parse_args(argv)
    low, high = args.kill_every
    if args.cameras < 1 or args.minutes <= 0 or not 0 < low <= high:
        parser.error("need --cameras >= 1, --minutes > 0 and 0 < MIN <= MAX for --kill-every")
    return Options(
        args.minutes, args.cameras, args.seed, args.dir, args.keep, (low, high), args.settle_timeout
    )


@dataclass
class Outcome:
    """What the checks found, for the summary."""

    written: list[Written]
    accounted: int
    state: CatalogState


def run_soak(options: Options, work: Path, report: Report) -> Outcome:
    """Feed, hit, settle, stop, check."""
    cameras = camera_names(options.cameras)
    config = write_config(work, cameras)
    catalog = work / "state" / "catalog.sqlite"
    ledger = Ledger()
    service = ServiceRunner(config, work)
    try:
        start_service(service, report)
        report.say(f"service {service.pid} started; feeding {len(cameras)} cameras")
        feeders = start_feeders(config, cameras, options.seed, ledger, report)
        chaos(
            service,
            report,
            time.monotonic() + options.minutes * 60,
            options.kill_every,
            options.seed,
        )
        stop_feeders(feeders)
        report.say(f"feeding stopped: {len(ledger.files())} files written")
        settle(service, catalog, ledger, report, options.settle_timeout)
        final_stop(service, report)
    finally:
        service.close()
    written = ledger.files()
    state = CatalogState.read(catalog)
    accounted = check_files(written, state, report)
    check_sets(state, report)
    check_masters(state, written, report)
    check_masters_dir(work / "masters", state, cameras, report)
    check_raw_files(written, report)
    return Outcome(written, accounted, state)


def final_stop(service: ServiceRunner, report: Report) -> None:
    """The last SIGTERM: exit 0 within 30 s, nothing of its group left behind."""
    terminate_and_check(service, report, "final SIGTERM", then="")


def print_summary(options: Options, work: Path, report: Report, outcome: Outcome) -> None:
    """The summary, the notes and every discrepancy."""
    kinds = Counter(w.kind for w in outcome.written)
    states = Counter(r["state"] for r in outcome.state.sets.values())
    actions = report.actions
    minutes = (time.monotonic() - report.start) / 60
    bad = kinds["random"] + kinds["truncated"]
    set_states = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"
    print()
    print(
        f"soak: fed {options.minutes:g} min ({minutes:.1f} min in all), "
        f"{options.cameras} cameras, seed {options.seed}"
    )
    print(
        f"frames in: {len(outcome.written)} (biases {kinds['bias']}, bad {bad} "
        f"[random {kinds['random']}, truncated {kinds['truncated']}], flats {kinds['flat']})"
    )
    print(f"frames accounted for: {outcome.accounted} of {len(outcome.written)}")
    print(f"sets: {len(outcome.state.sets)} ({set_states})")
    print(f"masters: {len(outcome.state.masters)}")
    print(
        f"restarts: {actions['SIGKILL'] + actions['SIGTERM']} (SIGKILL {actions['SIGKILL']}, "
        f"SIGTERM {actions['SIGTERM']}); child-kills {actions['child-kill']} "
        f"(missed {actions['child-kill missed']})"
    )
    errors = log_errors(work / "log" / "biaswatch.jsonl")
    print(f"log events at error level: {dict(errors) or 'none'}")
    for note in report.notes:
        print(f"note: {note}")
    for line in report.discrepancies:
        print(f"DISCREPANCY: {line}")
    print(f"discrepancies: {len(report.discrepancies)}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 if nothing was wrong, 1 otherwise."""
    options = parse_args(argv)
    work = make_work_dir(options.dir)
    report = Report()
    report.say(f"work directory: {work}")
    outcome = run_soak(options, work, report)
    print_summary(options, work, report, outcome)
    keep = options.keep or options.dir is not None or bool(report.discrepancies)
    if keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"work directory removed: {work}")
    return 1 if report.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
