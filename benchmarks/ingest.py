"""A mosaic's readout landing at once: frames recorded per second, and the master after it.

Usage:
    .venv/bin/python benchmarks/ingest.py [--frames 16] [--size 4096] [--runs 3]
        [--before 3e7d728]

Sixteen raw 4096 x 4128 uint16 frames (one readout of a 16-CCD mosaic) are written to a
staging directory, flushed to disk (as a camera wrote them before), then renamed into the
watched directory all at once; the camera expects 16 frames a set. From the service's
log: **ingest** is the first rename to ``set.completed`` (logged in the main loop's turn
that records the last frame: the set's completion), frames per second is frames / ingest;
**after** is ``master.published`` minus ``set.completed`` minus the event's
``combine_seconds`` (the child's own read, combine and write): the issue's target is
at most 0.3 s, with at least 6 frames a second.

Side by side, in the same run and interleaved set by set so that all see the same load:

- ``recipe``: the seed recipe's calibration of the same 16 frames, one process
  (``CCDData.read``, ``subtract_overscan`` median, ``trim_image``, ``write``), timed as
  a whole process; its frames per second is frames / wall time.
- ``before``: the service as it was at ``--before`` (a git revision, extracted into a
  temporary directory with ``git archive``, run with PYTHONPATH at its src; or a path to
  a checkout), on the same frames.

Each set is a fresh readout (new pixels' headers, same pixels: their hashes differ, so
no frame is a duplicate of an earlier set's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biaswatch.config import load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry, camera_header, frame_bytes, make_raw_bias

sys.path.insert(0, str(Path(__file__).parent))
from latency import CONFIG, _command, _script_of, checkout_of

REPO = Path(__file__).resolve().parent.parent

RECIPE = """
import sys
from pathlib import Path
import ccdproc
import numpy as np
from astropy.nddata import CCDData
out = Path(sys.argv[1])
for raw in sys.argv[2:]:
    ccd = CCDData.read(raw, unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, fits_section=ccd.header["BIASSEC"], median=True,
                                    overscan_axis=1)
    ccd = ccdproc.trim_image(ccd, fits_section=ccd.header["TRIMSEC"])
    ccd.data = ccd.data.astype(np.float32)
    ccd.write(out / Path(raw).name, overwrite=True)
"""


@dataclass
class Service:
    """One running service: its directory, its process, how many sets it has published."""

    name: str
    base: Path
    process: subprocess.Popen[bytes]
    sets: int = 0

    @property
    def log(self) -> Path:
        """The service's JSON log."""
        return self.base / "log" / "biaswatch.jsonl"


def start_service(name: str, frames: int, checkout: Path | None, root: Path) -> Service:
    """Start ``biaswatch run`` (this checkout's console script, or ``checkout``'s)."""
    base = root / name
    (base / "incoming").mkdir(parents=True)
    config = base / "config.toml"
    config.write_text(CONFIG.replace("{frames}", str(frames)))
    command, env = _command("script"), dict(os.environ)
    if checkout is not None:
        command = _script_of(checkout, base / "bin")
        env["PYTHONPATH"] = str(checkout / "src")
    env["NUMBA_CACHE_DIR"] = str(Path(__file__).parent / "out" / "numba")
    process = subprocess.Popen(
        [*command, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    service = Service(name, base, process)
    wait_for(service, "combine.server_ready", 1, timeout=120)
    return service


def events(log: Path) -> list[dict[str, object]]:
    """Every event of a JSON log so far."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_for(service: Service, name: str, count: int, timeout: float = 600) -> dict[str, object]:
    """The count-th event called ``name``, once it is logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(service.log) if e["event"] == name]
        if len(found) >= count:
            return found[count - 1]
        if service.process.poll() is not None:
            raise SystemExit(f"{service.name}: the service exited ({service.process.returncode})")
        time.sleep(0.05)
    raise SystemExit(f"{service.name}: no {name} #{count} after {timeout} s")


def stamp(event: dict[str, object]) -> float:
    """An event's UTC timestamp as POSIX seconds."""
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def stage(pixels: list[np.ndarray], geometry: Geometry, config: Path, where: Path) -> list[Path]:
    """Write one readout's frames (fresh headers) to ``where`` and flush them to disk."""
    camera = load_config(config).camera("cam")
    where.mkdir(parents=True)
    paths = []
    for i, data in enumerate(pixels):
        header = camera_header(camera, geometry, dt.datetime.now(dt.UTC), i + 1)
        path = where / f"ccd{i:02d}.fits"
        path.write_bytes(frame_bytes(data, header))
        paths.append(path)
    os.sync()  # written before the readout "lands": no writeback left to compete with
    return paths


def land(service: Service, staged: list[Path]) -> dict[str, float]:
    """Rename the staged frames into the watched directory at once; time what follows."""
    incoming = service.base / "incoming"
    service.sets += 1
    first = time.time()
    for path in staged:
        path.rename(incoming / f"set{service.sets}_{path.name}")
    completed = wait_for(service, "set.completed", service.sets)
    published = wait_for(service, "master.published", service.sets)
    ingest = stamp(completed) - first
    combine = float(str(published["combine_seconds"]))
    return {
        "ingest": ingest,
        "rate": len(staged) / ingest,
        "combine": combine,
        "after": stamp(published) - stamp(completed) - combine,
        "startup": float(str(published["startup_seconds"])),
    }


def recipe(staged: list[Path], out: Path) -> dict[str, float]:
    """The seed recipe's calibration of the staged frames, one process, timed whole."""
    out.mkdir(parents=True)
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-c", RECIPE, str(out), *map(str, staged)], check=True)
    wall = time.perf_counter() - begin
    shutil.rmtree(out)
    return {"ingest": wall, "rate": len(staged) / wall}


def summary(values: list[float], unit: str) -> str:
    """median (min-max) of a few runs."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) {unit}"


def main() -> None:
    """Stage, land and time each run; print one markdown row per way."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", help="a git revision or a checkout to compare with")
    parser.add_argument("--keep", action="store_true", help="keep the services' directories")
    args = parser.parse_args()
    (REPO / "benchmarks" / "out").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="biaswatch-ingest-", dir=REPO / "benchmarks" / "out"))
    size = args.size
    geometry = Geometry(
        size, size + 32, Section(size + 1, size + 32, 1, size), Section(1, size, 1, size)
    )
    rng = np.random.default_rng(1)
    pixels = [make_raw_bias(geometry, rng) for _ in range(args.frames)]
    services: list[Service] = []
    results: dict[str, list[dict[str, float]]] = {"recipe": [], "now": []}
    try:
        services.append(start_service("now", args.frames, None, root))
        if args.before:
            services.append(
                start_service("before", args.frames, checkout_of(args.before, root), root)
            )
            results["before"] = []
        for run in range(1, args.runs + 1):
            config = services[0].base / "config.toml"
            staged = stage(pixels, geometry, config, root / f"stage-recipe-{run}")
            results["recipe"].append(recipe(staged, root / f"recipe-out-{run}"))
            shutil.rmtree(staged[0].parent)
            for service in services:
                staged = stage(pixels, geometry, config, root / f"stage-{service.name}-{run}")
                time.sleep(1)  # the sync's writeback settles
                results[service.name].append(land(service, staged))
                print(f"run {run} {service.name}: {results[service.name][-1]}", flush=True)
    finally:
        for service in services:
            service.process.send_signal(signal.SIGTERM)
            service.process.wait(timeout=60)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)  # GBs of frames and work files
    report(results, args.frames, size)


def report(results: dict[str, list[dict[str, float]]], frames: int, size: int) -> None:
    """One markdown row per way: median (min-max) of the runs."""
    print(
        f"\n{frames} raw frames of {size + 32} x {size} uint16 landing at once; "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        "| way | first frame landed -> last recorded | frames/s | combine's own time "
        "| published - last recorded - combine | child start-up |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for way, runs in results.items():
        cells = [summary([r["ingest"] for r in runs], "s"), summary([r["rate"] for r in runs], "")]
        if way == "recipe":
            cells += ["", "", ""]
        else:
            cells += [
                summary([r["combine"] for r in runs], "s"),
                summary([r["after"] for r in runs], "s"),
                summary([r["startup"] for r in runs], "s"),
            ]
        print(f"| {way} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
