"""The soak's bursts, odd files and episodes (a full disk, a hung mount), as threads.

Each writes files the way soak.py's feeders do and hands every file to ``record``
(soak.py puts it in its ledger with what it must become). Progress and findings go
to a ``Reporter`` (soak.Report).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from soak_chaos import StallMount, TmpfsDisk, read_events
from soak_odd import OddContext, fingerprint, write_odd

from biaswatch.config import CameraConfig
from biaswatch.sections import Section
from biaswatch.testing.camera import (
    Geometry,
    camera_header,
    camera_seed,
    frame_bytes,
    make_raw_bias,
    make_structure,
)

# Record one written file: path as the service sees it, camera, kind, fingerprint,
# and where it was really written if elsewhere (the hung mount's backing directory).
Record = Callable[[Path, str, str, str, Path | None], None]

# A burst: 15-40 frames at once (issue 11: "15 frames of one geometry ... dropped at
# once" gave two sets one sequence number), in 1 to 3 geometries.
BURST_FRAMES = (15, 40)
BURST_GEOMETRIES = {1: 2, 2: 2, 3: 1}  # how many geometries, by weight
# Two more geometries beside soak.GEOMETRY (64 x 72), each with an 8-column overscan.
EXTRA_GEOMETRIES = (
    Geometry(rows=48, cols=56, biassec=Section(49, 56, 1, 48), trimsec=Section(1, 48, 1, 48)),
    Geometry(rows=32, cols=40, biassec=Section(33, 40, 1, 32), trimsec=Section(1, 32, 1, 32)),
)
# After a hung mount is released, a camera.stalled for it may still be on its way.
STALL_GRACE_SECONDS = 5.0


class Reporter(Protocol):
    """What the threads need of soak.Report."""

    def say(self, text: str) -> None:
        """A progress line."""

    def discrepancy(self, text: str) -> None:
        """A finding that fails the soak."""

    def note(self, text: str) -> None:
        """Something worth knowing."""


def utc_now() -> dt.datetime:
    """Now, in UTC, as the log's timestamps."""
    return dt.datetime.now(dt.UTC)


def write_renamed(path: Path, payload: bytes) -> None:
    """The whole file under a hidden name beside it, then renamed in (burst.py's way)."""
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "xb") as stream:
        stream.write(payload)
    temporary.rename(path)


class FrameMaker:
    """Raw biases of one camera, in any geometry, with its fixed pattern."""

    def __init__(self, camera: CameraConfig, seed: int) -> None:
        self.camera = camera
        self._noise = np.random.default_rng(seed)
        self._structures: dict[Geometry, Any] = {}

    def structure(self, geometry: Geometry) -> Any:
        """The camera's fixed pattern in this geometry."""
        if geometry not in self._structures:
            self._structures[geometry] = make_structure(geometry, camera_seed(self.camera.name))
        return self._structures[geometry]

    def payload(self, geometry: Geometry, number: int) -> bytes:
        """One raw bias frame."""
        header = camera_header(self.camera, geometry, utc_now(), number)
        data = make_raw_bias(geometry, self._noise, structure=self.structure(geometry))
        return frame_bytes(data, header, hdu=self.camera.hdu)

    @property
    def noise(self) -> np.random.Generator:
        """The generator of fresh noise."""
        return self._noise


class BurstFeeder(threading.Thread):
    """Every few minutes, 15-40 frames at once into one camera, in 1-3 geometries."""

    def __init__(
        self,
        makers: list[FrameMaker],
        geometry: Geometry,
        every: tuple[float, float],
        seed: int,
        record: Record,
        report: Reporter,
    ) -> None:
        super().__init__(name="bursts", daemon=True)
        self.makers = makers
        self.geometries = (geometry, *EXTRA_GEOMETRIES)
        self.every = every
        self.record = record
        self.report = report
        self.stop = threading.Event()
        self.bursts = 0
        self.frames = 0
        self.by_geometries: Counter[int] = Counter()
        self._rng = random.Random(seed)

    def run(self) -> None:
        """Burst until stopped; a failure to write is a discrepancy of the soak itself."""
        try:
            while not self.stop.wait(self._rng.uniform(*self.every)):
                self.burst()
        except Exception as exc:
            self.report.discrepancy(f"burst feeder failed: {exc!r}")

    def burst(self) -> None:
        """Make every frame first, then write them all as fast as the disk takes them."""
        self.bursts += 1
        maker = self._rng.choice(self.makers)
        count = self._rng.randint(*BURST_FRAMES)
        kinds, weights = list(BURST_GEOMETRIES), list(BURST_GEOMETRIES.values())
        chosen = self._rng.sample(self.geometries, self._rng.choices(kinds, weights)[0])
        name = maker.camera.name
        frames = []
        for i in range(count):
            path = maker.camera.watch[0] / f"{name}_b{self.bursts:03d}_{i:03d}_bias.fits"
            frames.append((path, maker.payload(chosen[i % len(chosen)], i)))
        for path, payload in frames:
            write_renamed(path, payload)
            self.record(path, name, "bias", fingerprint(path, "bias"), None)
        self.frames += count
        self.by_geometries[len(chosen)] += 1
        self.report.say(
            f"burst {self.bursts}: {count} frames into {name}, {len(chosen)} geometries"
        )


class OddFeeder(threading.Thread):
    """Every ``interval`` seconds one odd file, the kinds in turn, into a random camera."""

    def __init__(
        self,
        contexts: list[OddContext],
        kinds: tuple[str, ...],
        interval: float,
        seed: int,
        record: Record,
        report: Reporter,
    ) -> None:
        super().__init__(name="odd-files", daemon=True)
        self.contexts = contexts
        self.kinds = kinds
        self.interval = interval
        self.record = record
        self.report = report
        self.stop = threading.Event()
        self.written: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._noise = np.random.default_rng(seed)

    def run(self) -> None:
        """Write odd files until stopped."""
        number = 0
        kinds: list[str] = []
        while not self.stop.wait(self.interval):
            if not kinds:
                kinds = list(self.kinds)
                self._rng.shuffle(kinds)
            kind = kinds.pop()
            number += 1
            context = self._rng.choice(self.contexts)
            try:
                odd = write_odd(kind, context, 90_000 + number, self._noise)
            except Exception as exc:
                self.report.discrepancy(f"odd feeder could not write {kind}: {exc!r}")
                continue
            self.record(odd.path, context.camera.name, kind, odd.fingerprint, None)
            self.written[kind] += 1


@dataclass
class Episode:
    """One episode: when it ran (UTC) and what it saw."""

    name: str
    began: dt.datetime | None = None
    ended: dt.datetime | None = None
    facts: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A summary line."""
        if self.began is None or self.ended is None:
            return f"{self.name}: did not run"
        seconds = (self.ended - self.began).total_seconds()
        return f"{self.name}: {seconds:.0f} s; " + "; ".join(self.facts)


def events_between(log: Path, began: dt.datetime, ended: dt.datetime) -> list[dict[str, Any]]:
    """The log's events stamped between two moments."""
    found = []
    for event in read_events(log):
        try:
            stamp = dt.datetime.fromisoformat(str(event["timestamp"])).astimezone(dt.UTC)
        except (KeyError, ValueError):
            continue
        if began <= stamp <= ended:
            found.append(event)
    return found


def full_disk(disk: TmpfsDisk, seconds: float, log: Path, report: Reporter) -> Episode:
    """Fill masters_dir's tmpfs for ``seconds``, then free it."""
    episode = Episode("full disk (masters_dir)")
    episode.began = utc_now()
    filled = disk.fill()
    report.say(f"full disk: masters_dir filled with {filled / 2**20:.0f} MiB of ballast")
    time.sleep(seconds)
    disk.free()
    episode.ended = utc_now()
    report.say("full disk: ballast removed")
    during = events_between(log, episode.began, episode.ended)
    names = Counter(str(e.get("event")) for e in during if e.get("level") != "info")
    episode.facts.append(f"warnings and errors during it: {dict(names) or 'none'}")
    if not names:
        report.note("the full disk bit nothing: no warning or error was logged during it")
    return episode


@dataclass(frozen=True, slots=True)
class HangPlan:
    """The hung-mount episode's camera, mount and length."""

    maker: FrameMaker
    mount: StallMount
    geometry: Geometry
    frames: int
    seconds: float
    stall_seconds: float


def hung_mount(plan: HangPlan, log: Path, record: Record, report: Reporter) -> Episode:
    """Hang the camera's mirror, write frames behind it, release it after ``seconds``."""
    episode = Episode(f"hung mount ({plan.maker.camera.name})")
    camera = plan.maker.camera.name
    episode.began = utc_now()
    plan.mount.hang()
    report.say(f"hung mount: {plan.mount.mountpoint} hangs")
    for i in range(plan.frames):
        name = f"{camera}_hung_{episode.began:%H%M%S}_{i:02d}_bias.fits"
        backing = plan.mount.backing / name
        write_renamed(backing, plan.maker.payload(plan.geometry, i))
        record(plan.mount.mountpoint / name, camera, "bias", fingerprint(backing, "bias"), backing)
    release = time.monotonic() + plan.seconds
    stalled = _wait_stalled(log, camera, episode.began, release)
    time.sleep(max(0.0, release - time.monotonic()))
    plan.mount.resume()
    episode.ended = utc_now()
    report.say("hung mount: released")
    during = events_between(log, episode.began, episode.ended)
    others = [
        e for e in during if e.get("event") == "master.published" and e.get("camera") != camera
    ]
    episode.facts.append(
        f"camera.stalled after {stalled:.0f} s" if stalled is not None else "no camera.stalled"
    )
    episode.facts.append(f"{len(others)} masters of other cameras published meanwhile")
    episode.facts.append(f"{plan.frames} frames written behind it")
    if stalled is None:
        report.discrepancy(f"hung mount: no camera.stalled for {camera} in {plan.seconds:g} s")
    if not others:
        report.discrepancy("hung mount: no other camera published a master while it hung")
    return episode


def _wait_stalled(log: Path, camera: str, began: dt.datetime, until: float) -> float | None:
    """Seconds from ``began`` to the camera's camera.stalled, or None by ``until``."""
    while time.monotonic() < until:
        for event in events_between(log, began, utc_now()):
            if event.get("event") == "camera.stalled" and event.get("camera") == camera:
                stamp = dt.datetime.fromisoformat(str(event["timestamp"])).astimezone(dt.UTC)
                return (stamp - began).total_seconds()
        time.sleep(1.0)
    return None
