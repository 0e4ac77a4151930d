"""Executors: one burst through the real service, locally and on a Dask cluster, side by side.

Usage:
    .venv/bin/python benchmarks/executors.py [--cameras 16] [--frames 10] [--workers 2]
        [--dir DIR] [--keep]

A throughput measurement, not a test. It starts a ``distributed.LocalCluster`` of
--workers worker processes (one thread each, resource MEMORY = mem_limit), listening on
127.0.0.1 only, without dashboards, and loads the engine on every worker, as the
service's fork server does. Then it
runs the same burst twice through the real service, with burst.py's machinery
(``python -m biaswatch run`` on a fresh work directory and config, writer threads,
waiting until settled, the audit):

1. ``executor = "local"``: calibrations on the service's own threads, combines in
   children of its fork server, max_combine_memory // mem_limit = 2 at once;
2. ``executor = "dask"``, ``scheduler`` = the LocalCluster: calibrations and combines
   as tasks on its workers. A worker's MEMORY equals mem_limit, so it holds one combine
   at a time, and --workers 2 allows the same 2 at once as the local run.

The burst: --cameras cameras x --frames raw biases of 512 x 528 uint16 (16-column
overscan), one writer thread per camera, all at once, each frame written whole to a
hidden name and renamed into place; expected_frames = --frames, so each camera's set
closes with its last frame. The frames are made once, before either run: both runs get
the same bytes, only the directory differs. mem_limit "64MB" and max_combine_memory
"128MB", as in burst.py. The clock starts once the service has logged service.started
(local: and combine.server_ready), so neither run times a compilation. The cluster stays
up, idle, during the local run: on one machine the Dask run shares its 2 cores between
the service, the scheduler and the workers, so this measures what the executor costs,
not what more machines would bring.

Measured, per executor:
- wall time from the first file written to the last ``master.published`` (the log's
  timestamp), and to the last frame recorded (the catalog, as in burst.py);
- frames/s and masters/s: the frames and the masters over that first wall time;
- the most combine attempts running at once (the catalog's attempts table).
Then the ratio dask/local of the throughput (same frames, same masters: it is the
inverse of the ratio of the wall times).

Checked, each a discrepancy: soak.py's audit of each run (every file one frames row,
combined, its sha256; every set done, with one master: NCOMBINE, checksums, BWDIGEST;
no stray file under the masters directory; raw files untouched); one set per camera with
every frame, published exactly once (one ``master.published`` in the log, one masters
row); every frame calibrated where its executor runs (on the cluster for dask) and each
set combined by one run, done, on that executor (a run recorded twice in the attempts
table is a discrepancy too); the local run's combines within max_combine_memory (as burst.py); and
camera by camera the data arrays of the two masters equal, byte for byte.

At the end the service gets SIGTERM (exit 0 within 30 s, no process of its group left)
and the cluster is closed. It prints a markdown table and the details below it, and
exits 1 on any discrepancy. The workers' own logs go to CLUSTER/worker-PID.jsonl. Work
directories are removed unless --keep or --dir is given (DIR/local, DIR/dask and
DIR/cluster, empty or missing), or a discrepancy was found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from biaswatch.combine.dask_tasks import MEMORY
from biaswatch.config import Config, load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry

sys.path.insert(0, str(Path(__file__).parent))
from burst import (  # sibling scripts, not a package
    MAX_COMBINE_MEMORY,
    MEM_LIMIT,
    SEED,
    START_TIMEOUT,
    LogTail,
    Pending,
    Result,
    Scenario,
    burst_and_measure,
    check_budget,
    check_catalog_and_files,
    make_frames,
    make_work_dir,
    parse_time,
    seconds,
    wait_ready,
    write_config,
)
from soak import (
    CatalogState,
    Ledger,
    Report,
    ServiceRunner,
    camera_names,
    log_errors,
    query,
    terminate_and_check,
)

# 512 x 512 pixels and a 16-column overscan strip on the right: 0.54 MB a raw frame,
# 4 x burst.py's 256 x 264, so each frame's calibration and its trip to a worker (the
# service sends the pixels with the task: README, "Several machines") cost something,
# while 160 frames still take about 10 s a run on 2 cores (measured). A 10-frame stack
# is 10 MB of float32, within mem_limit: one combine task per set, never split into
# bands (tests/service/test_cluster.py covers the split).
GEOMETRY = Geometry(
    rows=512, cols=528, biassec=Section(513, 528, 1, 512), trimsec=Section(1, 512, 1, 512)
)
EXECUTORS = ("local", "dask")
# What a worker imports before the burst: a frame's calibration (ccdproc, astropy), the
# fork server's preload (biaswatch.combine.preload: the child, then warm_up()) and the tasks.
WORKER_MODULES = (
    "biaswatch.frames.calibrate",
    "biaswatch.combine.preload",
    "biaswatch.combine.dask_tasks",
)
QUIET_MINUTES = 0.5  # burst.py's cameras scenario: sets close by count, not by quiet


# --- the cluster ------------------------------------------------------------------


def start_cluster(workers: int, mem_limit: int) -> Any:
    """A LocalCluster on 127.0.0.1: ``workers`` processes of one thread, MEMORY = mem_limit.

    As tests/service/test_cluster.py: one thread per worker (combine/dask_tasks.py's kernel
    lock allows no more). The scheduler's HTTP server (the dashboard's pages need bokeh,
    not installed) on any free loopback port:
    its default, 8787, may be a real scheduler's. Typed Any: distributed is not.
    """
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        resources={MEMORY: mem_limit},
    )


def load_engine(log_dir: str) -> str:
    """On a worker: its biaswatch log to a file, then the tasks' imports and the kernel.

    The same as the fork server's preload, so a warm worker meets the burst as a warm
    fork server does; the first task would otherwise pay the imports and the compile.
    The log: a worker logs each frame it calibrates (frames/calibrate.py's events), which
    under systemd go to the journal; here to LOG_DIR/worker-PID.jsonl (logs.py's JSON
    lines), not to this script's output.
    """
    import importlib

    from biaswatch.logs import configure

    configure(Path(log_dir) / f"worker-{os.getpid()}.jsonl", "info", console=False)
    for module in WORKER_MODULES:
        importlib.import_module(module)
    return f"pid {os.getpid()}"


def warm_workers(cluster: Any, log_dir: Path, report: Report) -> None:
    """Run load_engine on every worker, from a client of our own."""
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        for address, answer in client.run(load_engine, str(log_dir)).items():
            report.say(f"worker {address} ready: {answer}")


# --- one run ----------------------------------------------------------------------


@dataclass
class Run:
    """One executor's burst: burst.py's result and what this script adds."""

    executor: str
    result: Result
    events: list[dict[str, Any]]
    masters: dict[str, Path]  # camera -> its master
    attempts: list[Any]
    most_attempts_at_once: int


def scenario_for(executor: str, cameras: int, frames: int) -> Scenario:
    """burst.py's cameras scenario, with this script's frames and the executor's name."""
    return Scenario(executor, camera_names(cameras), frames, frames, QUIET_MINUTES, GEOMETRY, 1)


def write_executor_config(work: Path, scenario: Scenario, scheduler: str | None) -> Path:
    """burst.py's config, with the executor's keys at the top of its [service] table."""
    path = write_config(work, scenario)
    keys = f'executor = "dask"\nscheduler = "{scheduler}"\n' if scheduler else ""
    text = path.read_text(encoding="utf-8").replace("[service]\n", f"[service]\n{keys}", 1)
    path.write_text(text, encoding="utf-8")
    return path


def make_burst(config: Config, cameras: list[str], frames: int) -> dict[str, list[Pending]]:
    """Each camera's frames, written to its directory of ``config``."""
    return {
        name: make_frames(config.camera(name), GEOMETRY, frames, seed)
        for seed, name in enumerate(cameras, start=SEED)
    }


def moved(frames: dict[str, list[Pending]], config: Config) -> dict[str, list[Pending]]:
    """The same frames, byte for byte, bound for the cameras' directories of ``config``."""
    return {
        name: [
            Pending(
                replace(p.written, path=config.camera(name).watch[0] / p.written.path.name),
                p.payload,
            )
            for p in pending
        ]
        for name, pending in frames.items()
    }


def wait_started(service: ServiceRunner, executor: str, report: Report) -> bool:
    """burst.py's wait (service.started, combine.server_ready); with dask, no fork server.

    The Dask service starts no fork server and never logs combine.server_ready
    (service/loop.py); it logs executor.connected before service.started.
    """
    if executor == "local":
        return wait_ready(service, report)
    if service.wait_event("service.started", START_TIMEOUT):
        return True
    report.discrepancy(
        f"service (pid {service.pid}) did not log service.started within {START_TIMEOUT:g} s; "
        f"exit status {service.exit_status()}"
    )
    return False


def run_executor(
    executor: str,
    scenario: Scenario,
    base: Path | None,
    scheduler: str | None,
    frames: dict[str, list[Pending]] | None,
    clock: float,
) -> tuple[Run, dict[str, list[Pending]]]:
    """Start the service, burst, settle, stop, audit; returns the run and its frames.

    ``clock``: the monotonic start of the progress lines' times, shared by both runs.
    """
    work = make_work_dir(base, executor)
    report = Report(start=clock)
    result = Result(scenario, work, report)
    report.say(f"{executor}: {scenario.describe()}; work directory {work}")
    config_path = write_executor_config(work, scenario, scheduler)
    config = load_config(config_path)
    result.slots = config.service.combine_slots
    result.budget = config.service.max_combine_memory or config.service.mem_limit
    burst = (
        make_burst(config, scenario.cameras, scenario.files_per_camera)
        if frames is None
        else moved(frames, config)
    )
    service = ServiceRunner(config_path, work)
    ledger = Ledger()
    try:
        service.start()
        if wait_started(service, executor, report):
            burst_and_measure(scenario, config, service, burst, ledger, result)
        terminate_and_check(service, report, f"{executor}: final SIGTERM", then="")
    finally:
        service.close()
    return audit(executor, config, ledger, result), burst


# --- the audit ----------------------------------------------------------------------


def audit(executor: str, config: Config, ledger: Ledger, result: Result) -> Run:
    """soak.py's checks, then this script's: published once, on the right executor."""
    report, work = result.report, result.work
    catalog = config.service.state_dir / "catalog.sqlite"
    state = check_catalog_and_files(work, ledger.files(), result)
    events = LogTail(work / "log" / "biaswatch.jsonl").read()
    if executor == "local":  # the sampler sees the fork server's children only
        check_budget(result)
    check_published_once(result, state, events)
    check_calibrated(executor, events, result)
    attempts = query(catalog, "SELECT * FROM attempts ORDER BY id")
    check_attempts(executor, attempts, state, report)
    masters = {str(m["camera"]): Path(m["path"]) for m in state.masters}
    return Run(executor, result, events, masters, attempts, most_at_once(attempts))


def check_published_once(result: Result, state: CatalogState, events: list[dict[str, Any]]) -> None:
    """One set per camera, with every frame; each set one master.published, one master."""
    report, scenario = result.report, result.scenario
    published = Counter(int(e["set"]) for e in events if e.get("event") == "master.published")
    for camera in scenario.cameras:
        sets = [s for s in state.sets.values() if s["camera"] == camera]
        ncombine = sorted(m["ncombine"] for m in state.masters if m["camera"] == camera)
        if len(sets) != 1 or ncombine != [scenario.files_per_camera]:
            report.discrepancy(
                f"{camera}: {len(sets)} sets and masters of {ncombine or 'no'} frames; "
                f"expected one set and one master of {scenario.files_per_camera}"
            )
    for set_id in sorted(set(state.sets) | set(published)):
        rows = sum(1 for m in state.masters if m["set_id"] == set_id)
        if published[set_id] != 1 or rows != 1:
            report.discrepancy(
                f"set {set_id}: {published[set_id]} master.published events, "
                f"{rows} masters rows; expected one of each"
            )


def check_calibrated(executor: str, events: list[dict[str, Any]], result: Result) -> None:
    """Every frame calibrated where the executor runs: dask_executor.py logs on="cluster"."""
    where = Counter(str(e.get("on")) for e in events if e.get("event") == "frame.calibrated")
    expected = "cluster" if executor == "dask" else "None"
    if where != Counter({expected: result.scenario.files}):
        result.report.discrepancy(
            f"frames calibrated, by where (on=): {dict(where)}; expected "
            f"{result.scenario.files} on={expected}"
        )


def check_attempts(executor: str, attempts: list[Any], state: CatalogState, report: Report) -> None:
    """Each set combined by one run, a whole combine done on this executor (no retry, no split).

    A run is a (set, worker) pair, and has one attempts row: a second row of the same
    run (the task's answer recorded again after its own 'done' announcement, a bug this
    script found and catalog/attempts.py fixed) is a discrepancy too.
    """
    other = Counter(
        (a["executor"], a["task"], a["outcome"])
        for a in attempts
        if (a["executor"], a["task"], a["outcome"]) != (executor, "combine", "done")
    )
    if other:
        report.discrepancy(f"attempts not a whole combine done on {executor}: {dict(other)}")
    runs = Counter(a["set_id"] for a in {(a["set_id"], a["worker"]): a for a in attempts}.values())
    for set_id in state.sets:
        if runs[set_id] != 1:
            report.discrepancy(f"set {set_id}: combined by {runs[set_id]} runs, expected 1")
    if (repeated := len(attempts) - sum(runs.values())) > 0:
        report.discrepancy(
            f"{repeated} of {len(attempts)} attempts rows repeat a run already recorded "
            "(same set, task and worker): one run, recorded twice"
        )


def most_at_once(attempts: list[Any]) -> int:
    """The most attempts between their started and ended at one moment (catalog times)."""
    # At a tie an end counts before a start: one that ends as another starts did not overlap.
    moments = sorted(
        (parse_time(a[key]), step)
        for a in attempts
        if a["ended"]
        for key, step in (("started", 1), ("ended", -1))
    )
    running = most = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    return most


def compare_masters(runs: list[Run], report: Report) -> int:
    """Each camera's masters from both runs: data arrays equal byte for byte; how many equal."""
    first, second = runs
    equal = 0
    for camera in sorted(set(first.masters) | set(second.masters)):
        paths = (first.masters.get(camera), second.masters.get(camera))
        if None in paths:
            report.discrepancy(f"{camera}: a master from only one executor: {paths}")
            continue
        a, b = (fits.getdata(p) for p in paths)
        if a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes():
            equal += 1
            continue
        differ = int(np.count_nonzero(a != b)) if a.shape == b.shape else "all"
        report.discrepancy(
            f"{camera}: masters differ ({a.dtype} {a.shape} vs {b.dtype} {b.shape}, "
            f"{differ} pixels): {paths[0]} vs {paths[1]}"
        )
    return equal


# --- the report ---------------------------------------------------------------------


def rate(count: int, wall: float | None) -> str:
    """count / wall, or n/a."""
    return f"{count / wall:.2f}" if wall else "n/a"


def label(run: Run, workers: int) -> str:
    """The executor's name in the table."""
    return f"dask ({workers} workers)" if run.executor == "dask" else "local"


def print_table(runs: list[Run], workers: int) -> None:
    """One line per executor, then the ratio."""
    print()
    print(f"### {runs[0].result.scenario.describe()}, local and Dask")
    print()
    print(
        "| executor | frames | masters | first file → all recorded | → last master.published "
        "| frames/s | masters/s | most combines at once | discrepancies |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        result = run.result
        masters = len(run.masters)
        print(
            f"| {label(run, workers)} | {result.scenario.files} | {masters} "
            f"| {seconds(result.to_recorded)} | {seconds(result.to_published)} "
            f"| {rate(result.scenario.files, result.to_published)} "
            f"| {rate(masters, result.to_published)} | {run.most_attempts_at_once} "
            f"| {len(result.report.discrepancies)} |"
        )
    print()
    local, dask = (run.result.to_published for run in runs)
    if local and dask:
        print(
            f"dask/local: {local / dask:.2f}x the throughput (frames/s and masters/s alike), "
            f"{dask / local:.2f}x the wall time"
        )


def details(run: Run) -> list[str]:
    """The lines under the table for one run."""
    result = run.result
    burst = result.burst_ended - result.burst_began
    published = [e for e in run.events if e.get("event") == "master.published"]
    combine = [float(e.get("combine_seconds", 0.0)) for e in published]
    workers = {str(a["worker"]) for a in run.attempts}
    runs = {(a["set_id"], a["worker"]) for a in run.attempts}
    where = "workers" if run.executor == "dask" else "combine children"
    lines = [
        f"burst: {result.scenario.files} files written by {len(result.scenario.cameras)} "
        f"threads in {burst:.2f} s",
        f"attempts: {len(runs)} runs ({len(run.attempts)} rows) on {len(workers)} {where}",
    ]
    if combine:
        lines.append(
            f"masters published: {len(published)}; combine_seconds median "
            f"{statistics.median(combine):.2f} s, max {max(combine):.2f} s"
        )
    if run.executor == "local":
        lines.append(f"service peak RSS (VmHWM) {result.samples.service_hwm / 1024:.0f} MiB")
    errors = log_errors(result.work / "log" / "biaswatch.jsonl")
    lines.append(f"log events at error level: {dict(errors) or 'none'}")
    return lines


def print_details(runs: list[Run], workers: int) -> None:
    """Each run's details, notes and discrepancies."""
    for run in runs:
        print()
        print(f"{label(run, workers)}:")
        for line in details(run):
            print(f"- {line}")
        for note in run.result.report.notes:
            print(f"note: {note}")
        for line in run.result.report.discrepancies:
            print(f"DISCREPANCY ({run.executor}): {line}")


# --- main -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    cameras: int
    frames: int
    workers: int
    dir: Path | None
    keep: bool


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cameras", type=int, default=16, help="cameras, one set each")
    parser.add_argument("--frames", type=int, default=10, help="frames per camera")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (DIR/EXECUTOR)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args(argv)
    if min(args.cameras, args.frames, args.workers) < 1:
        parser.error("need --cameras, --frames and --workers >= 1")
    return Options(args.cameras, args.frames, args.workers, args.dir, args.keep)


def run_both(options: Options, cluster_dir: Path, report: Report) -> list[Run]:
    """The cluster up and warm, then the local run and the Dask run; the cluster closed."""
    mem_limit = load_mem_limit()
    report.say(f"starting a LocalCluster of {options.workers} workers on 127.0.0.1")
    with start_cluster(options.workers, mem_limit) as cluster:
        warm_workers(cluster, cluster_dir, report)
        runs: list[Run] = []
        frames = None
        for executor in EXECUTORS:
            scenario = scenario_for(executor, options.cameras, options.frames)
            scheduler = cluster.scheduler_address if executor == "dask" else None
            run, frames = run_executor(
                executor, scenario, options.dir, scheduler, frames, report.start
            )
            runs.append(run)
    report.say("cluster closed")
    return runs


def load_mem_limit() -> int:
    """burst.py's mem_limit in bytes, as the service's config reads it."""
    from biaswatch.config import ServiceConfig

    return int(ServiceConfig(mem_limit=MEM_LIMIT, max_combine_memory=MAX_COMBINE_MEMORY).mem_limit)


def main(argv: list[str] | None = None) -> int:
    """Both runs, the table, the comparison; 0 if nothing was wrong, 1 otherwise."""
    options = parse_args(argv)
    report = Report()
    cluster_dir = make_work_dir(options.dir, "cluster")
    runs = run_both(options, cluster_dir, report)
    equal = compare_masters(runs, report)
    print_table(runs, options.workers)
    print(f"masters equal byte for byte (data arrays), local vs dask: {equal} of {options.cameras}")
    print_details(runs, options.workers)
    for line in report.discrepancies:
        print(f"DISCREPANCY: {line}")
    print()
    total = len(report.discrepancies) + sum(len(r.result.report.discrepancies) for r in runs)
    for work in [run.result.work for run in runs] + [cluster_dir]:
        if options.keep or options.dir is not None or total:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            print(f"work directory removed: {work}")
    print(f"discrepancies: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
