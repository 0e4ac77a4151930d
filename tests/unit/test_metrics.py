"""Prometheus metrics: families from the catalog's tallies, the textfile, the alarm counter."""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.tallies import Tallies
from biaswatch.config import load_config
from biaswatch.errors import ConfigError
from biaswatch.hooks import AlertsConfig
from biaswatch.service.alarms import Alarms
from biaswatch.service.metrics import Live, Metrics, live_state
from biaswatch.testing.fits import FakeClock
from biaswatch.testing.helpers import catalog_in, metric_samples, valid_frame, write_config

NOW = dt.datetime(2030, 1, 2, 12, 0, tzinfo=dt.UTC)
TALLIES = Tallies(
    frames=(
        ("cryo", "valid", 2),
        ("cryo", "combined", 5),
        ("cryo", "seen", 9),
        ("cryo", "rejected", 1),
        ("te", "ignored", 3),
    ),
    sets=(("cryo", "done", 1), ("cryo", "closed", 2), ("te", "open", 1)),
    masters=(("cryo", "accepted", 1), ("cryo", "rejected", 1)),
    last_accepted=(("cryo", NOW - dt.timedelta(hours=2)),),
    latencies=(("cryo", 1.5), ("cryo", 700.0)),
    combines=(("cryo", 0.8),),
)
LIVE = Live(("cryo", "te"), stalled=frozenset({"te"}), degraded=frozenset())


def written(tmp_path: Path, tallies: Tallies = TALLIES, live: Live = LIVE) -> str:
    """The textfile a Metrics writes for ``tallies`` and ``live``."""
    path = tmp_path / "biaswatch.prom"
    metrics = Metrics(path, None, 15.0, lambda: NOW)
    metrics.note(live)
    metrics.write(tallies)
    return path.read_text(encoding="utf-8")


def test_frames_count_combined_as_valid_and_leave_unjudged_out(tmp_path: Path) -> None:
    """Frames are exported by outcome: combined ones add to valid, 'seen' ones are not counted."""
    got = metric_samples(written(tmp_path))
    assert got["biaswatch_frames", (("camera", "cryo"), ("outcome", "valid"))] == 7
    assert got["biaswatch_frames", (("camera", "cryo"), ("outcome", "rejected"))] == 1
    assert got["biaswatch_frames", (("camera", "te"), ("outcome", "ignored"))] == 3
    assert not any(k[0] == "biaswatch_frames" and ("outcome", "seen") in k[1] for k in got)


def test_sets_masters_and_waiting_combines_per_camera(tmp_path: Path) -> None:
    """Sets by state, masters by verdict and closed sets as waiting combines are exported."""
    got = metric_samples(written(tmp_path))
    assert got["biaswatch_sets", (("camera", "te"), ("state", "open"))] == 1
    assert got["biaswatch_masters", (("camera", "cryo"), ("verdict", "rejected"))] == 1
    assert got["biaswatch_combines_waiting", (("camera", "cryo"),)] == 2


def test_age_of_the_last_accepted_master(tmp_path: Path) -> None:
    """The age and time of the newest accepted master are exported; none for a camera without."""
    got = metric_samples(written(tmp_path))
    assert got["biaswatch_last_accepted_master_age_seconds", (("camera", "cryo"),)] == 7200
    stamp = got["biaswatch_last_accepted_master_timestamp_seconds", (("camera", "cryo"),)]
    assert stamp == (NOW - dt.timedelta(hours=2)).timestamp()
    assert ("biaswatch_last_accepted_master_age_seconds", (("camera", "te"),)) not in got


def test_latency_histogram_buckets(tmp_path: Path) -> None:
    """The latency histogram counts each master in every bucket at or above its latency."""
    got = metric_samples(written(tmp_path))
    name = "biaswatch_publish_latency_seconds"
    assert got[f"{name}_bucket", (("camera", "cryo"), ("le", "1.0"))] == 0
    assert got[f"{name}_bucket", (("camera", "cryo"), ("le", "2.0"))] == 1
    assert got[f"{name}_bucket", (("camera", "cryo"), ("le", "900.0"))] == 2
    assert got[f"{name}_count", (("camera", "cryo"),)] == 2
    assert got[f"{name}_sum", (("camera", "cryo"),)] == 701.5
    assert got["biaswatch_combine_duration_seconds_count", (("camera", "cryo"),)] == 1


def test_stalled_and_degraded_flags_for_every_camera(tmp_path: Path) -> None:
    """Every configured camera has a stalled and a degraded gauge, 1 only where it applies."""
    live = live_state(["cryo", "te"], {"te": 3.0}, ["cryo: polling every 2 s, no inotify"])
    got = metric_samples(written(tmp_path, live=live))
    assert got["biaswatch_camera_stalled", (("camera", "te"),)] == 1
    assert got["biaswatch_camera_stalled", (("camera", "cryo"),)] == 0
    assert got["biaswatch_camera_degraded", (("camera", "cryo"),)] == 1
    assert got["biaswatch_camera_degraded", (("camera", "te"),)] == 0


def test_alarms_counted_by_name_and_camera(tmp_path: Path) -> None:
    """Each alarm raised adds one to biaswatch_alarms_total for its name and camera."""
    path = tmp_path / "biaswatch.prom"
    metrics = Metrics(path, None, 15.0, lambda: NOW)
    metrics.alarm("master_rejected", camera="cryo", night="2030-01-01")
    metrics.alarm("master_rejected", camera="cryo")
    metrics.alarm("no_master")
    metrics.write(TALLIES)
    got = metric_samples(path.read_text(encoding="utf-8"))
    assert got["biaswatch_alarms_total", (("alarm", "master_rejected"), ("camera", "cryo"))] == 2
    assert got["biaswatch_alarms_total", (("alarm", "no_master"), ("camera", ""))] == 1


def test_the_writer_reads_the_catalog_and_writes_last_at_stop(tmp_path: Path) -> None:
    """The writer thread reads the catalog over its own connection and writes once more at stop."""
    catalog = catalog_in(tmp_path)
    path = tmp_path / "biaswatch.prom"
    metrics = Metrics(path, None, 3600.0, lambda: NOW)
    metrics.start(tmp_path / "catalog.sqlite")
    catalog.add_to_set(valid_frame("/raw/a.fits"))  # after its first write, before its last
    metrics.stop()
    catalog.close()
    got = metric_samples(path.read_text(encoding="utf-8"))
    assert got["biaswatch_frames", (("camera", "cryo"), ("outcome", "valid"))] == 1
    assert not [t for t in threading.enumerate() if t.name == "metrics"]


def test_nothing_started_when_metrics_are_off(tmp_path: Path) -> None:
    """Without metrics_file or metrics_address, no writer thread starts and no file appears."""
    catalog_in(tmp_path).close()
    metrics = Metrics(None, None, 15.0, lambda: NOW)
    metrics.start(tmp_path / "catalog.sqlite")
    assert not metrics.enabled
    assert not [t for t in threading.enumerate() if t.name == "metrics"]
    metrics.stop()
    assert not list(tmp_path.rglob("*.prom"))


def test_a_failed_write_is_logged_once_and_the_service_goes_on(tmp_path: Path) -> None:
    """A textfile that cannot be written logs metrics.write_failed once, and raises nothing."""
    catalog_in(tmp_path).close()
    metrics = Metrics(tmp_path / "missing" / "m.prom", None, 3600.0, lambda: NOW)
    with capture_logs() as logs:
        metrics.start(tmp_path / "catalog.sqlite")  # its first write fails
        metrics.stop()  # and its last, with the same error
    assert [e["event"] for e in logs] == ["metrics.write_failed"]


def test_catalog_tallies_from_real_rows(tmp_path: Path) -> None:
    """Catalog.tallies counts rows, spans combine runs, and times masters from the last mtime."""
    clock = FakeClock()
    catalog = catalog_in(tmp_path, clock)
    written_at = int(clock.now().timestamp() * 1e9)
    set_id = catalog.add_to_set(replace(valid_frame("/raw/a.fits"), mtime_ns=written_at - 10**9))
    catalog.add_to_set(replace(valid_frame("/raw/b.fits"), mtime_ns=written_at))
    catalog.record_frame(replace(valid_frame("/raw/c.fits"), status="ignored"))
    catalog.attempt_started(set_id, "combine", "local", "w1")
    clock.advance(2.5)
    catalog.attempt_ended(set_id, "combine", "w1", "done")
    made = clock.now().isoformat()
    catalog.record_master(set_id, MasterRow("cryo", "2026-11-24", 1, "g", "/m.fits", 2, "d", made))
    tallies = catalog.tallies()
    catalog.close()
    assert sorted(tallies.frames) == [("cryo", "combined", 2), ("cryo", "ignored", 1)]
    assert tallies.sets == (("cryo", "done", 1),)
    assert tallies.masters == (("cryo", "accepted", 1),)
    assert tallies.last_accepted == (("cryo", clock.now()),)
    assert tallies.combines == (("cryo", 2.5),)
    assert tallies.latencies == (("cryo", 2.5),)  # from b's mtime, not a's


def test_catalog_tallies_leave_out_unreadable_times(tmp_path: Path) -> None:
    """Rows whose times were edited by hand are left out of the timed tallies, not raised on."""
    clock = FakeClock()
    catalog = catalog_in(tmp_path, clock)
    set_id = catalog.add_to_set(valid_frame("/raw/a.fits"))
    catalog.attempt_started(set_id, "combine", "local", "w1")
    catalog.attempt_ended(set_id, "combine", "w1", "done")
    made = clock.now().isoformat()
    catalog.record_master(set_id, MasterRow("cryo", "2026-11-24", 1, "g", "/m.fits", 1, "d", made))
    catalog.close()
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:
        db.execute("UPDATE masters SET created = 'last Tuesday'")
        db.execute("UPDATE attempts SET started = 'junk'")
    db.close()
    catalog = catalog_in(tmp_path, clock)
    tallies = catalog.tallies()
    catalog.close()
    assert tallies.masters == (("cryo", "accepted", 1),)  # counted, only not timed
    assert (tallies.last_accepted, tallies.latencies, tallies.combines) == ((), (), ())


def test_metrics_settings_resolved_and_checked(tmp_path: Path) -> None:
    """metrics_file is resolved against the config file; one not ending in .prom is refused."""
    config = write_config(tmp_path, service={"metrics_file": "m/biaswatch.prom"})
    service = load_config(config).service
    assert (service.metrics_file, service.metrics_seconds) == (tmp_path / "m/biaswatch.prom", 15)
    for key, value, said in (
        ("metrics_file", "m.txt", "must end in .prom"),
        ("metrics_address", "9464", "is not host:port"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path, service={key: value}))
        assert said in "\n".join(caught.value.problems)


def test_alarms_raised_reach_the_counter(tmp_path: Path) -> None:
    """An alarm raised through Alarms (no command, no url) is counted by the metrics."""
    path = tmp_path / "biaswatch.prom"
    metrics = Metrics(path, None, 15.0, lambda: NOW)
    alarms = Alarms(AlertsConfig(), counted=metrics.alarm)
    alarms("set_insufficient", camera="te", night="2030-01-01", set=3, reason="too few")
    metrics.write(TALLIES)
    got = metric_samples(path.read_text(encoding="utf-8"))
    assert got["biaswatch_alarms_total", (("alarm", "set_insufficient"), ("camera", "te"))] == 1


def test_a_taken_port_is_logged_and_the_rest_goes_on(tmp_path: Path) -> None:
    """A metrics_address already in use logs metrics.http_failed; the textfile is still written."""
    catalog_in(tmp_path).close()
    path = tmp_path / "biaswatch.prom"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        metrics = Metrics(path, address, 3600.0, lambda: NOW)
        with capture_logs() as logs:
            metrics.start(tmp_path / "catalog.sqlite")
            metrics.stop()
    assert [e["event"] for e in logs] == ["metrics.http_failed"]
    assert path.exists()
