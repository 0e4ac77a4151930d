"""Soak test: the real service under a trickle of frames, bursts, odd files and accidents.

Usage:
    .venv/bin/python benchmarks/soak.py [--minutes 10] [--cameras 4] [--seed 1]
        [--dir DIR] [--keep] [--kill-every 15 60] [--settle-timeout 300]
        [--burst-every 120 300] [--odd-every 20] [--odd-kinds KIND ...]
        [--full-disk-seconds 60] [--hang-seconds 60] [--cgroup-limit 1200000000]

Must run as root (it mounts a tmpfs and a FUSE file system, and makes a memory
cgroup). Not part of the test suite: it runs for minutes and loads the machine. It
makes a work directory (a new temporary one, or --dir, which must be empty or
missing), writes a config.toml for --cameras cameras (cam1, cam2, ...), each watching
its own directory, with settings that close sets quickly (5 frames a set, a 12 s quiet
time, 0.5 s settle, 30 s before an incomplete file is rejected as truncated), two
combine slots (max_combine_memory = 2 x mem_limit), stall_seconds 10, and starts the
real service (``python -m biaswatch run``) in its own session, in a memory cgroup of
--cgroup-limit bytes, with a NOTIFY_SOCKET of its own (every start must reach
READY=1), its output in service-output.txt and its JSON log in log/biaswatch.jsonl.
combine_retry_seconds is --full-disk-seconds / 2 (at least 5 s), so a set's third try
comes after the full disk is freed. masters_dir is a tmpfs (256 MiB, or 1 MiB per
camera and minute and 64 more); the last camera
has a second watch directory, stall/mnt, a tests/stallfs.py mirror of stall/backing.

For --minutes minutes, one feeder thread per camera writes small raw bias frames
(64 x 72 uint16 with an 8-column overscan), each in pieces under its final name as a
camera does, with random gaps of 0.1-3 s. A few percent of the files are bad (random
bytes named .fits, or a FITS file cut short and never completed) and a few are flats
(IMAGETYP = 'flat'). Every --burst-every MIN MAX seconds a burst of 15-40 frames is
written at once into one camera, in 1 to 3 geometries (soak_feeds.py). Every
--odd-every seconds (shortened so that each kind comes at least once) one odd file of
issue 11 goes to a random camera, the kinds in turn (soak_odd.py: dates 9999 and 0001,
a control character in IMAGETYP, a negative NAXIS1, a sparse file and a .fits.fz
announcing 20000 x 20000, a name that is not UTF-8, a 255-byte name, a FIFO, 20,000
header cards, a symlink out of the watched tree). The script keeps a ledger of every
file, its sha256 and what it must become: a bias combined, a bad file rejected with a
reason, a flat ignored, an odd file as soak_odd.EXPECTATIONS says.

Meanwhile, every --kill-every MIN MAX seconds, the service is hit at random:
- SIGKILL of its whole process group (fork server and combine child included), then
  an immediate restart (most often);
- SIGTERM, which must end it with status 0 within 30 s, then a restart;
- SIGKILL of a running combine child only (found in /proc as a grandchild of the
  service, below the fork server); the service keeps running;
- a second ``biaswatch run`` on the same config, which must exit by itself within
  30 s with a non-zero status naming the running service's pid, leave the pidfile
  as it was, log neither service.started nor service.removed_temporary, and leave
  the running service running.
After each service kill, the old process group must be gone within 10 s. And once
each: at 25 % of the feeding, masters_dir's tmpfs is filled with a ballast file for
--full-disk-seconds, then freed; at 45 %, a second run; at 55 %, the stall mount hangs
for --hang-seconds while 5 frames are written behind it (camera.stalled must come for
that camera, other cameras must publish meanwhile). Each episode lasts at most 20 % of
the feeding, and no hit falls inside one (a process blocked in FUSE cannot be killed;
a restart during a full disk would spend a set's retries at once).

Then feeding stops, the service is left to settle (every file recorded, every set
done, failed or insufficient; the quiet time closes the last sets) for at most
--settle-timeout seconds, it is stopped with SIGTERM, and the catalog (read-only) and
the files are checked:
- every file written has exactly one frames row, with the expected status (a bias
  combined: a bias left in a failed set is a discrepancy; a bad file rejected with a
  reason that says why; a flat ignored; an odd file as EXPECTATIONS says, never left
  'seen'), and no row names a file the feeders did not write;
- every set is done; insufficient and failed sets are listed with their reason;
- each done set has one master: the file exists, opens with astropy with valid
  checksums, its NCOMBINE equals the catalog's ncombine and the set's combined
  frames, its BWDIGEST the catalog's input_digest and the digest of the frames as
  written; no two masters share an input_digest; no frame is combined twice (by
  sha256 in the catalog, by name in the masters' IMCMB cards); no
  ".partial" file and no file unknown to the catalog (an orphan) is left under the
  masters directory; each camera's latest.fits resolves to one of its masters;
- no raw file changed since it was written (sha256);
- camera.stalled only for the hung camera, only while it hung;
- every start reached READY=1; the service's VmHWM stayed below
  soak_odd.MAX_SERVICE_RSS_MIB; nothing was OOM-killed in its cgroup.

It prints a summary and every discrepancy, one line each, and exits 1 if there is any.
The work directory is removed unless --keep or --dir is given, or a discrepancy was
found; its path is printed. The tmpfs and the FUSE mount are unmounted in any case
(the masters are copied back under the work directory first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from soak_chaos import (
    MemoryCgroup,
    RssWatch,
    StallMount,
    TmpfsDisk,
    make_cgroup,
    read_events,
    second_run,
)
from soak_checks import (
    CatalogState,
    check_combined_once,
    check_files,
    check_masters,
    check_masters_dir,
    check_raw_files,
    check_sets,
    check_stalls,
    log_errors,
    needs_row,
    path_key,
    query,
)
from soak_feeds import (
    BurstFeeder,
    Episode,
    FrameMaker,
    HangPlan,
    OddFeeder,
    full_disk,
    hung_mount,
)
from soak_odd import (
    CGROUP_LIMIT_BYTES,
    EXPECTATIONS,
    MAX_SERVICE_RSS_MIB,
    ODD_KINDS,
    SECOND_RUN_NAMES_PID,
    SECOND_RUN_TIMEOUT,
    OddContext,
    safe_text,
)
from soak_service import (
    ServiceRunner,
    command_line,
    grandchildren,
    group_members,
)
from soak_service import proc_table as proc_table  # re-exported: burst.py

from biaswatch.config import CameraConfig, Config, ServiceConfig, load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import (
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

# What a feeder writes, by probability; the rest are biases.
P_RANDOM = 0.02
P_TRUNCATED = 0.02
P_FLAT = 0.04
GAP_SECONDS = (0.1, 3.0)

# The chaos loop's choice among its actions, by weight.
# "second-run" starts a second `biaswatch run` on the same config, which must be refused.
KILL_WEIGHTS = {"SIGKILL": 6, "SIGTERM": 2, "child-kill": 2, "second-run": 1}
TERM_TIMEOUT = 30.0
# A start must reach READY=1 within this, on 2 busy cores (generous: a start takes
# seconds).
READY_TIMEOUT = 120.0
GROUP_GONE_TIMEOUT = 10.0

# Two combine slots (max_combine_memory = 2 x mem_limit), as in issue 11. A camera
# whose files give no answer for 10 s is reported stalled (the default is 60 s). The
# night rolls over 11-12 h from the start and ends an hour before that, as in
# burst.py, so neither falls inside a run of up to 10 hours.
CONFIG = """
[service]
state_dir = "state"
masters_dir = "masters"
log_file = "log/biaswatch.jsonl"
mem_limit = "64MB"
max_combine_memory = "128MB"
stall_seconds = {stall_seconds}
poll_seconds = 0.2
{service_extra}[site]
timezone = "UTC"
night_rollover = "{rollover}"
[defaults]
expected_frames = {expected}
min_frames = 1
quiet_minutes = 0.2
settle_seconds = 0.5
max_incomplete_minutes = 0.5
night_end = "{night_end}"
"""
STALL_SECONDS = 10
# The hung-mount camera polls its directories (files reach the mirror's backing
# directory from outside, which inotify would never see: tests/service/test_stall.py).
STALL_CAMERA_EXTRA = "polling = true\npoll_interval_seconds = 0.5\n"
STALL_WATCH = "stall/mnt"
STALL_BACKING = "stall/backing"

# What each kind of file must become (how the reason of a rejection starts: soak_checks).
EXPECTED_STATUS = {"bias": "combined", "random": "rejected", "truncated": "rejected"}
EXPECTED_STATUS["flat"] = "ignored"


def elapsed_stamp(start: float) -> str:
    """Seconds since ``start`` as a log prefix."""
    return f"[{time.monotonic() - start:7.1f} s]"


# --- the ledger -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """One file a feeder wrote, and what the service must make of it."""

    path: Path  # as the service sees it
    camera: str
    kind: str  # bias, random, truncated, flat, or an odd kind (soak_odd.EXPECTATIONS)
    sha256: str  # or soak_odd.fingerprint's stand-in for a FIFO or a sparse file
    source: Path | None = None  # where it was written, if not at path (the hung mount's)

    @property
    def expected(self) -> str:
        """The frame status this file must end with (odd kinds: any of several)."""
        if self.kind in EXPECTATIONS:
            return "/".join(sorted(EXPECTATIONS[self.kind].statuses))
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
        """A progress line (file names escaped: they may hold any byte)."""
        print(f"{elapsed_stamp(self.start)} {safe_text(text)}", flush=True)

    def discrepancy(self, text: str) -> None:
        """A finding that fails the soak."""
        with self.lock:
            self.discrepancies.append(safe_text(text))

    def note(self, text: str) -> None:
        """Something worth knowing that does not fail the soak."""
        with self.lock:
            self.notes.append(safe_text(text))


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


def service_extra(full_disk_seconds: float = 0.0) -> str:
    """[service] keys only some versions of the service know: a short combine retry.

    A service that retries a failed combine waits combine_retry_seconds (60 s by
    default, doubling) first; 5 s keeps the soak's settling short. Older services
    reject the unknown key, so it is written only if this biaswatch has it.
    With a full-disk episode of D seconds the wait is D / 2: a set tries 3 times
    (combines.MAX_TRIES), at t, t + D/2 and t + 3D/2, so its last try comes after the
    disk is freed wherever t falls in the episode.
    """
    known = ServiceConfig.model_fields
    retry = max(5.0, full_disk_seconds / 2)
    return f"combine_retry_seconds = {retry:g}\n" if "combine_retry_seconds" in known else ""


def write_config(
    work: Path, cameras: list[str], stall_camera: str | None = None, full_disk_seconds: float = 0
) -> Path:
    """The soak's config.toml: one incoming directory per camera (two for ``stall_camera``)."""
    rollover = (dt.datetime.now(dt.UTC).hour + 12) % 24
    values = {
        "expected": str(EXPECTED_FRAMES),
        "service_extra": service_extra(full_disk_seconds),
        "stall_seconds": str(STALL_SECONDS),
        "rollover": f"{rollover:02d}:00",
        "night_end": f"{(rollover - 1) % 24:02d}:00",
    }
    text = CONFIG
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    for name in cameras:
        if name == stall_camera:
            text += f'[cameras.{name}]\nwatch = ["incoming/{name}", "{STALL_WATCH}"]\n'
            text += STALL_CAMERA_EXTRA
            (work / STALL_WATCH).mkdir(parents=True)
            (work / STALL_BACKING).mkdir(parents=True)
        else:
            text += f'[cameras.{name}]\nwatch = ["incoming/{name}"]\n'
        (work / "incoming" / name).mkdir(parents=True)
    (work / "outside").mkdir()  # no camera watches it: the targets of symlink-out
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
    return start_feeders_from(load_config(config), cameras, seed, ledger, report)


def start_feeders_from(
    settings: Config, cameras: list[str], seed: int, ledger: Ledger, report: Report
) -> list[Feeder]:
    """One running feeder per camera of the loaded config."""
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
    """Start the service; a start that does not reach READY=1 is a failed start."""
    service.start()
    if not service.wait_ready(timeout=READY_TIMEOUT):
        status = service.exit_status()
        how = (
            f"did not send READY=1 within {READY_TIMEOUT:g} s"
            if status is None
            else f"exited with status {status} before READY=1"
        )
        report.discrepancy(f"start {service.starts} failed: service (pid {service.pid}) {how}")


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
    report.actions["ended by itself"] += 1
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
    hold: threading.Lock,
) -> None:
    """Hit the service at random moments until ``deadline``.

    Each hit holds ``hold``, which the hung-mount episode takes for its whole length:
    a process blocked in a FUSE call cannot be killed until the mount answers
    (tests/service/test_stall.py), so no hit falls inside that episode.
    """
    rng = random.Random(seed)
    kinds, weights = list(KILL_WEIGHTS), list(KILL_WEIGHTS.values())
    while True:
        moment = time.monotonic() + rng.uniform(*kill_every)
        if moment >= deadline:
            wait_watching(service, report, deadline)
            return
        wait_watching(service, report, moment)
        kind = rng.choices(kinds, weights)[0]
        with hold:
            hit(kind, service, report, deadline)


def hit(kind: str, service: ServiceRunner, report: Report, deadline: float) -> None:
    """One hit of the chaos loop."""
    if kind == "SIGKILL":
        sigkill_service(service, report)
    elif kind == "SIGTERM":
        sigterm_service(service, report)
    elif kind == "second-run":
        try_second_run(service, report)
    else:
        kill_combine_child(service, report, min(deadline, time.monotonic() + 30))


def try_second_run(service: ServiceRunner, report: Report) -> None:
    """A second `biaswatch run` on the same config: refused at once, touching nothing."""
    pidfile = service.config.parent / "state" / "biaswatch.lock"
    before = pidfile.read_bytes() if pidfile.exists() else None
    started = count_events(service.log_path, "service.started")
    removed = count_events(service.log_path, "service.removed_temporary")
    result = second_run(service.config, service.environment(), SECOND_RUN_TIMEOUT)
    report.actions["second-run"] += 1
    problems = []
    if result.status is None:
        problems.append(f"it still ran after {SECOND_RUN_TIMEOUT:g} s (killed)")
    elif result.status == 0:
        problems.append("it exited with status 0")
    if SECOND_RUN_NAMES_PID and str(service.pid) not in result.output:
        problems.append(f"its output does not name pid {service.pid}: {result.output[-300:]!r}")
    if service.exit_status() is not None:
        problems.append(f"the running service ended (status {service.exit_status()})")
    if (pidfile.read_bytes() if pidfile.exists() else None) != before:
        problems.append("the pidfile changed")
    if count_events(service.log_path, "service.started") != started:
        problems.append("it logged service.started")
    if count_events(service.log_path, "service.removed_temporary") != removed:
        problems.append("it removed temporary files (service.removed_temporary)")
    report.say(
        f"second run: exit status {result.status} after {result.seconds:.1f} s; "
        f"{'; '.join(problems) or 'refused'}"
    )
    if problems:
        report.discrepancy("second `biaswatch run`: " + "; ".join(problems))
    else:
        report.actions["second-run refused"] += 1


def count_events(log_path: Path, name: str) -> int:
    """How many events called ``name`` the whole log holds."""
    if not log_path.exists():
        return 0
    return sum(e.get("event") == name for e in read_events(log_path))


# --- the catalog --------------------------------------------------------------


def unsettled(catalog: Path, ledger: Ledger) -> tuple[int, list[str]]:
    """Files not yet recorded, and sets not yet done, failed or insufficient.

    Any other state (open, combining, or a state a newer service adds, such as closed
    while a combine waits for its retry) means the service still has work to do.
    """
    # A 'seen' row is a file noticed but not judged yet: still work to do.
    judged = "SELECT path FROM frames WHERE status != 'seen'"
    recorded = {path_key(r["path"]) for r in query(catalog, judged)}
    missing = sum(1 for w in ledger.files() if str(w.path) not in recorded and needs_row(w))
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
    burst_every: tuple[float, float]
    odd_every: float
    full_disk_seconds: float
    hang_seconds: float
    cgroup_limit: int
    odd_kinds: tuple[str, ...]

    @property
    def feed_seconds(self) -> float:
        """How long frames are fed."""
        return self.minutes * 60


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
    parser.add_argument(
        "--burst-every",
        type=float,
        nargs=2,
        default=(120.0, 300.0),
        metavar=("MIN", "MAX"),
        help="seconds between two bursts of 15-40 frames (0 0: no bursts)",
    )
    parser.add_argument(
        "--odd-every",
        type=float,
        default=20.0,
        help="seconds between two odd files, at most (0: none); shortened so that every "
        "odd kind comes at least once",
    )
    parser.add_argument(
        "--full-disk-seconds",
        type=float,
        default=60.0,
        help="how long masters_dir's tmpfs stays full (0: no full-disk episode)",
    )
    parser.add_argument(
        "--hang-seconds",
        type=float,
        default=60.0,
        help="how long the last camera's second watch directory hangs (0: no hung mount)",
    )
    parser.add_argument(
        "--cgroup-limit",
        type=int,
        default=CGROUP_LIMIT_BYTES,
        help="memory cgroup limit of the service, bytes (0: no cgroup)",
    )
    parser.add_argument(
        "--odd-kinds",
        nargs="+",
        choices=ODD_KINDS,
        default=list(ODD_KINDS),
        metavar="KIND",
        help=f"the odd kinds to write (default all: {' '.join(ODD_KINDS)})",
    )
    args = parser.parse_args(argv)
    low, high = args.kill_every
    if args.cameras < 2 or args.minutes <= 0 or not 0 < low <= high:
        parser.error("need --cameras >= 2, --minutes > 0 and 0 < MIN <= MAX for --kill-every")
    return Options(
        args.minutes,
        args.cameras,
        args.seed,
        args.dir,
        args.keep,
        (low, high),
        args.settle_timeout,
        tuple(args.burst_every),
        args.odd_every,
        args.full_disk_seconds,
        args.hang_seconds,
        args.cgroup_limit,
        tuple(args.odd_kinds),
    )


@dataclass
class Outcome:
    """What the checks found, for the summary."""

    written: list[Written]
    accounted: int
    state: CatalogState
    orphans: int = 0
    partials: int = 0
    episodes: list[Episode] = field(default_factory=list)
    starts: int = 0
    ready_starts: int = 0
    peak_rss_kib: int = 0
    cgroup: str = ""
    bursts: str = ""


@dataclass
class Rig:
    """Everything the soak mounted or started besides the service, torn down in a finally."""

    disk: TmpfsDisk | None = None
    mount: StallMount | None = None
    cgroup: MemoryCgroup | None = None
    cgroup_text: str = ""

    def close(self) -> None:
        """Unmount and remove, whatever happened."""
        if self.mount is not None:
            self.mount.close()
        if self.disk is not None:
            self.disk.close()
        if self.cgroup is not None:
            self.cgroup.close()


def tmpfs_mib(options: Options) -> int:
    """The size of masters_dir's tmpfs, in MiB.

    A camera of the soak makes about 6.5 masters a minute, 70 KiB each with its
    preview (a 2-minute run: 52 masters of 4 cameras in 3.7 MiB), so 1 MiB per camera
    and minute leaves room for bursts; at least 256 MiB.
    """
    return max(256, 64 + round(options.minutes * options.cameras))


def build_rig(options: Options, work: Path, report: Report) -> Rig:
    """The tmpfs under masters_dir, the stallfs mount and the memory cgroup."""
    rig = Rig()
    try:
        rig.cgroup, rig.cgroup_text = make_cgroup(options.cgroup_limit)
        report.say(rig.cgroup_text)
        if options.full_disk_seconds > 0:
            rig.disk = TmpfsDisk(work / "masters", f"{tmpfs_mib(options)}m")
        if options.hang_seconds > 0:
            rig.mount = StallMount(work / STALL_BACKING, work / STALL_WATCH, work / "stallfs.log")
    except (OSError, subprocess.CalledProcessError) as exc:
        rig.close()
        raise SystemExit(
            f"cannot set the soak up: {exc!r}. It needs root (mount, cgroups) and FUSE "
            "(Debian's fuse3); --full-disk-seconds 0, --hang-seconds 0 or --cgroup-limit 0 "
            "leave a part out"
        ) from exc
    return rig


def run_soak(options: Options, work: Path, report: Report) -> Outcome:
    """Set up the mounts and the cgroup, soak, and take them down whatever happens."""
    cameras = camera_names(options.cameras)
    stall_camera = cameras[-1] if options.hang_seconds > 0 else None
    config = write_config(work, cameras, stall_camera, options.full_disk_seconds)
    rig = build_rig(options, work, report)
    try:
        return soak_on(options, work, report, rig, config, stall_camera)
    finally:
        rig.close()


def soak_on(
    options: Options, work: Path, report: Report, rig: Rig, config: Path, stall_camera: str | None
) -> Outcome:
    """Feed, hit, settle, stop, check."""
    settings = load_config(config)
    cameras = [c.name for c in settings.cameras]
    catalog = work / "state" / "catalog.sqlite"
    ledger = Ledger()
    service = ServiceRunner(config, work, rig.cgroup)
    rss = RssWatch(lambda: None if service.proc is None else service.proc.pid)
    episodes: list[Episode] = []
    feeds: Feeds | None = None
    try:
        rss.start()
        start_service(service, report)
        report.say(f"service {service.pid} started; feeding {len(cameras)} cameras")
        feeds = Feeds(settings, options, work, ledger, report, rig)
        deadline = time.monotonic() + options.feed_seconds
        episode_thread = feeds.start_episodes(service, episodes)
        chaos(service, report, deadline, options.kill_every, options.seed, feeds.hold)
        feeds.stop()
        episode_thread.join()
        report.say(f"feeding stopped: {len(ledger.files())} files written")
        settle(service, catalog, ledger, report, options.settle_timeout)
        final_stop(service, report)
    finally:
        rss.stop.set()
        service.close()
        rss.join()
    outcome = check_everything(work, settings, ledger.files(), stall_camera, episodes, report)
    outcome.cgroup = describe_cgroup(rig.cgroup, rig.cgroup_text, report)
    outcome.starts, outcome.ready_starts = service.starts, service.ready_starts
    outcome.peak_rss_kib = rss.peak_kib
    outcome.bursts = feeds.describe_bursts() if feeds is not None else "none"
    check_starts_and_memory(outcome, report)
    return outcome


def check_everything(
    work: Path,
    settings: Config,
    written: list[Written],
    stall_camera: str | None,
    episodes: list[Episode],
    report: Report,
) -> Outcome:
    """The catalog and the files against the ledger."""
    state = CatalogState.read(work / "state" / "catalog.sqlite", settings.site)
    accounted = check_files(written, state, report)
    check_sets(state, report)
    check_masters(state, written, report)
    check_combined_once(state, report)
    cameras = [c.name for c in settings.cameras]
    orphans, partials = check_masters_dir(work / "masters", state, cameras, report)
    check_raw_files(written, report)
    check_stalls(work / "log" / "biaswatch.jsonl", stall_camera, episodes, report)
    return Outcome(written, accounted, state, orphans, partials, episodes)


def check_starts_and_memory(outcome: Outcome, report: Report) -> None:
    """Every start reached READY=1; the service's VmHWM stayed below the bound."""
    failed = outcome.starts - outcome.ready_starts
    if failed:
        report.discrepancy(f"{failed} of {outcome.starts} starts did not reach READY=1")
    if outcome.peak_rss_kib > MAX_SERVICE_RSS_MIB * 1024:
        report.discrepancy(
            f"service peak RSS {outcome.peak_rss_kib / 1024:.0f} MiB is above "
            f"{MAX_SERVICE_RSS_MIB} MiB (soak_odd.MAX_SERVICE_RSS_MIB)"
        )


def describe_cgroup(group: MemoryCgroup | None, text: str, report: Report) -> str:
    """The cgroup's peak and OOM kills; an OOM kill is a discrepancy."""
    if group is None:
        return text
    kills = group.oom_kills()
    if kills:
        report.discrepancy(f"the kernel OOM-killed {kills} processes of the service's cgroup")
    peak = group.peak_bytes()
    shown = "?" if peak is None else f"{peak / 2**20:.0f} MiB"
    return f"cgroup peak {shown} of {group.limit / 2**20:.0f} MiB, OOM kills {kills}"


class Feeds:
    """The feeder threads, bursts, odd files and episodes of one soak."""

    def __init__(
        self,
        settings: Config,
        options: Options,
        work: Path,
        ledger: Ledger,
        report: Report,
        rig: Rig,
    ) -> None:
        self.options = options
        self.report = report
        self.rig = rig
        self.hold = threading.Lock()
        self.ledger = ledger
        names = [c.name for c in settings.cameras]
        self.feeders = start_feeders_from(settings, names, options.seed, ledger, report)
        self.makers = [
            FrameMaker(c, options.seed * 7919 + i) for i, c in enumerate(settings.cameras)
        ]
        self.bursts: BurstFeeder | None = None
        if options.burst_every[1] > 0:
            self.bursts = BurstFeeder(
                self.makers, GEOMETRY, options.burst_every, options.seed, self.record, report
            )
            self.bursts.start()
        self.odd: OddFeeder | None = None
        if options.odd_every > 0:
            # Every kind at least once in the first 80 % of the feeding.
            kinds = options.odd_kinds
            interval = min(options.odd_every, 0.8 * options.feed_seconds / len(kinds))
            contexts = [
                OddContext(
                    c, c.watch[0], work / "outside", GEOMETRY, self.makers[i].structure(GEOMETRY)
                )
                for i, c in enumerate(settings.cameras)
            ]
            self.odd = OddFeeder(contexts, kinds, interval, options.seed, self.record, report)
            self.odd.start()
        self._stop = threading.Event()

    def record(self, path: Path, camera: str, kind: str, sha: str, source: Path | None) -> None:
        """Put a written file in the ledger."""
        self.ledger.add(Written(path, camera, kind, sha, source))

    def start_episodes(self, service: ServiceRunner, episodes: list[Episode]) -> threading.Thread:
        """The full disk at 25 % of the feeding, a second run at 45 %, the hung mount at 55 %.

        Each episode lasts its option's seconds, at most 20 % of the feeding.
        """
        thread = threading.Thread(
            target=self._episodes, args=(service, episodes), name="episodes", daemon=True
        )
        thread.start()
        return thread

    def _episodes(self, service: ServiceRunner, episodes: list[Episode]) -> None:
        feed = self.options.feed_seconds
        begun = time.monotonic()
        try:
            if self.rig.disk is not None and not self._stop.wait(0.25 * feed):
                seconds = min(self.options.full_disk_seconds, 0.2 * feed)
                # No hit inside either: service/combines.py does not keep a set's retry time
                # across a restart, so kills during a full disk would spend its 3
                # tries (MAX_TRIES) at once, and the outcome would hang on their timing.
                with self.hold:
                    episodes.append(
                        full_disk(self.rig.disk, seconds, service.log_path, self.report)
                    )
            # One second run for sure (the chaos loop adds some at random).
            if not self._stop.wait(max(0.0, begun + 0.45 * feed - time.monotonic())):
                with self.hold:
                    try_second_run(service, self.report)
            wait = begun + 0.55 * feed - time.monotonic()
            if self.rig.mount is not None and not self._stop.wait(max(0.0, wait)):
                with self.hold:
                    episodes.append(
                        hung_mount(self._hang_plan(), service.log_path, self.record, self.report)
                    )
        except Exception as exc:
            self.report.discrepancy(f"episode failed: {exc!r}")

    def _hang_plan(self) -> HangPlan:
        assert self.rig.mount is not None
        seconds = min(self.options.hang_seconds, 0.2 * self.options.feed_seconds)
        return HangPlan(
            self.makers[-1], self.rig.mount, GEOMETRY, EXPECTED_FRAMES, seconds, STALL_SECONDS
        )

    def stop(self) -> None:
        """Stop every writer after the file it is writing; the episodes end on their own."""
        self._stop.set()
        for thread in (self.bursts, self.odd):
            if thread is not None:
                thread.stop.set()
                thread.join()
        stop_feeders(self.feeders)

    def describe_bursts(self) -> str:
        """The bursts line of the summary."""
        if self.bursts is None:
            return "none"
        geometries = ", ".join(
            f"{k} geometries: {v}" for k, v in sorted(self.bursts.by_geometries.items())
        )
        return f"{self.bursts.bursts} bursts, {self.bursts.frames} frames ({geometries or '-'})"


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
    odd = sum(kinds[k] for k in ODD_KINDS)
    print()
    print(
        f"soak: fed {options.minutes:g} min ({minutes:.1f} min in all), "
        f"{options.cameras} cameras, seed {options.seed}, 2 combine slots"
    )
    print(
        f"frames in: {len(outcome.written)} (biases {kinds['bias']}, bad {bad} "
        f"[random {kinds['random']}, truncated {kinds['truncated']}], flats {kinds['flat']}, "
        f"odd {odd})"
    )
    print(f"bursts: {outcome.bursts}")
    print("odd files: " + (", ".join(f"{k} {kinds[k]}" for k in ODD_KINDS) if odd else "none"))
    print(f"frames accounted for: {outcome.accounted} of {len(outcome.written)}")
    print(f"sets: {len(outcome.state.sets)} ({set_states})")
    print(f"masters: {len(outcome.state.masters)}")
    print(f"orphan masters on disk: {outcome.orphans}; temporaries left: {outcome.partials}")
    print(
        f"restarts: {actions['SIGKILL'] + actions['SIGTERM']} (SIGKILL {actions['SIGKILL']}, "
        f"SIGTERM {actions['SIGTERM']}); child-kills {actions['child-kill']} "
        f"(missed {actions['child-kill missed']})"
    )
    print(
        f"starts: {outcome.starts}, reached READY=1: {outcome.ready_starts}, "
        f"failed: {outcome.starts - outcome.ready_starts}; ended by itself after: "
        f"{actions['ended by itself']}"
    )
    print(
        f"second runs: {actions['second-run']}, refused as expected: "
        f"{actions['second-run refused']}"
    )
    for episode in outcome.episodes:
        print(f"episode: {episode.describe()}")
    print(
        f"service peak RSS: {outcome.peak_rss_kib / 1024:.0f} MiB "
        f"(bound {MAX_SERVICE_RSS_MIB} MiB); {outcome.cgroup}"
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
