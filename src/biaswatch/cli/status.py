"""``biaswatch status``: each camera at a glance, from the catalog; no service needed.

Per camera: its watch directories and whether they can be read, its open sets
(frames so far, what completes them and when), its last master with its
verdict and quality (and each segment's: image HDU or amplifier), and the
frames rejected in the last 24 hours with their reasons; and whether the
service runs (pid, since when), as the state directory's lock tells it
(system/pidfile.py), never a pid alone.

The first line (and ``assessment`` in --json) is a monitoring plugin's answer and the
exit status its code, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (rules/monitoring.py
decides), so Nagios, Icinga or NRPE run ``biaswatch status`` as it is. Each watch
directory is probed in its own forked child (system/children.py) for at most
``--timeout`` seconds: a hung mount is reported, never waited for, and status exits
on time. The catalog is read on this process as before: the state directory is on
local disk (the README's advice; the service refuses a network filesystem there,
catalog/open.py), so its reads do not hang.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from biaswatch.catalog.open import open_reading
from biaswatch.catalog.store import Catalog
from biaswatch.cli.common import fail
from biaswatch.config import CameraConfig, Config, load_config
from biaswatch.errors import ConfigError
from biaswatch.names import for_terminal
from biaswatch.rules.monitoring import UNKNOWN, Assessment, CameraFacts, assess, status_line
from biaswatch.rules.nights import night_end, night_label
from biaswatch.rules.qc import MasterQC
from biaswatch.rules.sets import decide_set
from biaswatch.service.alarms import NIGHT_CHECK
from biaswatch.system import pidfile
from biaswatch.system.overlaps import resolve_in_children
from biaswatch.watch.scan import probe_directories

RECENT = dt.timedelta(hours=24)  # "the last night", whatever the site's night times
# How long the watch directories get to answer, all at once: a local disk answers in
# microseconds, a healthy NFS server in milliseconds. 3 s leaves room, with the config
# and the catalog, inside check_nrpe's default 10 s timeout (check_nrpe -t, NRPE docs).
PROBE_SECONDS = 3.0
NOT_PROBED = "not probed"


def show_status(args: argparse.Namespace) -> int:
    """Print the status; exit with its assessment's Nagios code (rules/monitoring.py)."""
    timeout = args.timeout
    # The config's overlap check resolves the watch paths, a stat each: in children too,
    # and a path silent there is not asked again. A path whose realpath answers but whose
    # probe then hangs costs a second timeout (two rounds of children).
    silent: set[Path] = set()
    config = load_config(args.config, partial(resolve_in_children, seconds=timeout, silent=silent))
    watched = (d for camera in config.cameras for d in camera.watch)
    seen = probe_directories(watched, timeout, silent)
    try:
        report = gather(config, dt.datetime.now(dt.UTC), seen)
    except ConfigError as exc:  # not a catalog, or one of another version (catalog/open.py)
        return _status_unknown(args, f"cannot read the catalog: {'; '.join(exc.problems)}", config)
    except sqlite3.Error as exc:  # locked past its busy timeout, or damaged past its header
        return _status_unknown(args, f"cannot read the catalog: {exc}", config)
    print(json.dumps(report, indent=2) if args.json else render_status(report))
    return int(report["assessment"]["code"])


def _status_unknown(args: argparse.Namespace, message: str, config: Config) -> int:
    """Status cannot be told: UNKNOWN (3), its plugin line on stdout, where monitoring reads."""
    if not args.json:
        print(status_line("UNKNOWN", [message]))
    catalog = config.service.state_dir / "catalog.sqlite"
    return fail(args, UNKNOWN, message, status="UNKNOWN", catalog=str(catalog))


def gather(config: Config, now: dt.datetime, seen: Mapping[Path, str]) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data, its assessment first.

    ``seen``: each watch directory's probe (probe_directories); one left out is shown
    as NOT_PROBED.
    """
    service = _service(config)
    catalog = open_reading(config.service.state_dir / "catalog.sqlite")
    try:
        cameras = [_camera_status(config, c, catalog, now, seen) for c in config.cameras]
        facts = [
            _facts(config, camera, catalog, now, state)
            for camera, state in zip(config.cameras, cameras, strict=True)
        ]
    finally:
        if catalog is not None:
            catalog.close()
    verdict = assess(service["running"], facts)
    return {"assessment": _assessment(verdict), "service": service, "cameras": cameras}


def _assessment(verdict: Assessment) -> dict[str, Any]:
    return {"status": verdict.name, "code": verdict.code, "reasons": list(verdict.reasons)}


def _facts(
    config: Config,
    camera: CameraConfig,
    catalog: Catalog | None,
    now: dt.datetime,
    state: dict[str, Any],
) -> CameraFacts:
    """What the assessment needs of one camera: directories, last finished night, master."""
    night, frames, accepted, first = None, 0, 0, None
    if catalog is not None:  # before any catalog no night was watched: nothing was missed
        night = last_finished_night(config, camera, now)
        frames, accepted = catalog.night_summary(camera.name, night)
        first = catalog.first_night(camera.name)
    master = state["last_master"]
    return CameraFacts(
        camera.name,
        tuple(state["directories"].items()),
        night,
        frames,
        accepted,
        None if master is None else master["state"],
        first,
    )


def last_finished_night(config: Config, camera: CameraConfig, now: dt.datetime) -> str:
    """The last night whose night end plus the service's night-end check (NIGHT_CHECK) passed.

    The service raises its own no_master alarm then (service/alarms.py): status agrees.
    """
    site = config.site
    night = night_label(now, site.zone, site.night_rollover)
    if now < night_end(night, site.zone, site.night_rollover, camera.night_end) + NIGHT_CHECK:
        night -= dt.timedelta(days=1)
    return night.isoformat()


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
    config: Config,
    camera: CameraConfig,
    catalog: Catalog | None,
    now: dt.datetime,
    seen: Mapping[Path, str],
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "camera": camera.name,
        "directories": {str(d): seen.get(d, NOT_PROBED) for d in camera.watch},
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
    """The report as lines a person reads; the first is the monitoring plugin's status line."""
    assessment = report["assessment"]
    lines = [
        status_line(assessment["status"], assessment["reasons"]),
        _service_line(report["service"]),
    ]
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
