"""``biaswatch status``: each camera at a glance, from the catalog; no service needed.

Per camera: its watch directories and whether they can be read, its open sets
(frames so far, what completes them and when), its last master with its
verdict and quality (and each segment's: image HDU or amplifier), and the
frames rejected in the last 24 hours with their reasons; and whether the
service runs (pid, since when), as the state directory's lock tells it
(system/pidfile.py), never a pid alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from biaswatch.catalog.open import open_reading
from biaswatch.catalog.store import Catalog
from biaswatch.config import CameraConfig, Config, load_config
from biaswatch.names import for_terminal
from biaswatch.rules.qc import MasterQC
from biaswatch.rules.sets import decide_set
from biaswatch.system import pidfile
from biaswatch.watch.scan import probe_directory

RECENT = dt.timedelta(hours=24)  # "the last night", whatever the site's night times


def show_status(args: argparse.Namespace) -> int:
    """Print the status; exit 0."""
    config = load_config(args.config)
    report = gather(config, dt.datetime.now(dt.UTC))
    print(json.dumps(report, indent=2) if args.json else render_status(report))
    return 0


def gather(config: Config, now: dt.datetime) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data."""
    service = _service(config)
    catalog = open_reading(config.service.state_dir / "catalog.sqlite")
    try:
        cameras = [_camera_status(config, camera, catalog, now) for camera in config.cameras]
    finally:
        if catalog is not None:
            catalog.close()
    return {"service": service, "cameras": cameras}


def _service(config: Config) -> dict[str, Any]:
    """Whether a service holds the state directory's lock; its pid and start if so."""
    try:
        running = pidfile.running(config.service.state_dir)
    except OSError as exc:  # the lock file exists but this user may not read it
        path = pidfile.path_for(config.service.state_dir)
        return {"running": None, "problem": f"cannot read {path}: {exc.strerror}"}
    if running is None:
        return {"running": False}
    return {"running": True, "pid": running.pid, "since": running.since}


def _camera_status(
    config: Config, camera: CameraConfig, catalog: Catalog | None, now: dt.datetime
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "camera": camera.name,
        "directories": {str(d): probe_directory(d) for d in camera.watch},
        "open_sets": [],
        "last_master": None,
        "rejected_last_24h": [],
    }
    if catalog is None:
        return state
    for row in catalog.sets_in("open"):
        if row.camera != camera.name:
            continue
        try:
            night = dt.date.fromisoformat(row.night)
        except ValueError:  # a row no version wrote: the service sets it aside at its start
            waiting, recheck = f"night {row.night!r} is not a date: set aside at start", None
        else:
            decision = decide_set(row.frames, row.last_arrival, night, camera, config.site, now)
            waiting = decision.reason
            recheck = (
                decision.recheck_at.isoformat(timespec="seconds") if decision.recheck_at else None
            )
        state["open_sets"].append(
            {
                "set": row.id,
                "night": row.night,
                "geometry": row.geometry,
                "frames": row.frames,
                "expected": camera.expected_frames,
                "waiting": waiting,
                "next_look": recheck,
            }
        )
    masters = catalog.masters(camera.name)
    if masters:
        last = masters[-1]
        quality = None if last.qc is None else {k: round(v, 3) for k, v in _qc(last.qc).items()}
        state["last_master"] = {
            "path": last.path,
            "night": last.night,
            "state": last.state,
            "ncombine": last.ncombine,
            "qc": quality,
            # Each segment's (image HDU's or amplifier's) QC; [] for a master of one segment.
            "segments": [
                {"name": name, **{k: round(v, 3) for k, v in _qc(qc).items()}}
                for name, qc in last.segments
            ],
        }
    since = (now - RECENT).isoformat(timespec="milliseconds")
    state["rejected_last_24h"] = [
        {"file": path, "reason": reason}
        for path, reason in catalog.rejected_since(camera.name, since)
    ]
    return state


def _qc(qc: MasterQC) -> dict[str, float]:
    return {k: float(v) for k, v in asdict(qc).items()}


def render_status(report: dict[str, Any]) -> str:
    """The report as lines a person reads."""
    lines = [_service_line(report["service"])]
    for camera in report["cameras"]:
        lines.append(f"camera {camera['camera']}")
        for directory, seen in camera["directories"].items():
            lines.append(f"  watches {directory}: {seen}")
        for open_set in camera["open_sets"]:
            nxt = f", next look {open_set['next_look']}" if open_set["next_look"] else ""
            lines.append(
                f"  open set {open_set['set']} ({open_set['night']}, {open_set['geometry']}): "
                f"{open_set['frames']} of {open_set['expected']} frames; {open_set['waiting']}{nxt}"
            )
        lines += _master_lines(camera["last_master"])
        rejected = camera["rejected_last_24h"]
        lines.append(f"  rejected in the last 24 h: {len(rejected)}")
        lines += [f"    {Path(r['file']).name}: {r['reason']}" for r in rejected]
    # File names may hold any bytes, ESC included: each line escaped for the terminal.
    return "\n".join(for_terminal(line) for line in lines)


def _service_line(service: dict[str, Any]) -> str:
    if service["running"] is None:
        return f"service: unknown ({service['problem']})"
    if not service["running"]:
        return "service: not running"
    if service["pid"] is None:  # locked an instant ago, its pid not written yet
        return "service: running"
    return f"service: running, pid {service['pid']}, since {service['since']}"


def _master_lines(master: dict[str, Any] | None) -> list[str]:
    if master is None:
        return ["  last master: none yet"]
    line = f"  last master: {master['path']} ({master['night']}, {master['state']}, "
    line += f"{master['ncombine']} frames)"
    qc = master["qc"]
    if qc is None:
        return [line]
    return [
        line,
        f"    level {qc['level']} ADU, read noise {qc['read_noise']} ADU, "
        f"noise {qc['noise']} ADU (expected {qc['expected_noise']}), "
        f"hot columns {int(qc['hot_columns'])}",
        *(
            f"    segment {s['name']}: level {s['level']} ADU, read noise {s['read_noise']} ADU, "
            f"noise {s['noise']} ADU"
            for s in master.get("segments", [])
        ),
    ]
