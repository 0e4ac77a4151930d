"""Load: bursts of raw biases into the real service; every frame accounted for, memory bounded.

Usage:
    .venv/bin/python benchmarks/burst.py [--scenario cameras|one-dir|both]
        [--cameras 8] [--frames 50] [--files 2000] [--dir DIR] [--keep]

A load measurement, not a test: it starts the real service (``python -m biaswatch run``)
on a temporary config in a fresh work directory, waits for ``service.started`` and
``combine.server_ready`` in its JSON log (so the fork server's start is not timed), then
writes a burst of frames all at once and measures the service until every file has a
catalog row and every set is done
(at most 15 minutes). Two scenarios, both by default:

- ``cameras``: --cameras cameras (cam1, cam2, ...), --frames raw biases each, one writer
  thread per camera. Frames are 256 x 264 uint16 with an 8-column overscan;
  expected_frames = --frames, so each camera's set completes with its last frame.
- ``one-dir``: --files raw biases of 64 x 72 (8-column overscan) into ONE camera
  directory, by 4 writer threads. expected_frames = 10000, min_frames = 1 and
  quiet_minutes = 0.1, so the one set closes 6 s after its newest frame was recorded
  and is combined from every file.

Both: mem_limit "64MB" and max_combine_memory "128MB" (at most 2 combines at once),
settle_seconds 0.5, the site in UTC with the night rollover and night_end put 11-12 h
away, so no set is cut by the calendar. Payloads are made before the burst; each
frame is then written whole to a hidden temporary name in the same directory
(``.NAME.part``, never a frame) and renamed into place, as a camera program that
delivers by rename does: the burst is as fast as the disk takes it.

Measured:
- wall time from the first file written to the last frame recorded (the catalog's
  largest ``recorded`` of a judged row: valid, combined, ignored or rejected, not the
  'seen' row a newer service writes when it first notices a file) and to the last
  ``master.published`` (the log's timestamp), and frames/s = files / the first;
- the service's peak RSS: VmHWM of the service process (/proc/PID/status) sampled
  every 0.5 s and read once more when all is done, next to its RSS before the burst;
  the fork server's VmHWM alongside;
- the combine children (children of the fork server, the service's grandchildren, as
  in soak.py), sampled every 0.02 s: the largest VmHWM read from one (its own peak
  RSS: Linux starts a forked child's high-water mark afresh; it counts the pages still
  shared with the fork server), the largest "own" memory of one, Private_Clean +
  Private_Dirty of /proc/PID/smaps_rollup (the pages of that child alone: what it
  allocated or copied on write, what it costs the machine), and the largest sum of own
  memory over the children alive at one sample (the combines' memory at once, against
  max_combine_memory);
- the most combines running at once: from the log (``combine.started`` opens a set's
  combine; ``master.published``, ``combine.retrying``, ``set.failed`` or
  ``combine.abandoned`` ends it) and from the samples, against the allowance
  max_combine_memory // mem_limit.

"Every file has a catalog row" means a judged row: waiting stops only when no file of
the burst is missing one or is still 'seen', and no set is open, closed or combining.
Then the service gets SIGTERM (exit 0 within 30 s, nothing of its group left), and the
catalog and files are audited with soak.py's checks: each file exactly one frames row,
status combined, its sha256; every set done; each done set one master whose NCOMBINE
equals its combined frames, with valid checksums and the right BWDIGEST; no
``.partial-`` or unknown file under the masters directory; latest.fits good; no raw
file changed. More combines at once than allowed, or combines whose memory at once
exceeds max_combine_memory, are discrepancies too. Sets that are not the expected
shape (one per camera of --frames frames; one of --files) are noted.

It prints a markdown table per scenario and the details below it, and exits 1 on any
discrepancy. Work directories are removed unless --keep or --dir is given (DIR/cameras
and DIR/one-dir, which must be empty or missing), or a discrepancy was found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biaswatch.config import CameraConfig, Config, load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import (
    Geometry,
    camera_header,
    camera_seed,
    frame_bytes,
    make_raw_bias,
    make_structure,
)

sys.path.insert(0, str(Path(__file__).parent))
from soak import (  # a sibling script, not a package
    GEOMETRY,
    CatalogState,
    Ledger,
    Report,
    ServiceRunner,
    Written,
    camera_names,
    check_files,
    check_masters,
    check_masters_dir,
    check_raw_files,
    check_sets,
    command_line,
    log_errors,
    proc_table,
    query,
    service_extra,
    terminate_and_check,
    unsettled,
)
from soak_chaos import Memory, memory_of  # shared with soak.py

CAMERA_GEOMETRY = Geometry(
    rows=256, cols=264, biassec=Section(257, 264, 1, 256), trimsec=Section(1, 256, 1, 256)
)
# soak.py's 64 x 72 frame with an 8-column overscan: 2,000 of them are quick to write.
ONE_DIR_GEOMETRY = GEOMETRY
ONE_DIR_WRITERS = 4
ONE_DIR_EXPECTED = 10_000
MEM_LIMIT = "64MB"
MAX_COMBINE_MEMORY = "128MB"
SEED = 1

SETTLE_TIMEOUT = 15 * 60.0
START_TIMEOUT = 60.0
SERVER_READY_TIMEOUT = 300.0  # generous: about a second on an idle machine
SERVICE_SAMPLE_SECONDS = 0.5
CHILD_SAMPLE_SECONDS = 0.02
PROGRESS_SECONDS = 10.0

CONFIG = """
[service]
state_dir = "state"
masters_dir = "masters"
log_file = "log/biaswatch.jsonl"
mem_limit = "{mem_limit}"
max_combine_memory = "{max_combine_memory}"
{service_extra}[site]
timezone = "UTC"
night_rollover = "{rollover}"
[defaults]
expected_frames = {expected}
min_frames = 1
quiet_minutes = {quiet}
settle_seconds = 0.5
night_end = "{night_end}"
"""

# Frame statuses that are a judgement. A newer service also records a file it has only
# noticed, as 'seen', before judging it: such a row does not count as recorded.
JUDGED_SQL = "status IN ('valid', 'combined', 'ignored', 'rejected')"

# The events that end a set's combine in the log, whichever way it went.
COMBINE_ENDS = {"master.published", "combine.retrying", "set.failed", "combine.abandoned"}


def mib(kib: int) -> str:
    """kB of /proc (KiB) as MiB."""
    return f"{kib / 1024:.0f} MiB"


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 UTC timestamp of the log or the catalog."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


# --- scenarios ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One burst: which cameras, how many files each, and the settings that close sets."""

    name: str
    cameras: list[str]
    files_per_camera: int
    expected_frames: int
    quiet_minutes: float
    geometry: Geometry
    writers_per_camera: int

    @property
    def files(self) -> int:
        """Files in the whole burst."""
        return len(self.cameras) * self.files_per_camera

    def describe(self) -> str:
        """What is written, for the report."""
        rows, cols = self.geometry.shape
        who = (
            f"{len(self.cameras)} cameras x {self.files_per_camera}"
            if len(self.cameras) > 1
            else f"{self.files_per_camera} into one directory"
        )
        return f"{who} frames of {rows} x {cols} uint16"


def cameras_scenario(cameras: int, frames: int) -> Scenario:
    """8 cameras x 50 frames at once; each set completes with its last frame."""
    return Scenario("cameras", camera_names(cameras), frames, frames, 0.5, CAMERA_GEOMETRY, 1)


def one_dir_scenario(files: int) -> Scenario:
    """2,000 frames into one directory; the set closes on quiet with all of them."""
    return Scenario(
        "one-dir", ["cam1"], files, ONE_DIR_EXPECTED, 0.1, ONE_DIR_GEOMETRY, ONE_DIR_WRITERS
    )


def make_work_dir(base: Path | None, name: str) -> Path:
    """A fresh work directory: BASE/NAME (empty or missing), or a new temporary one."""
    if base is None:
        return Path(tempfile.mkdtemp(prefix=f"biaswatch-burst-{name}-")).resolve()
    work = base / name
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty: the burst needs a fresh catalog")
    work.mkdir(parents=True, exist_ok=True)
    return work.resolve()


def write_config(work: Path, scenario: Scenario) -> Path:
    """The scenario's config.toml, one incoming directory per camera.

    The night rolls over 11-12 h from now and ends an hour before that, so neither
    the label's change nor night_end falls inside a run.
    """
    rollover = (dt.datetime.now(dt.UTC).hour + 12) % 24
    values = {
        "mem_limit": MEM_LIMIT,
        "max_combine_memory": MAX_COMBINE_MEMORY,
        "service_extra": service_extra(),
        "rollover": f"{rollover:02d}:00",
        "night_end": f"{(rollover - 1) % 24:02d}:00",
        "expected": str(scenario.expected_frames),
        "quiet": f"{scenario.quiet_minutes:g}",
    }
    text = CONFIG
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    for name in scenario.cameras:
        text += f'[cameras.{name}]\nwatch = ["incoming/{name}"]\n'
        (work / "incoming" / name).mkdir(parents=True)
    path = work / "config.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- the burst ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """A frame made before the burst: where it goes and its bytes."""

    written: Written
    payload: bytes


def make_frames(camera: CameraConfig, geometry: Geometry, count: int, seed: int) -> list[Pending]:
    """``count`` raw biases of one camera, with its fixed pattern and fresh noise."""
    structure = make_structure(geometry, camera_seed(camera.name))
    rng = np.random.default_rng(seed)
    frames = []
    for number in range(1, count + 1):
        header = camera_header(camera, geometry, dt.datetime.now(dt.UTC), number)
        data = make_raw_bias(geometry, rng, structure=structure)
        payload = frame_bytes(data, header, hdu=camera.hdu)
        path = camera.watch[0] / f"{camera.name}_{number:05d}_bias.fits"
        sha = hashlib.sha256(payload).hexdigest()
        frames.append(Pending(Written(path, camera.name, "bias", sha), payload))
    return frames


def write_renamed(path: Path, payload: bytes) -> None:
    """Write the whole file under a hidden temporary name beside it, then rename it in."""
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "xb") as stream:
        stream.write(payload)
    temporary.rename(path)


class Writer(threading.Thread):
    """Writes its share of the burst as fast as it can, once the gate opens."""

    def __init__(
        self, name: str, frames: list[Pending], gate: threading.Barrier, ledger: Ledger
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.frames = frames
        self.gate = gate
        self.ledger = ledger
        self.began = 0.0
        self.ended = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Write every frame; a failure is kept for the report."""
        try:
            self.gate.wait()
            self.began = time.time()
            for frame in self.frames:
                write_renamed(frame.written.path, frame.payload)
                self.ledger.add(frame.written)
        except Exception as exc:
            self.error = exc
        self.ended = time.time()


def writers_for(
    scenario: Scenario, frames: dict[str, list[Pending]], ledger: Ledger
) -> list[Writer]:
    """One writer per camera, or several sharing one camera's directory."""
    per_camera = scenario.writers_per_camera
    gate = threading.Barrier(len(frames) * per_camera)
    return [
        Writer(f"writer-{camera}-{i}", mine[i::per_camera], gate, ledger)
        for camera, mine in frames.items()
        for i in range(per_camera)
    ]


# --- watching the service -------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """A process's children: /proc/PID/task/*/children (any thread may be the parent)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            if task.name == str(pid):  # a kernel without CONFIG_PROC_CHILDREN: the slow way
                return [p.pid for p in proc_table().values() if p.ppid == pid]
        except OSError:
            continue  # the thread ended while we looked
    return found


def own_memory(pid: int) -> int:
    """KiB of pages mapped by this process alone (smaps_rollup); 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Clean", "Private_Dirty"):
            total += int(rest.split()[0])
    return total


@dataclass
class ChildPeak:
    """The most one combine child was seen to hold."""

    hwm: int = 0
    own: int = 0  # Private_Clean + Private_Dirty


@dataclass
class Samples:
    """What the sampler saw, in KiB."""

    service_before: Memory | None = None
    service_hwm: int = 0
    service_final: Memory | None = None
    server_pid: int | None = None
    server_hwm: int = 0
    children: dict[int, ChildPeak] = field(default_factory=dict)
    most_at_once: int = 0
    most_memory_at_once: int = 0  # sum of the own memory of the children of one sample


class Sampler(threading.Thread):
    """Samples the service every 0.5 s and the combine children every 0.02 s."""

    def __init__(self, service_pid: int) -> None:
        super().__init__(name="sampler", daemon=True)
        self.service_pid = service_pid
        self.samples = Samples(service_before=memory_of(service_pid))
        self.stop = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        next_service = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= next_service:
                next_service = time.monotonic() + SERVICE_SAMPLE_SECONDS
                self._sample_service()
            self._sample_children()
            self.stop.wait(CHILD_SAMPLE_SECONDS)
        self._sample_service()

    def _sample_service(self) -> None:
        service = memory_of(self.service_pid)
        if service is not None:
            self.samples.service_hwm = max(self.samples.service_hwm, service.hwm)
        server = self._server()
        if server is not None and (memory := memory_of(server)) is not None:
            self.samples.server_hwm = max(self.samples.server_hwm, memory.hwm)

    def _server(self) -> int | None:
        """The fork server: the service's child that runs multiprocessing.forkserver."""
        known = self.samples.server_pid
        if known is not None and memory_of(known) is not None:
            return known
        for pid in children_of(self.service_pid):
            if "forkserver" in command_line(pid):
                self.samples.server_pid = pid
                return pid
        return None

    def _sample_children(self) -> None:
        server = self._server()
        if server is None:
            return
        alive = 0
        at_once = 0
        for pid in children_of(server):
            child = memory_of(pid)
            if child is None:
                continue
            alive += 1
            peak = self.samples.children.setdefault(pid, ChildPeak())
            peak.hwm = max(peak.hwm, child.hwm)
            own = own_memory(pid)
            peak.own = max(peak.own, own)
            at_once += own
        self.samples.most_at_once = max(self.samples.most_at_once, alive)
        self.samples.most_memory_at_once = max(self.samples.most_memory_at_once, at_once)

    def finish(self) -> Samples:
        """Read the service's final VmHWM, stop sampling, return what was seen."""
        self.samples.service_final = memory_of(self.service_pid)
        self.stop.set()
        self.join()
        if self.samples.service_final is not None:
            final = self.samples.service_final.hwm
            self.samples.service_hwm = max(self.samples.service_hwm, final)
        return self.samples


class LogTail:
    """The service's JSON log, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""

    def read(self) -> list[dict[str, Any]]:
        """Events written since the last read (a line still being written waits)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        self._offset += len(chunk)
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


@dataclass
class Events:
    """What the log told: combines at once, publications, closings, warnings."""

    running: set[int] = field(default_factory=set)
    most_at_once: int = 0
    started: int = 0
    published: list[dict[str, Any]] = field(default_factory=list)
    completed: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    def feed(self, events: list[dict[str, Any]]) -> None:
        """Take new events in log order."""
        for event in events:
            name = str(event.get("event"))
            if name == "combine.started":
                self.started += 1
                self.running.add(int(event["set"]))
                self.most_at_once = max(self.most_at_once, len(self.running))
            elif name in COMBINE_ENDS:
                self.running.discard(int(event.get("set", -1)))
            if name == "master.published":
                self.published.append(event)
            elif name == "set.completed":
                # "complete: 50 of 50 frames", "quiet for 0.1 min with ...": the kind.
                self.completed[str(event.get("reason")).split()[0].rstrip(":")] += 1
            if event.get("level") not in (None, "debug", "info"):
                self.warnings[f"{name} ({event.get('level')})"] += 1


# --- one scenario ---------------------------------------------------------------


@dataclass
class Result:
    """One scenario's measurements and findings."""

    scenario: Scenario
    work: Path
    report: Report
    slots: int = 0
    budget: int = 0  # bytes
    burst_began: float = 0.0
    burst_ended: float = 0.0
    to_recorded: float | None = None
    to_published: float | None = None
    samples: Samples = field(default_factory=Samples)
    events: Events = field(default_factory=Events)
    accounted: int = 0
    state: CatalogState | None = None


def run_scenario(scenario: Scenario, base: Path | None) -> Result:
    """Start the service, burst, measure until settled, stop, audit."""
    work = make_work_dir(base, scenario.name)
    report = Report()
    result = Result(scenario, work, report)
    report.say(f"{scenario.name}: {scenario.describe()}; work directory {work}")
    config_path = write_config(work, scenario)
    config = load_config(config_path)
    result.slots = config.service.combine_slots
    result.budget = config.service.max_combine_memory or config.service.mem_limit
    service = ServiceRunner(config_path, work)
    ledger = Ledger()
    try:
        service.start()
        frames = {
            name: make_frames(config.camera(name), scenario.geometry, scenario.files_per_camera, i)
            for i, name in enumerate(scenario.cameras, start=SEED)
        }
        report.say(f"{scenario.files} frames made; waiting for the service {service.pid}")
        if not wait_ready(service, report):
            return result
        burst_and_measure(scenario, config, service, frames, ledger, result)
        terminate_and_check(service, report, "final SIGTERM", then="")
    finally:
        service.close()
    audit(scenario, work, ledger.files(), result)
    return result


def wait_ready(service: ServiceRunner, report: Report) -> bool:
    """service.started, then combine.server_ready; a discrepancy if either does not come."""
    for event, timeout in (
        ("service.started", START_TIMEOUT),
        ("combine.server_ready", SERVER_READY_TIMEOUT),
    ):
        if not service.wait_event(event, timeout):
            report.discrepancy(
                f"service (pid {service.pid}) did not log {event} within {timeout:g} s; "
                f"exit status {service.exit_status()}"
            )
            return False
    return True


def burst_and_measure(
    scenario: Scenario,
    config: Config,
    service: ServiceRunner,
    frames: dict[str, list[Pending]],
    ledger: Ledger,
    result: Result,
) -> None:
    """Write the burst while sampling; wait until every file is recorded and every set done."""
    report = result.report
    sampler = Sampler(service.pid)
    sampler.start()
    writers = writers_for(scenario, frames, ledger)
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    result.burst_began = min((w.began for w in writers if w.began), default=time.time())
    result.burst_ended = max(w.ended for w in writers)
    for writer in writers:
        if writer.error is not None:
            report.discrepancy(f"{writer.name} failed: {writer.error!r}")
    report.say(
        f"burst written: {len(ledger.files())} files in "
        f"{result.burst_ended - result.burst_began:.2f} s"
    )
    tail = LogTail(service.log_path)
    catalog = config.service.state_dir / "catalog.sqlite"
    settle(service, catalog, ledger, tail, result)
    result.samples = sampler.finish()
    result.events.feed(tail.read())
    first = dt.datetime.fromtimestamp(result.burst_began, dt.UTC)
    last = query(catalog, f"SELECT max(recorded) AS last FROM frames WHERE {JUDGED_SQL}")
    if last and last[0]["last"]:
        result.to_recorded = (parse_time(last[0]["last"]) - first).total_seconds()
    if result.events.published:
        newest = max(parse_time(e["timestamp"]) for e in result.events.published)
        result.to_published = (newest - first).total_seconds()


def settle(
    service: ServiceRunner, catalog: Path, ledger: Ledger, tail: LogTail, result: Result
) -> None:
    """Wait until every file is recorded and every set done, failed or insufficient."""
    report = result.report
    deadline = time.monotonic() + SETTLE_TIMEOUT
    shown = time.monotonic()
    while time.monotonic() < deadline:
        result.events.feed(tail.read())
        if (status := service.exit_status()) is not None:
            report.discrepancy(f"service {service.pid} ended by itself with exit status {status}")
            return
        missing, busy = unsettled(catalog, ledger)
        if not missing and not busy:
            report.say("settled: every file recorded, every set done, failed or insufficient")
            return
        if time.monotonic() - shown >= PROGRESS_SECONDS:
            shown = time.monotonic()
            running = sorted(result.events.running)
            report.say(
                f"{missing} files unrecorded; sets not finished: {len(busy)}; "
                f"masters {len(result.events.published)}; combining {running or 'none'}"
            )
        time.sleep(0.5)
    missing, busy = unsettled(catalog, ledger)
    report.discrepancy(
        f"not settled {SETTLE_TIMEOUT:g} s after the burst: {missing} files unrecorded, "
        f"sets busy: {busy}"
    )


# --- the audit ------------------------------------------------------------------


def audit(scenario: Scenario, work: Path, written: list[Written], result: Result) -> None:
    """soak.py's checks of catalog and files, then this scenario's own."""
    state = check_catalog_and_files(work, written, result)
    check_budget(result)
    check_shape(scenario, state, result.report)


def check_catalog_and_files(work: Path, written: list[Written], result: Result) -> CatalogState:
    """soak.py's checks of a run's catalog and files (write_config's layout); its state.

    Every file written one frames row, combined, its sha256; every set done with one
    master (NCOMBINE, checksums, BWDIGEST); nothing stray under the masters directory;
    the raw files untouched. benchmarks/executors.py audits its runs with it too.
    """
    report, scenario = result.report, result.scenario
    state = CatalogState.read(work / "state" / "catalog.sqlite")
    result.state = state
    if len(written) != scenario.files:
        report.discrepancy(f"{len(written)} files written of {scenario.files}")
    result.accounted = check_files(written, state, report)
    check_sets(state, report)
    check_masters(state, written, report)
    check_masters_dir(work / "masters", state, scenario.cameras, report)
    check_raw_files(written, report)
    return state


def check_budget(result: Result) -> None:
    """No more combines at once than max_combine_memory // mem_limit, nor more memory."""
    report, samples, events = result.report, result.samples, result.events
    for seen, how in ((events.most_at_once, "the log"), (samples.most_at_once, "sampling")):
        if seen > result.slots:
            report.discrepancy(
                f"{seen} combines ran at once ({how}); max_combine_memory allows {result.slots}"
            )
    if samples.most_memory_at_once * 1024 > result.budget:
        report.discrepancy(
            f"combine children held {mib(samples.most_memory_at_once)} of their own at once; "
            f"max_combine_memory is {result.budget / 2**20:.0f} MiB"
        )


def check_shape(scenario: Scenario, state: CatalogState, report: Report) -> None:
    """One master per camera with every file of the burst; a note otherwise."""
    for camera in scenario.cameras:
        counts = sorted(m["ncombine"] for m in state.masters if m["camera"] == camera)
        if counts != [scenario.files_per_camera]:
            report.note(
                f"{camera}: masters of {counts or 'no'} frames, expected one of "
                f"{scenario.files_per_camera}"
            )


# --- the report -----------------------------------------------------------------


def seconds(value: float | None) -> str:
    """A duration for the table, or a dash."""
    return "n/a" if value is None else f"{value:.1f} s"


def print_result(result: Result) -> None:
    """The scenario's table, then the details, notes and discrepancies."""
    scenario, samples, events, report = (
        result.scenario,
        result.samples,
        result.events,
        result.report,
    )
    rate = "n/a"
    if result.to_recorded:
        rate = f"{scenario.files / result.to_recorded:.1f}"
    child_hwm = max((c.hwm for c in samples.children.values()), default=0)
    child_own = max((c.own for c in samples.children.values()), default=0)
    child_cell = f"{mib(child_hwm)} (own {mib(child_own)})" if samples.children else "not seen"
    combines = f"{events.most_at_once} (sampled {samples.most_at_once}) of {result.slots} allowed"
    print()
    print(f"### {scenario.name}: {scenario.describe()}")
    print()
    print(
        "| files | first file written → all recorded | → all published | frames/s "
        "| service peak RSS | combine child peak RSS | most combines at once | discrepancies |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {scenario.files} | {seconds(result.to_recorded)} | {seconds(result.to_published)} "
        f"| {rate} | {mib(samples.service_hwm)} | {child_cell} | {combines} "
        f"| {len(report.discrepancies)} |"
    )
    print()
    for line in details(result):
        print(f"- {line}")
    for note in report.notes:
        print(f"note: {note}")
    for line in report.discrepancies:
        print(f"DISCREPANCY: {line}")


def details(result: Result) -> list[str]:
    """The lines under the table."""
    scenario, samples, events = result.scenario, result.samples, result.events
    writers = len(scenario.cameras) * scenario.writers_per_camera
    burst = result.burst_ended - result.burst_began
    before = samples.service_before
    final = samples.service_final
    lines = [
        f"burst: {scenario.files} files written whole to '.NAME.part' and renamed into place "
        f"by {writers} threads in {burst:.2f} s",
        "service process: RSS before the burst "
        f"{mib(before.rss) if before else '?'} (VmHWM {mib(before.hwm) if before else '?'}); "
        f"VmHWM sampled every {SERVICE_SAMPLE_SECONDS:g} s {mib(samples.service_hwm)}, final "
        f"{mib(final.hwm) if final else '?'} (RSS {mib(final.rss) if final else '?'}); "
        f"fork server VmHWM {mib(samples.server_hwm)}",
        f"combine children: {events.started} started (log), {len(samples.children)} caught by "
        f"sampling every {CHILD_SAMPLE_SECONDS:g} s; child peak RSS is the largest VmHWM read, "
        "own the largest Private_Clean + Private_Dirty (smaps_rollup) of one child; "
        "largest sum of own memory over the children alive at one sample "
        f"{mib(samples.most_memory_at_once)}, max_combine_memory "
        f"{result.budget / 2**20:.0f} MiB (mem_limit {MEM_LIMIT} each, {result.slots} at once)",
    ]
    published = [float(e.get("combine_seconds", 0.0)) for e in events.published]
    if published:
        lines.append(
            f"masters published: {len(published)}; combine_seconds median "
            f"{statistics.median(published):.2f} s, max {max(published):.2f} s"
        )
    if result.state is not None:
        sets = Counter(str(r["state"]) for r in result.state.sets.values())
        closed = ", ".join(f"{k} {v}" for k, v in sorted(events.completed.items())) or "none"
        lines.append(
            f"frames accounted for: {result.accounted} of {scenario.files}; sets "
            f"{len(result.state.sets)} ({dict(sets)}), closed as: {closed}"
        )
    lines.append(f"log warnings and errors: {dict(events.warnings) or 'none'}")
    errors = log_errors(result.work / "log" / "biaswatch.jsonl")
    if errors:
        lines.append(f"log events at error level: {dict(errors)}")
    return lines


# --- main -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    scenarios: list[Scenario]
    dir: Path | None
    keep: bool


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=["cameras", "one-dir", "both"], default="both")
    parser.add_argument("--cameras", type=int, default=8, help="cameras of the cameras scenario")
    parser.add_argument("--frames", type=int, default=50, help="frames per camera (cameras)")
    parser.add_argument("--files", type=int, default=2000, help="files of the one-dir scenario")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (DIR/SCENARIO)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args(argv)
    if args.cameras < 1 or args.frames < 1 or args.files < 1:
        parser.error("need --cameras, --frames and --files >= 1")
    if args.files > ONE_DIR_EXPECTED:
        parser.error(f"--files is at most {ONE_DIR_EXPECTED} (the one-dir set's expected_frames)")
    scenarios = []
    if args.scenario in ("cameras", "both"):
        scenarios.append(cameras_scenario(args.cameras, args.frames))
    if args.scenario in ("one-dir", "both"):
        scenarios.append(one_dir_scenario(args.files))
    return Options(scenarios, args.dir, args.keep)


def main(argv: list[str] | None = None) -> int:
    """Run each scenario; 0 if nothing was wrong, 1 otherwise."""
    options = parse_args(argv)
    results = [run_scenario(scenario, options.dir) for scenario in options.scenarios]
    failed = False
    for result in results:
        print_result(result)
        failed |= bool(result.report.discrepancies)
    print()
    for result in results:
        if options.keep or options.dir is not None or result.report.discrepancies:
            print(f"work directory kept: {result.work}")
        else:
            shutil.rmtree(result.work, ignore_errors=True)
            print(f"work directory removed: {result.work}")
    total = sum(len(r.report.discrepancies) for r in results)
    print(f"discrepancies: {total}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
