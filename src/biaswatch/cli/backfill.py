"""``biaswatch backfill``: the service's grouping and combining, over an archive of past nights.

Each file below the given directories is read, classified, calibrated and
recorded as the service would (frames/read.py, catalog/record.py); then every
open set of the camera whose night is over is judged and screened, and the
closed ones are combined by the same fork server and children and published
with the same verdicts. Progress bars (tqdm) count files and masters.

It is resumable and never makes a master twice: files the catalog already
knows are skipped, done sets are left alone, and a master already on disk for
a set's exact inputs is adopted, so running it again after an interruption
only finishes what was left. Run it on archive directories, not on ones the
service watches; it writes the same catalog, which SQLite allows beside the
running service.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
from pathlib import Path

from tqdm import tqdm

from biaswatch import logs
from biaswatch.catalog.open import open_catalog
from biaswatch.catalog.record import record_frame
from biaswatch.catalog.store import Catalog
from biaswatch.cli.common import EX_USAGE, command_config, fail
from biaswatch.combine.child import start_server
from biaswatch.config import CameraConfig, Config
from biaswatch.fitsbytes import fits_status
from biaswatch.frames.read import ingest, rejected_record
from biaswatch.rules.sets import Action, decide_set
from biaswatch.service.alarms import Alarms
from biaswatch.service.combines import Combines
from biaswatch.service.screening import screen
from biaswatch.watch.scan import scan_dir


def run_backfill(args: argparse.Namespace) -> int:
    """Ingest, judge and combine; exit 0 when every set ended done, failed or waiting."""
    config = command_config(args.config)
    camera = config.camera(args.camera)
    absent = [str(d) for d in args.directories if not d.is_dir()]
    if absent:  # a typo in an archive path must not end in "0 new file(s)" and exit 0
        return fail(args, EX_USAGE, f"not a directory: {', '.join(absent)}", missing=absent)
    logs.configure(config.log_path, config.service.log_level, console=False)
    catalog = open_catalog(config.service.state_dir / "catalog.sqlite", _now)
    bars = not args.json  # --json: stdout is the one object at the end; no progress bars
    try:
        new = _ingest(config, camera, catalog, args.directories, bars)
        closed = _judge(config, camera, catalog)
        _combine_closed(config, catalog, closed, bars)
        done = len(catalog.masters(camera.name))
    finally:
        catalog.close()
    if args.json:
        counts = {"camera": camera.name, "new_files": new, "sets_combined": len(closed)}
        print(json.dumps(counts | {"masters": done}))
    else:
        print(
            f"backfill: {new} new file(s) recorded, {len(closed)} set(s) combined; {done} master(s)"
        )
    return 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ingest(
    config: Config, camera: CameraConfig, catalog: Catalog, roots: list[Path], bars: bool
) -> int:
    excluded = (config.service.masters_dir, config.service.state_dir)
    files = sorted(path for root in roots for path in scan_dir(root, camera.patterns, excluded))
    work_dir = config.service.work
    new = 0
    for path in tqdm(files, desc="frames", unit="file", disable=not bars):
        st = path.stat()
        if catalog.is_known(path, st.st_size, st.st_mtime_ns):
            continue  # recorded by an earlier run (or by the service)
        status = fits_status(path)
        if status.state == "complete":
            record = ingest(path, camera, config.site, work_dir)
        else:  # an archive is not being written: incomplete now is incomplete for good
            what = "not a FITS file" if status.state == "not_fits" else "truncated"
            record = rejected_record(path, camera.name, f"{what}: {status.detail}")
        record_frame(catalog, record)
        new += 1
    return new


def _judge(config: Config, camera: CameraConfig, catalog: Catalog) -> list[int]:
    """Close (or find insufficient) the camera's open sets whose nights are over."""
    for row in catalog.sets_in("open"):
        if row.camera != camera.name:
            continue
        night = dt.date.fromisoformat(row.night)
        decision = decide_set(row.frames, row.last_arrival, night, camera, config.site, _now())
        if decision.action is Action.INSUFFICIENT:
            catalog.set_state(row.id, "insufficient", decision.reason)
        elif decision.action is Action.COMBINE:
            kept = screen(catalog, row.id, camera)
            if kept < camera.min_frames:
                why = f"{kept} frame(s) left after QC, fewer than min_frames={camera.min_frames}"
                catalog.set_state(row.id, "insufficient", why)
            else:
                catalog.set_state(row.id, "closed", decision.reason)
    return [r.id for r in catalog.sets_in("closed") if r.camera == camera.name]


def _combine_closed(config: Config, catalog: Catalog, closed: list[int], bars: bool) -> None:
    """Combine and publish the closed sets through the service's own Combines."""
    if not closed:
        return
    wake, ready = threading.Event(), threading.Event()
    combines = Combines(
        config,
        catalog,
        lambda _master: None,  # no service here: nothing to tell systemd
        now=_now,
        wake=wake.set,
        retry_at=lambda _set, _when: None,  # a failed set stays closed: run backfill again
        alarm=Alarms(config.alerts),
    )
    start_server(lambda _seconds: ready.set())
    ready.wait()
    combines.server_ready()
    for set_id in closed:
        combines.queue(set_id)
    with tqdm(total=len(closed), desc="masters", unit="set", disable=not bars) as bar:
        while True:
            combines.step()
            left = sum(1 for s in closed if catalog.get_set(s).state in ("closed", "combining"))
            bar.n = len(closed) - left
            bar.refresh()
            if combines.idle:
                return
            wake.wait(0.5)
            wake.clear()
